//! sriov-network-device-plugin's `config.json`, accepted unchanged.
//!
//! The file is what that plugin's Go code decodes with `encoding/json`, so
//! it is read the way Go reads it: keys match field names ignoring case
//! (`isRdma` is the field `IsRdma`), `null` leaves a field at its zero
//! value, keys the plugin does not know are ignored (here with a warning).
//! `resourcePrefix` defaults to `intel.com` (the plugin's
//! `--resource-prefix` default), `deviceType` to `netDevice`; `selectors`
//! is one object or a non-empty list of objects (a union).
//!
//! Each key the plugin knows is either implemented, ignored with a warning
//! because it cannot change which devices are selected, or refused, naming
//! it, because it would and Griffin does not implement it:
//!
//! | key | here |
//! |---|---|
//! | `resourceList`, `resourceName`, `resourcePrefix`, `deviceType` (`netDevice`, `accelerator`), `excludeTopology`, `selectors`, `additionalInfo` | implemented |
//! | selectors `vendors`, `devices`, `drivers`, `pciAddresses` (both types); `pfNames`, `rootDevices`, `linkTypes`, `isRdma`, `needVhostNet` (`netDevice`) | implemented |
//! | `deviceType: auxNetDevice` | refused |
//! | `netDevice` selectors `ddpProfiles`, `vdpaType`, `pKeys`, `acpiIndexes`, `nicNames` (an older version's) when set | refused |
//! | `checkHealthOnPf`, `checkHealthOnDeviceExist` | ignored: Griffin always marks a PF's VFs unhealthy while its link is down, and a device that is gone leaves the pool |
//! | anything else (including selector keys of the other device type, as the plugin ignores them) | ignored with a warning |
//!
//! Where the plugin would skip a resource with a log line (a selector that
//! does not decode, a malformed VF range that silently selects nothing),
//! Griffin refuses the file instead, naming the field.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::select::{FuncSelector, Selector};
use super::{ExtraInfo, Flavor, PoolDef};

/// The plugin's default `--resource-prefix`.
pub const DEFAULT_PREFIX: &str = "intel.com";

/// Largest `config.json` read, bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a `config.json` was refused: `"{path}: {why}"`, the path being a
/// key path such as `resourceList[0].selectors[1].pfNames[0]`, or
/// `(top level)`; a syntax error is `line L, column C: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {why}")]
pub struct SriovdpError {
    /// Where.
    pub path: String,
    /// What is wrong.
    pub why: String,
}

fn err(path: &str, why: impl Into<String>) -> SriovdpError {
    SriovdpError {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// A parsed `config.json`: pool definitions and what was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// One per `resourceList` entry.
    pub pools: Vec<PoolDef>,
    /// Keys ignored, each `"{path}: ignored …"`.
    pub warnings: Vec<String>,
}

/// Reads and parses a `config.json` (a regular file of at most
/// [`MAX_FILE_BYTES`], symbolic links followed).
pub fn load(path: &Path) -> Result<Parsed, super::PoolError> {
    let text = griffin_ebpf::format::read_regular(path, MAX_FILE_BYTES).map_err(|source| {
        super::PoolError::ReadSriovdp {
            path: path.to_owned(),
            source,
        }
    })?;
    parse(&text).map_err(|source| super::PoolError::Sriovdp {
        path: path.to_owned(),
        source,
    })
}

/// The value of a key matched as Go matches struct fields: an exact match,
/// else one ignoring case. Two distinct keys folding to the same field are
/// refused (Go would keep whichever comes last in the file).
fn field<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a Value>, SriovdpError> {
    let mut found: Option<(&String, &Value)> = None;
    for (k, v) in obj {
        if k.eq_ignore_ascii_case(name) {
            if let Some((other, _)) = found {
                return Err(err(
                    &join(path, k),
                    format!("also given as {other:?}; give the key once"),
                ));
            }
            found = Some((k, v));
        }
    }
    Ok(found.map(|(_, v)| v).filter(|v| !v.is_null()))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string(v: Option<&Value>, path: &str) -> Result<String, SriovdpError> {
    match v {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(err(
            path,
            format!("expected a string, got {}", kind_of(other)),
        )),
    }
}

fn boolean(v: Option<&Value>, path: &str) -> Result<bool, SriovdpError> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(err(
            path,
            format!("expected true or false, got {}", kind_of(other)),
        )),
    }
}

