//! Request bodies of the node-score and extender endpoints: strict JSON
//! whose errors name the field path, and the bounds a shape must keep
//! (pure; the HTTP layer answers 400 with the message).

use crate::Shape;

/// Implements `Deserialize` (from a JSON object only) and `Serialize` for
/// a struct whose derives carry `#[serde(remote = "Self")]`: a derived
/// `Deserialize` of a struct also takes an array of its field values, so
/// `[1, 2]` would read as `{"cpus": 1, "memory": 2}`.
macro_rules! object_only {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$t, A::Error> {
                        // The inherent deserializer of `remote = "Self"`.
                        <$t>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_map(Visit)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    };
}
pub(crate) use object_only;

/// Largest number of shapes in one `POST /v1/score:batch`.
pub const MAX_BATCH: usize = 256;
/// Largest CPU count a shape may ask for.
pub const MAX_CPUS: u32 = 1 << 16;
/// Largest device count per kind a shape may ask for.
pub const MAX_DEVICES: u32 = 1 << 12;
/// Largest memory a shape may ask for (1 PiB).
pub const MAX_MEMORY: u64 = 1 << 50;

/// Strict JSON: the error names the field path (`devices[0].count: ...`).
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// A typed value from a JSON value; the error names the field path.
pub fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

/// Parses and bounds-checks one shape (pure; the 400 message names the field).
pub fn parse_shape(body: &[u8]) -> Result<Shape, String> {
    // Plain serde first; the path-tracking parser only to explain a failure.
    let shape: Shape = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(_) => from_json(body)?,
    };
    check_shape(&shape)?;
    Ok(shape)
}

/// Parses a batch: `{"shapes": [...]}` (pure).
pub fn parse_batch(body: &[u8]) -> Result<Vec<Shape>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        shapes: Vec<Shape>,
    }
    let b: Batch = from_json(body)?;
    if b.shapes.len() > MAX_BATCH {
        return Err(format!(
            "shapes: {} shapes, at most {MAX_BATCH}",
            b.shapes.len()
        ));
    }
    for (i, s) in b.shapes.iter().enumerate() {
        check_shape(s).map_err(|e| format!("shapes[{i}].{e}"))?;
    }
    Ok(b.shapes)
}

fn check_shape(s: &Shape) -> Result<(), String> {
    if s.cpus > MAX_CPUS {
        return Err(format!("cpus: {} is more than {MAX_CPUS}", s.cpus));
    }
    if s.memory > MAX_MEMORY {
        return Err(format!("memory: {} is more than {MAX_MEMORY}", s.memory));
    }
    if s.devices.len() > 64 {
        return Err("devices: more than 64 entries".into());
    }
    for (i, d) in s.devices.iter().enumerate() {
        if d.count > MAX_DEVICES {
            return Err(format!(
                "devices[{i}].count: {} is more than {MAX_DEVICES}",
                d.count
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 14 D10: a shape is an object, never an array of field values.
    #[test]
    fn arrays_are_not_shapes() {
        for body in [
            &b"[1,2]"[..],
            b"[1]",
            br#"{"cpus": 1, "devices": [["gpu", 1]]}"#,
        ] {
            let e = parse_shape(body).unwrap_err();
            assert!(e.contains("expected a JSON object"), "{e}");
        }
        let e = parse_batch(br#"{"shapes": [[1, 2]]}"#).unwrap_err();
        assert!(
            e.starts_with("shapes[0]: ") && e.contains("JSON object"),
            "{e}"
        );
        let e =
            parse_shape(br#"{"cpus": 1, "devices": [{"kind": "gpu", "count": -1}]}"#).unwrap_err();
        assert!(e.starts_with("devices[0].count: "), "{e}");
        let s = parse_shape(br#"{"cpus": 2, "devices": [{"kind": "gpu", "count": 1}]}"#).unwrap();
        assert_eq!((s.cpus, s.devices.len()), (2, 1));
        assert_eq!(serde_json::to_value(&s).unwrap()["devices"][0]["count"], 1);
    }

    const SAMPLES: &[&str] = &[
        r#"{"cpus": 2, "memory": 1073741824, "devices": [{"kind": "nic-vf", "count": 2}], "policy": "single-numa-node", "topology_aware": true}"#,
        r#"{"shapes": [{"cpus": 1}, {"cpus": 64, "devices": [{"kind": "gpu", "count": 1}]}]}"#,
        r#"{"pod": {"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"requests": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"}}}]}}, "nodenames": ["n1", "n2"]}"#,
        r#"{"Pod": {"spec": {"initContainers": [{"resources": {"requests": {"cpu": "3"}}}], "overhead": {"cpu": "250m"}}}, "Nodes": {"items": [{"metadata": {"name": "n1"}}]}, "NodeNames": null}"#,
    ];

    fn every_parser(body: &[u8]) {
        if let Ok(s) = parse_shape(body) {
            assert!(s.cpus <= MAX_CPUS && s.memory <= MAX_MEMORY);
        }
        if let Ok(b) = parse_batch(body) {
            assert!(b.len() <= MAX_BATCH);
        }
        if let Ok(args) = crate::extender::parse_args(body) {
            let _ = crate::extender::pod_shape(&args.pod);
        }
    }

    proptest! {
        /// Mangled valid requests: errors or bounded values, never a panic.
        #[test]
        fn mangled_requests_never_panic(
            sample in 0..SAMPLES.len(),
            cut in 0usize..400,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
            splice in prop_oneof![
                Just(String::new()),
                Just("-1".to_owned()),
                Just("1e308".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("null".to_owned()),
                Just("\"\\u0000\"".to_owned()),
                Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_owned()),
                "[ -~]{0,20}",
            ],
        ) {
            let mut body = SAMPLES[sample].as_bytes().to_vec();
            body.truncate(cut.max(1).min(body.len()));
            for (at, byte) in edits {
                let i = usize::from(at) % body.len();
                body[i] = byte;
            }
            let at = cut % (body.len() + 1);
            body.splice(at..at, splice.bytes());
            every_parser(&body);
        }

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            every_parser(&body);
        }
    }
}
