//! `flows` of an `Acceleration` request: the node's data interface steers
//! the pod's declared flows straight to the pod's interface with XDP.
//!
//! Each flow becomes rules of the split on the data interface (`[pods]
//! flows_iface`), after the split's file rules ([`Split::set_extra`]):
//! protocol and destination ports as the flow gives them (one rule per
//! port range), the flow's `prefixes` as sources, and the pod's own
//! addresses (`status.podIPs`) as destinations, so a rule only ever takes
//! traffic addressed to the pod (the node's management traffic, addressed
//! to the node, never matches). The action redirects to the near end of
//! the pod's veth, found from the network namespace of a process of the
//! pod ([`griffin_ebpf::podpath::pod_link`]); frames leave it with the
//! pod's MAC as destination ([`PodPath`], the devmap program), and with a
//! split in native mode the pod's end runs the pass-only program its veth
//! needs to take native redirects.
//!
//! The rules of every pod form one rule set, written as one atomic update
//! when it changes (a pod's rules added, changed or gone); a failed update
//! leaves the rules in force and is reported on each pod it concerned, and
//! tried again at the next reconcile. Rule ids are positions, so every
//! update reports every steered pod's ids again. A pod that does not fit
//! (the split's limits: 1024 rules, 64 prefix lists, 256 redirect targets)
//! is refused alone, naming the limit. Rules are named
//! `<namespace>/<pod>/<flow>` (the flow's `name`, else `flows[i]`), with
//! `#k` for the k-th port range of a flow of several.
//!
//! [`steer`] decides over a [`Steer`] seam (the pod's veth, the update),
//! so the decision is unit-tested with a fake; the kernel side runs on
//! real veths in `ebpf/tests/podpath.rs` and in the e2e cluster.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use griffin_ebpf::{
    podpath::{self, PodLink, PodPath, L2},
    split::Split,
    Action as XdpAction, Prefix, Rule, RulesFile, XdpMode,
};

use super::{Action, Outcome, PodInfo};
use crate::accel::request::from_annotations;

/// What [`steer`] needs from the machine.
pub trait Steer {
    /// The data interface the split is on.
    fn iface(&self) -> &str;
    /// The pod's veth, from the network namespace of process `pid`; with
    /// a split in native mode the pod's end is made to take redirects.
    fn link(&self, pid: u32) -> Result<PodLink, String>;
    /// Makes `extra` the split's run-time rules and `l2` the addresses of
    /// frames leaving through each host veth (by ifindex); returns the id
    /// of `extra`'s first rule.
    fn apply(&self, extra: &RulesFile, l2: &BTreeMap<u32, L2>) -> Result<u32, String>;
    /// Whether `extra` fits after the split's own rules (its limits: the
    /// rules, prefix lists and redirect targets of both together).
    fn fits(&self, extra: &RulesFile) -> Result<(), String> {
        let _ = extra;
        Ok(())
    }
}

/// The machine: the split on the data interface and the pod path.
pub struct Kernel {
    split: Split,
    path: Mutex<PodPath>,
    native: bool,
    /// Pods' veths whose pod end got the pass-only program.
    passing: Mutex<std::collections::BTreeSet<PodLink>>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("iface", &self.split.iface())
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// Steers with `split`: loads the pod path (its address map pinned in
    /// `pin_dir`) and makes its devmap program the split's egress program.
    pub fn new(split: Split, pin_dir: &std::path::Path) -> Result<Self, String> {
        let chain = |e: &(dyn std::error::Error + 'static)| griffin_devices::Chain(e).to_string();
        let path = PodPath::load(pin_dir).map_err(|e| chain(&e))?;
        let native = {
            let mut dp = split.lock();
            dp.set_egress_program(Some(path.l2_program()))
                .map_err(|e| chain(&e))?;
            dp.attachment().is_some_and(|a| a.mode == XdpMode::Native)
        };
        Ok(Self {
            split,
            path: Mutex::new(path),
            native,
            passing: Mutex::default(),
        })
    }
}

impl Steer for Kernel {
    fn iface(&self) -> &str {
        self.split.iface()
    }

