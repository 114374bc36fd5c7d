//! `griffin daemon` serving device pools to a kubelet: the in-process
//! kubelet stand-in (`griffin_tests::kubelet`, built from the same protos)
//! and a PodResources server over real unix sockets, the daemon on the
//! edge2s capture (igb VFs 0000:13:10.0 and 0000:13:10.2 under one switch,
//! NUMA node 0). What the real kubelet does with it is the e2e's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use griffin_kubelet_api::deviceplugin as dp;
use griffin_kubelet_api::podresources as v1;
use griffin_tests::kubelet::{Kubelet, PodResourcesServer};

mod cli_common;
use cli_common::Daemon;

const SRIOV: &str = "intel.com/intel_sriov_netdevice";
const VF0: &str = "0000:13:10.0";
const VF1: &str = "0000:13:10.2";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu")
}

fn config(dir: &Path) -> PathBuf {
    let cfg = dir.join("griffin.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"root = {root:?}
state_dir = {state:?}
node_name = "w1"
pools = [{{ resource = "{SRIOV}", kinds = ["nic-vf"] }}, {{ resource = "griffin.dev/nvme", kinds = ["nvme"] }}]
[device_plugins]
device_plugin_dir = {dp:?}
mode = "kubelet-socket"
pod_resources_socket = {podres:?}
check_interval_s = 1
allocate_grace_s = 2
"#,
            root = fixture(),
            state = dir.join("state"),
            dp = dir.join("device-plugins"),
            podres = dir.join("pod-resources/kubelet.sock"),
        ),
    )
    .unwrap();
    cfg
}

/// Free NIC VFs in `/v1/node`.
fn free_vfs(d: &Daemon) -> u64 {
    d.json("GET", "/v1/node", "")["devices"]["nic-vf"]["free"]
        .as_u64()
        .unwrap()
}

/// Polls `f` every 50 ms until it holds; panics with `what` after 20 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn pod(name: &str, ids: &[&str]) -> v1::PodResources {
    v1::PodResources {
        name: name.into(),
        namespace: "default".into(),
        containers: vec![v1::ContainerResources {
            name: "c".into(),
            devices: vec![v1::ContainerDevices {
                resource_name: SRIOV.into(),
                device_ids: ids.iter().map(|s| s.to_string()).collect(),
                topology: None,
            }],
            cpu_ids: vec![],
            memory: vec![],
        }],
    }
}

