//! The acceleration request a pod carries in its [`ANNOTATION`]: parsed,
//! checked and turned into the canonical [`AccelerationRequest`]. Pure: text
//! in, value or error out.
//!
//! # The value
//!
//! JSON or YAML (JSON-looking text, starting with `{` or `[`, is read as
//! JSON first and its syntax errors are the ones reported), at most
//! [`MAX_BYTES`]. The top level is the request's object, or the GEdge seed's
//! wrapper `Acceleration: {...}` (as in the seed's service spec) holding it
//! alone. Fields, with the seed's spellings:
//!
//! | field | value | default |
//! |---|---|---|
//! | `topologyAware` | `true`/`false` (also the strings `"true"`/`"false"`, any case) | `placement != none` |
//! | `communication` | `SRIOV`, `RDMA` | none |
//! | `compute` | `GPU`, `FPGA`, `AIX`, `NPU` | none |
//! | `placement` | `none`, `best-effort`, `restricted`, `single-numa-node` | `best-effort` if `topologyAware`, else `none` |
//! | `isolation` | `none`, `isolated` | `none` |
//! | `flows` | list of `{name, protocol, ports, prefixes}` | none |
//! | `containers` | list of container names | every container |
//!
//! **The seed's fields.** `communication` and `compute` are lists. They are
//! accepted as the seed writes them — a string holding a list
//! (`'["SRIOV", "RDMA"]'`) and a list whose strings hold comma-separated
//! items, the last one with a trailing `...` (`'["GPU, FPGA, AIX..."]'`:
//! the seed's "and so on", which adds nothing) — as well as plain lists and
//! a bare comma-separated string (`SRIOV, RDMA`). Items are matched ignoring
//! letter case; each may appear once. `compute` names the accelerator kinds
//! Griffin discovers ([`Compute::device_kind`]): `GPU` (a GPU), `FPGA` (an
//! FPGA card), `AIX` (the seed's AI accelerator, a PCI processing
//! accelerator) and `NPU` (any other neural/processing accelerator card,
//! PCI class 0x12, discovered as the same kind as `AIX`).
//!
//! **Griffin's additions.**
//! - `placement`: the kubelet Topology Manager policy Griffin applies to the
//!   pod's CPUs, memory and devices (the names of `--topology-manager-policy`,
//!   [`Policy`]). `topologyAware: true` alone means `best-effort` (the seed:
//!   "topology awareness best-effort"); `placement` alone sets
//!   `topologyAware` to `placement != none`; both given must agree.
//! - `isolation`: `isolated` asks for the pod's exclusive CPUs as a cgroup v2
//!   isolated cpuset partition (no load balancing) where the node allows it;
//!   the request only records it.
//! - `flows`: data flows the node's XDP split steers to the pod (the split's
//!   rules, `griffin_ebpf::rules_file`): `protocol` `udp`, `tcp` or `any`
//!   (default; with ports: TCP and UDP), `ports` the destination ports (a
//!   port, `"LOW-HIGH"`, or a list of them; ports 1-65535, ranges in order
//!   and not overlapping; default every port), `prefixes` the source prefixes
//!   the flow comes from (`198.18.0.0/15`, `2001:db8::/32`, or a list: each
//!   `ADDR/LEN` with no host bits set, none inside another listed one;
//!   default every source), `name` optional (1-63 of `A-Z a-z 0-9 . _ -`,
//!   unique). A flow names ports or prefixes: one matching every packet
//!   would take the node's management traffic. At most [`MAX_FLOWS`] flows
//!   of at most [`MAX_FLOW_ITEMS`] port ranges and prefixes each.
//! - `containers`: the names of the containers the request applies to
//!   (Kubernetes container names, each once); left out or `null`, it
//!   applies to every container of the pod's `spec.containers`.
//!
//! A `null` field is the field left out. Unknown fields are refused, and
//! every error names the field path:
//! `communication[1]: "SRIOVX" is not one of SRIOV, RDMA`,
//! `flows[0].ports: 70000 is not a port`.
//!
//! # The canonical form
//!
//! [`AccelerationRequest`] serializes to JSON with every field spelled out
//! (lists sorted, `null` for "every"); reading that JSON back
//! ([`parse`], or serde) gives the same request.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use griffin_devices::DeviceKind;
use griffin_ebpf::Prefix;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

pub use crate::alloc::Policy;

/// The pod annotation that carries the request.
pub const ANNOTATION: &str = "griffin.gedge.io/acceleration";

/// Longest value read, bytes: the Kubernetes limit on all of a pod's
/// annotations together (256 KiB).
pub const MAX_BYTES: usize = 256 * 1024;

/// Most flows in one request.
pub const MAX_FLOWS: usize = 32;

/// Most port ranges, and most prefixes, in one flow.
pub const MAX_FLOW_ITEMS: usize = 64;

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The value is larger than [`MAX_BYTES`].
    #[error("the value is {len} bytes, more than {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Neither JSON nor YAML.
    #[error("{syntax}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        syntax: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The value as a whole is wrong (empty, not an object).
    #[error("{0}")]
    Value(String),
    /// A field is wrong.
    #[error("{path}: {message}")]
    Field {
        /// The field path: `flows[0].ports[1]`, `Acceleration.compute`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl RequestError {
    /// The field path, for an error of a field.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Field { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A communication kind (`communication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Communication {
    /// An SR-IOV virtual function for the pod.
    Sriov,
    /// An RDMA device for the pod (moved with it in exclusive netns mode).
    Rdma,
}

/// A compute accelerator kind (`compute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compute {
    /// A GPU.
    Gpu,
    /// An FPGA card.
    Fpga,
    /// The seed's AIX AI accelerator (a PCI processing accelerator).
    Aix,
    /// Another neural/processing accelerator card (PCI class 0x12).
    Npu,
}

impl Compute {
    /// The kind Griffin's discovery gives such a device.
    pub fn device_kind(self) -> DeviceKind {
        match self {
            Self::Gpu => DeviceKind::Gpu,
            Self::Fpga => DeviceKind::Fpga,
            Self::Aix | Self::Npu => DeviceKind::Accelerator,
        }
    }
}

/// `isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Exclusive CPUs in an ordinary cpuset.
    #[default]
    None,
    /// Exclusive CPUs as a cgroup v2 isolated cpuset partition where
    /// available.
    Isolated,
}

