//! Kubernetes resource quantities (`resource.Quantity` of apimachinery),
//! read exactly as the API server reads them, so that Griffin and the
//! kube-scheduler agree on what a pod asks for.
//!
//! The grammar (apimachinery `ParseQuantity`):
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= number | "+" number | "-" number
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! suffix          ::= binarySI | decimalExponent | decimalSI
//! binarySI        ::= "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
//! decimalSI       ::= "n" | "u" | "m" | "" | "k" | "M" | "G" | "T" | "P" | "E"
//! decimalExponent ::= ("e" | "E") signedNumber    (an integer)
//! ```
//!
//! So `1E` is 10^18 (the exa suffix) while `1E3` is 1000, `1e300` is a
//! valid (huge) quantity, and `1K`, `1e`, `0x10` are errors. Like
//! apimachinery's parser, a bare sign, `.` or suffix reads as zero, digits
//! may be any number long, and an exponent is truncated to 32 bits (its
//! `int32(parsed)`). Values are exact: the conversions round up (a request
//! for `1n` CPU is 1 millicore, as `MilliValue` says) and saturate at
//! `u64::MAX` instead of overflowing; quantities in decimal-SI or binary-SI
//! form are capped at 2^63 − 1 as apimachinery caps them. JSON decoding of
//! a `Quantity` trims surrounding white space; [`Quantity::parse_json`] does
//! the same.

use std::fmt;

/// A quantity that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes quantity")]
pub struct QuantityError(pub String);

/// A parsed quantity: `(-1)^negative × digits × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// Decimal digits of the mantissa (values 0..=9), most significant
    /// first, without leading zeros (empty: zero).
    digits: Vec<u8>,
    exp10: i64,
    exp2: u32,
    /// Decimal-SI and binary-SI quantities are capped at `i64::MAX`.
    capped: bool,
}

