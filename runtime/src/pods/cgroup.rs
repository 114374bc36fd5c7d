//! Where a container's cgroup is (pure): the names the kubelet gives pod
//! cgroups under its `cgroupfs` and `systemd` drivers, and the names the
//! container runtimes give containers below them. The same relative path
//! serves cgroup v1 (below the cpuset hierarchy) and v2.

use super::spec::{valid_uid, ContainerId, ContainerInfo, PodInfo, Qos};

/// The cgroup a container may have, relative to the cgroup root, most
/// likely first (which one exists tells the driver): the kubelet's
/// `cgroupfs` driver (`kubepods/burstable/pod<uid>/<id>`) and its `systemd`
/// driver (`kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`),
/// for containerd, CRI-O and Docker. `kubelet_root` is the kubelet's
/// `--cgroup-root` (`kubepods` is made below it; empty or `/`: the root).
pub fn candidates(kubelet_root: &str, qos: Qos, pod_uid: &str, id: &ContainerId) -> Vec<String> {
    let class = match qos {
        Qos::Guaranteed => None,
        Qos::Burstable => Some("burstable"),
        Qos::BestEffort => Some("besteffort"),
    };
    let scope = match id.runtime.as_str() {
        "containerd" => "cri-containerd",
        "cri-o" => "crio",
        other => other,
    };
    let mut out = Vec::new();
    // cgroupfs
    let pod_fs = match class {
        None => format!("kubepods/pod{pod_uid}"),
        Some(c) => format!("kubepods/{c}/pod{pod_uid}"),
    };
    out.push(format!("{pod_fs}/{}", id.id));
    out.push(format!("{pod_fs}/{scope}-{}", id.id));
    // systemd: a '-' in a slice name means nesting, so the uid's become '_'.
    let u = pod_uid.replace('-', "_");
    let pod_sd = match class {
        None => format!("kubepods.slice/kubepods-pod{u}.slice"),
        Some(c) => format!("kubepods.slice/kubepods-{c}.slice/kubepods-{c}-pod{u}.slice"),
    };
    out.push(format!("{pod_sd}/{scope}-{}.scope", id.id));
    let root = kubelet_root.trim_matches('/');
    if !root.is_empty() {
        for p in &mut out {
            *p = format!("{root}/{p}");
        }
    }
    out
}

/// The cgroup container `c` of `pod` has now: the first of its
/// [`candidates`] that `exists`; `None` without a runtime id, or for a pod
/// uid that could name a path outside the kubelet's hierarchy.
pub fn existing(
    kubelet_root: &str,
    pod: &PodInfo,
    c: &ContainerInfo,
    exists: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let id = c.id.as_ref()?;
    if !valid_uid(&pod.uid) {
        return None;
    }
    candidates(kubelet_root, pod.qos, &pod.uid, id)
        .into_iter()
        .find(|p| exists(p))
}

/// Which of `candidates` is the cgroup a container runtime names in its
/// OCI spec (`linux.cgroupsPath`, as NRI passes it): a path below the
/// cgroup root (`/kubepods/pod<uid>/<id>`, cgroupfs driver) or systemd's
/// `slice:prefix:name` (`kubepods-pod<uid>.slice:cri-containerd:<id>`).
/// `None` when it is none of them (the candidates know every layout the
/// kubelet makes; anything else is not a pod's container).
pub fn from_runtime<'a>(cgroups_path: &str, candidates: &'a [String]) -> Option<&'a String> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    match parts[..] {
        [slice, prefix, name] if slice.ends_with(".slice") => {
            let tail = format!("/{slice}/{prefix}-{name}.scope");
            candidates.iter().find(|c| format!("/{c}").ends_with(&tail))
        }
        [path] => {
            let path = path.trim_start_matches('/');
            candidates.iter().find(|c| *c == path)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(runtime: &str) -> ContainerId {
        ContainerId {
            runtime: runtime.into(),
            id: "abc".into(),
        }
    }

    #[test]
    fn the_runtime_s_cgroups_path_picks_the_candidate() {
        let c = candidates("", Qos::Burstable, "1-2", &id("containerd"));
        assert_eq!(
            from_runtime("/kubepods/burstable/pod1-2/abc", &c),
            Some(&c[0])
        );
        assert_eq!(
            from_runtime("kubepods-burstable-pod1_2.slice:cri-containerd:abc", &c),
            Some(&c[2])
        );
        assert_eq!(from_runtime("/kubepods/burstable/pod1-2/other", &c), None);
        assert_eq!(
            from_runtime("kubepods-pod1_2.slice:cri-containerd:abc", &c),
            None
        );
        assert_eq!(from_runtime("a:b", &c), None);
        assert_eq!(from_runtime("", &c), None);
        let r = candidates("/e2e", Qos::Guaranteed, "u", &id("containerd"));
        assert_eq!(from_runtime("/e2e/kubepods/podu/abc", &r), Some(&r[0]));
    }

    #[test]
    fn kubelet_and_runtime_names() {
        let c = candidates("", Qos::Guaranteed, "1-2", &id("containerd"));
        assert_eq!(
            c,
            [
                "kubepods/pod1-2/abc",
                "kubepods/pod1-2/cri-containerd-abc",
                "kubepods.slice/kubepods-pod1_2.slice/cri-containerd-abc.scope"
            ]
        );
        let c = candidates("", Qos::Burstable, "1-2", &id("cri-o"));
        assert_eq!(c[0], "kubepods/burstable/pod1-2/abc");
        assert_eq!(
            c[2],
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/crio-abc.scope"
        );
        let c = candidates("/", Qos::BestEffort, "u", &id("docker"));
        assert_eq!(c[0], "kubepods/besteffort/podu/abc");
        assert_eq!(
            c[2],
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu.slice/docker-abc.scope"
        );
        let c = candidates("/e2e/", Qos::Guaranteed, "u", &id("containerd"));
        assert_eq!(c[0], "e2e/kubepods/podu/abc");
    }
}
