//! Rules files: a TOML or YAML description of a rule set, turned into
//! [`Rule`]s, [`PrefixSets`] and the redirect/CPU targets they need.
//!
//! The format is chosen by extension (`.toml`, `.yaml` or `.yml`); [`load`]
//! reads only a regular file of at most [`MAX_FILE_BYTES`] (see
//! [`crate::format`]). A file holds one list, `rules`; each rule has
//!
//! | key         | required | meaning                                                    |
//! |-------------|----------|------------------------------------------------------------|
//! | `name`      | yes      | unique, non-empty string (shown by `griffin xdp rules`)    |
//! | `priority`  | yes      | `u32`; lower values are checked first, ties keep file order |
//! | `action`    | yes      | `pass`, `drop`, `redirect`, `xsk` or `cpu`                 |
//! | `to`        | redirect | interface to redirect to (resolved to an ifindex by the caller) |
//! | `queue`     | no (xsk) | AF_XDP queue (xskmap key); default: the frame's rx queue   |
//! | `cpu`       | cpu      | CPU number (cpumap key)                                    |
//! | `vlan`      | no       | outer VLAN id, 0-4095                                      |
//! | `protocol`  | no       | `tcp`, `udp`, `icmp`, `icmpv6` or a number 0-255           |
//! | `dst_ports` | no       | `"5000"`, `"5000-5100"` (inclusive) or an integer          |
//! | `src`       | no       | list of source prefixes (`198.18.0.0/15`, `2001:db8::/32`, bare addresses) |
//! | `dst`       | no       | list of destination prefixes                               |
//! | `dscp`      | no       | DSCP, 0-63                                                 |
//!
//! Unset matches match everything. Rule ids (counter slots) are the rules'
//! positions in the file, counted from 0; errors name a rule by name and
//! that position, and the offending field, e.g.
//! `rule "video" (#2): dst_ports: 5100-5000 is reversed`. Unknown keys are
//! errors. Every distinct prefix list (order and duplicates do not matter)
//! becomes one prefix set, numbered in order of first appearance and shared
//! by `src` and `dst`; every distinct `to` interface gets a devmap slot, in
//! order of first appearance.
//!
//! ```toml
//! [[rules]]
//! name = "video"
//! priority = 10
//! action = "redirect"
//! to = "eth1"
//! protocol = "udp"
//! dst_ports = "5000-5100"
//! src = ["198.18.0.0/15", "2001:db8::/32"]
//!
//! [[rules]]
//! name = "telemetry"
//! priority = 20
//! action = "xsk"
//! queue = 3
//! vlan = 100
//! dscp = 46
//!
//! [[rules]]
//! name = "spread"
//! priority = 30
//! action = "cpu"
//! cpu = 2
//! dst = ["192.0.2.0/24"]
//!
//! [[rules]]
//! name = "block-telnet"
//! priority = 40
//! action = "drop"
//! protocol = "tcp"
//! dst_ports = 23
//! ```
//!
//! The same in YAML:
//!
//! ```yaml
//! rules:
//!   - name: video
//!     priority: 10
//!     action: redirect
//!     to: eth1
//!     protocol: udp
//!     dst_ports: "5000-5100"
//!     src: ["198.18.0.0/15", "2001:db8::/32"]
//!   - name: block-telnet
//!     priority: 40
//!     action: drop
//!     protocol: tcp
//!     dst_ports: 23
//! ```

use std::{
    fmt,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use serde::{de::IntoDeserializer, Deserialize};
use serde_json::Value;

use crate::{
    format::{self, Format, Key, ParseError, ReadError},
    rules::{Action, Prefix, PrefixSets, Rule},
    types::{MAX_PREFIX_SETS, MAX_RULES},
};

/// Entries of the devmap, xskmap and cpumap (`GRIFFIN_DEVMAP_SIZE` etc.).
pub const TARGET_SLOTS: u32 = 256;
/// Largest rules file [`load`] reads, bytes.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Longest interface name (`IFNAMSIZ - 1`).
const IFNAME_MAX: usize = 15;

/// Names a rule in errors: `"video" (#2)`, or `#2` when it has no usable name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// The rule's `name`, when it is a string.
    pub name: Option<String>,
    /// Position in the file, from 0.
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name:?} (#{})", self.index),
            None => write!(f, "#{}", self.index),
        }
    }
}

/// Why a rules file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    /// The file could not be read, is not a regular file or is larger than
    /// [`MAX_FILE_BYTES`].
    #[error("reading {path}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: ReadError,
    },
    /// The extension names no supported format.
    #[error("{path}: unknown rules file extension (expected .toml, .yaml or .yml)", path = path.display())]
    Extension {
        /// The file.
        path: PathBuf,
    },
    /// Not well-formed TOML/YAML, or the top level is not `rules = [...]`.
    #[error("{format}: {message}")]
    Syntax {
        /// The syntax.
        format: Format,
        /// The parser's message (with line and column where known).
        message: String,
    },
    /// A rule is invalid.
    #[error("rule {rule}: {field}{message}", field = field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Rule {
        /// The rule.
        rule: RuleRef,
        /// The offending field, when one is to blame.
        field: Option<&'static str>,
        /// What is wrong.
        message: String,
    },
}