/// A list of strings; a `null` element is the empty string, as in Go.
fn strings(v: Option<&Value>, path: &str) -> Result<Vec<String>, SriovdpError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::Null => Ok(String::new()),
                Value::String(s) => Ok(s.clone()),
                other => Err(err(
                    &format!("{path}[{i}]"),
                    format!("expected a string, got {}", kind_of(other)),
                )),
            })
            .collect(),
        Some(other) => Err(err(
            path,
            format!("expected a list of strings, got {}", kind_of(other)),
        )),
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, SriovdpError> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected an object, got {}", kind_of(v))))
}

/// Keys that are fields of the plugin's `ResourceConfig`.
const RESOURCE_KEYS: &[&str] = &[
    "resourcePrefix",
    "resourceName",
    "deviceType",
    "excludeTopology",
    "selectors",
    "additionalInfo",
    "checkHealthOnPf",
    "checkHealthOnDeviceExist",
];

/// Selector keys of both device types.
const COMMON_SELECTOR_KEYS: &[&str] = &["vendors", "devices", "drivers", "pciAddresses"];

/// Selector keys of `netDevice` only, implemented.
const NET_SELECTOR_KEYS: &[&str] = &[
    "pfNames",
    "rootDevices",
    "linkTypes",
    "isRdma",
    "needVhostNet",
];

/// `netDevice` selector keys that change which devices are selected and
/// that Griffin does not implement.
const REFUSED_NET_KEYS: &[&str] = &[
    "ddpProfiles",
    "vdpaType",
    "pKeys",
    "acpiIndexes",
    "nicNames",
];

/// Parses the text of a `config.json` (pure).
pub fn parse(text: &str) -> Result<Parsed, SriovdpError> {
    let root: Value = serde_json::from_str(text).map_err(|e| SriovdpError {
        path: format!("line {}, column {}", e.line(), e.column()),
        why: syntax_message(&e),
    })?;
    let top = object(&root, "").map_err(|e| err("(top level)", e.why))?;
    let mut out = Parsed::default();
    for k in top.keys() {
        if !k.eq_ignore_ascii_case("resourceList") {
            out.warnings
                .push(format!("{k}: ignored (not a key of the plugin's config)"));
        }
    }
    let list = match field(top, "resourceList", "")? {
        None => return Ok(out),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(err(
                "resourceList",
                format!("expected a list, got {}", kind_of(other)),
            ))
        }
    };
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, entry) in list.iter().enumerate() {
        let path = format!("resourceList[{i}]");
        let def = resource(entry, &path, &mut out.warnings)?;
        if let Some(first) = names.insert(def.resource.clone(), i) {
            return Err(err(
                &format!("{path}.resourceName"),
                format!("{} is also resourceList[{first}]", def.resource),
            ));
        }
        out.pools.push(def);
    }
    Ok(out)
}

/// serde_json's message without its own "at line L column C" suffix.
fn syntax_message(e: &serde_json::Error) -> String {
    let m = e.to_string();
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_owned(),
        None => m,
    }
}

