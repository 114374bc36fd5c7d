//! An in-process kubelet stand-in, built from the same protos as the plugin
//! (`griffin_kubelet_api`), that drives a device plugin over real unix
//! sockets the way the kubelet's device manager (v1.20,
//! `pkg/kubelet/cm/devicemanager`) and plugin manager do, and records
//! what it saw with timestamps.
//!
//! What it does, as the kubelet does:
//! * Start ([`Kubelet::start`]): creates the device-plugin directory,
//!   deletes every file in it but the checkpoint
//!   (`kubelet_internal_checkpoint`) — the kubelet `stat`s each entry
//!   (following links) and keeps directories and entries it cannot stat —
//!   then serves `v1beta1.Registration` on `<dir>/kubelet.sock`.
//! * `Register`: refuses a version other than `v1beta1` and a resource name
//!   that is not an extended resource name; otherwise answers at once and
//!   then dials `<dir>/<endpoint>` (retrying for up to 10 s, as its blocking
//!   dial does), calls `GetDevicePluginOptions` and runs `ListAndWatch`,
//!   recording every list. A later registration of the same resource
//!   replaces the earlier endpoint for the client helpers.
//! * Plugin watcher ([`Kubelet::start_with_watcher`]): scans
//!   `plugins_registry` (every 50 ms, for the kubelet's inotify; hidden
//!   names ignored, sockets only), and for each new socket dials it, calls
//!   `GetInfo` (1 s deadline), checks type `DevicePlugin`, a `v1beta1` among
//!   the versions and the name, dials the endpoint (the socket itself when
//!   empty), calls `GetDevicePluginOptions`, starts `ListAndWatch` and
//!   calls `NotifyRegistrationStatus`. A socket that goes away is
//!   deregistered (its stream stopped). The kubelet does not clean this
//!   directory when it starts; it registers what it finds there again.
//! * [`Kubelet::restart`]: stops everything (as the process dying would:
//!   the registration server, every endpoint's connection), then starts
//!   again as above — which deletes the plugins' sockets in the
//!   device-plugin directory and re-creates `kubelet.sock`.
//!
//! [`PodResourcesServer`] serves PodResources `v1` from a settable list;
//! without allocatable resources set it answers `GetAllocatableResources`
//! with `Unimplemented`, as a v1.20 kubelet (whose API has no such method)
//! does.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use griffin_kubelet_api::deviceplugin as dp;
use griffin_kubelet_api::pluginregistration as pr;
use griffin_kubelet_api::podresources as v1;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The device manager's checkpoint, the one file its start keeps.
pub const CHECKPOINT: &str = "kubelet_internal_checkpoint";
/// How long the kubelet's dial of a plugin keeps trying.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of the plugin watcher's `GetInfo`.
pub const GET_INFO_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the plugin-watcher stand-in scans its directory.
pub const WATCH_SCAN: Duration = Duration::from_millis(50);

/// A `Register` call received on `kubelet.sock`.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The request as received.
    pub request: dp::RegisterRequest,
    /// When it arrived.
    pub at: Instant,
    /// The refusal sent back, if any.
    pub refused: Option<String>,
    /// Whether the endpoint accepted a connection when the request
    /// arrived (a plugin must serve before it registers).
    pub endpoint_accepting: bool,
}

/// A plugin-watcher registration.
#[derive(Debug, Clone)]
pub struct WatcherRegistered {
    /// The socket found in `plugins_registry`.
    pub socket: PathBuf,
    /// What `GetInfo` answered.
    pub info: pr::PluginInfo,
    /// What was sent with `NotifyRegistrationStatus`.
    pub status: pr::RegistrationStatus,
    /// When the status was sent.
    pub at: Instant,
}

/// A plugin endpoint dialled, with its options.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The resource.
    pub resource: String,
    /// The socket dialled.
    pub endpoint: PathBuf,
    /// What `GetDevicePluginOptions` answered.
    pub options: dp::DevicePluginOptions,
    /// When.
    pub at: Instant,
}