/// A redirect target: devmap `slot` is to point at interface `iface`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTarget {
    /// Devmap key used by the rules' [`Action::Redirect`].
    pub slot: u32,
    /// Interface name as written in the file.
    pub iface: String,
}

/// A parsed and validated rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RulesFile {
    /// The rules; `rules[i].id == i`.
    pub rules: Vec<Rule>,
    /// Rule names, indexed by rule id.
    pub names: Vec<String>,
    /// The prefix sets the rules refer to.
    pub prefix_sets: PrefixSets,
    /// Prefixes of each set, indexed by set number.
    pub sets: Vec<Vec<Prefix>>,
    /// Devmap slots to fill, one per distinct `to`.
    pub redirect_targets: Vec<RedirectTarget>,
    /// CPUs used by `cpu` actions (cpumap entries to fill), ascending.
    pub cpu_targets: Vec<u32>,
}

/// Reads and parses the rules file at `path` (format by extension; a
/// regular file of at most [`MAX_FILE_BYTES`]).
pub fn load(path: &Path) -> Result<RulesFile, RulesFileError> {
    let format = Format::from_path(path).map_err(|e| RulesFileError::Extension { path: e.path })?;
    let text =
        format::read_regular(path, MAX_FILE_BYTES).map_err(|source| RulesFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse(&text, format)
}

/// Parses and validates rules file text.
pub fn parse(text: &str, format: Format) -> Result<RulesFile, RulesFileError> {
    let raw: RawFile = format::parse(text, format).map_err(|e| decode_error(text, e))?;
    let mut file = RulesFile::default();
    for (index, rule) in raw.rules.into_iter().enumerate() {
        file.add(index, rule)?;
    }
    Ok(file)
}

/// A rules file as written. Each value checks itself as it is decoded;
/// [`RulesFile::add`] checks what spans fields and rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Text>,
    priority: Option<Priority>,
    action: Option<ActionName>,
    to: Option<IfName>,
    queue: Option<Slot>,
    cpu: Option<Slot>,
    vlan: Option<Vlan>,
    protocol: Option<Protocol>,
    dst_ports: Option<Ports>,
    src: Option<Prefixes>,
    dst: Option<Prefixes>,
    dscp: Option<Dscp>,
}

/// The keys of [`RawRule`], as errors name them.
const FIELDS: &str = "name priority action to queue cpu vlan protocol dst_ports src dst dscp";

/// Turns a decoding error at `rules[i].field...` into one naming the rule
/// (its name read again from the text, loosely) and the field.
fn decode_error(text: &str, e: ParseError) -> RulesFileError {
    let index = match e.path.as_slice() {
        [Key::Field(rules), Key::Index(index), ..] if rules == "rules" => *index,
        [] => {
            return RulesFileError::Syntax {
                format: e.format,
                message: e.message,
            }
        }
        _ => {
            return RulesFileError::Syntax {
                format: e.format,
                message: e.to_string(),
            }
        }
    };
    let raw = format::parse::<Value>(text, e.format)
        .ok()
        .and_then(|mut v| v.get_mut("rules")?.get_mut(index).map(Value::take));
    let name = raw.as_ref().and_then(|r| r.get("name")?.as_str());
    let field = match e.path.get(2) {
        Some(Key::Field(key)) => FIELDS.split(' ').find(|f| f == key),
        _ => None,
    };
    let message = match &raw {
        Some(raw) if !raw.is_object() => format!("expected a table of keys, got {}", show(raw)),
        _ => e.message,
    };
    RulesFileError::Rule {
        rule: RuleRef {
            name: name.map(str::to_owned),
            index,
        },
        field,
        message,
    }
}