    fn link(&self, pid: u32) -> Result<PodLink, String> {
        let p = format!("/proc/{pid}/ns/net");
        let ns = std::fs::File::open(&p).map_err(|e| format!("{p}: {e}"))?;
        let chain = |e: podpath::PodPathError| griffin_devices::Chain(&e).to_string();
        let link = podpath::pod_link(ns.as_fd()).map_err(chain)?;
        if self.native {
            let mut done = self.passing.lock().unwrap_or_else(|e| e.into_inner());
            if !done.contains(&link) {
                let path = self.path.lock().unwrap_or_else(|e| e.into_inner());
                path.attach_pass(ns.as_fd(), &link).map_err(chain)?;
                done.insert(link.clone());
            }
        }
        Ok(link)
    }

    fn fits(&self, extra: &RulesFile) -> Result<(), String> {
        self.split.check_extra(extra)
    }

    fn apply(&self, extra: &RulesFile, l2: &BTreeMap<u32, L2>) -> Result<u32, String> {
        let mut path = self.path.lock().unwrap_or_else(|e| e.into_inner());
        let chain = |e: &(dyn std::error::Error + 'static)| griffin_devices::Chain(e).to_string();
        // Addresses first: a new rule never redirects without them.
        for (&ifindex, &a) in l2 {
            path.set_l2(ifindex, a).map_err(|e| chain(&e))?;
        }
        let first = self.split.set_extra(extra).map_err(|e| chain(&e))?;
        // No rule redirects to the others any more.
        for ifindex in path.l2_ifindexes().map_err(|e| chain(&e))? {
            if !l2.contains_key(&ifindex) {
                path.remove_l2(ifindex).map_err(|e| chain(&e))?;
            }
        }
        self.passing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|link| l2.contains_key(&link.host_ifindex));
        Ok(first)
    }
}

/// A pod's steered flows as last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Steered {
    container: String,
    cgroup: String,
    /// The near end of its veth.
    via: String,
    /// Its rules' positions in the run-time rules.
    rules: std::ops::Range<u32>,
}

/// The run-time rules in force, as [`steer`] last applied them, and the
/// failures last reported.
#[derive(Debug, Default)]
struct Applied {
    extra: RulesFile,
    l2: BTreeMap<u32, L2>,
    /// Pod uid -> the failure reported (reported again only when it
    /// changes; the record keeps it until the pod is steered).
    failed: BTreeMap<String, String>,
    /// Uids of the pods whose rules are in force.
    in_force: std::collections::BTreeSet<String>,
    /// Whether `extra` and `l2` are what the split holds: not before the
    /// first update (an adopted split holds the rules its record kept,
    /// which the first update replaces, even with none).
    known: bool,
}

/// The steering of the pods engine's reconciles: the machine, or none
/// when no data interface is configured (pods with `flows` are then told
/// so), and what was applied.
#[derive(Clone, Default)]
pub struct Flows {
    net: Option<Arc<dyn Steer + Send + Sync>>,
    applied: Arc<Mutex<Applied>>,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("iface", &self.net.as_ref().map(|n| n.iface().to_owned()))
            .finish_non_exhaustive()
    }
}

impl Flows {
    /// Steering with `net`, or none.
    pub fn new(net: Option<Arc<dyn Steer + Send + Sync>>) -> Self {
        Self {
            net,
            applied: Arc::default(),
        }
    }

    /// Whether the rules of pod `uid` are in force (as last applied).
    pub fn in_force(&self, uid: &str) -> bool {
        self.lock().in_force.contains(uid)
    }

