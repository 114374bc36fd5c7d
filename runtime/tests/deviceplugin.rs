//! The device plugin server against the kubelet stand-in
//! (`griffin_tests::kubelet`) over real unix sockets in a temporary
//! directory, with an in-memory backend: registration, ListAndWatch,
//! GetPreferredAllocation, Allocate, errors, kubelet restarts, the
//! plugin-watcher mode, PodResources, shutdown and refused symlinks.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use griffin_kubelet_api::deviceplugin as dp;
use griffin_kubelet_api::podresources as v1;
use griffin_runtime::plugin::podresources::{
    self, Allocatable, ContainerResources, MemoryBlock, PodResources, PodResourcesClient,
    PodResourcesError, ResourceDevices,
};
use griffin_runtime::plugin::server::{
    socket_file_name, DevicePluginManager, PluginSettings, RegistrationMode, Statuses,
};
use griffin_runtime::plugin::{
    Backend, ContainerDevices, DeviceNode, DeviceState, Mount, Snapshot,
};
use griffin_tests::kubelet::{Kubelet, PodResourcesServer, Recorded};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const GPU: &str = "example.com/gpu";
const VF: &str = "intel.com/intel_sriov_netdevice";
/// Deadline for things that must happen "at once" or "within 1 s": generous,
/// so a loaded machine does not fail the test; the figures are printed.
const DEADLINE: Duration = Duration::from_secs(10);

fn dev(id: &str, healthy: bool, numa: Option<u32>) -> DeviceState {
    DeviceState {
        id: id.into(),
        healthy,
        numa_node: numa,
    }
}

/// What the fake backend does when asked.
#[derive(Debug, Clone, Default, PartialEq)]
enum Answer {
    #[default]
    Normal,
    /// Every prefer/allocate fails with this message.
    Refuse(String),
    /// prefer answers one device too few.
    Short,
}

/// One `prefer` call: resource, available, must-include, size.
type PreferCall = (String, Vec<String>, Vec<String>, usize);

/// An in-memory backend: devices in a watch channel, deterministic choices,
/// every call recorded.
#[derive(Debug)]
struct Fake {
    tx: watch::Sender<Snapshot>,
    answer: Mutex<Answer>,
    prefers: Mutex<Vec<PreferCall>>,
    allocations: Mutex<Vec<(String, Vec<String>)>>,
}