/// A value as it appears in messages (truncated).
fn show(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 40 {
        let cut = (0..=37)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn string(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, got {}", show(value)))
}

fn int(value: &Value, max: u64) -> Result<u64, String> {
    value
        .as_u64()
        .filter(|&v| v <= max)
        .ok_or_else(|| format!("expected an integer 0-{max}, got {}", show(value)))
}

/// Declares a value of a rule: decoded through a [`Value`], so that its
/// message can show what was found, and checked by `$check`
/// (`Result<$ty, String>`).
macro_rules! value {
    ($(#[$doc:meta])* $name:ident($ty:ty), |$value:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(try_from = "Value")]
        struct $name($ty);

        impl TryFrom<Value> for $name {
            type Error = String;
            fn try_from($value: Value) -> Result<Self, String> {
                $check.map(Self)
            }
        }
    };
}

value!(Text(String), |v| string(&v).map(str::to_owned));
value!(Priority(u32), |v| int(&v, u32::MAX.into())
    .map(|n| n as u32));
value!(Vlan(u16), |v| int(&v, 4095).map(|n| n as u16));
value!(Dscp(u8), |v| int(&v, 63).map(|n| n as u8));
value!(
    /// A devmap/xskmap/cpumap key (`queue`, `cpu`).
    Slot(u32),
    |v| match int(&v, u32::MAX.into())? {
        n if n < TARGET_SLOTS.into() => Ok(n as u32),
        n => Err(format!("{n} must be below {TARGET_SLOTS}")),
    }
);
value!(IfName(String), |v| match string(&v)? {
    name if name.is_empty()
        || name.len() > IFNAME_MAX
        || name.contains(['/', '\0'])
        || name.chars().any(char::is_whitespace)
        || name == "."
        || name == ".." =>
    {
        Err(format!("{name:?} is not an interface name"))
    }
    name => Ok(name.to_owned()),
});

/// What `action` can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActionKind {
    Pass,
    Drop,
    Redirect,
    Xsk,
    Cpu,
}

value!(ActionName(ActionKind), |v| {
    let name = string(&v)?;
    ActionKind::deserialize(name.into_deserializer()).map_err(|_: serde::de::value::Error| {
        format!("unknown action {name:?} (expected pass, drop, redirect, xsk or cpu)")
    })
});

value!(
    /// An IP protocol: a name or a number.
    Protocol(u8),
    |v| if v.is_number() {
        int(&v, u8::MAX.into()).map(|p| p as u8)
    } else {
        let text = string(&v)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            "icmp" => Ok(1),
            "icmpv6" | "ipv6-icmp" => Ok(58),
            "sctp" => Ok(132),
            other => other.parse().map_err(|_| {
                format!("{text:?} is not tcp, udp, icmp, icmpv6, sctp or a number 0-255")
            }),
        }
    }
);

value!(
    /// `dst_ports`: a port, or `"LOW-HIGH"` (inclusive).
    Ports(RangeInclusive<u16>),
    |v| if v.is_number() {
        int(&v, u16::MAX.into()).map(|p| p as u16..=p as u16)
    } else {
        let text = string(&v)?;
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| format!("{text:?} is not PORT or LOW-HIGH (ports 0-65535)"))
        };
        let (lo, hi) = match text.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(text)?, port(text)?),
        };
        if lo <= hi {
            Ok(lo..=hi)
        } else {
            Err(format!("{lo}-{hi} is reversed"))
        }
    }
);

value!(
    /// `src`/`dst`: a non-empty list of prefixes (or one), sorted, without
    /// duplicates.
    Prefixes(Vec<Prefix>),
    |v| {
        let items = match &v {
            Value::Array(items) => items.as_slice(),
            Value::String(_) => std::slice::from_ref(&v),
            other => return Err(format!("expected a list of prefixes, got {}", show(other))),
        };
        if items.is_empty() {
            return Err("empty prefix list (omit the key to match everything)".into());
        }
        let mut prefixes = Vec::with_capacity(items.len());
        for item in items {
            let prefix = string(item)?.trim().parse::<Prefix>();
            prefixes.push(prefix.map_err(|e| e.to_string())?);
        }
        prefixes.sort();
        prefixes.dedup();
        Ok(prefixes)
    }
);

impl RulesFile {
    /// Adds the rule at `index`, checking what spans its fields and the
    /// rules before it.
    fn add(&mut self, index: usize, raw: RawRule) -> Result<(), RulesFileError> {
        let rule = RuleRef {
            name: raw.name.as_ref().map(|n| n.0.clone()),
            index,
        };
        let err = |field, message: String| RulesFileError::Rule {
            rule: rule.clone(),
            field,
            message,
        };
        let missing = |field| err(Some(field), "missing".into());
        if index >= MAX_RULES as usize {
            return Err(err(None, format!("more than {MAX_RULES} rules")));
        }
        let name = raw.name.ok_or_else(|| missing("name"))?.0;
        if name.trim().is_empty() {
            return Err(err(Some("name"), "must not be empty".into()));
        }
        if let Some(other) = self.names.iter().position(|n| *n == name) {
            return Err(err(Some("name"), format!("duplicate of rule #{other}")));
        }
        let priority = raw.priority.ok_or_else(|| missing("priority"))?.0;
        let ActionName(kind) = raw.action.ok_or_else(|| missing("action"))?;
        for (field, given, allowed) in [
            ("to", raw.to.is_some(), ActionKind::Redirect),
            ("queue", raw.queue.is_some(), ActionKind::Xsk),
            ("cpu", raw.cpu.is_some(), ActionKind::Cpu),
        ] {
            if given && kind != allowed {
                let action = format!("{kind:?}").to_lowercase();
                return Err(err(
                    Some(field),
                    format!("not allowed with action {action:?}"),
                ));
            }
        }
        let action = match kind {
            ActionKind::Pass => Action::Pass,
            ActionKind::Drop => Action::Drop,
            ActionKind::Redirect => {
                let to = raw.to.ok_or_else(|| missing("to"))?.0;
                let slot = self.slot(to).ok_or_else(|| {
                    err(
                        Some("to"),
                        format!("more than {TARGET_SLOTS} redirect targets"),
                    )
                })?;
                Action::Redirect { slot }
            }
            ActionKind::Xsk => Action::Xsk {
                queue: raw.queue.map(|q| q.0),
            },
            ActionKind::Cpu => {
                let cpu = raw.cpu.ok_or_else(|| missing("cpu"))?.0;
                if let Err(at) = self.cpu_targets.binary_search(&cpu) {
                    self.cpu_targets.insert(at, cpu);
                }
                Action::Cpu { cpu }
            }
        };
        let mut rule = Rule::new(index as u32, priority, action);
        rule.vlan = raw.vlan.map(|v| v.0);
        rule.ip_proto = raw.protocol.map(|p| p.0);
        rule.dst_ports = raw.dst_ports.map(|p| p.0);
        rule.dscp = raw.dscp.map(|d| d.0);
        for (field, list, set) in [
            ("src", raw.src, &mut rule.src_set),
            ("dst", raw.dst, &mut rule.dst_set),
        ] {
            if let Some(list) = list {
                *set = Some(self.prefix_set(list.0).map_err(|m| err(Some(field), m))?);
            }
        }
        // Anything the encoder still rejects is a bug above; report it anyway.
        rule.encode().map_err(|e| err(None, e.reason))?;
        self.names.push(name);
        self.rules.push(rule);
        Ok(())
    }