/// One list received on a `ListAndWatch` stream.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The resource.
    pub resource: String,
    /// Which connection (index in [`Recorded::connections`]).
    pub connection: usize,
    /// The devices, as sent.
    pub devices: Vec<dp::Device>,
    /// When it arrived.
    pub at: Instant,
}

/// The end of a `ListAndWatch` stream.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    /// The resource.
    pub resource: String,
    /// Which connection.
    pub connection: usize,
    /// `None`: the plugin ended it cleanly; else the status.
    pub error: Option<tonic::Code>,
    /// When.
    pub at: Instant,
}

/// Everything the stand-in saw, in order of arrival.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// `Register` calls.
    pub registrations: Vec<Registered>,
    /// Plugin-watcher registrations.
    pub watcher: Vec<WatcherRegistered>,
    /// Endpoints dialled.
    pub connections: Vec<Connected>,
    /// Lists received.
    pub lists: Vec<Listed>,
    /// Streams that ended (not counting the ones the stand-in stopped).
    pub stream_ends: Vec<StreamEnd>,
}

impl Recorded {
    /// The lists received for `resource`.
    pub fn lists_of<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a Listed> + 'a {
        self.lists.iter().filter(move |l| l.resource == resource)
    }
}

/// What [`Kubelet::restart`] did, and when.
#[derive(Debug, Clone)]
pub struct Restart {
    /// When the old kubelet was gone.
    pub stopped: Instant,
    /// The files its start deleted.
    pub removed: Vec<PathBuf>,
    /// When the new `kubelet.sock` was served.
    pub serving: Instant,
}

#[derive(Debug)]
struct Inner {
    device_plugin_dir: PathBuf,
    plugins_registry_dir: Option<PathBuf>,
    record: Mutex<Recorded>,
    tick: watch::Sender<u64>,
    clients: Mutex<BTreeMap<String, dp::device_plugin_client::DevicePluginClient<Channel>>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Inner {
    fn record(&self, f: impl FnOnce(&mut Recorded)) {
        f(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()));
        self.tick.send_modify(|t| *t += 1);
    }
}

/// The kubelet stand-in (module doc).
#[derive(Debug, Clone)]
pub struct Kubelet {
    inner: Arc<Inner>,
}

impl Kubelet {
    /// A kubelet with only the device manager's registration socket.
    pub async fn start(device_plugin_dir: &Path) -> io::Result<Kubelet> {
        Self::launch(device_plugin_dir, None).await
    }

    /// A kubelet with the registration socket and the plugin watcher on
    /// `plugins_registry_dir`.
    pub async fn start_with_watcher(
        device_plugin_dir: &Path,
        plugins_registry_dir: &Path,
    ) -> io::Result<Kubelet> {
        Self::launch(device_plugin_dir, Some(plugins_registry_dir)).await
    }

    async fn launch(dir: &Path, registry: Option<&Path>) -> io::Result<Kubelet> {
        let k = Kubelet {
            inner: Arc::new(Inner {
                device_plugin_dir: dir.to_owned(),
                plugins_registry_dir: registry.map(Path::to_owned),
                record: Mutex::new(Recorded::default()),
                tick: watch::Sender::new(0),
                clients: Mutex::new(BTreeMap::new()),
                running: tokio::sync::Mutex::new(None),
            }),
        };
        k.boot().await?;
        Ok(k)
    }