    /// Why pod `uid`'s flows failed at the last [`steer`], if they did.
    pub fn failure(&self, uid: &str) -> Option<String> {
        self.lock().failed.get(uid).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why `pod`'s `flows` can never be steered here, whatever else happens:
/// the node has no data interface for them, or the pod has no interface of
/// its own (`hostNetwork`). `None` for a pod without flows.
pub fn blocker(flows: &Flows, pod: &PodInfo) -> Option<String> {
    let Some(Ok(req)) = from_annotations(Some(&pod.annotations)) else {
        return None;
    };
    if req.flows.is_empty() {
        return None;
    }
    if flows.net.is_none() {
        return Some("this node has no data interface for flows ([pods] flows_iface names none of its XDP splits)".into());
    }
    if pod.host_network {
        return Some("the pod uses the node's network namespace (hostNetwork); flows steer to a pod's own interface".into());
    }
    None
}

/// Adds the rules of `pod`'s `flows` to `extra`, redirecting to `via`;
/// the error names what does not fit.
fn pod_rules(
    pod: &PodInfo,
    flows: &[crate::accel::request::Flow],
    via: &str,
    extra: &mut RulesFile,
) -> Result<(), String> {
    let dst: Vec<Prefix> = pod
        .ips
        .iter()
        .map(|ip| Prefix::new(*ip, if ip.is_ipv4() { 32 } else { 128 }))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for (i, flow) in flows.iter().enumerate() {
        let name = format!(
            "{}/{}/{}",
            pod.namespace,
            pod.name,
            flow.name.clone().unwrap_or_else(|| format!("flows[{i}]"))
        );
        let mut rule = Rule::new(0, u32::MAX, XdpAction::Redirect { slot: 0 });
        rule.ip_proto = flow.protocol.ip_proto();
        let ranges: Vec<Option<std::ops::RangeInclusive<u16>>> = match &flow.ports {
            None => vec![None],
            Some(list) => list.iter().map(|r| Some(r.range())).collect(),
        };
        let several = ranges.len() > 1;
        for (k, ports) in ranges.into_iter().enumerate() {
            rule.dst_ports = ports;
            let name = if several {
                format!("{name}#{k}")
            } else {
                name.clone()
            };
            extra
                .push(
                    &name,
                    &rule,
                    flow.prefixes.clone(),
                    Some(dst.clone()),
                    Some(via),
                )
                .map_err(|e| format!("rule {name}: {e}"))?;
        }
    }
    Ok(())
}

/// Steers the declared flows of the running pods of `pods` to them; one
/// [`Outcome`] per pod whose steering changed or failed. `cgroup_of`
/// gives a running container's cgroup (pod, container name), `process_of`
/// a process of a cgroup.
pub fn steer(
    flows: &Flows,
    pods: &[PodInfo],
    cgroup_of: &dyn Fn(&PodInfo, &str) -> Option<String>,
    process_of: &dyn Fn(&str) -> Option<u32>,
) -> Vec<Outcome> {
    let mut applied = flows.lock();
    let mut out = Vec::new();
    let mut extra = RulesFile::default();
    let mut l2 = BTreeMap::new();
    let mut steered: BTreeMap<String, Steered> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !p.ending) {
        let Some(Ok(req)) = from_annotations(Some(&pod.annotations)) else {
            continue;
        };
        if req.flows.is_empty() {
            continue;
        }
        // The container the flows are reported on: the first running one
        // the request applies to (the pod's namespace is shared).
        let Some((c, cg)) = pod
            .containers
            .iter()
            .filter(|c| c.running && req.applies_to(&c.name))
            .find_map(|c| Some((c, cgroup_of(pod, &c.name)?)))
        else {
            continue;
        };
        let failed = |error: String| Outcome {
            pod: pod.key(),
            pod_uid: pod.uid.clone(),
            container: c.name.clone(),
            cgroup: cg.clone(),
            action: Action::SteerFailed {
                error: format!("flows: {error}"),
            },
        };
        if let Some(why) = blocker(flows, pod) {
            out.push(failed(why));
            continue;
        }
        let Some(net) = &flows.net else {
            continue;
        };
        if pod.ips.is_empty() {
            // Not assigned yet; the next reconcile sees them.
            continue;
        }
        let Some(pid) = process_of(&cg) else {
            continue;
        };
        let link = match net.link(pid) {
            Ok(l) => l,
            Err(e) => {
                out.push(failed(format!(
                    "the pod's interface (from /proc/{pid}/ns/net): {e}"
                )));
                continue;
            }
        };
        // All of a pod's rules or none of them.
        let mut with = extra.clone();
        let first = with.rules.len() as u32;
        match pod_rules(pod, &req.flows, &link.host_name, &mut with).and_then(|()| net.fits(&with))
        {
            Ok(()) => {
                steered.insert(
                    pod.uid.clone(),
                    Steered {
                        container: c.name.clone(),
                        cgroup: cg.clone(),
                        via: link.host_name.clone(),
                        rules: first..with.rules.len() as u32,
                    },
                );
                extra = with;
                l2.insert(link.host_ifindex, link.l2());
            }
            Err(e) => out.push(failed(format!("on {}: {e}", net.iface()))),
        }
    }
    if let Some(net) = &flows.net {
        if !applied.known || extra != applied.extra || l2 != applied.l2 {
            out.extend(apply(&**net, &mut applied, pods, extra, l2, &steered));
        }
    }
    // Each failure once (until it changes or the pod is steered).
    let failing: BTreeMap<String, String> = out
        .iter()
        .filter_map(|o| match &o.action {
            Action::SteerFailed { error } => Some((o.pod_uid.clone(), error.clone())),
            _ => None,
        })
        .collect();
    out.retain(|o| match &o.action {
        Action::SteerFailed { error } => applied.failed.get(&o.pod_uid) != Some(error),
        _ => true,
    });
    applied.failed = failing;
    out
}

/// Writes the rules and addresses of the pods `steered` and reports
/// each of them.
fn apply(
    net: &dyn Steer,
    applied: &mut Applied,
    pods: &[PodInfo],
    extra: RulesFile,
    l2: BTreeMap<u32, L2>,
    steered: &BTreeMap<String, Steered>,
) -> Vec<Outcome> {
    let result = net.apply(&extra, &l2);
    let out = steered
        .iter()
        .map(|(uid, s)| {
            let pod = pods
                .iter()
                .find(|p| &p.uid == uid)
                .expect("steered from pods");
            Outcome {
                pod: pod.key(),
                pod_uid: uid.clone(),
                container: s.container.clone(),
                cgroup: s.cgroup.clone(),
                action: match &result {
                    Ok(base) => Action::Steered {
                        iface: net.iface().to_owned(),
                        via: s.via.clone(),
                        rules: (s.rules.start + base..s.rules.end + base).collect(),
                    },
                    Err(e) => Action::SteerFailed {
                        error: format!("flows: the rules on {}: {e}", net.iface()),
                    },
                },
            }
        })
        .collect();
    if result.is_ok() {
        applied.extra = extra;
        applied.l2 = l2;
        applied.in_force = steered.keys().cloned().collect();
        applied.known = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    use crate::pods::testing::{pod_link as link, FakeSteer as Fake};

    fn fake() -> Fake {
        Fake::new()
    }

    fn flows(fake: Fake) -> (Flows, Arc<Fake>) {
        let fake = Arc::new(fake);
        (Flows::new(Some(fake.clone())), fake)
    }

    /// Pod `uid` (process `pid`, address `ip`) with the annotation.
    fn pod(uid: &str, pid: &str, ip: &str, annotation: &str) -> PodInfo {
        let mut p = crate::pods::testing::one_container(Some(annotation), true, false);
        p.uid = uid.into();
        p.name = uid.into();
        p.containers[0].name = pid.into();
        p.ips = vec![ip.parse::<IpAddr>().unwrap()];
        p
    }

    fn run(f: &Flows, pods: &[PodInfo]) -> Vec<Outcome> {
        steer(f, pods, &|_, c| Some(format!("cg/{c}")), &|cg| {
            cg.strip_prefix("cg/")?.parse().ok()
        })
    }

    const VIDEO: &str = r#"{"flows": [{"name": "video", "protocol": "udp", "ports": ["5000-5100", 6000], "prefixes": "198.18.0.0/15"}]}"#;
    const ANY: &str = r#"{"flows": [{"ports": 7000}]}"#;

    #[test]
    fn each_port_range_is_a_rule_to_the_pods_address_via_its_veth() {
        let (f, fake) = flows(fake());
        let out = run(&f, &[pod("a", "100", "198.19.1.2", VIDEO)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            out[0].action,
            Action::Steered {
                iface: "eth1".into(),
                via: "veth1".into(),
                rules: vec![3, 4],
            }
        );
        let applied = fake.applied.lock().unwrap();
        let (extra, l2) = &applied[0];
        assert_eq!(extra.names, ["ns/a/video#0", "ns/a/video#1"]);
        let r = &extra.rules[0];
        assert_eq!(r.ip_proto, Some(17));
        assert_eq!(r.dst_ports, Some(5000..=5100));
        assert_eq!(extra.rules[1].dst_ports, Some(6000..=6000));
        let set = |s: Option<u8>| extra.sets[usize::from(s.unwrap())].clone();
        assert_eq!(set(r.src_set), ["198.18.0.0/15".parse::<Prefix>().unwrap()]);
        assert_eq!(set(r.dst_set), ["198.19.1.2/32".parse::<Prefix>().unwrap()]);
        assert_eq!(extra.redirect_targets[0].iface, "veth1");
        assert_eq!(l2[&11], link(1).l2());
        drop(applied);
        // Nothing changed: nothing applied, nothing reported.
        assert!(run(&f, &[pod("a", "100", "198.19.1.2", VIDEO)]).is_empty());
        assert_eq!(fake.applied.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_gone_pod_takes_its_rules_and_the_others_are_reported_with_new_ids() {
        let (f, fake) = flows(fake());
        let a = pod("a", "100", "198.19.1.2", VIDEO);
        let b = pod("b", "200", "198.19.1.3", ANY);
        let out = run(&f, &[a.clone(), b.clone()]);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[1].action, Action::Steered { rules, .. } if rules == &[5]));
        // a ends: b's rule moves up.
        let mut ending = a;
        ending.ending = true;
        let out = run(&f, &[ending, b]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].pod_uid, "b");
        assert!(
            matches!(&out[0].action, Action::Steered { rules, via, .. } if rules == &[3] && via == "veth2")
        );
        let applied = fake.applied.lock().unwrap();
        let (extra, l2) = applied.last().unwrap();
        assert_eq!(extra.names, ["ns/b/flows[0]"]);
        assert_eq!(extra.rules[0].ip_proto, None);
        assert_eq!(l2.keys().collect::<Vec<_>>(), [&12]);
        drop(applied);
        // All gone: the run-time rules are emptied.
        assert!(run(&f, &[]).is_empty());
        assert_eq!(
            fake.applied.lock().unwrap().last().unwrap().0,
            RulesFile::default()
        );
    }

    #[test]
    fn failures_name_the_step_and_are_tried_again() {
        let (f, fake) = flows(fake());
        // No veth for the pod's namespace.
        let out = run(&f, &[pod("c", "300", "198.19.1.4", ANY)]);
        assert!(
            matches!(&out[0].action, Action::SteerFailed { error } if error.starts_with("flows: the pod's interface (from /proc/300/ns/net): no veth")),
            "{out:?}"
        );
        // The update refused: reported, and tried again next time.
        *fake.fail_apply.lock().unwrap() = Some("more than 1024 rules".into());
        let a = pod("a", "100", "198.19.1.2", VIDEO);
        let out = run(&f, std::slice::from_ref(&a));
        assert_eq!(
            out[0].action,
            Action::SteerFailed {
                error: "flows: the rules on eth1: more than 1024 rules".into()
            }
        );
        *fake.fail_apply.lock().unwrap() = None;
        let out = run(&f, std::slice::from_ref(&a));
        assert!(matches!(out[0].action, Action::Steered { .. }));
        // A host-network pod is refused; a pod without an address yet waits.
        let mut host = pod("h", "100", "198.19.1.5", ANY);
        host.host_network = true;
        let mut unaddressed = pod("u", "100", "198.19.1.6", ANY);
        unaddressed.ips.clear();
        let out = run(&f, &[a, host, unaddressed]);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0].action, Action::SteerFailed { error } if error.contains("hostNetwork"))
        );
    }

    #[test]
    fn without_a_data_interface_pods_asking_are_told_once() {
        let f = Flows::new(None);
        let pods = [pod("a", "100", "198.19.1.2", VIDEO)];
        let out = run(&f, &pods);
        assert!(
            matches!(&out[0].action, Action::SteerFailed { error } if error.contains("[pods] flows_iface")),
            "{out:?}"
        );
        // The same failure is not reported again (the record keeps it).
        assert!(run(&f, &pods).is_empty());
        // A pod without flows is none of this step's business.
        let plain = pod("p", "100", "198.19.1.3", r#"{"topologyAware": false}"#);
        assert!(run(&f, &[plain]).is_empty());
    }

    #[test]
    fn a_pod_that_does_not_fit_is_refused_alone() {
        let (f, fake) = flows(fake());
        // 64 port ranges in each of 17 flows: 1088 rules, over the limit.
        let ports: Vec<String> = (0..64).map(|i| (10000 + i * 2).to_string()).collect();
        let flows: Vec<String> = (0..17)
            .map(|i| format!(r#"{{"name": "f{i}", "ports": [{}]}}"#, ports.join(",")))
            .collect();
        let big = pod(
            "z",
            "200",
            "198.19.1.9",
            &format!(r#"{{"flows": [{}]}}"#, flows.join(",")),
        );
        let out = run(&f, &[pod("a", "100", "198.19.1.2", VIDEO), big]);
        assert_eq!(out.len(), 2, "{out:?}");
        let failed = out.iter().find(|o| o.pod_uid == "z").unwrap();
        assert!(
            matches!(&failed.action, Action::SteerFailed { error } if error.contains("more than 1024 rules")),
            "{failed:?}"
        );
        assert_eq!(fake.applied.lock().unwrap()[0].0.rules.len(), 2);
    }
}