    /// Adds a rule made at run time (a pod's flow) after the others, as
    /// the file's own are added: its id is its position, `src` and `dst`
    /// become the numbers of prefix sets (shared with equal lists), a
    /// redirect goes to interface `to` (a devmap slot shared with the
    /// rules redirecting there); the rule's own sets, id and redirect slot
    /// are ignored. Returns its id; refuses a duplicate name and whatever
    /// exceeds a limit, naming it.
    pub fn push(
        &mut self,
        name: &str,
        rule: &Rule,
        src: Option<Vec<Prefix>>,
        dst: Option<Vec<Prefix>>,
        to: Option<&str>,
    ) -> Result<u32, String> {
        if self.rules.len() >= MAX_RULES as usize {
            return Err(format!("more than {MAX_RULES} rules"));
        }
        if self.names.iter().any(|n| n == name) {
            return Err(format!("a rule is named {name:?} already"));
        }
        let mut rule = rule.clone();
        rule.id = self.rules.len() as u32;
        let mut set = |list: Option<Vec<Prefix>>| {
            list.map(|mut l| {
                l.sort();
                l.dedup();
                self.prefix_set(l)
            })
            .transpose()
        };
        rule.src_set = set(src)?;
        rule.dst_set = set(dst)?;
        match (rule.action, to) {
            (Action::Redirect { .. }, Some(iface)) => {
                let slot = self
                    .slot(iface.to_owned())
                    .ok_or_else(|| format!("more than {TARGET_SLOTS} redirect targets"))?;
                rule.action = Action::Redirect { slot };
            }
            (Action::Redirect { .. }, None) => return Err("a redirect needs an interface".into()),
            (_, Some(_)) => return Err("only a redirect goes to an interface".into()),
            (Action::Cpu { cpu }, None) => {
                if let Err(at) = self.cpu_targets.binary_search(&cpu) {
                    self.cpu_targets.insert(at, cpu);
                }
            }
            _ => {}
        }
        rule.encode().map_err(|e| e.reason)?;
        self.names.push(name.to_owned());
        self.rules.push(rule);
        Ok(self.rules.len() as u32 - 1)
    }

    /// These rules followed by `more`'s ([`RulesFile::push`] each), as one
    /// rule set.
    pub fn append(&self, more: &RulesFile) -> Result<RulesFile, String> {
        let mut out = self.clone();
        for (rule, name) in more.rules.iter().zip(&more.names) {
            let list = |set: Option<u8>| set.and_then(|s| more.sets.get(usize::from(s)).cloned());
            let to = match rule.action {
                Action::Redirect { slot } => more
                    .redirect_targets
                    .iter()
                    .find(|t| t.slot == slot)
                    .map(|t| t.iface.as_str()),
                _ => None,
            };
            out.push(name, rule, list(rule.src_set), list(rule.dst_set), to)
                .map_err(|e| format!("rule {name:?}: {e}"))?;
        }
        Ok(out)
    }

    /// The devmap slot of `iface`: a new one on its first appearance.
    fn slot(&mut self, iface: String) -> Option<u32> {
        if let Some(target) = self.redirect_targets.iter().find(|t| t.iface == iface) {
            return Some(target.slot);
        }
        let slot = self.redirect_targets.len() as u32;
        (slot < TARGET_SLOTS).then(|| {
            self.redirect_targets.push(RedirectTarget { slot, iface });
            slot
        })
    }