    /// The kubelet's start: clean the directory, serve `kubelet.sock`,
    /// start the plugin watcher. Returns the files deleted.
    async fn boot(&self) -> io::Result<Vec<PathBuf>> {
        let dir = &self.inner.device_plugin_dir;
        std::fs::create_dir_all(dir)?;
        let removed = remove_contents(dir)?;
        let socket = self.socket();
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let stop = CancellationToken::new();
        let service = RegistrationService {
            inner: Arc::clone(&self.inner),
            stop: stop.clone(),
        };
        let shutdown = stop.clone().cancelled_owned();
        let mut tasks = vec![tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(dp::registration_server::RegistrationServer::new(service))
                .serve_with_incoming_shutdown(griffin_kubelet_api::incoming(listener), shutdown)
                .await;
        })];
        if let Some(registry) = &self.inner.plugins_registry_dir {
            std::fs::create_dir_all(registry)?;
            tasks.push(tokio::spawn(watch_plugins(
                Arc::clone(&self.inner),
                registry.clone(),
                stop.clone(),
            )));
        }
        *self.inner.running.lock().await = Some(Running { stop, tasks });
        Ok(removed)
    }

    /// The registration socket, `<dir>/kubelet.sock`.
    pub fn socket(&self) -> PathBuf {
        self.inner.device_plugin_dir.join(dp::KUBELET_SOCKET)
    }

    /// A copy of everything recorded so far.
    pub fn recorded(&self) -> Recorded {
        self.inner
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `f` finds what it looks for in the record, for at most
    /// `deadline`; `None` if it never did.
    pub async fn wait_for<T>(
        &self,
        deadline: Duration,
        mut f: impl FnMut(&Recorded) -> Option<T>,
    ) -> Option<T> {
        let mut ticks = self.inner.tick.subscribe();
        let end = tokio::time::Instant::now() + deadline;
        loop {
            ticks.borrow_and_update();
            {
                let r = self.inner.record.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = f(&r) {
                    return Some(t);
                }
            }
            match tokio::time::timeout_at(end, ticks.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let r = self.inner.record.lock().unwrap_or_else(|e| e.into_inner());
                    return f(&r);
                }
            }
        }
    }

    /// Stops the kubelet: the registration server, the plugin watcher and
    /// every endpoint's stream. Files stay as they are.
    pub async fn stop(&self) {
        let running = self.inner.running.lock().await.take();
        if let Some(r) = running {
            r.stop.cancel();
            for t in r.tasks {
                let abort = t.abort_handle();
                if tokio::time::timeout(Duration::from_secs(2), t)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
        }
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// What a kubelet restart does (module doc).
    pub async fn restart(&self) -> io::Result<Restart> {
        self.stop().await;
        let stopped = Instant::now();
        let removed = self.boot().await?;
        Ok(Restart {
            stopped,
            removed,
            serving: Instant::now(),
        })
    }

    /// The client of the endpoint registered last for `resource`.
    pub fn device_plugin(
        &self,
        resource: &str,
    ) -> Option<dp::device_plugin_client::DevicePluginClient<Channel>> {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(resource)
            .cloned()
    }

    fn plugin_or_status(
        &self,
        resource: &str,
    ) -> Result<dp::device_plugin_client::DevicePluginClient<Channel>, Status> {
        self.device_plugin(resource).ok_or_else(|| {
            Status::failed_precondition(format!("stand-in: no endpoint registered for {resource}"))
        })
    }

    /// GetPreferredAllocation for `resource`, one request per container:
    /// `(available, must_include, size)`.
    pub async fn get_preferred_allocation(
        &self,
        resource: &str,
        containers: &[(&[&str], &[&str], i32)],
    ) -> Result<dp::PreferredAllocationResponse, Status> {
        let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
        let request = dp::PreferredAllocationRequest {
            container_requests: containers
                .iter()
                .map(
                    |(available, must, size)| dp::ContainerPreferredAllocationRequest {
                        available_device_i_ds: strings(available),
                        must_include_device_i_ds: strings(must),
                        allocation_size: *size,
                    },
                )
                .collect(),
        };
        let mut c = self.plugin_or_status(resource)?;
        Ok(c.get_preferred_allocation(request).await?.into_inner())
    }

    /// Allocate for `resource`, one request per container with its device
    /// ids.
    pub async fn allocate(
        &self,
        resource: &str,
        containers: &[&[&str]],
    ) -> Result<dp::AllocateResponse, Status> {
        let request = dp::AllocateRequest {
            container_requests: containers
                .iter()
                .map(|ids| dp::ContainerAllocateRequest {
                    devices_i_ds: ids.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        };
        let mut c = self.plugin_or_status(resource)?;
        Ok(c.allocate(request).await?.into_inner())
    }
}

/// The device manager's start-up cleaning: every entry but the checkpoint
/// and directories (entries `stat` follows links for; ones it cannot stat
/// are left).
fn remove_contents(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == CHECKPOINT {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// Whether the kubelet takes `name` as an extended resource name (a
/// domain-prefixed name outside `kubernetes.io`).
fn is_extended_resource_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, rest)) => {
            !domain.is_empty()
                && !rest.is_empty()
                && !rest.contains('/')
                && domain != "kubernetes.io"
                && !domain.ends_with(".kubernetes.io")
        }
        None => false,
    }
}

/// A unix-socket channel once the socket accepts a connection, within
/// [`DIAL_TIMEOUT`] (the kubelet's blocking dial).
async fn dial(path: &Path, stop: &CancellationToken) -> Option<Channel> {
    let end = tokio::time::Instant::now() + DIAL_TIMEOUT;
    loop {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Some(griffin_kubelet_api::unix_channel(path));
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Dials a plugin's endpoint, asks its options, records the connection and
/// then every list until the stream ends or `stop`. `connected` is told
/// when the stream runs (the watcher notifies the plugin then).
async fn run_endpoint(
    inner: Arc<Inner>,
    resource: String,
    endpoint: PathBuf,
    stop: CancellationToken,
    connected: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
) {
    let fail = |connected: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
                why: String| {
        if let Some(c) = connected {
            let _ = c.send(Err(why));
        }
    };
    let Some(channel) = dial(&endpoint, &stop).await else {
        return fail(
            connected,
            format!("failed to dial device plugin at {}", endpoint.display()),
        );
    };
    let mut client = dp::device_plugin_client::DevicePluginClient::new(channel);
    let options = match client.get_device_plugin_options(dp::Empty {}).await {
        Ok(o) => o.into_inner(),
        Err(e) => {
            return fail(
                connected,
                format!("failed to get device plugin options: {e}"),
            )
        }
    };
    // The client first: a test that saw the connection can use it.
    inner
        .clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(resource.clone(), client.clone());
    let mut connection = 0;
    inner.record(|r| {
        connection = r.connections.len();
        r.connections.push(Connected {
            resource: resource.clone(),
            endpoint: endpoint.clone(),
            options,
            at: Instant::now(),
        });
    });
    let stream = tokio::select! {
        () = stop.cancelled() => return,
        s = client.list_and_watch(dp::Empty {}) => s,
    };
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(e) => return fail(connected, format!("ListAndWatch failed: {e}")),
    };
    if let Some(c) = connected {
        let _ = c.send(Ok(()));
    }
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            m = stream.message() => m,
        };
        match next {
            Ok(Some(list)) => inner.record(|r| {
                r.lists.push(Listed {
                    resource: resource.clone(),
                    connection,
                    devices: list.devices,
                    at: Instant::now(),
                })
            }),
            Ok(None) | Err(_) => {
                let error = next.err().map(|e| e.code());
                inner.record(|r| {
                    r.stream_ends.push(StreamEnd {
                        resource: resource.clone(),
                        connection,
                        error,
                        at: Instant::now(),
                    })
                });
                return;
            }
        }
    }
}