#[test]
fn the_daemon_serves_its_pools_to_the_kubelet_and_tracks_what_pods_hold() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let dp_dir = dir.path().join("device-plugins");
    let kubelet = rt.block_on(Kubelet::start(&dp_dir)).unwrap();
    let podres = rt
        .block_on(PodResourcesServer::start(
            &dir.path().join("pod-resources/kubelet.sock"),
        ))
        .unwrap();
    let d = Daemon::start(&[
        std::ffi::OsStr::new("--config"),
        config(dir.path()).as_os_str(),
    ]);

    // Registration, then every device with health and NUMA node.
    let list = rt
        .block_on(kubelet.wait_for(Duration::from_secs(20), |r| {
            r.lists_of(SRIOV).last().map(|l| l.devices.clone())
        }))
        .expect("no ListAndWatch list for the SR-IOV pool");
    let r = kubelet.recorded();
    let reg = r
        .registrations
        .iter()
        .find(|g| g.request.resource_name == SRIOV)
        .unwrap();
    assert_eq!(reg.request.version, "v1beta1");
    assert_eq!(
        reg.request.endpoint,
        "griffin-intel.com_intel_sriov_netdevice.sock"
    );
    assert!(reg.endpoint_accepting, "served before it registered");
    let opts = reg.request.options.unwrap();
    assert!(opts.get_preferred_allocation_available && !opts.pre_start_required);
    assert!(r
        .registrations
        .iter()
        .any(|g| g.request.resource_name == "griffin.dev/nvme"));
    let ids: Vec<&str> = list.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [VF0, VF1]);
    for dev in &list {
        assert_eq!(dev.health, dp::HEALTHY);
        let numa: Vec<i64> = dev
            .topology
            .as_ref()
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(numa, [0], "{dev:?}");
    }

    // The kubelet's two calls for a pod asking for one VF.
    let pref = rt
        .block_on(kubelet.get_preferred_allocation(SRIOV, &[(&[VF0, VF1], &[VF1], 1)]))
        .unwrap();
    assert_eq!(
        pref.container_responses[0].device_i_ds,
        [VF1],
        "must-include honoured"
    );
    let before = free_vfs(&d);
    assert_eq!(before, 2);
    let alloc = rt.block_on(kubelet.allocate(SRIOV, &[&[VF0]])).unwrap();
    let envs = &alloc.container_responses[0].envs;
    assert_eq!(
        envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"], VF0,
        "{envs:?}"
    );
    assert!(
        envs.contains_key("PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_INFO"),
        "{envs:?}"
    );
    // Held: recorded in the checkpoint, no longer free on /v1/node.
    let took = eventually("the allocated VF leaves the free set", || free_vfs(&d) == 1);
    eprintln!("Allocate -> /v1/node shows the VF held: {took:?}");

    // PodResources lists it past the grace period: still held.
    podres.set_pods(vec![pod("p1", &[VF0])]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(free_vfs(&d), 1, "listed by PodResources: held");

    // A kubelet restart deletes the plugin sockets: re-registered.
    let restart = rt.block_on(kubelet.restart()).unwrap();
    let again = rt
        .block_on(kubelet.wait_for(Duration::from_secs(10), |r| {
            r.registrations
                .iter()
                .filter(|g| g.request.resource_name == SRIOV && g.at > restart.serving)
                .map(|g| g.at)
                .next()
        }))
        .expect("not re-registered after the kubelet restart");
    let took = again.duration_since(restart.serving);
    eprintln!("re-registered {took:?} after the kubelet restart");
    assert!(
        took < Duration::from_secs(1),
        "re-registration took {took:?}"
    );
    assert_eq!(free_vfs(&d), 1, "the restart lost no holding");

    // The pod is gone: the VF is free again.
    podres.set_pods(vec![]);
    eventually("the VF is free once no pod holds it", || free_vfs(&d) == 2);

    // Stopping the daemon removes its sockets.
    assert!(d.terminate().success());
    let left: Vec<_> = std::fs::read_dir(&dp_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("griffin-"))
        .collect();
    assert!(left.is_empty(), "sockets left: {left:?}");
    rt.block_on(async {
        kubelet.stop().await;
        podres.stop().await;
    });
}

/// A restarted daemon starts from the holdings in its checkpoint, so a
/// device held by a pod stays held before PodResources is asked.
#[test]
fn holdings_survive_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let kubelet = rt
        .block_on(Kubelet::start(&dir.path().join("device-plugins")))
        .unwrap();
    let cfg = config(dir.path());
    let d = Daemon::start(&[std::ffi::OsStr::new("--config"), cfg.as_os_str()]);
    rt.block_on(kubelet.wait_for(Duration::from_secs(20), |r| {
        r.lists_of(SRIOV).last().map(|_| ())
    }))
    .expect("not registered");
    rt.block_on(kubelet.allocate(SRIOV, &[&[VF1]])).unwrap();
    eventually("held", || free_vfs(&d) == 1);
    assert!(d.terminate().success());
    // No PodResources server: nothing can say the pod is gone, so the
    // holding is kept, past the grace period too.
    let d = Daemon::start(&[std::ffi::OsStr::new("--config"), cfg.as_os_str()]);
    assert_eq!(free_vfs(&d), 1, "restored from the checkpoint");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(free_vfs(&d), 1, "kept while PodResources cannot answer");
    assert!(d.terminate().success());
    rt.block_on(kubelet.stop());
}

/// Health of each GPU in the last list of `nvidia.com/gpu`, by id.
fn gpu_health(r: &griffin_tests::kubelet::Recorded) -> Option<Vec<(String, String)>> {
    let l = r.lists_of("nvidia.com/gpu").last()?;
    Some(
        l.devices
            .iter()
            .map(|d| (d.id.clone(), d.health.clone()))
            .collect(),
    )
}