    /// The number of the set holding exactly `prefixes`: a new one on its
    /// first appearance.
    fn prefix_set(&mut self, prefixes: Vec<Prefix>) -> Result<u8, String> {
        if let Some(set) = self.sets.iter().position(|s| *s == prefixes) {
            return Ok(set as u8);
        }
        let set = u8::try_from(self.sets.len())
            .ok()
            .filter(|&s| s < MAX_PREFIX_SETS)
            .ok_or_else(|| format!("more than {MAX_PREFIX_SETS} distinct prefix lists"))?;
        for prefix in &prefixes {
            self.prefix_sets
                .insert(set, *prefix)
                .map_err(|e| e.to_string())?;
        }
        self.sets.push(prefixes);
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD_TOML: &str = r#"
[[rules]]
name = "video"
priority = 10
action = "redirect"
to = "eth1"
protocol = "udp"
dst_ports = "5000-5100"
src = ["198.18.0.0/15", "2001:db8::/32"]

[[rules]]
name = "telemetry"
priority = 5
action = "xsk"
queue = 3
vlan = 100
dscp = 46
dst = ["2001:db8::/32", "198.19.48.3/15"]

[[rules]]
name = "spread"
priority = 30
action = "cpu"
cpu = 2
dst = ["192.0.2.0/24"]

[[rules]]
name = "block-telnet"
priority = 40
action = "drop"
protocol = "tcp"
dst_ports = 23

[[rules]]
name = "more-video"
priority = 50
action = "redirect"
to = "eth1"
protocol = 132

[[rules]]
name = "rest"
priority = 60
action = "pass"
"#;

    const GOOD_YAML: &str = r#"
rules:
  - name: video
    priority: 10
    action: redirect
    to: eth1
    protocol: udp
    dst_ports: "5000-5100"
    src: ["198.18.0.0/15", "2001:db8::/32"]
  - name: telemetry
    priority: 5
    action: xsk
    queue: 3
    vlan: 100
    dscp: 46
    dst:
      - 2001:db8::/32
      - 198.19.48.3/15
  - name: spread
    priority: 30
    action: cpu
    cpu: 2
    dst: ["192.0.2.0/24"]
  - name: block-telnet
    priority: 40
    action: drop
    protocol: tcp
    dst_ports: 23
  - name: more-video
    priority: 50
    action: redirect
    to: eth1
    protocol: 132
  - name: rest
    priority: 60
    action: pass
"#;

    fn check_good(file: &RulesFile) {
        assert_eq!(
            file.names,
            [
                "video",
                "telemetry",
                "spread",
                "block-telnet",
                "more-video",
                "rest"
            ]
        );
        let r = &file.rules;
        assert_eq!(
            r[0],
            Rule::new(0, 10, Action::Redirect { slot: 0 })
                .ip_proto(17)
                .dst_ports(5000..=5100)
                .src_set(0)
        );
        // Same prefixes in another order and spelling: the same set.
        assert_eq!(
            r[1],
            Rule::new(1, 5, Action::Xsk { queue: Some(3) })
                .vlan(100)
                .dscp(46)
                .dst_set(0)
        );
        assert_eq!(r[2], Rule::new(2, 30, Action::Cpu { cpu: 2 }).dst_set(1));
        assert_eq!(
            r[3],
            Rule::new(3, 40, Action::Drop)
                .ip_proto(6)
                .dst_ports(23..=23)
        );
        assert_eq!(
            r[4],
            Rule::new(4, 50, Action::Redirect { slot: 0 }).ip_proto(132)
        );
        assert_eq!(r[5], Rule::new(5, 60, Action::Pass));
        assert_eq!(
            file.redirect_targets,
            [RedirectTarget {
                slot: 0,
                iface: "eth1".into()
            }]
        );
        assert_eq!(file.cpu_targets, [2]);
        let sets: Vec<Vec<String>> = file
            .sets
            .iter()
            .map(|s| s.iter().map(ToString::to_string).collect())
            .collect();
        assert_eq!(
            sets,
            [
                vec!["198.18.0.0/15".to_owned(), "2001:db8::/32".to_owned()],
                vec!["192.0.2.0/24".to_owned()]
            ]
        );
        let mut expected = PrefixSets::new();
        expected
            .insert(0, "198.18.0.0/15".parse().unwrap())
            .unwrap();
        expected
            .insert(0, "2001:db8::/32".parse().unwrap())
            .unwrap();
        expected.insert(1, "192.0.2.0/24".parse().unwrap()).unwrap();
        assert_eq!(file.prefix_sets, expected);
        crate::rules::encode_rules(&file.rules).unwrap();
    }

    #[test]
    fn good_toml_and_yaml_parse_to_the_same_rules() {
        let toml = parse(GOOD_TOML, Format::Toml).unwrap();
        check_good(&toml);
        let yaml = parse(GOOD_YAML, Format::Yaml).unwrap();
        assert_eq!(toml, yaml);
    }

    #[test]
    fn run_time_rules_follow_the_files_sharing_sets_and_slots() {
        let file = parse(GOOD_TOML, Format::Toml).unwrap();
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let redirect = Rule::new(99, 5, Action::Redirect { slot: 77 })
            .ip_proto(17)
            .dst_set(9);
        let mut extra = RulesFile::default();
        // The file's own list (in another order) and its target.
        let a = extra
            .push(
                "ns/a/f",
                &redirect,
                Some(vec![p("2001:db8::/32"), p("198.18.0.0/15")]),
                Some(vec![p("198.19.1.2/32")]),
                Some("eth1"),
            )
            .unwrap();
        let b = extra
            .push(
                "ns/b/f",
                &redirect,
                None,
                Some(vec![p("198.19.1.3/32")]),
                Some("veth9"),
            )
            .unwrap();
        assert_eq!((a, b), (0, 1));
        assert!(extra
            .push("ns/b/f", &redirect, None, None, Some("veth9"))
            .unwrap_err()
            .contains("named \"ns/b/f\" already"));
        assert_eq!(
            extra.push(
                "x",
                &Rule::new(0, 1, Action::Drop),
                None,
                None,
                Some("eth1")
            ),
            Err("only a redirect goes to an interface".into())
        );
        let merged = file.append(&extra).unwrap();
        let n = file.rules.len();
        assert_eq!(merged.rules.len(), n + 2);
        assert_eq!(&merged.rules[..n], &file.rules[..]);
        assert_eq!(merged.names[n..], ["ns/a/f", "ns/b/f"]);
        for (i, rule) in merged.rules.iter().enumerate() {
            assert_eq!(rule.id, i as u32);
        }
        // The video rule's source list and its eth1 slot are shared.
        let video = &file.rules[file.names.iter().position(|n| n == "video").unwrap()];
        assert_eq!(merged.rules[n].src_set, video.src_set);
        assert_eq!(merged.rules[n].action, video.action);
        assert_eq!(
            merged.rules[n + 1].action,
            Action::Redirect {
                slot: file.redirect_targets.len() as u32
            }
        );
        assert_eq!(
            merged.redirect_targets.len(),
            file.redirect_targets.len() + 1
        );
        assert_eq!(merged.sets.len(), file.sets.len() + 2);
        check_good(&file.append(&RulesFile::default()).unwrap());
    }

    #[test]
    fn empty_files_are_empty_rule_sets() {
        assert_eq!(parse("", Format::Toml).unwrap(), RulesFile::default());
        assert_eq!(parse("", Format::Yaml).unwrap(), RulesFile::default());
        assert_eq!(
            parse("rules = []", Format::Toml).unwrap(),
            RulesFile::default()
        );
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/r.toml")).unwrap(),
            Format::Toml
        );
        assert_eq!(
            Format::from_path(Path::new("r.yaml")).unwrap(),
            Format::Yaml
        );
        assert_eq!(Format::from_path(Path::new("r.yml")).unwrap(), Format::Yaml);
        let e = Format::from_path(Path::new("r.json")).unwrap_err();
        assert!(e.to_string().contains("r.json"), "{e}");
        let e = load(Path::new("/nonexistent/griffin-rules.toml")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/griffin-rules.toml"),
            "{e}"
        );
    }