#[derive(Debug)]
struct RegistrationService {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

#[tonic::async_trait]
impl dp::registration_server::Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        let request = request.into_inner();
        let refused = if request.version != dp::VERSION {
            Some(format!(
                "Requested device plugin API version {} is not supported by kubelet",
                request.version
            ))
        } else if !is_extended_resource_name(&request.resource_name) {
            Some(format!(
                "invalid name of device plugin socket: {}",
                request.resource_name
            ))
        } else {
            None
        };
        let at = Instant::now();
        let endpoint = self.inner.device_plugin_dir.join(&request.endpoint);
        let endpoint_accepting = !request.endpoint.is_empty()
            && tokio::net::UnixStream::connect(&endpoint).await.is_ok();
        self.inner.record(|r| {
            r.registrations.push(Registered {
                request: request.clone(),
                at,
                refused: refused.clone(),
                endpoint_accepting,
            })
        });
        if let Some(why) = refused {
            return Err(Status::unknown(why));
        }
        tokio::spawn(run_endpoint(
            Arc::clone(&self.inner),
            request.resource_name,
            endpoint,
            self.stop.clone(),
            None,
        ));
        Ok(Response::new(dp::Empty {}))
    }
}

/// The plugin watcher: scans `dir`, registers new sockets, deregisters
/// removed ones.
async fn watch_plugins(inner: Arc<Inner>, dir: PathBuf, stop: CancellationToken) {
    let mut known: BTreeMap<PathBuf, ((u64, u64), CancellationToken)> = BTreeMap::new();
    loop {
        let mut present = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                    if m.file_type().is_socket() {
                        present.insert(e.path(), (m.dev(), m.ino()));
                    }
                }
            }
        }
        known.retain(|path, (id, token)| {
            let keep = present.get(path) == Some(id);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (path, id) in present {
            if known.contains_key(&path) {
                continue;
            }
            let token = stop.child_token();
            tokio::spawn(register_watched(
                Arc::clone(&inner),
                path.clone(),
                token.clone(),
            ));
            known.insert(path, (id, token));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(WATCH_SCAN) => {}
        }
    }
}

