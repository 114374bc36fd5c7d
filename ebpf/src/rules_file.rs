//! Rules files: a TOML or YAML description of a rule set, turned into
//! [`Rule`]s, [`PrefixSets`] and the redirect/CPU targets they need.
//!
//! The format is chosen by extension (`.toml`, `.yaml` or `.yml`). A file
//! holds one list, `rules`; each rule has
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
//! | `src`       | no       | list of source prefixes (`10.0.0.0/8`, `2001:db8::/32`, bare addresses) |
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
//! src = ["10.0.0.0/8", "2001:db8::/32"]
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
//!     src: ["10.0.0.0/8", "2001:db8::/32"]
//!   - name: block-telnet
//!     priority: 40
//!     action: drop
//!     protocol: tcp
//!     dst_ports: 23
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    rules::{Action, Prefix, PrefixSets, Rule},
    types::{MAX_PREFIX_SETS, MAX_RULES},
};

/// Entries of the devmap, xskmap and cpumap (`GRIFFIN_DEVMAP_SIZE` etc.).
pub const TARGET_SLOTS: u32 = 256;
/// Longest interface name (`IFNAMSIZ - 1`).
const IFNAME_MAX: usize = 15;

/// Syntax of a rules file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// YAML (`.yaml`, `.yml`).
    Yaml,
}

impl Format {
    /// The format for `path`'s extension.
    pub fn from_path(path: &Path) -> Result<Self, RulesFileError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Ok(Self::Toml),
            Some("yaml" | "yml") => Ok(Self::Yaml),
            _ => Err(RulesFileError::Extension {
                path: path.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Toml => "TOML",
            Self::Yaml => "YAML",
        })
    }
}

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
    /// The file could not be read.
    #[error("reading {path}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Value>,
    priority: Option<Value>,
    action: Option<Value>,
    to: Option<Value>,
    queue: Option<Value>,
    cpu: Option<Value>,
    vlan: Option<Value>,
    protocol: Option<Value>,
    dst_ports: Option<Value>,
    src: Option<Value>,
    dst: Option<Value>,
    dscp: Option<Value>,
}

/// Reads and parses the rules file at `path` (format by extension).
pub fn load(path: &Path) -> Result<RulesFile, RulesFileError> {
    let format = Format::from_path(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| RulesFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, format)
}

/// Parses and validates rules file text.
pub fn parse(text: &str, format: Format) -> Result<RulesFile, RulesFileError> {
    let syntax = |message: String| RulesFileError::Syntax { format, message };
    let raw: RawFile = match format {
        Format::Toml => {
            toml::from_str(text).map_err(|e| syntax(e.to_string().trim().to_owned()))?
        }
        // An empty YAML document is an empty rule set.
        Format::Yaml if text.trim().is_empty() => RawFile { rules: Vec::new() },
        Format::Yaml => serde_norway::from_str(text).map_err(|e| syntax(e.to_string()))?,
    };
    let mut builder = Builder::default();
    for (index, value) in raw.rules.into_iter().enumerate() {
        builder.rule(index, value)?;
    }
    Ok(builder.finish())
}

#[derive(Default)]
struct Builder {
    out: RulesFile,
    sets: BTreeMap<Vec<Prefix>, u8>,
    slots: BTreeMap<String, u32>,
}

/// Error helper: `rule <ref>: <field>: <message>`.
struct Ctx {
    rule: RuleRef,
}

impl Ctx {
    fn err(&self, field: &'static str, message: impl Into<String>) -> RulesFileError {
        RulesFileError::Rule {
            rule: self.rule.clone(),
            field: Some(field),
            message: message.into(),
        }
    }

    fn int<T: TryFrom<u64> + fmt::Display>(
        &self,
        field: &'static str,
        value: &Value,
        max: T,
    ) -> Result<T, RulesFileError> {
        value
            .as_u64()
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| {
                self.err(
                    field,
                    format!("expected an integer 0-{max}, got {}", show(value)),
                )
            })
    }

    fn string<'v>(&self, field: &'static str, value: &'v Value) -> Result<&'v str, RulesFileError> {
        value
            .as_str()
            .ok_or_else(|| self.err(field, format!("expected a string, got {}", show(value))))
    }

    fn required<'v>(
        &self,
        field: &'static str,
        value: &'v Option<Value>,
    ) -> Result<&'v Value, RulesFileError> {
        value.as_ref().ok_or_else(|| self.err(field, "missing"))
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