    fn toml_err(rules: &str) -> String {
        let text = format!(
            "[[rules]]\nname = \"first\"\npriority = 1\naction = \"pass\"\n\n[[rules]]\n{rules}\n"
        );
        parse(&text, Format::Toml).unwrap_err().to_string()
    }

    #[test]
    fn bad_rules_name_rule_and_field() {
        let base = "name = \"video\"\npriority = 2\n";
        let cases = [
            (
                "action = \"drop\"\ndst_ports = \"5100-5000\"",
                "rule \"video\" (#1): dst_ports: 5100-5000 is reversed",
            ),
            (
                "action = \"drop\"\ndst_ports = \"http\"",
                "rule \"video\" (#1): dst_ports: \"http\"",
            ),
            (
                "action = \"drop\"\ndst_ports = 70000",
                "rule \"video\" (#1): dst_ports: expected an integer 0-65535, got 70000",
            ),
            (
                "action = \"explode\"",
                "rule \"video\" (#1): action: unknown action \"explode\"",
            ),
            ("action = \"redirect\"", "rule \"video\" (#1): to: missing"),
            (
                "action = \"redirect\"\nto = \"a/b\"",
                "rule \"video\" (#1): to: \"a/b\" is not an interface name",
            ),
            (
                "action = \"drop\"\nto = \"eth0\"",
                "rule \"video\" (#1): to: not allowed with action \"drop\"",
            ),
            ("action = \"cpu\"", "rule \"video\" (#1): cpu: missing"),
            (
                "action = \"cpu\"\ncpu = 256",
                "rule \"video\" (#1): cpu: 256 must be below 256",
            ),
            (
                "action = \"xsk\"\nqueue = -1",
                "rule \"video\" (#1): queue: expected an integer",
            ),
            (
                "action = \"drop\"\nvlan = 4096",
                "rule \"video\" (#1): vlan: expected an integer 0-4095, got 4096",
            ),
            (
                "action = \"drop\"\ndscp = 64",
                "rule \"video\" (#1): dscp: expected an integer 0-63, got 64",
            ),
            (
                "action = \"drop\"\nprotocol = \"gre\"",
                "rule \"video\" (#1): protocol: \"gre\" is not",
            ),
            (
                "action = \"drop\"\nprotocol = 256",
                "rule \"video\" (#1): protocol: expected an integer 0-255",
            ),
            (
                "action = \"drop\"\nsrc = [\"198.18.0.0/33\"]",
                "rule \"video\" (#1): src: invalid prefix: 198.18.0.0/33",
            ),
            (
                "action = \"drop\"\ndst = []",
                "rule \"video\" (#1): dst: empty prefix list",
            ),
            (
                "action = \"drop\"\ndst = [1]",
                "rule \"video\" (#1): dst: expected a string, got 1",
            ),
            (
                "action = \"drop\"\ndst = 7",
                "rule \"video\" (#1): dst: expected a list of prefixes",
            ),
            (
                "action = \"drop\"\nports = \"80\"",
                "rule \"video\" (#1): unknown field `ports`",
            ),
        ];
        for (body, expected) in cases {
            let got = toml_err(&format!("{base}{body}"));
            assert!(
                got.starts_with(expected),
                "{body:?}: got {got:?}, expected {expected:?}"
            );
        }
        assert_eq!(
            toml_err("name = \"video\"\naction = \"drop\""),
            "rule \"video\" (#1): priority: missing"
        );
        assert_eq!(
            toml_err("priority = 1\naction = \"drop\""),
            "rule #1: name: missing"
        );
        assert_eq!(
            toml_err("name = 5\npriority = 1\naction = \"drop\""),
            "rule #1: name: expected a string, got 5"
        );
        assert_eq!(
            toml_err("name = \"first\"\npriority = 1\naction = \"drop\""),
            "rule \"first\" (#1): name: duplicate of rule #0"
        );
        assert_eq!(
            toml_err("name = \"x\"\npriority = -3\naction = \"drop\""),
            "rule \"x\" (#1): priority: expected an integer 0-4294967295, got -3"
        );
    }

