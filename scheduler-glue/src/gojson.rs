//! JSON read the way Go's `encoding/json` reads it into a struct, for peers
//! written in Go whose types carry no json tags (the kube-scheduler's
//! `extender/v1` types): an object key names a field when it equals the
//! field's name under Unicode simple case folding (`pod`, `POD` and `Pod`
//! are all `Pod`), keys are applied in document order so a later duplicate
//! wins, an object decoded over an earlier one merges into it (Go decodes
//! into the existing struct or map), `null` clears, and unknown keys are
//! ignored. The result is a [`serde_json::Value`] with every known key
//! spelled as the schema spells it, for a typed serde pass.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What a JSON value is expected to be.
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    /// Anything, kept as sent.
    Any,
    /// A struct: keys fold to `fields`; unknown keys are dropped, or kept
    /// as sent when `keep_unknown` (an object echoed back to the peer).
    Struct {
        /// Field names as the schema spells them, with their schemas.
        fields: &'static [(&'static str, Schema)],
        /// Keep keys that name no field.
        keep_unknown: bool,
    },
    /// A map: keys exact, values of this schema.
    Map(&'static Schema),
    /// An array of this schema.
    Array(&'static Schema),
}

/// A parsed JSON value whose objects keep their keys in document order,
/// duplicates included.
#[derive(Debug)]
pub enum Ordered {
    /// An object's entries as sent.
    Object(Vec<(String, Ordered)>),
    /// An array.
    Array(Vec<Ordered>),
    /// A scalar or null.
    Scalar(Value),
}

/// Parses `body` and folds it to `schema` (pure). Errors are serde_json's
/// syntax errors.
pub fn parse(body: &[u8], schema: &Schema) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = Ordered::deserialize(&mut de)?;
    de.end()?;
    let mut out = Value::Null;
    apply(&mut out, v, schema);
    Ok(out)
}

/// Go's field-name match: equal under Unicode simple case folding. Field
/// names are ASCII; the only non-ASCII characters that fold to ASCII
/// letters are U+017F (long s, to `s`) and U+212A (Kelvin sign, to `k`).
pub fn names_match(key: &str, field: &str) -> bool {
    let mut k = key.chars();
    for f in field.chars() {
        let Some(c) = k.next() else { return false };
        let same = match c {
            '\u{017f}' => f.eq_ignore_ascii_case(&'s'),
            '\u{212a}' => f.eq_ignore_ascii_case(&'k'),
            c => c.is_ascii() && c.eq_ignore_ascii_case(&f),
        };
        if !same {
            return false;
        }
    }
    k.next().is_none()
}

/// Decodes `v` over `into` as Go would.
fn apply(into: &mut Value, v: Ordered, schema: &Schema) {
    match (v, schema) {
        (Ordered::Scalar(Value::Null), _) => *into = Value::Null,
        (
            Ordered::Object(entries),
            Schema::Struct {
                fields,
                keep_unknown,
            },
        ) => {
            let obj = object(into);
            for (key, val) in entries {
                match fields.iter().find(|(name, _)| names_match(&key, name)) {
                    Some((name, s)) => apply(obj.entry(*name).or_insert(Value::Null), val, s),
                    None if *keep_unknown => {
                        apply(obj.entry(key).or_insert(Value::Null), val, &Schema::Any)
                    }
                    None => {}
                }
            }
        }
        (Ordered::Object(entries), Schema::Map(s)) => {
            let obj = object(into);
            for (key, val) in entries {
                apply(obj.entry(key).or_insert(Value::Null), val, s);
            }
        }
        (Ordered::Array(items), Schema::Array(s)) => {
            *into = Value::Array(
                items
                    .into_iter()
                    .map(|i| {
                        let mut v = Value::Null;
                        apply(&mut v, i, s);
                        v
                    })
                    .collect(),
            );
        }
        // A type the schema does not expect, or `Any`: kept as sent (the
        // last duplicate wins), for the typed pass to accept or name.
        (v, _) => *into = v.into_value(),
    }
}