fn resource(v: &Value, path: &str, warnings: &mut Vec<String>) -> Result<PoolDef, SriovdpError> {
    let obj = object(v, path)?;
    for k in obj.keys() {
        let known = RESOURCE_KEYS.iter().any(|r| r.eq_ignore_ascii_case(k));
        if !known {
            warnings.push(format!(
                "{}: ignored (not a key of the plugin's resource config)",
                join(path, k)
            ));
        } else if k.eq_ignore_ascii_case("checkHealthOnPf")
            || k.eq_ignore_ascii_case("checkHealthOnDeviceExist")
        {
            warnings.push(format!(
                "{}: ignored (Griffin always marks a PF's VFs unhealthy while its link is down, and a device that is gone leaves the pool)",
                join(path, k)
            ));
        }
    }
    let name_path = join(path, "resourceName");
    let name = string(field(obj, "resourceName", path)?, &name_path)?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(err(
            &name_path,
            format!("{name:?} is not a resource name (letters, digits and '_')"),
        ));
    }
    let prefix_path = join(path, "resourcePrefix");
    let mut prefix = string(field(obj, "resourcePrefix", path)?, &prefix_path)?;
    if prefix.is_empty() {
        prefix = DEFAULT_PREFIX.to_owned();
    }
    if !super::valid_prefix(&prefix) {
        return Err(err(
            &prefix_path,
            format!("{prefix:?} is not a resource prefix (a DNS subdomain such as intel.com)"),
        ));
    }
    let type_path = join(path, "deviceType");
    let flavor = match string(field(obj, "deviceType", path)?, &type_path)?.as_str() {
        "" | "netDevice" => Flavor::SriovNet,
        "accelerator" => Flavor::SriovAccel,
        "auxNetDevice" => {
            return Err(err(
                &type_path,
                "auxNetDevice is not supported by Griffin (netDevice, accelerator)",
            ))
        }
        other => {
            return Err(err(
                &type_path,
                format!("{other:?} is not a device type (netDevice, accelerator)"),
            ))
        }
    };
    let exclude_topology = boolean(
        field(obj, "excludeTopology", path)?,
        &join(path, "excludeTopology"),
    )?;
    let additional_info = additional_info(
        field(obj, "additionalInfo", path)?,
        &join(path, "additionalInfo"),
    )?;
    let sel_path = join(path, "selectors");
    let selectors = match field(obj, "selectors", path)? {
        None => return Err(err(&sel_path, "missing (an object or a list of objects)")),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(err(&sel_path, "an empty list; give at least one selector"));
            }
            items
                .iter()
                .enumerate()
                .map(|(j, s)| selector(s, &format!("{sel_path}[{j}]"), flavor, warnings))
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(v @ Value::Object(_)) => vec![selector(v, &sel_path, flavor, warnings)?],
        Some(other) => {
            return Err(err(
                &sel_path,
                format!(
                    "expected an object or a list of objects, got {}",
                    kind_of(other)
                ),
            ))
        }
    };
    Ok(PoolDef {
        resource: format!("{prefix}/{name}"),
        flavor,
        selectors,
        exclude_topology,
        additional_info,
        origin: path.to_owned(),
    })
}

/// `additionalInfo`: per PCI address (or `*` for every device) extra
/// key-value pairs for the `_INFO` variable; `None` when absent (the plugin
/// then adds no `extra` entry at all).
fn additional_info(v: Option<&Value>, path: &str) -> Result<Option<ExtraInfo>, SriovdpError> {
    let mut out = BTreeMap::new();
    let Some(v) = v else {
        return Ok(None);
    };
    for (key, inner) in object(v, path)? {
        let ipath = format!("{path}.{key}");
        let mut m = BTreeMap::new();
        if !inner.is_null() {
            for (k, x) in object(inner, &ipath)? {
                let s = match x {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => {
                        return Err(err(
                            &format!("{ipath}.{k}"),
                            format!("expected a string, got {}", kind_of(other)),
                        ))
                    }
                };
                m.insert(k.clone(), s);
            }
        }
        out.insert(key.clone(), m);
    }
    Ok(Some(out))
}

fn func_selectors(v: Option<&Value>, path: &str) -> Result<Vec<FuncSelector>, SriovdpError> {
    strings(v, path)?
        .iter()
        .enumerate()
        .map(|(i, s)| FuncSelector::parse(s).map_err(|why| err(&format!("{path}[{i}]"), why)))
        .collect()
}