/// The plugin manager's registration of one socket.
async fn register_watched(inner: Arc<Inner>, socket: PathBuf, stop: CancellationToken) {
    let Some(channel) = dial(&socket, &stop).await else {
        return;
    };
    let mut client = pr::registration_client::RegistrationClient::new(channel);
    let info =
        match tokio::time::timeout(GET_INFO_TIMEOUT, client.get_info(pr::InfoRequest {})).await {
            Ok(Ok(i)) => i.into_inner(),
            _ => return,
        };
    let refused = if info.r#type != pr::DEVICE_PLUGIN {
        Some(format!(
            "no handler registered for plugin type: {} at socket {}",
            info.r#type,
            socket.display()
        ))
    } else if !info.supported_versions.iter().any(|v| v == dp::VERSION) {
        Some(format!(
            "manager version, {}, is not among plugin supported versions {:?}",
            dp::VERSION,
            info.supported_versions
        ))
    } else if !is_extended_resource_name(&info.name) {
        Some(format!(
            "invalid name of device plugin socket: {}",
            info.name
        ))
    } else {
        None
    };
    let status = match refused {
        Some(error) => pr::RegistrationStatus {
            plugin_registered: false,
            error,
        },
        None => {
            let endpoint = if info.endpoint.is_empty() {
                socket.clone()
            } else {
                PathBuf::from(&info.endpoint)
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(run_endpoint(
                Arc::clone(&inner),
                info.name.clone(),
                endpoint,
                stop.clone(),
                Some(tx),
            ));
            match rx.await {
                Ok(Ok(())) => pr::RegistrationStatus {
                    plugin_registered: true,
                    error: String::new(),
                },
                Ok(Err(error)) => pr::RegistrationStatus {
                    plugin_registered: false,
                    error,
                },
                Err(_) => return,
            }
        }
    };
    let _ = client.notify_registration_status(status.clone()).await;
    inner.record(|r| {
        r.watcher.push(WatcherRegistered {
            socket,
            info,
            status,
            at: Instant::now(),
        })
    });
}