/// NVML's critical XIDs make a pooled GPU unhealthy in ListAndWatch; an
/// application's XID does not; a reset (driver unbound, then bound again)
/// brings it back, watched again (NVML is registered anew after each
/// re-discovery); a GPU lost from the bus without NVML saying which faults
/// every GPU. The daemon runs `nvml-wrapper` against the NVML stand-in
/// (`griffin_tests::nvml`): there is no GPU on this machine.
#[test]
fn critical_xids_make_a_gpu_unhealthy_until_it_is_reset() {
    use griffin_tests::nvml;
    use griffin_tests::sysfs::Function;
    const A: &str = "0000:1a:00.0";
    const B: &str = "0000:1b:00.0";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut t = griffin_tests::edge2s::tree();
    t.pci(Function::bridge("0000:10:02.0", "pci0000:10"));
    t.pci(Function::new(A, "0000:10:02.0", 0x030200, 0x10de, 0x20b0).driver("nvidia"));
    t.pci(Function::bridge("0000:10:03.0", "pci0000:10"));
    t.pci(Function::new(B, "0000:10:03.0", 0x030200, 0x10de, 0x20b0).driver("nvidia"));
    t.write(&root).unwrap();
    let lib = nvml::build_standin(dir.path());
    let events = dir.path().join("nvml-events");
    std::fs::write(&events, "").unwrap();
    let cfg = dir.path().join("griffin.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"root = {root:?}
state_dir = {state:?}
node_name = "w1"
pools = [{{ resource = "nvidia.com/gpu", pci_addresses = ["{A}", "{B}"] }}]
[device_plugins]
device_plugin_dir = {dp:?}
mode = "kubelet-socket"
pod_resources_socket = ""
nvml_library = {lib:?}
"#,
            state = dir.path().join("state"),
            dp = dir.path().join("device-plugins"),
        ),
    )
    .unwrap();
    let rt = runtime();
    let kubelet = rt
        .block_on(Kubelet::start(&dir.path().join("device-plugins")))
        .unwrap();
    let d = Daemon::spawn(
        cli_common::daemon_command()
            .arg("--config")
            .arg(&cfg)
            .env(nvml::GPUS_ENV, format!("{A},{B}"))
            .env(nvml::EVENTS_ENV, &events)
            .env("RUST_LOG", "info"),
    );
    let health = |want: &[(&str, &str)]| {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let t = Instant::now();
        let got = rt.block_on(kubelet.wait_for(Duration::from_secs(20), |r| {
            gpu_health(r).filter(|h| *h == want)
        }));
        assert!(
            got.is_some(),
            "wanted {want:?}, last list {:?}",
            gpu_health(&kubelet.recorded())
        );
        t.elapsed()
    };
    let (ok, bad) = (dp::HEALTHY, dp::UNHEALTHY);
    health(&[(A, ok), (B, ok)]);
    // Events raised before the GPUs are registered are not delivered.
    nvml::wait_registered(&events, &[A, B]);

    // XID 13 (an application's) on A, then XID 79 on B: only B.
    nvml::raise(&events, &format!("{A} 13"));
    nvml::raise(&events, &format!("{B} 79"));
    let took = health(&[(A, ok), (B, bad)]);
    eprintln!("XID 79 to ListAndWatch: {:.0} ms", took.as_secs_f64() * 1e3);
    let hup = || {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) }, 0);
    };
    // B is reset: its driver unbound (unhealthy, no driver; the fault is
    // forgotten), then bound again: healthy.
    // Each step waits for its re-discovery, so that the two are not
    // coalesced into one that never sees B without a driver.
    let discoveries = || {
        let (_, text) = d.request("GET", "/metrics", b"");
        text.lines()
            .find_map(|l| l.strip_prefix("griffin_discoveries_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap()
    };
    let link = root.join(format!("sys/bus/pci/devices/{B}/driver"));
    let target = std::fs::read_link(&link).unwrap();
    std::fs::remove_file(&link).unwrap();
    let before = discoveries();
    hup();
    eventually("the unbind re-discovered", || discoveries() > before);
    // B is unhealthy either way now (no driver); its fault is forgotten,
    // which the rebind shows.
    std::os::unix::fs::symlink(&target, &link).unwrap();
    hup();
    health(&[(A, ok), (B, ok)]);

    // Watched again after the reset: a GPU lost with no GPU named faults
    // both.
    std::fs::remove_file(format!("{}.registered", events.display())).unwrap();
    nvml::wait_registered(&events, &[A, B]);
    nvml::raise(&events, "lost");
    health(&[(A, bad), (B, bad)]);
    assert!(d.terminate().success());
    rt.block_on(kubelet.stop());
}