    #[test]
    fn bad_files_are_syntax_errors() {
        let e = parse("[[rules]\nname=", Format::Toml).unwrap_err();
        assert!(
            matches!(
                e,
                RulesFileError::Syntax {
                    format: Format::Toml,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("rule = []", Format::Toml).unwrap_err();
        assert!(e.to_string().contains("unknown field `rule`"), "{e}");
        let e = parse("rules: [", Format::Yaml).unwrap_err();
        assert!(
            matches!(
                e,
                RulesFileError::Syntax {
                    format: Format::Yaml,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("rules:\n  - 5\n", Format::Yaml).unwrap_err();
        assert_eq!(e.to_string(), "rule #0: expected a table of keys, got 5");
        let e = parse(
            "rules:\n  - name: a\n    priority: 1\n    action: drop\n    bogus: 1\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("rule \"a\" (#0): unknown field `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn too_many_prefix_lists_are_rejected() {
        let mut text = String::new();
        for i in 0..=MAX_PREFIX_SETS {
            text.push_str(&format!(
                "[[rules]]\nname = \"r{i}\"\npriority = 1\naction = \"drop\"\nsrc = [\"10.{i}.0.0/16\"]\n"
            ));
        }
        let e = parse(&text, Format::Toml).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule \"r64\" (#64): src: more than 64 distinct prefix lists"
        );
    }

    /// `load`'s error with its cause, as the CLI prints it.
    fn load_err(path: &Path) -> String {
        let e = load(path).unwrap_err();
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        format!("{e}: {}", cause.unwrap_or_default())
    }

    /// Regression (issue 14 D3): a FIFO given as the rules file blocked
    /// `griffin xdp attach` in `open` forever, and a link to `/dev/zero`
    /// was read until memory ran out. Each load runs on a thread so that
    /// the old code fails the test instead of hanging it.
    #[test]
    fn only_bounded_regular_files_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let refused =
            griffin_tests::hostile::refused_files(dir.path(), "toml", GOOD_TOML, MAX_FILE_BYTES);
        for (path, cause) in refused {
            let expected = format!("reading {}: {cause}", path.display());
            let got =
                griffin_tests::liveness::within(std::time::Duration::from_secs(10), move || {
                    load_err(&path)
                });
            assert_eq!(got, Some(expected));
        }
        let full = dir.path().join("full.yaml");
        let text = griffin_tests::hostile::padded(GOOD_YAML, MAX_FILE_BYTES as usize);
        std::fs::write(&full, text).unwrap();
        check_good(&load(&full).unwrap());
    }

    /// What fuzzing holds `parse` to: anything accepted is consistent and
    /// encodes; an error names the rule (by position) and the field, or is
    /// an unknown or repeated key or a rule that is not a table, or is a
    /// syntax error (in TOML with its line, or naming `rules` or the
    /// unknown key).
    fn check_outcome(text: &str, format: Format) -> Result<(), String> {
        let file = match parse(text, format) {
            Ok(file) => file,
            Err(RulesFileError::Rule { field: Some(f), .. })
                if FIELDS.split(' ').any(|k| k == f) =>
            {
                return Ok(())
            }
            Err(RulesFileError::Rule {
                field: None,
                message,
                ..
            }) if [
                "unknown field",
                "duplicate field",
                "expected a table of keys",
                "more than",
            ]
            .iter()
            .any(|m| message.starts_with(m)) =>
            {
                return Ok(())
            }
            Err(RulesFileError::Syntax {
                format: Format::Toml,
                message,
            }) if message.starts_with("line ")
                || message.starts_with("rules")
                || message.contains("unknown field") =>
            {
                return Ok(())
            }
            Err(RulesFileError::Syntax {
                format: Format::Yaml,
                ..
            }) => return Ok(()),
            Err(e) => return Err(format!("does not say where: {e}")),
        };
        let fail = |what: &str| Err(format!("accepted but {what}: {file:?}"));
        let mut names = file.names.clone();
        names.sort();
        names.dedup();
        if names.len() != file.rules.len() || file.names.iter().any(|n| n.trim().is_empty()) {
            return fail("names are not unique and non-empty");
        }
        if crate::rules::encode_rules(&file.rules).is_err() {
            return fail("the rules do not encode");
        }
        let mut sets = PrefixSets::new();
        for (set, prefixes) in file.sets.iter().enumerate() {
            for prefix in prefixes {
                sets.insert(set as u8, *prefix).unwrap();
            }
        }
        if sets != file.prefix_sets {
            return fail("the prefix sets differ from their lists");
        }
        let mut cpus = Vec::new();
        for (i, rule) in file.rules.iter().enumerate() {
            let set_ok = |s: Option<u8>| s.is_none_or(|s| usize::from(s) < file.sets.len());
            let target_ok = match rule.action {
                Action::Redirect { slot } => (slot as usize) < file.redirect_targets.len(),
                Action::Xsk { queue } => queue.is_none_or(|q| q < TARGET_SLOTS),
                Action::Cpu { cpu } => {
                    cpus.push(cpu);
                    cpu < TARGET_SLOTS
                }
                Action::Pass | Action::Drop => true,
            };
            if rule.id as usize != i || !set_ok(rule.src_set) || !set_ok(rule.dst_set) || !target_ok
            {
                return fail("a rule refers to what is not there");
            }
        }
        cpus.sort_unstable();
        cpus.dedup();
        let slots_ok = file
            .redirect_targets
            .iter()
            .enumerate()
            .all(|(i, t)| t.slot as usize == i);
        if cpus != file.cpu_targets || !slots_ok {
            return fail("the targets differ from the rules'");
        }
        Ok(())
    }

    proptest! {
        /// The good samples (TOML and YAML) cut, with a byte changed, a
        /// line dropped or repeated and noise inserted, read in either
        /// syntax, and random bytes.
        #[test]
        fn mangled_files_are_accepted_whole_or_refused_saying_where(
            yaml_sample in any::<bool>(),
            yaml in any::<bool>(),
            seed in 1..u64::MAX,
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let sample = if yaml_sample { GOOD_YAML } else { GOOD_TOML };
            let text = griffin_tests::hostile::mangle(sample, &mut griffin_tests::Rng(seed));
            let random = String::from_utf8_lossy(&bytes).into_owned();
            let format = if yaml { Format::Yaml } else { Format::Toml };
            for text in [&text, &random] {
                if let Err(e) = check_outcome(text, format) {
                    prop_assert!(false, "{}\n{:?}", e, text);
                }
            }
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,200}") {
            for format in [Format::Toml, Format::Yaml] {
                if let Err(e) = check_outcome(&text, format) {
                    prop_assert!(false, "{}\n{:?}", e, text);
                }
            }
        }

        #[test]
        fn rule_like_garbage_never_panics(
            keys in proptest::collection::vec(
                (
                    prop::sample::select(vec![
                        "name", "priority", "action", "to", "queue", "cpu", "vlan",
                        "protocol", "dst_ports", "src", "dst", "dscp", "junk",
                    ]),
                    prop::sample::select(vec![
                        "\"x\"", "0", "-1", "65536", "4294967296", "\"udp\"", "\"5-1\"",
                        "\"198.18.0.0/15\"", "[\"::/0\", \"1.2.3.4\"]", "[]", "true", "1.5",
                        "\"redirect\"", "\"cpu\"", "\"xsk\"", "{ a = 1 }", "\"\u{e9}\u{e9}\"",
                    ]),
                ),
                0..8,
            )
        ) {
            let mut text = String::from("[[rules]]\n");
            let mut seen = std::collections::BTreeSet::new();
            for (key, value) in keys {
                if seen.insert(key) {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            if let Err(e) = check_outcome(&text, Format::Toml) {
                prop_assert!(false, "{}\n{:?}", e, text);
            }
        }
    }
}