/// A flow's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowProtocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// Any protocol (with ports: TCP and UDP, which carry them).
    #[default]
    Any,
}

impl FlowProtocol {
    /// The IP protocol number an XDP rule matches (`None`: any).
    pub fn ip_proto(self) -> Option<u8> {
        match self {
            Self::Udp => Some(17),
            Self::Tcp => Some(6),
            Self::Any => None,
        }
    }
}

/// Names of the values of a field's enumeration, as written.
trait Named: Sized + Copy + 'static {
    const NAMES: &'static [(Self, &'static str)];

    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::NAMES
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("?", |(_, n)| n)
    }

    fn from_name(text: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(text))
            .map(|(v, _)| *v)
    }

    fn listed() -> String {
        let names: Vec<&str> = Self::NAMES.iter().map(|(_, n)| *n).collect();
        names.join(", ")
    }
}

impl Named for Communication {
    const NAMES: &'static [(Self, &'static str)] = &[(Self::Sriov, "SRIOV"), (Self::Rdma, "RDMA")];
}

impl Named for Compute {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::Gpu, "GPU"),
        (Self::Fpga, "FPGA"),
        (Self::Aix, "AIX"),
        (Self::Npu, "NPU"),
    ];
}

impl Named for Isolation {
    const NAMES: &'static [(Self, &'static str)] =
        &[(Self::None, "none"), (Self::Isolated, "isolated")];
}

impl Named for FlowProtocol {
    const NAMES: &'static [(Self, &'static str)] =
        &[(Self::Udp, "udp"), (Self::Tcp, "tcp"), (Self::Any, "any")];
}

impl Named for Policy {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::None, "none"),
        (Self::BestEffort, "best-effort"),
        (Self::Restricted, "restricted"),
        (Self::SingleNumaNode, "single-numa-node"),
    ];
}

macro_rules! named_display {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    )*};
}

named_display!(Communication, Compute, Isolation, FlowProtocol);

/// An inclusive range of destination ports, `first <= last`, `first >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port.
    pub last: u16,
}

impl PortRange {
    /// The ports, as an XDP rule's `dst_ports` takes them.
    pub fn range(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A single port as a number, a range as `"LOW-HIGH"`.
impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

/// A data flow to steer to the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Its name, when given.
    pub name: Option<String>,
    /// The IP protocol.
    pub protocol: FlowProtocol,
    /// Destination ports, ascending and disjoint (`None`: every port).
    pub ports: Option<Vec<PortRange>>,
    /// Source prefixes, ascending (`None`: every source).
    #[serde(serialize_with = "prefixes")]
    pub prefixes: Option<Vec<Prefix>>,
}

fn prefixes<S: Serializer>(p: &Option<Vec<Prefix>>, s: S) -> Result<S::Ok, S::Error> {
    p.as_ref()
        .map(|list| list.iter().map(ToString::to_string).collect::<Vec<_>>())
        .serialize(s)
}

/// A parsed, checked request: the canonical form. Serializes to JSON with
/// the annotation's field names; deserializing runs [`parse`]'s checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccelerationRequest {
    /// Whether CPUs, memory and devices are placed by topology
    /// (`placement != none`).
    pub topology_aware: bool,
    /// Communication devices, ascending.
    pub communication: Vec<Communication>,
    /// Compute accelerators, ascending.
    pub compute: Vec<Compute>,
    /// Topology Manager policy.
    pub placement: Policy,
    /// CPU isolation.
    pub isolation: Isolation,
    /// Data flows, in the order given.
    pub flows: Vec<Flow>,
    /// The containers it applies to (`None`: every container), ascending.
    pub containers: Option<Vec<String>>,
}

impl Default for AccelerationRequest {
    /// The empty request `{}`.
    fn default() -> Self {
        Self {
            topology_aware: false,
            communication: Vec::new(),
            compute: Vec::new(),
            placement: Policy::None,
            isolation: Isolation::None,
            flows: Vec::new(),
            containers: None,
        }
    }
}

impl AccelerationRequest {
    /// Whether the request applies to the container named `name`.
    pub fn applies_to(&self, name: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == name))
    }

    /// The canonical JSON (one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for AccelerationRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        from_raw(&raw).map_err(de::Error::custom)
    }
}

/// The request in a pod's annotations: `None` without [`ANNOTATION`].
pub fn from_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<Result<AccelerationRequest, RequestError>> {
    annotations?.get(ANNOTATION).map(|v| parse(v))
}

/// Parses and checks an annotation value (JSON or YAML).
pub fn parse(text: &str) -> Result<AccelerationRequest, RequestError> {
    if text.len() > MAX_BYTES {
        return Err(RequestError::TooLarge {
            len: text.len(),
            max: MAX_BYTES,
        });
    }
    from_raw(&decode(text)?)
}

/// The value's syntax tree.
fn decode(text: &str) -> Result<Raw, RequestError> {
    let start = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if start.is_empty() {
        return Err(RequestError::Value("the value is empty".into()));
    }
    too_deep(text)?;
    let yaml = || serde_norway::from_str::<Raw>(text);
    if start.starts_with(['{', '[']) {
        match serde_json::from_str::<Raw>(start) {
            Ok(raw) => Ok(raw),
            // YAML's flow style (`{topologyAware: true}`) looks like JSON.
            Err(json) => yaml().map_err(|_| RequestError::Syntax {
                syntax: "JSON",
                message: json.to_string(),
            }),
        }
    } else {
        yaml().map_err(|e| RequestError::Syntax {
            syntax: "YAML",
            message: e.to_string(),
        })
    }
}

/// Deepest nesting of brackets (`[`, `{`) read, counting those in strings
/// too: far more than any request needs, and the YAML parser (libyaml)
/// takes time quadratic in the depth of flow collections.
const MAX_NESTING: usize = 64;