/// `into` as an object, replacing a non-object (Go merges into an
/// existing struct or map, and starts a fresh one otherwise).
fn object(into: &mut Value) -> &mut Map<String, Value> {
    if !into.is_object() {
        *into = Value::Object(Map::new());
    }
    match into {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

impl Ordered {
    /// The plain value (a later duplicate key wins, as in Go's `any`).
    fn into_value(self) -> Value {
        match self {
            Ordered::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
            Ordered::Array(items) => {
                Value::Array(items.into_iter().map(Self::into_value).collect())
            }
            Ordered::Scalar(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(v.into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(i) = seq.next_element()? {
                    items.push(i);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = map.next_entry()? {
                    entries.push(e);
                }
                Ok(Ordered::Object(entries))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INNER: Schema = Schema::Struct {
        fields: &[("a", Schema::Any), ("b", Schema::Any)],
        keep_unknown: false,
    };
    const TOP: Schema = Schema::Struct {
        fields: &[
            ("Pod", INNER),
            ("NodeNames", Schema::Any),
            ("Tags", Schema::Map(&Schema::Any)),
            ("Items", Schema::Array(&INNER)),
        ],
        keep_unknown: false,
    };

    fn fold(s: &str) -> Value {
        parse(s.as_bytes(), &TOP).unwrap()
    }

    #[test]
    fn names_fold_as_go_folds_them() {
        for (k, f) in [
            ("Pod", "Pod"),
            ("pod", "Pod"),
            ("POD", "Pod"),
            ("pOd", "Pod"),
        ] {
            assert!(names_match(k, f), "{k} {f}");
        }
        // Long s and the Kelvin sign fold to ASCII letters in Go.
        assert!(names_match("nodeName\u{017f}", "NodeNames"));
        assert!(names_match("\u{212a}ind", "kind"));
        for (k, f) in [("Pods", "Pod"), ("Po", "Pod"), ("Pöd", "Pod"), ("", "Pod")] {
            assert!(!names_match(k, f), "{k} {f}");
        }
        // Dotless i and dotted I are not in i's simple-fold orbit.
        assert!(!names_match("\u{0131}d", "id"));
        assert!(!names_match("\u{0130}d", "id"));
    }

    #[test]
    fn keys_fold_unknown_keys_drop_and_later_duplicates_win() {
        assert_eq!(
            fold(r#"{"pod": {"A": 1}, "nodenames": ["n"], "other": 3}"#),
            json!({"Pod": {"a": 1}, "NodeNames": ["n"]})
        );
        assert_eq!(
            fold(r#"{"NodeNames": ["x"], "nodeNames": ["y"]}"#),
            json!({"NodeNames": ["y"]})
        );
    }

    #[test]
    fn objects_merge_null_clears_arrays_replace() {
        assert_eq!(
            fold(r#"{"Pod": {"a": 1}, "POD": {"b": 2}}"#),
            json!({"Pod": {"a": 1, "b": 2}})
        );
        assert_eq!(
            fold(r#"{"Pod": {"a": 1}, "pod": null}"#),
            json!({"Pod": null})
        );
        assert_eq!(
            fold(r#"{"Tags": {"x": 1}, "tags": {"X": 2}}"#),
            json!({"Tags": {"x": 1, "X": 2}}),
            "map keys are exact"
        );
        assert_eq!(
            fold(r#"{"Items": [{"A": 1}, {"b": 2}], "items": [{"a": 3}]}"#),
            json!({"Items": [{"a": 3}]})
        );
    }

    #[test]
    fn unexpected_types_are_left_for_the_typed_pass() {
        assert_eq!(fold(r#"{"pod": 3}"#), json!({"Pod": 3}));
        assert_eq!(fold("[1]"), json!([1]));
        assert!(parse(b"{", &TOP).is_err());
        assert!(parse(b"{} x", &TOP).is_err());
    }
}