fn selector(
    v: &Value,
    path: &str,
    flavor: Flavor,
    warnings: &mut Vec<String>,
) -> Result<Selector, SriovdpError> {
    let obj = object(v, path)?;
    let net = flavor == Flavor::SriovNet;
    for (k, val) in obj {
        let is = |list: &[&str]| list.iter().any(|x| x.eq_ignore_ascii_case(k));
        if is(COMMON_SELECTOR_KEYS) || (net && is(NET_SELECTOR_KEYS)) {
            continue;
        }
        let set = match val {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if net && is(REFUSED_NET_KEYS) {
            if set {
                return Err(err(
                    &join(path, k),
                    "not supported by Griffin (it changes which devices are selected)",
                ));
            }
            continue;
        }
        let what = if flavor == Flavor::SriovAccel && is(NET_SELECTOR_KEYS) {
            "a netDevice selector; the plugin ignores it for accelerator"
        } else {
            "not a selector of the plugin for this device type"
        };
        warnings.push(format!("{}: ignored ({what})", join(path, k)));
    }
    let list = |key: &str| strings(field(obj, key, path)?, &join(path, key));
    let mut s = Selector {
        vendors: list("vendors")?,
        devices: list("devices")?,
        drivers: list("drivers")?,
        pci_addresses: list("pciAddresses")?,
        ..Default::default()
    };
    if net {
        s.pf_names = func_selectors(field(obj, "pfNames", path)?, &join(path, "pfNames"))?;
        s.root_devices =
            func_selectors(field(obj, "rootDevices", path)?, &join(path, "rootDevices"))?;
        s.link_types = list("linkTypes")?;
        if s.link_types.len() > 1 {
            warnings.push(format!(
                "{}: more than one link type (the plugin expects a single value; any of them selects)",
                join(path, "linkTypes")
            ));
        }
        if boolean(field(obj, "isRdma", path)?, &join(path, "isRdma"))? {
            s.is_rdma = Some(true);
        }
        s.vhost_net = boolean(
            field(obj, "needVhostNet", path)?,
            &join(path, "needVhostNet"),
        )?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A config using every implemented key, both selector forms and both
    /// device types, as the plugin's documentation writes them.
    pub(crate) const SAMPLE: &str = r#"{
    "resourceList": [
        {
            "resourceName": "intel_sriov_netdevice",
            "selectors": {
                "vendors": ["8086"],
                "devices": ["10ca"],
                "drivers": ["igbvf"],
                "pfNames": ["eth1#0-3", "eth2"],
                "linkTypes": ["ether"]
            }
        },
        {
            "resourceName": "mlnx_rdma",
            "resourcePrefix": "nvidia.com",
            "excludeTopology": true,
            "selectors": [
                {"vendors": ["15b3"], "isRdma": true},
                {"rootDevices": ["0000:22:00.0#1,3-5"], "needVhostNet": true}
            ],
            "additionalInfo": {"*": {"token": "abc"}, "0000:22:00.0": {"port": "1"}}
        },
        {
            "resourceName": "accel",
            "deviceType": "accelerator",
            "selectors": {"pciAddresses": ["0000:18:00.0"], "drivers": ["habanalabs"]}
        }
    ]
}"#;

    #[test]
    fn the_documented_forms_parse() {
        let p = parse(SAMPLE).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.pools.len(), 3);
        let a = &p.pools[0];
        assert_eq!(a.resource, "intel.com/intel_sriov_netdevice");
        assert_eq!(a.flavor, Flavor::SriovNet);
        assert_eq!(a.selectors.len(), 1);
        assert_eq!(a.selectors[0].vendors, ["8086"]);
        assert_eq!(a.selectors[0].pf_names[0].ranges, Some(vec![(0, 3)]));
        assert_eq!(a.selectors[0].pf_names[1].ranges, None);
        assert_eq!(a.selectors[0].is_rdma, None);
        let b = &p.pools[1];
        assert_eq!(b.resource, "nvidia.com/mlnx_rdma");
        assert!(b.exclude_topology);
        assert_eq!(b.selectors.len(), 2);
        assert_eq!(b.selectors[0].is_rdma, Some(true));
        assert!(b.selectors[1].vhost_net);
        assert_eq!(
            b.selectors[1].root_devices[0].to_string(),
            "0000:22:00.0#1,3-5"
        );
        assert_eq!(b.additional_info.as_ref().unwrap()["*"]["token"], "abc");
        let c = &p.pools[2];
        assert_eq!(c.flavor, Flavor::SriovAccel);
        assert_eq!(c.selectors[0].pci_addresses, ["0000:18:00.0"]);
    }

    /// Go's decoder: keys match ignoring case, `null` is the zero value.
    #[test]
    fn keys_match_as_go_matches_them() {
        let p = parse(
            r#"{"ResourceList": [{"RESOURCENAME": "x", "resourceprefix": null,
                "Selectors": {"Vendors": ["8086"], "ISRDMA": true, "drivers": null,
                "pciAddresses": [null]}}]}"#,
        )
        .unwrap();
        assert_eq!(p.pools[0].resource, "intel.com/x");
        let s = &p.pools[0].selectors[0];
        assert_eq!(s.vendors, ["8086"]);
        assert_eq!(s.is_rdma, Some(true));
        assert!(s.drivers.is_empty());
        assert_eq!(s.pci_addresses, [""]);
        let e = parse(
            r#"{"resourceList": [{"resourceName": "x", "ResourceName": "y", "selectors": {}}]}"#,
        )
        .unwrap_err();
        assert!(e.path.starts_with("resourceList[0]."), "{e}");
        // No resourceList: no pools.
        assert!(parse("{}").unwrap().pools.is_empty());
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (r#"[1]"#, "(top level)"),
            (r#"{"resourceList": {}}"#, "resourceList"),
            (r#"{"resourceList": [3]}"#, "resourceList[0]"),
            (
                r#"{"resourceList": [{"selectors": {}}]}"#,
                "resourceList[0].resourceName",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a-b", "selectors": {}}]}"#,
                "resourceList[0].resourceName",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a"}]}"#,
                "resourceList[0].selectors",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": []}]}"#,
                "resourceList[0].selectors",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": "x"}]}"#,
                "resourceList[0].selectors",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "deviceType": "auxNetDevice", "selectors": {}}]}"#,
                "resourceList[0].deviceType",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "deviceType": "gpu", "selectors": {}}]}"#,
                "resourceList[0].deviceType",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"vendors": "8086"}}]}"#,
                "resourceList[0].selectors.vendors",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"vendors": [8086]}}]}"#,
                "resourceList[0].selectors.vendors[0]",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": [{}, {"pfNames": ["eth1#3-1"]}]}]}"#,
                "resourceList[0].selectors[1].pfNames[0]",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"isRdma": "yes"}}]}"#,
                "resourceList[0].selectors.isRdma",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"ddpProfiles": ["GTP"]}}]}"#,
                "resourceList[0].selectors.ddpProfiles",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"vdpaType": "vhost"}}]}"#,
                "resourceList[0].selectors.vdpaType",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"pKeys": ["0x7fff"]}}]}"#,
                "resourceList[0].selectors.pKeys",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"acpiIndexes": ["101"]}}]}"#,
                "resourceList[0].selectors.acpiIndexes",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "resourcePrefix": "Bad Prefix", "selectors": {}}]}"#,
                "resourceList[0].resourcePrefix",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {}}, {"resourceName": "a", "selectors": {}}]}"#,
                "resourceList[1].resourceName",
            ),
            (
                r#"{"resourceList": [{"resourceName": "a", "additionalInfo": {"*": {"k": 1}}, "selectors": {}}]}"#,
                "resourceList[0].additionalInfo.*.k",
            ),
        ];
        for (text, path) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.path, path, "{text}: {e}");
        }
        let e = parse("{\n  \"resourceList\": [\n").unwrap_err();
        assert!(e.path.starts_with("line 3, column "), "{e}");
        // The auxNetDevice message says what is supported.
        let e = parse(r#"{"resourceList": [{"resourceName": "a", "deviceType": "auxNetDevice", "selectors": {}}]}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("auxNetDevice is not supported"),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_change_selection_is_ignored_with_a_warning() {
        let p = parse(
            r#"{"comment": "x", "resourceList": [{"resourceName": "a", "checkHealthOnPf": true,
                "something": 1, "selectors": {"auxTypes": ["sf"], "ddpProfiles": [], "vdpaType": "",
                "nicNames": null}},
                {"resourceName": "b", "deviceType": "accelerator",
                 "selectors": {"pfNames": ["eth1"], "drivers": ["x"]}}]}"#,
        )
        .unwrap();
        let w = p.warnings.join("\n");
        for key in [
            "comment: ignored",
            "resourceList[0].checkHealthOnPf: ignored",
            "resourceList[0].something: ignored",
            "resourceList[0].selectors.auxTypes: ignored",
            "resourceList[1].selectors.pfNames: ignored (a netDevice selector",
        ] {
            assert!(w.contains(key), "{key} in {w}");
        }
        // Refused keys that are unset are no warning, and the accelerator
        // pool keeps only its own selectors.
        assert!(!w.contains("ddpProfiles") && !w.contains("vdpaType") && !w.contains("nicNames"));
        assert!(p.pools[1].selectors[0].pf_names.is_empty());
        assert_eq!(p.pools[1].selectors[0].drivers, ["x"]);
    }

    /// Every refusal starts with a key path or a location.
    fn located(e: &SriovdpError) -> bool {
        e.path == "(top level)" || e.path.starts_with("resourceList") || e.path.starts_with("line ")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(griffin_tests::fuzz_cases(256)))]

        /// Mangled samples and random text never panic; a refusal names a
        /// field or a line.
        #[test]
        fn garbage_configs_never_panic(
            seed in 1..u64::MAX,
            noise in "[ -~\n]{0,200}",
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let text = griffin_tests::hostile::mangle(SAMPLE, &mut griffin_tests::Rng(seed));
            let random = String::from_utf8_lossy(&bytes).into_owned();
            for t in [&text, &noise, &random] {
                if let Err(e) = parse(t) {
                    prop_assert!(located(&e), "{e} for {t:?}");
                }
            }
        }

        /// Structurally valid JSON with arbitrary values where the plugin
        /// expects lists, strings and booleans: accepted or refused naming
        /// the field.
        #[test]
        fn wrong_types_are_refused_by_name(
            key in prop::sample::select(vec![
                "resourceName", "resourcePrefix", "deviceType", "excludeTopology", "selectors",
                "additionalInfo"]),
            skey in prop::sample::select(vec![
                "vendors", "devices", "drivers", "pciAddresses", "pfNames", "rootDevices",
                "linkTypes", "isRdma", "needVhostNet", "ddpProfiles", "pKeys"]),
            value in prop::sample::select(vec![
                "null", "true", "1", "\"x\"", "[]", "[\"eth1#0-1\"]", "[1]", "{}", "[{}]", "\"\""]),
        ) {
            let text = format!(
                r#"{{"resourceList": [{{"resourceName": "n", "{key}": {value},
                    "selectors": {{"{skey}": {value}}}}}]}}"#
            );
            match parse(&text) {
                Ok(p) => prop_assert_eq!(p.pools.len(), 1),
                Err(e) => prop_assert!(e.path.starts_with("resourceList[0]"), "{} for {}", e, text),
            }
        }
    }
}