#[derive(Debug, Default)]
struct PodState {
    pods: Vec<v1::PodResources>,
    allocatable: Option<v1::AllocatableResourcesResponse>,
    delay: Duration,
}

#[derive(Debug, Clone)]
struct PodService(Arc<Mutex<PodState>>);

impl PodService {
    fn state<T>(&self, f: impl FnOnce(&PodState) -> T) -> T {
        f(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[tonic::async_trait]
impl v1::pod_resources_lister_server::PodResourcesLister for PodService {
    async fn list(
        &self,
        _: Request<v1::ListPodResourcesRequest>,
    ) -> Result<Response<v1::ListPodResourcesResponse>, Status> {
        let (pods, delay) = self.state(|s| (s.pods.clone(), s.delay));
        tokio::time::sleep(delay).await;
        Ok(Response::new(v1::ListPodResourcesResponse {
            pod_resources: pods,
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<v1::AllocatableResourcesRequest>,
    ) -> Result<Response<v1::AllocatableResourcesResponse>, Status> {
        let (a, delay) = self.state(|s| (s.allocatable.clone(), s.delay));
        tokio::time::sleep(delay).await;
        a.map(Response::new).ok_or_else(|| {
            Status::unimplemented(
                "unknown method GetAllocatableResources for service v1.PodResourcesLister",
            )
        })
    }
}

/// The kubelet's PodResources `v1` server on a socket, serving what the
/// test sets.
#[derive(Debug)]
pub struct PodResourcesServer {
    state: Arc<Mutex<PodState>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl PodResourcesServer {
    /// Serves at `path` (created; a file there is replaced) with no pods
    /// and no `GetAllocatableResources`.
    pub async fn start(path: &Path) -> io::Result<PodResourcesServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let state = Arc::new(Mutex::new(PodState::default()));
        let stop = CancellationToken::new();
        let service = PodService(Arc::clone(&state));
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(
                    v1::pod_resources_lister_server::PodResourcesListerServer::new(service),
                )
                .serve_with_incoming_shutdown(griffin_kubelet_api::incoming(listener), shutdown)
                .await;
        });
        Ok(PodResourcesServer { state, stop, task })
    }

    fn set(&self, f: impl FnOnce(&mut PodState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// What `List` answers.
    pub fn set_pods(&self, pods: Vec<v1::PodResources>) {
        self.set(|s| s.pods = pods);
    }

    /// What `GetAllocatableResources` answers; `None`: `Unimplemented`.
    pub fn set_allocatable(&self, a: Option<v1::AllocatableResourcesResponse>) {
        self.set(|s| s.allocatable = a);
    }

    /// How long each call waits before it answers.
    pub fn set_delay(&self, d: Duration) {
        self.set(|s| s.delay = d);
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_cleaning_keeps_the_checkpoint_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(CHECKPOINT), "{}").unwrap();
        std::fs::write(d.join("plugin.sock"), "").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("to-dir")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        std::os::unix::fs::symlink(d.join(CHECKPOINT), d.join("to-file")).unwrap();
        let removed = remove_contents(d).unwrap();
        assert_eq!(removed, vec![d.join("plugin.sock"), d.join("to-file")]);
        assert!(d.join(CHECKPOINT).exists());
        assert!(d.join("sub").is_dir());
        assert!(std::fs::symlink_metadata(d.join("to-dir")).is_ok());
        assert!(std::fs::symlink_metadata(d.join("dangling")).is_ok());
    }

    #[test]
    fn extended_resource_names() {
        assert!(is_extended_resource_name("nvidia.com/gpu"));
        assert!(!is_extended_resource_name("gpu"));
        assert!(!is_extended_resource_name("kubernetes.io/gpu"));
        assert!(!is_extended_resource_name("x.kubernetes.io/gpu"));
        assert!(!is_extended_resource_name("a.com/b/c"));
    }
}