impl Quantity {
    /// Parses `s` exactly as apimachinery's `ParseQuantity` (no white space
    /// allowed).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let bad = || QuantityError(s.to_owned());
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(bad());
        }
        let mut pos = 0;
        let negative = match b[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };
        let digits_from = |from: usize| {
            b[from..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(b.len(), |n| from + n)
        };
        let num_end = digits_from(pos);
        let num = &b[pos..num_end];
        pos = num_end;
        let mut denom: &[u8] = &[];
        if b.get(pos) == Some(&b'.') {
            let end = digits_from(pos + 1);
            denom = &b[pos + 1..end];
            pos = end;
        }
        // The suffix: letters of the suffix alphabet, then an optional sign
        // and digits (an exponent); anything else is an error.
        let suffix_start = pos;
        while pos < b.len() && b"eEinumkKMGTP".contains(&b[pos]) {
            pos += 1;
        }
        if pos < b.len() && matches!(b[pos], b'+' | b'-') {
            pos += 1;
        }
        if digits_from(pos) != b.len() {
            return Err(bad());
        }
        let suffix = &s[suffix_start..];
        let (exp10, exp2, capped) = match suffix {
            "n" => (-9, 0, true),
            "u" => (-6, 0, true),
            "m" => (-3, 0, true),
            "" => (0, 0, true),
            "k" => (3, 0, true),
            "M" => (6, 0, true),
            "G" => (9, 0, true),
            "T" => (12, 0, true),
            "P" => (15, 0, true),
            "E" => (18, 0, true),
            "Ki" => (0, 10, true),
            "Mi" => (0, 20, true),
            "Gi" => (0, 30, true),
            "Ti" => (0, 40, true),
            "Pi" => (0, 50, true),
            "Ei" => (0, 60, true),
            _ if suffix.len() > 1 && suffix.starts_with(['e', 'E']) => {
                let e: i64 = suffix[1..].parse().map_err(|_| bad())?;
                // apimachinery keeps the exponent as int32(parsed).
                (i64::from(e as i32), 0, false)
            }
            _ => return Err(bad()),
        };
        let mut digits: Vec<u8> = num.iter().chain(denom).map(|c| c - b'0').collect();
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        Ok(Self {
            negative,
            exp10: exp10 - denom.len() as i64,
            digits,
            exp2,
            capped,
        })
    }

    /// Parses a quantity as a JSON string value holds it (surrounding white
    /// space trimmed, as apimachinery's `UnmarshalJSON` does).
    pub fn parse_json(s: &str) -> Result<Self, QuantityError> {
        Self::parse(s.trim())
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    /// Whether the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// `ceil(value × 10^scale)`, saturating at `u64::MAX`; 0 for a negative
    /// quantity. `scaled_ceil(0)` is apimachinery's `Value()`,
    /// `scaled_ceil(3)` its `MilliValue()`.
    pub fn scaled_ceil(&self, scale: i64) -> u64 {
        if self.is_negative() || self.is_zero() {
            return 0;
        }
        // digits × 2^exp2, in decimal, least significant digit first.
        let mut m: Vec<u8> = self.digits.iter().rev().copied().collect();
        for _ in 0..self.exp2 {
            let mut carry = 0;
            for d in &mut m {
                let v = *d * 2 + carry;
                *d = v % 10;
                carry = v / 10;
            }
            if carry > 0 {
                m.push(carry);
            }
        }
        // m × 10^shift; the cap applies to the unscaled value.
        let integer_part = |shift: i64| -> Option<u128> {
            // Digits below the point (shift < 0) are cut, and round up.
            let cut = usize::try_from(-shift.min(0)).unwrap_or(usize::MAX);
            let fraction = m.iter().take(cut).any(|&d| d != 0);
            let mut v: u128 = 0;
            for &d in m.iter().skip(cut).rev() {
                v = v.checked_mul(10)?.checked_add(u128::from(d))?;
            }
            for _ in 0..shift.max(0) {
                v = v.checked_mul(10)?;
            }
            v.checked_add(u128::from(fraction))
        };
        let cap = u128::from(i64::MAX.unsigned_abs());
        if self.capped && integer_part(self.exp10).is_none_or(|v| v > cap) {
            // Capped: the value is exactly 2^63 − 1.
            return match u32::try_from(scale) {
                Ok(up) => 10u128
                    .checked_pow(up)
                    .and_then(|p| cap.checked_mul(p))
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(u64::MAX),
                Err(_) => {
                    let down = u32::try_from(-scale.max(-38)).unwrap_or(38);
                    u64::try_from(cap.div_ceil(10u128.pow(down))).unwrap_or(u64::MAX)
                }
            };
        }
        integer_part(self.exp10.saturating_add(scale))
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(u64::MAX)
    }

    /// `Value()`: whole units, rounded up.
    pub fn value_ceil(&self) -> u64 {
        self.scaled_ceil(0)
    }

    /// `MilliValue()`: thousandths, rounded up.
    pub fn milli_ceil(&self) -> u64 {
        self.scaled_ceil(3)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_negative() {
            f.write_str("-")?;
        }
        if self.digits.is_empty() {
            f.write_str("0")?;
        }
        for d in &self.digits {
            write!(f, "{d}")?;
        }
        if self.exp10 != 0 {
            write!(f, "e{}", self.exp10)?;
        }
        if self.exp2 != 0 {
            write!(f, "*2^{}", self.exp2)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn apimachinery_examples_parse_to_their_values() {
        // (input, Value(), MilliValue()) from the grammar's documented
        // examples and apimachinery's own test inputs.
        for (s, v, m) in [
            ("0", 0, 0),
            ("0n", 0, 0),
            ("0Ki", 0, 0),
            ("1", 1, 1000),
            ("2", 2, 2000),
            ("500m", 1, 500),
            ("1500m", 2, 1500),
            ("1.5", 2, 1500),
            ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
            ("1536Mi", 1_610_612_736, 1_610_612_736_000),
            ("1Ki", 1024, 1_024_000),
            ("1k", 1000, 1_000_000),
            ("1M", 1_000_000, 1_000_000_000),
            ("1e3", 1000, 1_000_000),
            ("1E3", 1000, 1_000_000),
            ("1e+3", 1000, 1_000_000),
            ("1e-3", 1, 1),
            ("1n", 1, 1),
            ("1u", 1, 1),
            (".5", 1, 500),
            ("5.", 5, 5000),
            ("+1", 1, 1000),
            ("0.1Ki", 103, 102_400),
            ("007", 7, 7000),
            ("65537", 65_537, 65_537_000),
            ("1e5", 100_000, 100_000_000),
            ("1E", 1_000_000_000_000_000_000, u64::MAX),
            ("1e300", u64::MAX, u64::MAX),
            ("1Ei", 1 << 60, u64::MAX),
            // apimachinery quirks, kept: a bare sign, point or suffix is
            // zero.
            ("-", 0, 0),
            (".", 0, 0),
            ("m", 0, 0),
            ("Ki", 0, 0),
        ] {
            let x = q(s);
            assert_eq!((x.value_ceil(), x.milli_ceil()), (v, m), "{s}");
        }
    }

    #[test]
    fn decimal_and_binary_si_are_capped_like_apimachinery() {
        let cap = i64::MAX.unsigned_abs();
        assert_eq!(q("100E").value_ceil(), cap);
        assert_eq!(q("16Ei").value_ceil(), cap);
        assert_eq!(q("100E").scaled_ceil(-3), cap.div_ceil(1000));
        // The exponent form is not capped.
        assert_eq!(q("1e20").value_ceil(), u64::MAX);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "",
            " 1",
            "1 ",
            "1 Gi",
            "1K",
            "1e",
            "1E+",
            "1e-",
            "1.1.M",
            "1+1.0M",
            "0.1mi",
            "0.1am",
            "aoeu",
            ".5i",
            "1i",
            "-3.01i",
            "1kb",
            "1GGi",
            "1e2.3",
            "1.2.3",
            "0x10",
            "NaN",
            "inf",
            "1m5",
            "1ee3",
            "1e3e",
            "1e99999999999999999999",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Quantity::parse("1K").unwrap_err().to_string(),
            "\"1K\" is not a Kubernetes quantity"
        );
    }

    #[test]
    fn exponents_are_truncated_to_32_bits_like_apimachinery() {
        // int32(4294967296) == 0
        assert_eq!(q("1e4294967296").value_ceil(), 1);
    }

    #[test]
    fn signs() {
        assert!(q("-1").is_negative());
        assert!(!q("-0").is_negative());
        assert_eq!(q("-1").milli_ceil(), 0);
        assert_eq!(Quantity::parse_json("  2 ").unwrap().value_ceil(), 2);
    }

    proptest! {
        /// Every integer and its milli form agree with plain arithmetic.
        #[test]
        fn integers_are_exact(n in 0u64..(1 << 53), milli in any::<bool>()) {
            if milli {
                prop_assert_eq!(q(&format!("{n}m")).milli_ceil(), n);
                prop_assert_eq!(q(&format!("{n}m")).value_ceil(), n.div_ceil(1000));
            } else {
                prop_assert_eq!(q(&n.to_string()).value_ceil(), n);
                prop_assert_eq!(q(&n.to_string()).milli_ceil(), n.saturating_mul(1000));
            }
        }

        /// Arbitrary text: an error or a value, never a panic.
        #[test]
        fn any_text_never_panics(s in "[-+0-9.eEinumkKMGTP ]{0,24}") {
            if let Ok(x) = Quantity::parse(&s) {
                let _ = (x.value_ceil(), x.milli_ceil(), x.scaled_ceil(-3), x.to_string());
            }
        }
    }
}
