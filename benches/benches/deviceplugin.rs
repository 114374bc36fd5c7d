//! Device plugin latency as the kubelet sees it: GetPreferredAllocation and
//! Allocate over the real gRPC server and unix sockets, called by the
//! kubelet stand-in (`griffin_tests::kubelet`), on a VF-heavy node: 256 VFs
//! in 8 pools (4 NUMA nodes × 2 SR-IOV NICs × 32 VFs, one pool per NIC).
//!
//! Baseline, in the same run and process: the same calls against a backend
//! that decides nothing (the first N available ids; Allocate answers one
//! variable) — the gRPC round trip alone, which is what a plugin without a
//! preference (the SR-IOV device plugin's GetPreferredAllocation returns
//! nothing) costs. The ratio is what choosing by the distance matrix adds.
//! Rounds interleave Griffin and the baseline; the spread is over rounds.
//! Target (issue 15): p99 < 1 ms for both calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use griffin_benches::{micros, write_report, Summary};
use griffin_runtime::plugin::backend::NodeBackend;
use griffin_runtime::plugin::server::{DevicePluginManager, PluginSettings, RegistrationMode};
use griffin_runtime::plugin::{Backend, ContainerDevices, Snapshot};
use griffin_runtime::pools::{HostFacts, Pools};
use griffin_tests::kubelet::Kubelet;
use griffin_tests::synthetic::{farm_pf_netdev, vf_farm_topology};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NODES: u32 = 4;
const PFS: u32 = 2;
const VFS: u32 = 32;
const ROUNDS: usize = 5;
const CALLS: usize = 400;
const SIZE: usize = 4;

/// Decides nothing: the first `size` available ids.
struct Null {
    tx: watch::Sender<Snapshot>,
}

impl Backend for Null {
    fn watch(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }
    fn prefer(
        &self,
        _: &str,
        available: &[String],
        must: &[String],
        size: usize,
    ) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = must.to_vec();
        out.extend(available.iter().filter(|a| !must.contains(a)).cloned());
        out.truncate(size);
        Ok(out)
    }
    fn allocate(&self, _: &str, ids: &[String]) -> Result<ContainerDevices, String> {
        let mut c = ContainerDevices::default();
        c.envs.insert("DEVICES".into(), ids.join(","));
        Ok(c)
    }
}

fn resource(n: u32, p: u32) -> String {
    format!("bench.griffin.dev/{}", farm_pf_netdev(n, p))
}

struct Served {
    kubelet: Kubelet,
    manager: DevicePluginManager,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn serve(backend: Arc<dyn Backend>, resources: usize) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::start(dir.path()).await.unwrap();
    let stop = CancellationToken::new();
    let manager = DevicePluginManager::start(
        backend,
        PluginSettings {
            device_plugin_dir: dir.path().to_owned(),
            plugins_registry_dir: dir.path().join("none"),
            mode: RegistrationMode::KubeletSocket,
        },
        stop.clone(),
    );
    kubelet
        .wait_for(Duration::from_secs(30), |r| {
            let listed: std::collections::BTreeSet<&str> =
                r.lists.iter().map(|l| l.resource.as_str()).collect();
            (listed.len() == resources).then_some(())
        })
        .await
        .expect("every pool registered and listed");
    Served {
        kubelet,
        manager,
        stop,
        _dir: dir,
    }
}

/// One round of `CALLS` calls of each kind, rotating over the pools.
async fn round(s: &Served, ids: &BTreeMap<String, Vec<String>>) -> (Vec<Duration>, Vec<Duration>) {
    let (mut pref, mut alloc) = (Vec::new(), Vec::new());
    let pools: Vec<(&String, &Vec<String>)> = ids.iter().collect();
    for i in 0..CALLS {
        let (r, all) = pools[i % pools.len()];
        let avail: Vec<&str> = all.iter().map(String::as_str).collect();
        let must = [avail[(i * 7) % avail.len()]];
        let t = Instant::now();
        let p = s
            .kubelet
            .get_preferred_allocation(r, &[(&avail, &must, SIZE as i32)])
            .await
            .unwrap();
        pref.push(t.elapsed());
        let chosen: Vec<&str> = p.container_responses[0]
            .device_i_ds
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(chosen.len(), SIZE);
        let t = Instant::now();
        s.kubelet.allocate(r, &[&chosen]).await.unwrap();
        alloc.push(t.elapsed());
    }
    (pref, alloc)
}