/// Refuses text whose brackets nest deeper than [`MAX_NESTING`].
fn too_deep(text: &str) -> Result<(), RequestError> {
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(RequestError::Syntax {
                        syntax: "JSON/YAML",
                        message: format!("brackets nested deeper than {MAX_NESTING}"),
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A JSON or YAML value, map entries in order with their duplicates (which
/// are refused by name, not silently merged).
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Raw>),
    Map(Vec<(String, Raw)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Raw>()? {
            let key = match key {
                Raw::Str(s) => s,
                Raw::Int(i) => i.to_string(),
                Raw::Bool(b) => b.to_string(),
                Raw::Null => "null".into(),
                other => {
                    return Err(de::Error::custom(format!(
                        "a key is {}, not a name",
                        kind(&other)
                    )))
                }
            };
            entries.push((key, map.next_value()?));
        }
        Ok(Raw::Map(entries))
    }
}

/// What a value is, for messages: `"GPUX"`, `7`, `a list`.
fn kind(raw: &Raw) -> String {
    match raw {
        Raw::Null => "null".into(),
        Raw::Bool(b) => b.to_string(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => format!("{f:?}"),
        Raw::Str(s) => quoted(s),
        Raw::List(_) => "a list".into(),
        Raw::Map(_) => "an object".into(),
    }
}

/// `s` quoted for a message, cut after 40 characters.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{:?}...", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// A field path being walked.
#[derive(Clone, Debug)]
struct Path(String);

impl Path {
    fn field(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_owned())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    fn error(&self, message: impl Into<String>) -> RequestError {
        RequestError::Field {
            path: self.0.clone(),
            message: message.into(),
        }
    }
}

const FIELDS: [&str; 7] = [
    "topologyAware",
    "communication",
    "compute",
    "placement",
    "isolation",
    "flows",
    "containers",
];
const FLOW_FIELDS: [&str; 4] = ["name", "protocol", "ports", "prefixes"];
const WRAPPER: &str = "Acceleration";

/// `a, b, c or d`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The entries of an object, each key once; an unknown key is refused.
fn entries<'a>(
    path: &Path,
    entries: &'a [(String, Raw)],
    known: &[&str],
) -> Result<Vec<(&'a str, &'a Raw)>, RequestError> {
    let mut out: Vec<(&str, &Raw)> = Vec::new();
    for (key, value) in entries {
        let at = path.field(key);
        if !known.contains(&key.as_str()) {
            let hint = known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(key))
                .map(|k| format!("; did you mean {k}?"))
                .unwrap_or_default();
            return Err(at.error(format!("unknown field (expected {}){hint}", one_of(known))));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(at.error("given twice"));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn from_raw(raw: &Raw) -> Result<AccelerationRequest, RequestError> {
    let Raw::Map(top) = raw else {
        return Err(RequestError::Value(format!(
            "the value is {}, not an object of the request's fields ({})",
            kind(raw),
            FIELDS.join(", ")
        )));
    };
    if top.iter().any(|(k, _)| k == WRAPPER) {
        if let Some((key, _)) = top.iter().find(|(k, _)| k != WRAPPER) {
            return Err(Path(key.clone()).error(format!(
                "unknown field beside {WRAPPER} (which holds the request alone)"
            )));
        }
        if top.len() > 1 {
            return Err(Path(WRAPPER.into()).error("given twice"));
        }
        let path = Path(WRAPPER.into());
        return match &top[0].1 {
            Raw::Null => request(&path, &[]),
            Raw::Map(fields) => request(&path, fields),
            other => Err(path.error(format!(
                "expected an object of the request's fields, got {}",
                kind(other)
            ))),
        };
    }
    request(&Path(String::new()), top)
}

fn request(path: &Path, fields: &[(String, Raw)]) -> Result<AccelerationRequest, RequestError> {
    let mut r = AccelerationRequest::default();
    let mut topology_aware = None;
    let mut placement = None;
    for (key, value) in entries(path, fields, &FIELDS)? {
        let at = path.field(key);
        if *value == Raw::Null {
            continue;
        }
        match key {
            "topologyAware" => topology_aware = Some(boolean(&at, value)?),
            "communication" => r.communication = named_list(&at, value)?,
            "compute" => r.compute = named_list(&at, value)?,
            "placement" => placement = Some((at.clone(), named::<Policy>(&at, value)?)),
            "isolation" => r.isolation = named(&at, value)?,
            "flows" => r.flows = flows(&at, value)?,
            "containers" => r.containers = Some(containers(&at, value)?),
            _ => unreachable!("entries() checked the key"),
        }
    }
    match (topology_aware, placement) {
        (None, None) => {}
        (Some(aware), None) => {
            r.topology_aware = aware;
            r.placement = if aware {
                Policy::BestEffort
            } else {
                Policy::None
            };
        }
        (None, Some((_, p))) => {
            r.placement = p;
            r.topology_aware = p != Policy::None;
        }
        (Some(aware), Some((at, p))) => {
            if aware != (p != Policy::None) {
                return Err(at.error(format!("{} contradicts topologyAware: {aware}", p.name())));
            }
            r.placement = p;
            r.topology_aware = aware;
        }
    }
    Ok(r)
}

fn boolean(path: &Path, value: &Raw) -> Result<bool, RequestError> {
    match value {
        Raw::Bool(b) => Ok(*b),
        Raw::Str(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Raw::Str(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(path.error(format!("expected true or false, got {}", kind(other)))),
    }
}

fn named<T: Named + PartialEq>(path: &Path, value: &Raw) -> Result<T, RequestError> {
    match value {
        Raw::Str(s) => T::from_name(s.trim())
            .ok_or_else(|| path.error(format!("{} is not one of {}", quoted(s), T::listed()))),
        other => Err(path.error(format!(
            "expected one of {}, got {}",
            T::listed(),
            kind(other)
        ))),
    }
}

/// A list of names in any of the seed's forms (see the module doc), each
/// item with the path of the list entry it was written in.
fn items(path: &Path, value: &Raw) -> Result<Vec<(Path, String)>, RequestError> {
    let list = match value {
        Raw::Str(s) if s.trim_start().starts_with('[') => {
            // The seed's `'["SRIOV", "RDMA"]'`: a list written in a string.
            too_deep(s).map_err(|e| path.error(format!("{} is not a list: {e}", quoted(s))))?;
            match serde_norway::from_str::<Raw>(s) {
                Ok(Raw::List(list)) => list,
                Ok(other) => {
                    return Err(path.error(format!(
                        "{} is {}, not a list",
                        quoted(s),
                        kind(&other)
                    )))
                }
                Err(e) => {
                    return Err(path.error(format!("{} is not a list: {e}", quoted(s))));
                }
            }
        }
        Raw::Str(s) => return Ok(split(path, s)),
        Raw::List(list) => list.clone(),
        other => {
            return Err(path.error(format!(
                "expected a list or a comma-separated string, got {}",
                kind(other)
            )))
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match item {
            Raw::Str(s) => out.extend(split(&path.index(i), s)),
            other => {
                return Err(path
                    .index(i)
                    .error(format!("expected a name, got {}", kind(other))))
            }
        }
    }
    Ok(out)
}

/// `"GPU, FPGA"` → its items (none for a blank string).
fn split(path: &Path, s: &str) -> Vec<(Path, String)> {
    if s.trim().is_empty() {
        return Vec::new();
    }
    s.split(',')
        .map(|item| (path.clone(), item.trim().to_owned()))
        .collect()
}

/// The seed's list forms, each item a `T` given once; ascending.
fn named_list<T: Named + PartialEq + Ord>(
    path: &Path,
    value: &Raw,
) -> Result<Vec<T>, RequestError> {
    let mut items = items(path, value)?;
    // The seed's trailing "...": "and so on", adding nothing.
    if let Some((_, last)) = items.last_mut() {
        let stripped = ["...", "\u{2026}"]
            .iter()
            .find_map(|dots| last.strip_suffix(dots));
        if let Some(stripped) = stripped {
            *last = stripped.trim_end().to_owned();
            // `"GPU, ..."`: the ellipsis alone.
            if last.is_empty() {
                items.pop();
            }
        }
    }
    let mut out: Vec<T> = Vec::new();
    for (at, item) in items {
        if item.is_empty() {
            return Err(at.error("an empty item (two commas, or one at an end)"));
        }
        if item.ends_with("...") || item.ends_with('\u{2026}') {
            return Err(at.error(format!("{}: \"...\" may only end the list", quoted(&item))));
        }
        let v = T::from_name(&item)
            .ok_or_else(|| at.error(format!("{} is not one of {}", quoted(&item), T::listed())))?;
        if out.contains(&v) {
            return Err(at.error(format!("{} is listed twice", v.name())));
        }
        out.push(v);
    }
    out.sort();
    Ok(out)
}

/// A list, or one value standing for a list of one (`path` for it).
fn one_or_list<'a>(path: &Path, value: &'a Raw) -> Vec<(Path, &'a Raw)> {
    match value {
        Raw::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (path.index(i), v))
            .collect(),
        one => vec![(path.clone(), one)],
    }
}

fn flows(path: &Path, value: &Raw) -> Result<Vec<Flow>, RequestError> {
    let Raw::List(list) = value else {
        return Err(path.error(format!("expected a list of flows, got {}", kind(value))));
    };
    if list.len() > MAX_FLOWS {
        return Err(path
            .index(MAX_FLOWS)
            .error(format!("more than {MAX_FLOWS} flows")));
    }
    let mut out: Vec<Flow> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = path.index(i);
        let flow = flow(&at, item)?;
        if let Some(name) = &flow.name {
            if let Some(j) = out.iter().position(|f| f.name.as_ref() == Some(name)) {
                return Err(at.field("name").error(format!(
                    "{} is already the name of flows[{j}]",
                    quoted(name)
                )));
            }
        }
        out.push(flow);
    }
    Ok(out)
}

fn flow(path: &Path, value: &Raw) -> Result<Flow, RequestError> {
    let Raw::Map(fields) = value else {
        return Err(path.error(format!(
            "expected an object ({}), got {}",
            FLOW_FIELDS.join(", "),
            kind(value)
        )));
    };
    let mut flow = Flow {
        name: None,
        protocol: FlowProtocol::Any,
        ports: None,
        prefixes: None,
    };
    for (key, value) in entries(path, fields, &FLOW_FIELDS)? {
        let at = path.field(key);
        if *value == Raw::Null {
            continue;
        }
        match key {
            "name" => flow.name = Some(flow_name(&at, value)?),
            "protocol" => flow.protocol = named(&at, value)?,
            "ports" => flow.ports = Some(ports(&at, value)?),
            "prefixes" => flow.prefixes = Some(source_prefixes(&at, value)?),
            _ => unreachable!("entries() checked the key"),
        }
    }
    if flow.ports.is_none() && flow.prefixes.is_none() {
        return Err(path.error(
            "a flow names ports or prefixes (one matching every packet would take the node's management traffic)",
        ));
    }
    Ok(flow)
}

fn flow_name(path: &Path, value: &Raw) -> Result<String, RequestError> {
    match value {
        Raw::Str(s)
            if (1..=63).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(s.clone())
        }
        other => Err(path.error(format!(
            "{} is not a flow name (1-63 of A-Z a-z 0-9 . _ -)",
            kind(other)
        ))),
    }
}

fn ports(path: &Path, value: &Raw) -> Result<Vec<PortRange>, RequestError> {
    let list = one_or_list(path, value);
    if list.is_empty() {
        return Err(path.error("an empty list (leave ports out for every port)"));
    }
    if list.len() > MAX_FLOW_ITEMS {
        return Err(path
            .index(MAX_FLOW_ITEMS)
            .error(format!("more than {MAX_FLOW_ITEMS} port ranges")));
    }
    let mut out: Vec<(PortRange, Path)> = Vec::new();
    for (at, item) in list {
        let range = port_range(&at, item)?;
        if let Some((other, _)) = out
            .iter()
            .find(|(o, _)| o.first <= range.last && range.first <= o.last)
        {
            return Err(at.error(format!("{range} overlaps {other}")));
        }
        out.push((range, at));
    }
    let mut out: Vec<PortRange> = out.into_iter().map(|(r, _)| r).collect();
    out.sort();
    Ok(out)
}

fn port_range(path: &Path, value: &Raw) -> Result<PortRange, RequestError> {
    let port = |n: i128, shown: &str| match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(path.error(format!("{shown} is not a port"))),
    };
    match value {
        Raw::Int(n) => {
            let p = port(*n, &n.to_string())?;
            Ok(PortRange { first: p, last: p })
        }
        Raw::Str(s) => {
            let number = |t: &str| -> Result<u16, RequestError> {
                let t = t.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(path.error(format!("{} is not PORT or LOW-HIGH", quoted(s))));
                }
                port(t.parse::<i128>().unwrap_or(i128::MAX), t)
            };
            let (first, last) = match s.split_once('-') {
                Some((lo, hi)) => (number(lo)?, number(hi)?),
                None => {
                    let p = number(s)?;
                    (p, p)
                }
            };
            if first > last {
                return Err(path.error(format!("{first}-{last} is reversed")));
            }
            Ok(PortRange { first, last })
        }
        other => Err(path.error(format!(
            "expected a port or \"LOW-HIGH\", got {}",
            kind(other)
        ))),
    }
}

fn source_prefixes(path: &Path, value: &Raw) -> Result<Vec<Prefix>, RequestError> {
    let list = one_or_list(path, value);
    if list.is_empty() {
        return Err(path.error("an empty list (leave prefixes out for every source)"));
    }
    if list.len() > MAX_FLOW_ITEMS {
        return Err(path
            .index(MAX_FLOW_ITEMS)
            .error(format!("more than {MAX_FLOW_ITEMS} prefixes")));
    }
    let mut out: Vec<Prefix> = Vec::new();
    for (at, item) in list {
        let Raw::Str(s) = item else {
            return Err(at.error(format!("expected ADDR/LEN, got {}", kind(item))));
        };
        let p = prefix(&at, s)?;
        if let Some(other) = out.iter().find(|o| o.contains(&p) || p.contains(o)) {
            return Err(at.error(if *other == p {
                format!("{p} is listed twice")
            } else {
                format!("{p} overlaps {other}")
            }));
        }
        out.push(p);
    }
    out.sort();
    Ok(out)
}

/// `ADDR/LEN` with the length written plainly, in range, and no host bits.
fn prefix(path: &Path, s: &str) -> Result<Prefix, RequestError> {
    let bad = || path.error(format!("{} is not ADDR/LEN", quoted(s)));
    let (addr, len) = s.trim().split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    if len.is_empty()
        || !len.bytes().all(|b| b.is_ascii_digit())
        || (len.len() > 1 && len.starts_with('0'))
    {
        return Err(bad());
    }
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len.parse() {
        Ok(l) if l <= max => l,
        _ => return Err(path.error(format!("{}: length {len} is longer than {max}", quoted(s)))),
    };
    let p = Prefix::new(addr, len).map_err(|_| bad())?;
    if p.addr() != addr {
        return Err(path.error(format!(
            "{} has host bits set (the prefix is {p})",
            quoted(s)
        )));
    }
    Ok(p)
}

fn containers(path: &Path, value: &Raw) -> Result<Vec<String>, RequestError> {
    let list = one_or_list(path, value);
    if list.is_empty() {
        return Err(path.error("an empty list (leave containers out for every container)"));
    }
    let mut out: Vec<String> = Vec::new();
    for (at, item) in list {
        let name = match item {
            Raw::Str(s) if is_dns_label(s) => s.clone(),
            other => {
                return Err(at.error(format!(
                    "{} is not a container name (a DNS label: 1-63 of a-z 0-9 -, starting and ending alphanumeric)",
                    kind(other)
                )))
            }
        };
        if out.contains(&name) {
            return Err(at.error(format!("{} is listed twice", quoted(&name))));
        }
        out.push(name);
    }
    out.sort();
    Ok(out)
}

/// A Kubernetes container name: an RFC 1123 label.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seed's service spec, as written there.
    const SEED: &str = "Acceleration:\n  topologyAware: true\n  communication: '[\"SRIOV\", \"RDMA\"]'\n  compute: '[\"GPU, FPGA, AIX...\"]'\n";

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn path(text: &str) -> String {
        parse(text)
            .unwrap_err()
            .path()
            .unwrap_or("(none)")
            .to_owned()
    }

    #[test]
    fn the_seeds_forms_parse_as_written() {
        let r = parse(SEED).unwrap();
        assert!(r.topology_aware);
        assert_eq!(r.placement, Policy::BestEffort);
        assert_eq!(r.communication, [Communication::Sriov, Communication::Rdma]);
        assert_eq!(r.compute, [Compute::Gpu, Compute::Fpga, Compute::Aix]);
        assert_eq!(r.isolation, Isolation::None);
        assert!(r.flows.is_empty());
        assert_eq!(r.containers, None);
        // The bare object, the quoted boolean, and the other list forms.
        for text in [
            "topologyAware: 'true'\ncommunication: '[\"SRIOV\", \"RDMA\"]'\ncompute: '[\"GPU, FPGA, AIX...\"]'\n",
            "topologyAware: \"TRUE\"\ncommunication: [SRIOV, RDMA]\ncompute: [GPU, FPGA, AIX]\n",
            "topologyAware: true\ncommunication: SRIOV, RDMA\ncompute: GPU,FPGA , aix\n",
            "topologyAware: true\ncommunication:\n  - RDMA\n  - sriov\ncompute: ['GPU, FPGA', 'AIX\u{2026}']\n",
            "{\"topologyAware\": true, \"communication\": [\"SRIOV\", \"RDMA\"], \"compute\": \"[GPU, FPGA, AIX]\"}",
            "{\"Acceleration\": {\"topologyAware\": \"true\", \"communication\": \"[\\\"SRIOV\\\", \\\"RDMA\\\"]\", \"compute\": [\"GPU, FPGA, AIX...\"]}}",
            "{topologyAware: true, communication: [SRIOV, RDMA], compute: [GPU, FPGA, AIX, ...]}",
        ] {
            assert_eq!(parse(text).as_ref(), Ok(&r), "{text}");
        }
        // `false` in a string too.
        let r = parse("topologyAware: 'false'\ncompute: '[\"GPU\"]'\n").unwrap();
        assert!(!r.topology_aware);
        assert_eq!(r.placement, Policy::None);
    }

    #[test]
    fn defaults_are_spelled_out() {
        let r = parse("{}").unwrap();
        assert_eq!(r, AccelerationRequest::default());
        assert_eq!(
            r.to_json(),
            r#"{"topologyAware":false,"communication":[],"compute":[],"placement":"none","isolation":"none","flows":[],"containers":null}"#
        );
        assert_eq!(parse("Acceleration:\n").unwrap(), r);
        assert_eq!(parse("Acceleration: {}\n").unwrap(), r);
        // Null fields are fields left out; blank lists are empty.
        assert_eq!(
            parse("compute:\ncommunication: ''\nflows: null\n").unwrap(),
            r
        );
        assert_eq!(parse("compute: '[]'\ncommunication: []\n").unwrap(), r);
    }

    #[test]
    fn placement_and_topology_awareness_agree() {
        let r = parse("placement: single-numa-node").unwrap();
        assert!(r.topology_aware);
        assert_eq!(r.placement, Policy::SingleNumaNode);
        let r = parse("placement: none").unwrap();
        assert!(!r.topology_aware);
        let r = parse("topologyAware: true\nplacement: restricted").unwrap();
        assert_eq!(r.placement, Policy::Restricted);
        assert_eq!(
            err("topologyAware: false\nplacement: restricted"),
            "placement: restricted contradicts topologyAware: false"
        );
        assert_eq!(
            err("topologyAware: true\nplacement: none"),
            "placement: none contradicts topologyAware: true"
        );
    }

    #[test]
    fn every_field_names_its_path() {
        for (text, want) in [
            (
                "communication: '[\"SRIOV\", \"SRIOVX\"]'",
                "communication[1]: \"SRIOVX\" is not one of SRIOV, RDMA",
            ),
            (
                "communication: [SRIOV, 7]",
                "communication[1]: expected a name, got 7",
            ),
            (
                "communication: SRIOV, SRIOV",
                "communication: SRIOV is listed twice",
            ),
            (
                "communication: {a: 1}",
                "communication: expected a list or a comma-separated string, got an object",
            ),
            ("communication: '[SRIOV'", "communication"),
            ("compute: '[\"GPU, TPU\"]'", "compute[0]: \"TPU\" is not one of GPU, FPGA, AIX, NPU"),
            ("compute: GPU,,FPGA", "compute: an empty item (two commas, or one at an end)"),
            ("compute: GPU, FPGA,", "compute: an empty item (two commas, or one at an end)"),
            ("compute: [GPU..., FPGA]", "compute[0]: \"GPU...\": \"...\" may only end the list"),
            ("topologyAware: yes", "topologyAware: expected true or false, got \"yes\""),
            ("topologyAware: 1", "topologyAware: expected true or false, got 1"),
            (
                "placement: numa",
                "placement: \"numa\" is not one of none, best-effort, restricted, single-numa-node",
            ),
            ("isolation: [isolated]", "isolation: expected one of none, isolated, got a list"),
            ("flows: {}", "flows: expected a list of flows, got an object"),
            ("flows: [7]", "flows[0]: expected an object (name, protocol, ports, prefixes), got 7"),
            (
                "flows: [{protocol: udp}]",
                "flows[0]: a flow names ports or prefixes (one matching every packet would take the node's management traffic)",
            ),
            ("flows: [{ports: 70000}]", "flows[0].ports: 70000 is not a port"),
            ("flows: [{ports: 0}]", "flows[0].ports: 0 is not a port"),
            ("flows: [{ports: [5000, -1]}]", "flows[0].ports[1]: -1 is not a port"),
            ("flows: [{ports: '5000-70000'}]", "flows[0].ports: 70000 is not a port"),
            ("flows: [{ports: '5100-5000'}]", "flows[0].ports: 5100-5000 is reversed"),
            ("flows: [{ports: '50a'}]", "flows[0].ports: \"50a\" is not PORT or LOW-HIGH"),
            ("flows: [{ports: 5.5}]", "flows[0].ports: expected a port or \"LOW-HIGH\", got 5.5"),
            (
                "flows: [{ports: ['5000-5100', 5050]}]",
                "flows[0].ports[1]: 5050 overlaps 5000-5100",
            ),
            ("flows: [{ports: []}]", "flows[0].ports: an empty list (leave ports out for every port)"),
            (
                "flows: [{ports: 1, protocol: sctp}]",
                "flows[0].protocol: \"sctp\" is not one of udp, tcp, any",
            ),
            (
                "flows: [{ports: 1}, {prefixes: '198.18.0.1/15'}]",
                "flows[1].prefixes: \"198.18.0.1/15\" has host bits set (the prefix is 198.18.0.0/15)",
            ),
            (
                "flows: [{prefixes: ['198.18.0.0/15', '198.18.0.0/33']}]",
                "flows[0].prefixes[1]: \"198.18.0.0/33\": length 33 is longer than 32",
            ),
            (
                "flows: [{prefixes: ['2001:db8::/129']}]",
                "flows[0].prefixes[0]: \"2001:db8::/129\": length 129 is longer than 128",
            ),
            (
                "flows: [{prefixes: ['198.18.0.0/015']}]",
                "flows[0].prefixes[0]: \"198.18.0.0/015\" is not ADDR/LEN",
            ),
            (
                "flows: [{prefixes: ['198.18.0.1']}]",
                "flows[0].prefixes[0]: \"198.18.0.1\" is not ADDR/LEN",
            ),
            (
                "flows: [{prefixes: ['198.18.0.0/15', '198.19.0.0/16']}]",
                "flows[0].prefixes[1]: 198.19.0.0/16 overlaps 198.18.0.0/15",
            ),
            (
                "flows: [{prefixes: ['2001:db8::/32', '2001:DB8::/32']}]",
                "flows[0].prefixes[1]: 2001:db8::/32 is listed twice",
            ),
            ("flows: [{prefixes: [7]}]", "flows[0].prefixes[0]: expected ADDR/LEN, got 7"),
            (
                "flows: [{name: a, ports: 1}, {name: a, ports: 2}]",
                "flows[1].name: \"a\" is already the name of flows[0]",
            ),
            (
                "flows: [{name: 'a b', ports: 1}]",
                "flows[0].name: \"a b\" is not a flow name (1-63 of A-Z a-z 0-9 . _ -)",
            ),
            (
                "flows: [{port: 1}]",
                "flows[0].port: unknown field (expected name, protocol, ports or prefixes)",
            ),
            (
                "containers: [app, App]",
                "containers[1]: \"App\" is not a container name (a DNS label: 1-63 of a-z 0-9 -, starting and ending alphanumeric)",
            ),
            ("containers: [app, app]", "containers[1]: \"app\" is listed twice"),
            (
                "containers: []",
                "containers: an empty list (leave containers out for every container)",
            ),
            (
                "topologyaware: true",
                "topologyaware: unknown field (expected topologyAware, communication, compute, placement, isolation, flows or containers); did you mean topologyAware?",
            ),
            (
                "Acceleration:\n  gpu: 1\n",
                "Acceleration.gpu: unknown field (expected topologyAware, communication, compute, placement, isolation, flows or containers)",
            ),
            (
                "Acceleration:\n  compute: TPU\nCPU: 2\n",
                "CPU: unknown field beside Acceleration (which holds the request alone)",
            ),
            ("Acceleration: [GPU]", "Acceleration: expected an object of the request's fields, got a list"),
            ("{\"compute\": \"GPU\", \"compute\": \"FPGA\"}", "compute: given twice"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.path().is_some(), "{text}: {e}");
            assert!(e.to_string().starts_with(want), "{text}:\n got {e}\nwant {want}");
        }
        let many = format!("flows: [{}]", vec!["{ports: 1}"; MAX_FLOWS + 1].join(", "));
        assert_eq!(err(&many), "flows[32]: more than 32 flows");
        let ports: Vec<String> = (1..=MAX_FLOW_ITEMS + 1).map(|p| p.to_string()).collect();
        assert_eq!(
            err(&format!("flows: [{{ports: [{}]}}]", ports.join(", "))),
            "flows[0].ports[64]: more than 64 port ranges"
        );
        assert_eq!(path("compute: '[\"GPU\", \"X\"]'"), "compute[1]");
    }

    #[test]
    fn the_value_as_a_whole_is_checked() {
        assert_eq!(err(""), "the value is empty");
        assert_eq!(err(" \n"), "the value is empty");
        assert!(err("[1, 2]").starts_with("the value is a list, not an object"));
        assert!(err("~").starts_with("the value is null, not an object"));
        assert!(err("GPU").starts_with("the value is \"GPU\", not an object"));
        let e = err("{\"compute\": [\"GPU\"]");
        assert!(
            e.starts_with("JSON: EOF while parsing an object at line 1"),
            "{e}"
        );
        let e = err("compute: [GPU\n");
        assert!(e.starts_with("YAML: "), "{e}");
        let big = format!("compute: GPU\n#{}", "x".repeat(MAX_BYTES));
        assert_eq!(
            parse(&big),
            Err(RequestError::TooLarge {
                len: big.len(),
                max: MAX_BYTES
            })
        );
    }

    /// Nesting as deep as the size limit allows is refused at once (a
    /// syntax error), never a stack overflow or minutes of parsing: in the
    /// value, and in a list written inside a string.
    #[test]
    fn deep_nesting_is_refused() {
        let depth = MAX_BYTES / 2 - 16;
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(parse(&json), Err(RequestError::Syntax { .. })));
        let yaml = format!("compute: {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(parse(&yaml), Err(RequestError::Syntax { .. })));
        // In a string, the text's own check refuses it first.
        let inner = format!("compute: '{}{}'", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(parse(&inner), Err(RequestError::Syntax { .. })));
        // Block style nests by indentation.
        let block = format!("compute: {}x", "- ".repeat(depth / 2));
        assert!(parse(&block).is_err());
        let r = items(
            &Path("compute".into()),
            &Raw::Str("[".repeat(MAX_NESTING + 1)),
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            format!(
                "compute: {} is not a list: JSON/YAML: brackets nested deeper than 64",
                quoted(&"[".repeat(MAX_NESTING + 1))
            )
        );
        let ok = format!(
            "compute: {}GPU{}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert!(parse(&ok).is_err(), "nested lists are not names");
        let aliases = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                       c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                       e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
        assert!(parse(aliases).is_err());
    }

    #[test]
    fn griffins_additions_parse() {
        let r = parse(
            "topologyAware: true\nplacement: single-numa-node\nisolation: isolated\n\
             flows:\n  - name: video\n    protocol: UDP\n    ports: [6000, '5000-5100']\n    \
             prefixes: ['198.18.0.0/15', '2001:db8::/32']\n  - protocol: tcp\n    ports: '8080'\n\
             containers: [worker, app]\n",
        )
        .unwrap();
        assert_eq!(r.isolation, Isolation::Isolated);
        assert_eq!(r.flows.len(), 2);
        let f = &r.flows[0];
        assert_eq!(f.name.as_deref(), Some("video"));
        assert_eq!(f.protocol.ip_proto(), Some(17));
        let ports: Vec<_> = f
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.range())
            .collect();
        assert_eq!(ports, [5000..=5100, 6000..=6000]);
        let prefixes: Vec<String> = f
            .prefixes
            .as_ref()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(prefixes, ["198.18.0.0/15", "2001:db8::/32"]);
        assert_eq!(r.flows[1].prefixes, None);
        assert_eq!(r.flows[1].protocol, FlowProtocol::Tcp);
        assert_eq!(
            r.containers.as_deref(),
            Some(&["app".to_owned(), "worker".to_owned()][..])
        );
        assert!(r.applies_to("app") && !r.applies_to("sidecar"));
        assert!(AccelerationRequest::default().applies_to("sidecar"));
        assert_eq!(
            serde_json::to_value(&r.flows[0]).unwrap(),
            serde_json::json!({"name": "video", "protocol": "udp", "ports": ["5000-5100", 6000],
                               "prefixes": ["198.18.0.0/15", "2001:db8::/32"]})
        );
        assert_eq!(Compute::Aix.device_kind(), DeviceKind::Accelerator);
        assert_eq!(Compute::Gpu.device_kind(), DeviceKind::Gpu);
        // A bare container name is a list of one.
        assert_eq!(
            parse("containers: app").unwrap().containers,
            Some(vec!["app".to_owned()])
        );
    }

    #[test]
    fn the_annotation_is_found_by_its_key() {
        let mut a = BTreeMap::new();
        assert_eq!(from_annotations(None), None);
        assert_eq!(from_annotations(Some(&a)), None);
        a.insert(ANNOTATION.to_owned(), "compute: GPU".to_owned());
        assert_eq!(
            from_annotations(Some(&a)).unwrap().unwrap().compute,
            [Compute::Gpu]
        );
    }

    fn arb_request() -> impl Strategy<Value = AccelerationRequest> {
        let flow = (
            proptest::option::of("[a-z][a-z0-9-]{0,8}"),
            prop_oneof![
                Just(FlowProtocol::Udp),
                Just(FlowProtocol::Tcp),
                Just(FlowProtocol::Any)
            ],
            proptest::option::of(proptest::collection::btree_set(1u16..2000, 1..4)),
            proptest::option::of(proptest::collection::btree_set(
                (any::<u32>(), 0u8..=32),
                1..3,
            )),
        )
            .prop_map(|(name, protocol, ports, prefixes)| {
                // Disjoint ranges: each port p becomes p*30 .. p*30+k.
                let ports = ports.map(|s| {
                    s.into_iter()
                        .map(|p| PortRange {
                            first: p * 30 + 1,
                            last: p * 30 + 1 + p % 7,
                        })
                        .collect::<Vec<_>>()
                });
                let mut prefixes = prefixes.map(|s| {
                    let mut out: Vec<Prefix> = Vec::new();
                    for (a, l) in s {
                        let p = Prefix::new(IpAddr::from(std::net::Ipv4Addr::from(a)), l).unwrap();
                        if !out.iter().any(|o| o.contains(&p) || p.contains(o)) {
                            out.push(p);
                        }
                    }
                    out.sort();
                    out
                });
                let ports = match (ports, &prefixes) {
                    (None, None) => Some(vec![PortRange {
                        first: 80,
                        last: 80,
                    }]),
                    (p, _) => p,
                };
                if prefixes.as_ref().is_some_and(Vec::is_empty) {
                    prefixes = None;
                }
                Flow {
                    name,
                    protocol,
                    ports,
                    prefixes,
                }
            });
        (
            proptest::sample::subsequence(vec![Communication::Sriov, Communication::Rdma], 0..=2),
            proptest::sample::subsequence(
                vec![Compute::Gpu, Compute::Fpga, Compute::Aix, Compute::Npu],
                0..=4,
            ),
            prop_oneof![
                Just(Policy::None),
                Just(Policy::BestEffort),
                Just(Policy::Restricted),
                Just(Policy::SingleNumaNode)
            ],
            any::<bool>(),
            proptest::collection::vec(flow, 0..4),
            proptest::option::of(proptest::collection::btree_set(
                "[a-z]([a-z0-9-]{0,6}[a-z0-9])?",
                1..4,
            )),
        )
            .prop_map(
                |(communication, compute, placement, isolated, mut flows, containers)| {
                    // Flow names are unique.
                    let mut seen = Vec::new();
                    for f in &mut flows {
                        if let Some(n) = &f.name {
                            if seen.contains(n) {
                                f.name = None;
                            } else {
                                seen.push(n.clone());
                            }
                        }
                    }
                    AccelerationRequest {
                        topology_aware: placement != Policy::None,
                        communication,
                        compute,
                        placement,
                        isolation: if isolated {
                            Isolation::Isolated
                        } else {
                            Isolation::None
                        },
                        flows,
                        containers: containers.map(|c| c.into_iter().collect()),
                    }
                },
            )
    }

    /// What an error must look like: a field error names a path that
    /// starts with a field of the text's top level.
    fn check_error(e: &RequestError) -> Result<(), TestCaseError> {
        if let RequestError::Field { path, message } = e {
            prop_assert!(!path.is_empty() && !message.is_empty(), "{e}");
            let head = path.split(['.', '[']).next().unwrap_or_default();
            prop_assert!(
                FIELDS.contains(&head) || head == WRAPPER || message.contains("unknown field"),
                "{e}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(griffin_tests::fuzz_cases(256)))]

        /// The canonical JSON reads back as the same request, through
        /// [`parse`] and through serde.
        #[test]
        fn canonical_json_round_trips(r in arb_request()) {
            let json = r.to_json();
            prop_assert_eq!(parse(&json), Ok(r.clone()));
            let pretty = serde_json::to_string_pretty(&r).unwrap();
            prop_assert_eq!(serde_json::from_str::<AccelerationRequest>(&pretty).unwrap(), r);
        }

        /// Mangled seed forms, mangled canonical JSON and random bytes
        /// parse or are refused, never panic; a field error names a path.
        #[test]
        fn mangled_annotations_never_panic(
            r in arb_request(),
            seed in 1..u64::MAX,
            noise in "[ -~\n]{0,200}",
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut rng = griffin_tests::Rng(seed);
            let json = serde_json::to_string_pretty(&r).unwrap();
            let texts = [
                griffin_tests::hostile::mangle(SEED, &mut rng),
                griffin_tests::hostile::mangle(&json, &mut rng),
                noise,
                String::from_utf8_lossy(&bytes).into_owned(),
            ];
            for text in &texts {
                match parse(text) {
                    Ok(r) => prop_assert_eq!(parse(&r.to_json()), Ok(r)),
                    Err(e) => check_error(&e)?,
                }
            }
        }

        /// Random values in each field are accepted or refused naming it.
        #[test]
        fn any_field_value_is_checked_by_name(
            field in proptest::sample::select(&FIELDS[..]),
            value in prop_oneof![
                "[ -~]{0,30}".prop_map(serde_json::Value::String),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
                proptest::collection::vec("[ -~]{0,12}", 0..4).prop_map(serde_json::Value::from),
                proptest::collection::vec(any::<u32>(), 0..4).prop_map(serde_json::Value::from),
                ("[a-z]{1,8}", "[ -~]{0,12}").prop_map(|(k, v)| serde_json::json!([{k: v}])),
                (any::<u32>(), "[ -~]{0,20}").prop_map(|(p, s)| serde_json::json!([{"ports": p, "prefixes": s}])),
            ],
        ) {
            let text = serde_json::json!({field: value}).to_string();
            match parse(&text) {
                Ok(r) => prop_assert_eq!(parse(&r.to_json()), Ok(r)),
                Err(e) => {
                    let path = e.path().unwrap_or_default();
                    prop_assert!(path == field || path.starts_with(&format!("{field}[")), "{text}: {e}");
                }
            }
        }
    }
}