impl Builder {
    fn rule(&mut self, index: usize, value: Value) -> Result<(), RulesFileError> {
        let name = value.get("name").and_then(Value::as_str).map(str::to_owned);
        let ctx = Ctx {
            rule: RuleRef { name, index },
        };
        if !value.is_object() {
            return Err(RulesFileError::Rule {
                rule: ctx.rule,
                field: None,
                message: format!("expected a table of keys, got {}", show(&value)),
            });
        }
        if index >= MAX_RULES as usize {
            return Err(RulesFileError::Rule {
                rule: ctx.rule,
                field: None,
                message: format!("more than {MAX_RULES} rules"),
            });
        }
        let raw: RawRule = serde_json::from_value(value).map_err(|e| RulesFileError::Rule {
            rule: ctx.rule.clone(),
            field: None,
            message: e.to_string(),
        })?;

        let name = ctx.string("name", ctx.required("name", &raw.name)?)?;
        if name.trim().is_empty() {
            return Err(ctx.err("name", "must not be empty"));
        }
        if let Some(other) = self.out.names.iter().position(|n| n == name) {
            return Err(ctx.err("name", format!("duplicate of rule #{other}")));
        }
        let priority = ctx.int(
            "priority",
            ctx.required("priority", &raw.priority)?,
            u32::MAX,
        )?;
        let action = self.action(&ctx, &raw)?;
        let id = index as u32;
        let mut rule = Rule::new(id, priority, action);
        if let Some(vlan) = &raw.vlan {
            let id = ctx.int("vlan", vlan, 4095u16)?;
            if id > 4095 {
                return Err(ctx.err("vlan", format!("expected an integer 0-4095, got {id}")));
            }
            rule = rule.vlan(id);
        }
        if let Some(proto) = &raw.protocol {
            rule = rule.ip_proto(protocol(&ctx, proto)?);
        }
        if let Some(ports) = &raw.dst_ports {
            rule = rule.dst_ports(port_range(&ctx, ports)?);
        }
        if let Some(src) = &raw.src {
            rule = rule.src_set(self.prefix_set(&ctx, "src", src)?);
        }
        if let Some(dst) = &raw.dst {
            rule = rule.dst_set(self.prefix_set(&ctx, "dst", dst)?);
        }
        if let Some(dscp) = &raw.dscp {
            let dscp = ctx.int("dscp", dscp, u8::MAX)?;
            if dscp > 63 {
                return Err(ctx.err("dscp", format!("expected an integer 0-63, got {dscp}")));
            }
            rule = rule.dscp(dscp);
        }
        // Anything the encoder still rejects is a bug above; report it anyway.
        rule.encode().map_err(|e| RulesFileError::Rule {
            rule: ctx.rule.clone(),
            field: None,
            message: e.reason,
        })?;
        self.out.names.push(name.to_owned());
        self.out.rules.push(rule);
        Ok(())
    }