impl Fake {
    fn new(resources: &[(&str, Vec<DeviceState>)]) -> Arc<Fake> {
        let map: BTreeMap<String, Vec<DeviceState>> = resources
            .iter()
            .map(|(r, d)| (r.to_string(), d.clone()))
            .collect();
        Arc::new(Fake {
            tx: watch::Sender::new(Arc::new(map)),
            answer: Mutex::new(Answer::Normal),
            prefers: Mutex::new(Vec::new()),
            allocations: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<DeviceState>>)) {
        self.tx.send_modify(|s| f(Arc::make_mut(s)));
    }

    fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    /// What `allocate` gives for `ids`: one env var, one mount, one device
    /// node per id, one annotation.
    fn container(resource: &str, ids: &[String]) -> ContainerDevices {
        ContainerDevices {
            envs: BTreeMap::from([
                ("FAKE_RESOURCE".to_string(), resource.to_string()),
                ("FAKE_IDS".to_string(), ids.join(",")),
            ]),
            mounts: vec![Mount {
                container_path: "/etc/fake".into(),
                host_path: format!("/run/fake/{}", ids.join("+")),
                read_only: true,
            }],
            devices: ids
                .iter()
                .map(|id| DeviceNode {
                    container_path: format!("/dev/fake-{id}"),
                    host_path: format!("/dev/host-{id}"),
                    permissions: "rw".into(),
                })
                .collect(),
            annotations: BTreeMap::from([("fake.example.com/ids".to_string(), ids.join(","))]),
        }
    }
}

impl Backend for Fake {
    fn watch(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// The must-include devices, then the available ones from the end of
    /// the list (an order the kubelet did not send, so the answer is
    /// visibly the backend's).
    fn prefer(
        &self,
        resource: &str,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Result<Vec<String>, String> {
        self.prefers.lock().unwrap().push((
            resource.into(),
            available.to_vec(),
            must_include.to_vec(),
            size,
        ));
        let mut chosen: Vec<String> = must_include.to_vec();
        for id in available.iter().rev() {
            if chosen.len() >= size {
                break;
            }
            if !chosen.contains(id) {
                chosen.push(id.clone());
            }
        }
        match self.answer.lock().unwrap().clone() {
            Answer::Normal => Ok(chosen),
            Answer::Refuse(m) => Err(m),
            Answer::Short => {
                chosen.pop();
                Ok(chosen)
            }
        }
    }

    fn allocate(&self, resource: &str, ids: &[String]) -> Result<ContainerDevices, String> {
        if let Answer::Refuse(m) = self.answer.lock().unwrap().clone() {
            return Err(m);
        }
        self.allocations
            .lock()
            .unwrap()
            .push((resource.into(), ids.to_vec()));
        Ok(Fake::container(resource, ids))
    }
}

/// The node: directories, the fake backend and the plugin manager.
struct Node {
    _root: tempfile::TempDir,
    settings: PluginSettings,
    fake: Arc<Fake>,
    cancel: CancellationToken,
    manager: Option<DevicePluginManager>,
}

impl Node {
    fn new(mode: RegistrationMode, resources: &[(&str, Vec<DeviceState>)]) -> Node {
        let root = tempfile::tempdir().unwrap();
        let settings = PluginSettings {
            device_plugin_dir: root.path().join("device-plugins"),
            plugins_registry_dir: root.path().join("plugins_registry"),
            mode,
        };
        Node {
            _root: root,
            settings,
            fake: Fake::new(resources),
            cancel: CancellationToken::new(),
            manager: None,
        }
    }

    fn root(&self) -> &Path {
        self._root.path()
    }

    fn start(&mut self) {
        let backend: Arc<dyn Backend> = self.fake.clone();
        self.manager = Some(DevicePluginManager::start(
            backend,
            self.settings.clone(),
            self.cancel.clone(),
        ));
    }

    async fn kubelet(&self) -> Kubelet {
        Kubelet::start(&self.settings.device_plugin_dir)
            .await
            .unwrap()
    }

    fn socket(&self, resource: &str) -> PathBuf {
        self.settings
            .device_plugin_dir
            .join(socket_file_name(resource))
    }

    /// Waits until `f` holds for the manager's status.
    async fn status_until(&self, what: &str, f: impl Fn(&Statuses) -> bool) -> Statuses {
        let mut rx = self.manager.as_ref().unwrap().status();
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let now = rx.borrow_and_update().clone();
            if f(&now) {
                return now;
            }
            if tokio::time::timeout_at(end, rx.changed()).await.is_err() {
                panic!("status never showed {what}: {now:#?}");
            }
        }
    }

    async fn shutdown(&mut self) {
        self.cancel.cancel();
        if let Some(m) = self.manager.take() {
            tokio::time::timeout(DEADLINE, m.join())
                .await
                .expect("the manager stops");
        }
    }
}

/// The accepted registrations of `resource`.
fn accepted<'a>(r: &'a Recorded, resource: &'a str) -> Vec<&'a griffin_tests::kubelet::Registered> {
    r.registrations
        .iter()
        .filter(|g| g.request.resource_name == resource && g.refused.is_none())
        .collect()
}

/// Waits until the stand-in has a list of both resources.
async fn both_listed(kubelet: &Kubelet) {
    kubelet
        .wait_for(DEADLINE, |r| {
            (r.lists_of(GPU).count() > 0 && r.lists_of(VF).count() > 0).then_some(())
        })
        .await
        .expect("both listed");
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn gpus() -> Vec<DeviceState> {
    vec![
        dev("gpu-0", true, Some(0)),
        dev("gpu-1", true, Some(1)),
        dev("gpu-2", false, None),
    ]
}

fn vfs() -> Vec<DeviceState> {
    (0..4)
        .map(|i| dev(&format!("0000:3b:02.{i}"), true, Some(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_each_resource_with_version_endpoint_name_and_options() {
    let mut node = Node::new(
        RegistrationMode::KubeletSocket,
        &[(GPU, gpus()), ("example.com/empty", vec![])],
    );
    let kubelet = node.kubelet().await;
    // A stale socket of ours (left by a killed daemon) is replaced.
    drop(std::os::unix::net::UnixListener::bind(node.socket(GPU)).unwrap());
    node.start();
    let r = kubelet
        .wait_for(DEADLINE, |r| {
            (accepted(r, GPU).len() == 1 && accepted(r, "example.com/empty").len() == 1)
                .then(|| r.clone())
        })
        .await
        .expect("both resources register");
    for resource in [GPU, "example.com/empty"] {
        let g = accepted(&r, resource)[0];
        assert_eq!(g.request.version, "v1beta1");
        assert_eq!(g.request.endpoint, socket_file_name(resource));
        assert_eq!(g.request.resource_name, resource);
        assert_eq!(
            g.request.options,
            Some(dp::DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            })
        );
        assert!(
            g.endpoint_accepting,
            "{resource}: served before registering"
        );
        let meta = std::fs::symlink_metadata(node.socket(resource)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{resource}");
    }
    assert_eq!(socket_file_name(GPU), "griffin-example.com_gpu.sock");
    // The kubelet dials each endpoint and asks its options.
    let r = kubelet
        .wait_for(DEADLINE, |r| (r.connections.len() == 2).then(|| r.clone()))
        .await
        .expect("the kubelet dials both endpoints");
    for c in &r.connections {
        assert!(c.options.get_preferred_allocation_available && !c.options.pre_start_required);
        assert_eq!(c.endpoint, node.socket(&c.resource));
    }
    // A resource without devices registers and lists nothing: capacity 0.
    let empty = kubelet
        .wait_for(DEADLINE, |r| {
            r.lists_of("example.com/empty").next().cloned()
        })
        .await
        .expect("the empty resource sends a list");
    assert!(empty.devices.is_empty());
    let st = node
        .status_until("both registered", |s| {
            s.len() == 2 && s.values().all(|x| x.registered && x.serving)
        })
        .await;
    assert_eq!(st[GPU].mode, RegistrationMode::KubeletSocket);
    assert_eq!(st[GPU].registrations, 1);
    assert_eq!(st[GPU].socket, node.socket(GPU));
    // PreStartContainer is not required but answers.
    let mut c = kubelet.device_plugin(GPU).unwrap();
    c.pre_start_container(dp::PreStartContainerRequest {
        devices_i_ds: strings(&["gpu-0"]),
    })
    .await
    .unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_sends_every_device_then_each_change() {
    let mut node = Node::new(
        RegistrationMode::KubeletSocket,
        &[(GPU, gpus()), (VF, vfs())],
    );
    let kubelet = node.kubelet().await;
    node.start();
    let first = kubelet
        .wait_for(DEADLINE, |r| r.lists_of(GPU).next().cloned())
        .await
        .expect("an initial list");
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(VF).next().cloned())
        .await
        .expect("an initial list of the other resource");
    let expect = |id: &str, health: &str, numa: Option<i64>| dp::Device {
        id: id.into(),
        health: health.into(),
        topology: numa.map(|n| dp::TopologyInfo {
            nodes: vec![dp::NumaNode { id: n }],
        }),
    };
    assert_eq!(
        first.devices,
        vec![
            expect("gpu-0", "Healthy", Some(0)),
            expect("gpu-1", "Healthy", Some(1)),
            expect("gpu-2", "Unhealthy", None),
        ]
    );
    // gpu-1 turns unhealthy, gpu-2 healthy on node 0, gpu-3 appears.
    let changed = Instant::now();
    node.fake.set(|m| {
        m.insert(
            GPU.into(),
            vec![
                dev("gpu-0", true, Some(0)),
                dev("gpu-1", false, Some(1)),
                dev("gpu-2", true, Some(0)),
                dev("gpu-3", true, Some(1)),
            ],
        );
    });
    let update = kubelet
        .wait_for(DEADLINE, |r| {
            r.lists_of(GPU).find(|l| l.devices.len() == 4).cloned()
        })
        .await
        .expect("the change reaches the kubelet");
    println!(
        "ListAndWatch update latency: {:?}",
        update.at.duration_since(changed)
    );
    assert_eq!(
        update.devices,
        vec![
            expect("gpu-0", "Healthy", Some(0)),
            expect("gpu-1", "Unhealthy", Some(1)),
            expect("gpu-2", "Healthy", Some(0)),
            expect("gpu-3", "Healthy", Some(1)),
        ]
    );
    // The change did not touch the other resource: its stream sent one
    // list only.
    let r = kubelet.recorded();
    assert_eq!(r.lists_of(VF).count(), 1, "{:#?}", r.lists);
    assert_eq!(r.lists_of(GPU).count(), 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_allocation_goes_to_the_backend_per_container() {
    let mut node = Node::new(RegistrationMode::KubeletSocket, &[(VF, vfs())]);
    let kubelet = node.kubelet().await;
    node.start();
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(VF).next().cloned())
        .await
        .expect("listed");
    let all = [
        "0000:3b:02.0",
        "0000:3b:02.1",
        "0000:3b:02.2",
        "0000:3b:02.3",
    ];
    let answer = kubelet
        .get_preferred_allocation(VF, &[(&all, &["0000:3b:02.1"], 2), (&all[..3], &[], 1)])
        .await
        .unwrap();
    let got: Vec<Vec<String>> = answer
        .container_responses
        .iter()
        .map(|c| c.device_i_ds.clone())
        .collect();
    assert_eq!(
        got,
        vec![
            strings(&["0000:3b:02.1", "0000:3b:02.3"]),
            strings(&["0000:3b:02.2"]),
        ]
    );
    assert_eq!(
        *node.fake.prefers.lock().unwrap(),
        vec![
            (VF.to_string(), strings(&all), strings(&["0000:3b:02.1"]), 2),
            (VF.to_string(), strings(&all[..3]), vec![], 1),
        ]
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_maps_every_field_of_each_container() {
    let mut node = Node::new(RegistrationMode::KubeletSocket, &[(GPU, gpus())]);
    let kubelet = node.kubelet().await;
    node.start();
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(GPU).next().cloned())
        .await
        .expect("listed");
    let answer = kubelet
        .allocate(GPU, &[&["gpu-0", "gpu-1"], &["gpu-2"]])
        .await
        .unwrap();
    assert_eq!(answer.container_responses.len(), 2);
    for (c, ids) in answer
        .container_responses
        .iter()
        .zip([strings(&["gpu-0", "gpu-1"]), strings(&["gpu-2"])])
    {
        let want = Fake::container(GPU, &ids);
        let envs: BTreeMap<String, String> =
            c.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(envs, want.envs);
        let annotations: BTreeMap<String, String> = c
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(annotations, want.annotations);
        assert_eq!(c.mounts.len(), want.mounts.len());
        for (m, w) in c.mounts.iter().zip(&want.mounts) {
            assert_eq!(m.container_path, w.container_path);
            assert_eq!(m.host_path, w.host_path);
            assert_eq!(m.read_only, w.read_only);
        }
        assert_eq!(c.devices.len(), want.devices.len());
        for (d, w) in c.devices.iter().zip(&want.devices) {
            assert_eq!(d.container_path, w.container_path);
            assert_eq!(d.host_path, w.host_path);
            assert_eq!(d.permissions, w.permissions);
        }
        assert!(c.cdi_devices.is_empty());
    }
    assert_eq!(
        *node.fake.allocations.lock().unwrap(),
        vec![
            (GPU.to_string(), strings(&["gpu-0", "gpu-1"])),
            (GPU.to_string(), strings(&["gpu-2"])),
        ]
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_backend_refusals_are_grpc_statuses() {
    let mut node = Node::new(RegistrationMode::KubeletSocket, &[(GPU, gpus())]);
    let kubelet = node.kubelet().await;
    node.start();
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(GPU).next().cloned())
        .await
        .expect("listed");
    let code = tonic::Code::InvalidArgument;
    let check = |r: Result<_, tonic::Status>, code: tonic::Code, words: &[&str]| {
        let s = r.expect_err("an error status");
        assert_eq!(s.code(), code, "{s:?}");
        for w in words {
            assert!(s.message().contains(w), "{:?} lacks {w:?}", s.message());
        }
    };
    let all: &[&str] = &["gpu-0", "gpu-1", "gpu-2"];
    check(
        kubelet.allocate(GPU, &[&["gpu-9"]]).await.map(drop),
        code,
        &["gpu-9", "not a device of example.com/gpu"],
    );
    check(
        kubelet
            .allocate(GPU, &[&["gpu-0", "gpu-0"]])
            .await
            .map(drop),
        code,
        &["gpu-0", "twice"],
    );
    check(
        kubelet.allocate(GPU, &[&[]]).await.map(drop),
        code,
        &["no devicesIDs"],
    );
    check(
        kubelet
            .get_preferred_allocation(GPU, &[(all, &[], -1)])
            .await
            .map(drop),
        code,
        &["-1"],
    );
    check(
        kubelet
            .get_preferred_allocation(GPU, &[(all, &[], 4)])
            .await
            .map(drop),
        code,
        &["allocation_size 4"],
    );
    check(
        kubelet
            .get_preferred_allocation(GPU, &[(&["gpu-0"], &["gpu-1"], 1)])
            .await
            .map(drop),
        code,
        &["gpu-1", "not available"],
    );
    check(
        kubelet
            .get_preferred_allocation(GPU, &[(&["gpu-0", "gpu-x"], &[], 1)])
            .await
            .map(drop),
        code,
        &["gpu-x"],
    );
    // None of those reached the backend.
    assert!(node.fake.prefers.lock().unwrap().is_empty());
    assert!(node.fake.allocations.lock().unwrap().is_empty());
    // The backend's refusal carries its message.
    node.fake
        .answer(Answer::Refuse("gpu-0 is held by pod a/b".into()));
    check(
        kubelet.allocate(GPU, &[&["gpu-0"]]).await.map(drop),
        tonic::Code::FailedPrecondition,
        &["gpu-0 is held by pod a/b"],
    );
    check(
        kubelet
            .get_preferred_allocation(GPU, &[(all, &[], 1)])
            .await
            .map(drop),
        tonic::Code::FailedPrecondition,
        &["gpu-0 is held by pod a/b"],
    );
    // A preferred allocation that does not fit the request is not passed
    // on to the kubelet.
    node.fake.answer(Answer::Short);
    check(
        kubelet
            .get_preferred_allocation(GPU, &[(all, &[], 2)])
            .await
            .map(drop),
        tonic::Code::Internal,
        &["not 2 of the available devices"],
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registers_within_a_second_of_a_kubelet_restart_keeping_allocations() {
    let mut node = Node::new(
        RegistrationMode::KubeletSocket,
        &[(GPU, gpus()), (VF, vfs())],
    );
    let kubelet = node.kubelet().await;
    node.start();
    both_listed(&kubelet).await;
    kubelet.allocate(GPU, &[&["gpu-0"]]).await.unwrap();
    let before = kubelet.recorded();
    let restart = kubelet.restart().await.unwrap();
    // The kubelet deleted our sockets (and its own).
    assert!(
        restart.removed.contains(&node.socket(GPU)),
        "{:?}",
        restart.removed
    );
    assert!(restart.removed.contains(&node.socket(VF)));
    let again = kubelet
        .wait_for(DEADLINE, |r| {
            let a = accepted(r, GPU);
            let b = accepted(r, VF);
            (a.len() == 2 && b.len() == 2).then(|| (a[1].clone(), b[1].clone()))
        })
        .await
        .expect("both resources register again");
    for g in [&again.0, &again.1] {
        let after_serving = g.at.duration_since(restart.serving);
        let after_stop = g.at.duration_since(restart.stopped);
        println!(
            "{}: re-registered {after_serving:?} after the new kubelet.sock ({after_stop:?} after the old kubelet stopped)",
            g.request.resource_name
        );
        assert!(
            after_serving < Duration::from_secs(1),
            "{}: re-registration took {after_serving:?}",
            g.request.resource_name
        );
        assert!(g.endpoint_accepting);
    }
    // The new kubelet gets every device again.
    let relisted = kubelet
        .wait_for(DEADLINE, |r| {
            r.lists_of(GPU)
                .find(|l| l.connection >= before.connections.len())
                .cloned()
        })
        .await
        .expect("a list on the new connection");
    assert_eq!(relisted.devices.len(), 3);
    // Allocations are the backend's: untouched, and Allocate works again.
    assert_eq!(node.fake.allocations.lock().unwrap().len(), 1);
    kubelet
        .wait_for(DEADLINE, |r| (r.connections.len() >= 4).then_some(()))
        .await
        .unwrap();
    kubelet.allocate(GPU, &[&["gpu-1"]]).await.unwrap();
    assert_eq!(node.fake.allocations.lock().unwrap().len(), 2);
    let st = node
        .status_until("registered twice", |s| {
            s.values().all(|x| x.registered && x.registrations == 2)
        })
        .await;
    assert!(st.values().all(|x| x.error.is_none()));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_late_kubelet_and_registers_once_it_serves() {
    let mut node = Node::new(RegistrationMode::KubeletSocket, &[(GPU, gpus())]);
    std::fs::create_dir_all(&node.settings.device_plugin_dir).unwrap();
    node.start();
    node.status_until("serving without a kubelet", |s| {
        s.get(GPU).is_some_and(|x| x.serving && !x.registered)
    })
    .await;
    // A kubelet.sock nobody serves: the registration fails and is retried.
    let dead = std::os::unix::net::UnixListener::bind(node.settings.kubelet_socket()).unwrap();
    drop(dead);
    let st = node
        .status_until("a registration error", |s| {
            s.get(GPU).is_some_and(|x| x.error.is_some())
        })
        .await;
    let error = st[GPU].error.clone().unwrap();
    assert!(
        error.contains(&node.settings.kubelet_socket().display().to_string()),
        "{error}"
    );
    std::fs::remove_file(node.settings.kubelet_socket()).unwrap();
    let kubelet = node.kubelet().await;
    let started = Instant::now();
    let g = kubelet
        .wait_for(DEADLINE, |r| accepted(r, GPU).first().map(|g| (*g).clone()))
        .await
        .expect("registers once the kubelet serves");
    println!(
        "registered {:?} after a late kubelet started",
        g.at.duration_since(started)
    );
    node.status_until("registered, error cleared", |s| {
        s.get(GPU)
            .is_some_and(|x| x.registered && x.error.is_none())
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_watcher_mode_end_to_end() {
    let mut node = Node::new(RegistrationMode::PluginWatcher, &[(GPU, gpus())]);
    let kubelet = Kubelet::start_with_watcher(
        &node.settings.device_plugin_dir,
        &node.settings.plugins_registry_dir,
    )
    .await
    .unwrap();
    node.start();
    let socket = node
        .settings
        .plugins_registry_dir
        .join(socket_file_name(GPU));
    let w = kubelet
        .wait_for(DEADLINE, |r| r.watcher.first().cloned())
        .await
        .expect("the plugin watcher registers the plugin");
    assert_eq!(w.socket, socket);
    assert_eq!(w.info.r#type, "DevicePlugin");
    assert_eq!(w.info.name, GPU);
    assert_eq!(w.info.endpoint, socket.display().to_string());
    assert_eq!(w.info.supported_versions, vec!["v1beta1".to_string()]);
    assert!(w.status.plugin_registered, "{:?}", w.status);
    let list = kubelet
        .wait_for(DEADLINE, |r| r.lists_of(GPU).next().cloned())
        .await
        .expect("listed");
    assert_eq!(list.devices.len(), 3);
    // Nothing went through kubelet.sock.
    assert!(kubelet.recorded().registrations.is_empty());
    let st = node
        .status_until("registered via the watcher", |s| {
            s.get(GPU).is_some_and(|x| x.registered)
        })
        .await;
    assert_eq!(st[GPU].mode, RegistrationMode::PluginWatcher);
    assert_eq!(st[GPU].registrations, 1);
    assert_eq!(st[GPU].socket, socket);
    kubelet.allocate(GPU, &[&["gpu-1"]]).await.unwrap();
    // A kubelet restart leaves plugins_registry alone and registers the
    // socket it finds there again.
    let restart = kubelet.restart().await.unwrap();
    assert!(!restart.removed.contains(&socket));
    let w2 = kubelet
        .wait_for(DEADLINE, |r| r.watcher.get(1).cloned())
        .await
        .expect("registered again after the restart");
    assert!(w2.status.plugin_registered);
    println!(
        "plugin watcher re-registered {:?} after the restart",
        w2.at.duration_since(restart.serving)
    );
    node.status_until("two registrations", |s| {
        s.get(GPU).is_some_and(|x| x.registrations == 2)
    })
    .await;
    node.shutdown().await;
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_registers_one_way_only() {
    let mut node = Node::new(RegistrationMode::Auto, &[(GPU, gpus())]);
    let kubelet = Kubelet::start_with_watcher(
        &node.settings.device_plugin_dir,
        &node.settings.plugins_registry_dir,
    )
    .await
    .unwrap();
    node.start();
    assert_eq!(
        node.manager.as_ref().unwrap().mode(),
        RegistrationMode::KubeletSocket
    );
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(GPU).next().cloned())
        .await
        .expect("listed");
    let in_registry: Vec<_> = std::fs::read_dir(&node.settings.plugins_registry_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(in_registry.is_empty(), "{in_registry:?}");
    let r = kubelet.recorded();
    assert_eq!(accepted(&r, GPU).len(), 1);
    assert!(r.watcher.is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_coming_and_going_start_and_stop_their_servers() {
    let mut node = Node::new(RegistrationMode::KubeletSocket, &[(GPU, gpus())]);
    let kubelet = node.kubelet().await;
    node.start();
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(GPU).next().cloned())
        .await
        .expect("listed");
    node.fake.set(|m| {
        m.insert(VF.into(), vfs());
    });
    let vf = kubelet
        .wait_for(DEADLINE, |r| r.lists_of(VF).next().cloned())
        .await
        .expect("the new resource registers and lists");
    assert_eq!(vf.devices.len(), 4);
    assert_eq!(accepted(&kubelet.recorded(), VF).len(), 1);
    node.fake.set(|m| {
        m.remove(GPU);
    });
    let end = kubelet
        .wait_for(DEADLINE, |r| {
            r.stream_ends.iter().find(|e| e.resource == GPU).cloned()
        })
        .await
        .expect("the stream of the resource that left ends");
    assert_eq!(end.error, None, "ended cleanly");
    let r = kubelet.recorded();
    let last = r.lists_of(GPU).last().unwrap();
    assert!(last.devices.is_empty(), "an empty list before the end");
    node.status_until("only the VFs", |s| s.keys().eq([VF]))
        .await;
    assert!(!node.socket(GPU).exists());
    assert!(node.socket(VF).exists());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_cleanly_and_removes_sockets() {
    let mut node = Node::new(
        RegistrationMode::KubeletSocket,
        &[(GPU, gpus()), (VF, vfs())],
    );
    let kubelet = node.kubelet().await;
    node.start();
    both_listed(&kubelet).await;
    assert!(node.socket(GPU).exists() && node.socket(VF).exists());
    let status = node.manager.as_ref().unwrap().status();
    node.shutdown().await;
    assert!(!node.socket(GPU).exists());
    assert!(!node.socket(VF).exists());
    assert!(
        kubelet.socket().exists(),
        "the kubelet's socket is not ours"
    );
    let ends = kubelet
        .wait_for(DEADLINE, |r| {
            (r.stream_ends.len() == 2).then(|| r.stream_ends.clone())
        })
        .await
        .expect("both streams end");
    assert!(ends.iter().all(|e| e.error.is_none()), "{ends:?}");
    assert!(status.borrow().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_where_a_socket_goes_is_refused_and_left_alone() {
    let mut node = Node::new(
        RegistrationMode::KubeletSocket,
        &[(GPU, gpus()), (VF, vfs())],
    );
    let kubelet = node.kubelet().await;
    let target = node.root().join("precious");
    std::fs::write(&target, "do not touch").unwrap();
    let link = node.socket(GPU);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    node.start();
    let st = node
        .status_until("the refusal", |s| {
            s.get(GPU).is_some_and(|x| x.error.is_some())
        })
        .await;
    let error = st[GPU].error.clone().unwrap();
    assert!(
        error.contains("symbolic link") && error.contains(&link.display().to_string()),
        "{error}"
    );
    assert!(!st[GPU].serving);
    // The other resource is served and registered meanwhile.
    kubelet
        .wait_for(DEADLINE, |r| r.lists_of(VF).next().cloned())
        .await
        .expect("the VFs register");
    assert!(accepted(&kubelet.recorded(), GPU).is_empty());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not touch");
    // Once the link is gone, the retry binds and registers.
    std::fs::remove_file(&link).unwrap();
    kubelet
        .wait_for(DEADLINE, |r| accepted(r, GPU).first().map(|_| ()))
        .await
        .expect("registers after the link is removed");
    node.shutdown().await;
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not touch");
}

fn topology(nodes: &[i64]) -> Option<v1::TopologyInfo> {
    Some(v1::TopologyInfo {
        nodes: nodes.iter().map(|&id| v1::NumaNode { id }).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podresources_client_lists_pods_and_reads_allocatable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod-resources").join("kubelet.sock");
    let server = PodResourcesServer::start(&path).await.unwrap();
    server.set_pods(vec![v1::PodResources {
        name: "web".into(),
        namespace: "edge".into(),
        containers: vec![
            v1::ContainerResources {
                name: "app".into(),
                devices: vec![v1::ContainerDevices {
                    resource_name: VF.into(),
                    device_ids: strings(&["0000:3b:02.0", "0000:3b:02.1"]),
                    topology: topology(&[1]),
                }],
                cpu_ids: vec![4, 5],
                memory: vec![v1::ContainerMemory {
                    memory_type: "hugepages-2Mi".into(),
                    size: 1 << 30,
                    topology: topology(&[1]),
                }],
            },
            v1::ContainerResources {
                name: "sidecar".into(),
                devices: vec![],
                cpu_ids: vec![],
                memory: vec![],
            },
        ],
    }]);
    let client = PodResourcesClient::new(&path, Duration::from_secs(5));
    let pods = client.list().await.unwrap();
    assert_eq!(
        pods,
        vec![PodResources {
            name: "web".into(),
            namespace: "edge".into(),
            containers: vec![
                ContainerResources {
                    name: "app".into(),
                    devices: vec![ResourceDevices {
                        resource_name: VF.into(),
                        device_ids: strings(&["0000:3b:02.0", "0000:3b:02.1"]),
                        numa_nodes: vec![1],
                    }],
                    cpu_ids: vec![4, 5],
                    memory: vec![MemoryBlock {
                        memory_type: "hugepages-2Mi".into(),
                        size: 1 << 30,
                        numa_nodes: vec![1],
                    }],
                },
                ContainerResources {
                    name: "sidecar".into(),
                    devices: vec![],
                    cpu_ids: vec![],
                    memory: vec![],
                },
            ],
        }]
    );
    // A v1.20 kubelet has no GetAllocatableResources.
    assert_eq!(client.allocatable().await.unwrap(), None);
    server.set_allocatable(Some(v1::AllocatableResourcesResponse {
        devices: vec![v1::ContainerDevices {
            resource_name: GPU.into(),
            device_ids: strings(&["gpu-0"]),
            topology: topology(&[0]),
        }],
        cpu_ids: vec![2, 3, 4, 5],
        memory: vec![],
    }));
    assert_eq!(
        client.allocatable().await.unwrap(),
        Some(Allocatable {
            devices: vec![ResourceDevices {
                resource_name: GPU.into(),
                device_ids: strings(&["gpu-0"]),
                numa_nodes: vec![0],
            }],
            cpu_ids: vec![2, 3, 4, 5],
            memory: vec![],
        })
    );
    // A negative CPU id is refused, naming the field.
    server.set_pods(vec![v1::PodResources {
        name: "bad".into(),
        namespace: "x".into(),
        containers: vec![v1::ContainerResources {
            name: "c".into(),
            devices: vec![],
            cpu_ids: vec![-1],
            memory: vec![],
        }],
    }]);
    let e = client.list().await.unwrap_err();
    assert!(
        matches!(
            e,
            PodResourcesError::Range {
                field: "cpu_ids",
                value: -1,
                ..
            }
        ),
        "{e}"
    );
    // Calls have a deadline.
    server.set_delay(Duration::from_secs(3));
    let quick = PodResourcesClient::new(&path, Duration::from_millis(200));
    let e = quick.list().await.unwrap_err();
    assert!(
        matches!(e, PodResourcesError::Timeout { call: "List", .. }),
        "{e}"
    );
    server.stop().await;
    // No kubelet: the error names the socket and the call.
    let gone = PodResourcesClient::new(dir.path().join("none.sock"), Duration::from_secs(2));
    let e = gone.list().await.unwrap_err();
    let shown = griffin_devices::Chain(&e).to_string();
    assert!(shown.starts_with("PodResources List on "), "{shown}");
    assert!(shown.contains("none.sock"), "{shown}");
    match e {
        PodResourcesError::Call { source, .. } => {
            assert_eq!(source.code(), tonic::Code::Unavailable)
        }
        e => panic!("{e}"),
    }
    assert_eq!(
        podresources::DEFAULT_SOCKET,
        "/var/lib/kubelet/pod-resources/kubelet.sock"
    );
}