fn main() {
    let topo = vf_farm_topology(NODES, PFS, VFS);
    let mut toml = String::new();
    for n in 0..NODES {
        for p in 0..PFS {
            toml.push_str(&format!(
                "[[pools]]\nresource = \"{}\"\nkinds = [\"nic-vf\"]\npf_names = [\"{}\"]\n",
                resource(n, p),
                farm_pf_netdev(n, p)
            ));
        }
    }
    let cfg = griffin_runtime::config::Config::parse(&toml, griffin_runtime::config::Format::Toml)
        .unwrap();
    let (defs, _) = griffin_runtime::pools::defs_from_config(&cfg, None).unwrap();
    let pools = Pools::build(&topo, &defs, &HostFacts::default()).unwrap();
    let ids: BTreeMap<String, Vec<String>> = pools
        .iter()
        .map(|p| {
            (
                p.resource.clone(),
                p.devices.iter().map(|d| d.id.clone()).collect(),
            )
        })
        .collect();
    let total: usize = ids.values().map(Vec::len).sum();
    assert_eq!((ids.len(), total), (8, 256), "8 pools, 256 VFs");
    // The decision alone, in process.
    let (r0, all0) = ids.iter().next().unwrap();
    let free: BTreeMap<u32, usize> = (0..NODES).map(|n| (n, 2)).collect();
    let decide = griffin_benches::time(50, 2000, || {
        pools.prefer(r0, all0, &all0[..1], SIZE, &free).unwrap()
    });
    let snapshot = pools.snapshot();
    let griffin: Arc<dyn Backend> = Arc::new(NodeBackend::new(
        pools,
        &BTreeMap::new(),
        Duration::from_secs(120),
    ));
    let null: Arc<dyn Backend> = Arc::new(Null {
        tx: watch::channel(snapshot).0,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (g_pref, g_alloc, b_pref, b_alloc, rounds) = rt.block_on(async {
        let g = serve(griffin, ids.len()).await;
        let b = serve(null, ids.len()).await;
        // Warm-up: connections made, code paged in.
        round(&g, &ids).await;
        round(&b, &ids).await;
        let (mut gp, mut ga, mut bp, mut ba) = (vec![], vec![], vec![], vec![]);
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let (p1, a1) = round(&g, &ids).await;
            let (p2, a2) = round(&b, &ids).await;
            let (sp1, sa1, sp2, sa2) = (
                Summary::of(p1.clone()),
                Summary::of(a1.clone()),
                Summary::of(p2.clone()),
                Summary::of(a2.clone()),
            );
            rounds.push([
                (sp1.median, sp2.median),
                (sa1.median, sa2.median),
                (sp1.p99, sp2.p99),
                (sa1.p99, sa2.p99),
            ]);
            gp.extend(p1);
            ga.extend(a1);
            bp.extend(p2);
            ba.extend(a2);
        }
        for s in [g, b] {
            s.stop.cancel();
            s.manager.join().await;
            s.kubelet.stop().await;
        }
        (
            Summary::of(gp),
            Summary::of(ga),
            Summary::of(bp),
            Summary::of(ba),
            rounds,
        )
    });
    let ratio =
        |a: Duration, b: Duration| (a.as_secs_f64() / b.as_secs_f64() * 100.0).round() / 100.0;
    let spread = |k: usize| {
        let rs: Vec<f64> = rounds.iter().map(|r| ratio(r[k].0, r[k].1)).collect();
        let lo = rs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = rs.iter().cloned().fold(0.0, f64::max);
        format!("{lo}–{hi}")
    };
    let met = |s: &Summary| {
        if s.p99 < Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    };
    let md = format!(
        "# Device plugin calls as the kubelet makes them\n\n\
         256 VFs in 8 pools (4 NUMA nodes × 2 SR-IOV NICs × 32 VFs, one pool per NIC); the \
         kubelet stand-in calls over the real gRPC server on unix sockets: GetPreferredAllocation \
         (32 available, 1 must-include, size {SIZE}) then Allocate of the chosen {SIZE}. \
         {ROUNDS} interleaved rounds of {CALLS} calls each, after a warm-up round. Baseline: the \
         same calls to a backend that decides nothing (first N ids), i.e. the RPC alone.\n\n\
         | call | Griffin median | Griffin p99 | baseline median | baseline p99 | median ratio (spread over rounds) | p99 ratio (spread) | target p99 < 1 ms |\n\
         |---|---|---|---|---|---|---|---|\n\
         | GetPreferredAllocation | {} µs | {} µs | {} µs | {} µs | {}x ({}) | {}x ({}) | {} |\n\
         | Allocate | {} µs | {} µs | {} µs | {} µs | {}x ({}) | {}x ({}) | {} |\n\n\
         The decision alone (in process, no RPC): median {} µs, p99 {} µs.\n",
        micros(g_pref.median),
        micros(g_pref.p99),
        micros(b_pref.median),
        micros(b_pref.p99),
        ratio(g_pref.median, b_pref.median),
        spread(0),
        ratio(g_pref.p99, b_pref.p99),
        spread(2),
        met(&g_pref),
        micros(g_alloc.median),
        micros(g_alloc.p99),
        micros(b_alloc.median),
        micros(b_alloc.p99),
        ratio(g_alloc.median, b_alloc.median),
        spread(1),
        ratio(g_alloc.p99, b_alloc.p99),
        spread(3),
        met(&g_alloc),
        micros(decide.median),
        micros(decide.p99),
    );
    let json = serde_json::json!({
        "vfs": total, "pools": ids.len(), "rounds": ROUNDS, "calls_per_round": CALLS,
        "get_preferred_allocation": {"griffin": g_pref.to_json(), "baseline": b_pref.to_json()},
        "allocate": {"griffin": g_alloc.to_json(), "baseline": b_alloc.to_json()},
        "decision_in_process": decide.to_json(),
    });
    write_report("deviceplugin", &json, &md).unwrap();
}