    fn action(&mut self, ctx: &Ctx, raw: &RawRule) -> Result<Action, RulesFileError> {
        let action = ctx.string("action", ctx.required("action", &raw.action)?)?;
        let allowed: &[&'static str] = match action {
            "pass" | "drop" => &[],
            "redirect" => &["to"],
            "xsk" => &["queue"],
            "cpu" => &["cpu"],
            other => {
                return Err(ctx.err(
                    "action",
                    format!("unknown action {other:?} (expected pass, drop, redirect, xsk or cpu)"),
                ))
            }
        };
        for (field, value) in [("to", &raw.to), ("queue", &raw.queue), ("cpu", &raw.cpu)] {
            if value.is_some() && !allowed.contains(&field) {
                return Err(ctx.err(field, format!("not allowed with action {action:?}")));
            }
        }
        let below = |field: &'static str, v: u32| {
            if v < TARGET_SLOTS {
                Ok(v)
            } else {
                Err(ctx.err(field, format!("{v} must be below {TARGET_SLOTS}")))
            }
        };
        Ok(match action {
            "pass" => Action::Pass,
            "drop" => Action::Drop,
            "redirect" => {
                let to = ctx.string("to", ctx.required("to", &raw.to)?)?;
                if to.is_empty()
                    || to.len() > IFNAME_MAX
                    || to.contains(['/', '\0'])
                    || to.chars().any(char::is_whitespace)
                    || to == "."
                    || to == ".."
                {
                    return Err(ctx.err("to", format!("{to:?} is not an interface name")));
                }
                let next = self.slots.len() as u32;
                let slot = match self.slots.get(to) {
                    Some(&slot) => slot,
                    None => {
                        below("to", next).map_err(|_| {
                            ctx.err("to", format!("more than {TARGET_SLOTS} redirect targets"))
                        })?;
                        self.slots.insert(to.to_owned(), next);
                        self.out.redirect_targets.push(RedirectTarget {
                            slot: next,
                            iface: to.to_owned(),
                        });
                        next
                    }
                };
                Action::Redirect { slot }
            }
            "xsk" => Action::Xsk {
                queue: match &raw.queue {
                    Some(q) => Some(below("queue", ctx.int("queue", q, u32::MAX)?)?),
                    None => None,
                },
            },
            _ => {
                let cpu = below(
                    "cpu",
                    ctx.int("cpu", ctx.required("cpu", &raw.cpu)?, u32::MAX)?,
                )?;
                if let Err(at) = self.out.cpu_targets.binary_search(&cpu) {
                    self.out.cpu_targets.insert(at, cpu);
                }
                Action::Cpu { cpu }
            }
        })
    }

    fn prefix_set(
        &mut self,
        ctx: &Ctx,
        field: &'static str,
        value: &Value,
    ) -> Result<u8, RulesFileError> {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::String(_) => vec![value],
            other => {
                return Err(ctx.err(
                    field,
                    format!("expected a list of prefixes, got {}", show(other)),
                ))
            }
        };
        if items.is_empty() {
            return Err(ctx.err(
                field,
                "empty prefix list (omit the key to match everything)",
            ));
        }
        let mut prefixes = Vec::with_capacity(items.len());
        for item in items {
            let text = ctx.string(field, item)?;
            let prefix: Prefix = text
                .trim()
                .parse()
                .map_err(|e: crate::PrefixError| ctx.err(field, e.to_string()))?;
            prefixes.push(prefix);
        }
        prefixes.sort();
        prefixes.dedup();
        if let Some(&set) = self.sets.get(&prefixes) {
            return Ok(set);
        }
        let set = u8::try_from(self.sets.len())
            .ok()
            .filter(|&s| s < MAX_PREFIX_SETS)
            .ok_or_else(|| {
                ctx.err(
                    field,
                    format!("more than {MAX_PREFIX_SETS} distinct prefix lists"),
                )
            })?;
        for prefix in &prefixes {
            self.out
                .prefix_sets
                .insert(set, *prefix)
                .map_err(|e| ctx.err(field, e.to_string()))?;
        }
        self.out.sets.push(prefixes.clone());
        self.sets.insert(prefixes, set);
        Ok(set)
    }

    fn finish(self) -> RulesFile {
        self.out
    }
}

fn protocol(ctx: &Ctx, value: &Value) -> Result<u8, RulesFileError> {
    if value.is_number() {
        return ctx.int("protocol", value, u8::MAX);
    }
    let text = ctx.string("protocol", value)?;
    Ok(match text.trim().to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        other => other.parse().map_err(|_| {
            ctx.err(
                "protocol",
                format!("{text:?} is not tcp, udp, icmp, icmpv6, sctp or a number 0-255"),
            )
        })?,
    })
}

fn port_range(ctx: &Ctx, value: &Value) -> Result<RangeInclusive<u16>, RulesFileError> {
    if value.is_number() {
        let port = ctx.int("dst_ports", value, u16::MAX)?;
        return Ok(port..=port);
    }
    let text = ctx.string("dst_ports", value)?;
    let port = |s: &str| {
        s.trim().parse::<u16>().map_err(|_| {
            ctx.err(
                "dst_ports",
                format!("{text:?} is not PORT or LOW-HIGH (ports 0-65535)"),
            )
        })
    };
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(ctx.err("dst_ports", format!("{lo}-{hi} is reversed")));
    }
    Ok(lo..=hi)
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
src = ["10.0.0.0/8", "2001:db8::/32"]

[[rules]]
name = "telemetry"
priority = 5
action = "xsk"
queue = 3
vlan = 100
dscp = 46
dst = ["2001:db8::/32", "10.1.2.3/8"]

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
    src: ["10.0.0.0/8", "2001:db8::/32"]
  - name: telemetry
    priority: 5
    action: xsk
    queue: 3
    vlan: 100
    dscp: 46
    dst:
      - 2001:db8::/32
      - 10.1.2.3/8
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
                vec!["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()],
                vec!["192.0.2.0/24".to_owned()]
            ]
        );
        let mut expected = PrefixSets::new();
        expected.insert(0, "10.0.0.0/8".parse().unwrap()).unwrap();
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
                "action = \"drop\"\nsrc = [\"10.0.0.0/33\"]",
                "rule \"video\" (#1): src: invalid prefix: 10.0.0.0/33",
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

    proptest! {
        #[test]
        fn garbage_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text, Format::Toml);
            let _ = parse(&text, Format::Yaml);
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
                        "\"10.0.0.0/8\"", "[\"::/0\", \"1.2.3.4\"]", "[]", "true", "1.5",
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
            let _ = parse(&text, Format::Toml);
        }
    }
}
