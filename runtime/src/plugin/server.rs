//! The kubelet-facing side of the device plugins: one gRPC `DevicePlugin`
//! server per resource of the [`Backend`]'s snapshot, each on its own unix
//! socket, registered with the kubelet and kept registered across kubelet
//! restarts.
//!
//! # Sockets
//! A resource's socket is `griffin-<resource>.sock` ([`socket_file_name`]:
//! `/` and anything outside `[A-Za-z0-9._-]` become `_`), mode 0600, bound
//! under a hidden temporary name and renamed into place. A stale socket of
//! ours at that path is replaced; anything else there — a symbolic link
//! above all — is refused, naming the path, and retried (the resource is
//! not served while it stays). At start the manager removes leftover
//! `griffin-*.sock` sockets from its directory. Each server serves before
//! it registers. On cancellation every server stops (its ListAndWatch
//! streams end with OK) and its socket is removed if it is still ours.
//!
//! # Registration ([`RegistrationMode`])
//! * `kubelet-socket`: sockets in the device-plugin directory; `Register`
//!   on `<dir>/kubelet.sock` with version `v1beta1`, the socket's file name
//!   as endpoint (the kubelet joins it to its directory), the resource name
//!   and the options ([`OPTIONS`]).
//! * `plugin-watcher`: sockets in `plugins_registry`, each serving
//!   `pluginregistration.Registration` next to `DevicePlugin` (as the
//!   kubelet's own device plugin stub does): `GetInfo` answers type
//!   `DevicePlugin`, the resource name, the socket's full path as endpoint
//!   and versions `["v1beta1"]`; the kubelet finds the socket, calls
//!   `GetInfo`, dials the endpoint and reports with
//!   `NotifyRegistrationStatus` (logged, and recorded in
//!   [`ResourceStatus`]). The kubelet does not clean `plugins_registry` when
//!   it starts; it registers the sockets it finds there again.
//! * `auto`: exactly one of the two, never both. The kubelet keeps one
//!   endpoint per resource name and a second registration replaces the
//!   first (v1.20 leaves the replaced endpoint's ListAndWatch stream
//!   running, later kubelets stop it), and removing a plugin-watcher socket
//!   deregisters whichever endpoint is current, so registering both ways
//!   buys nothing and makes the kubelet juggle two connections. Chosen
//!   once, at start: `kubelet-socket` when `kubelet.sock` is in the
//!   device-plugin directory (every kubelet with device plugins serves
//!   it), else `plugin-watcher` when the `plugins_registry` directory
//!   exists, else `kubelet-socket` (waiting for the kubelet).
//!
//! # Kubelet restarts
//! A starting kubelet deletes every file in the device-plugin directory
//! but its checkpoint (`kubelet_internal_checkpoint`), our sockets
//! included, then creates a new `kubelet.sock`. Every resource task looks
//! at its socket and at `kubelet.sock` every [`POLL`] (100 ms): when its
//! socket is gone or is another file, it binds a new one and registers
//! again; when `kubelet.sock` is another file than the one it registered
//! with, it registers again. Allocations are the [`Backend`]'s and are not
//! touched. A failed registration (no kubelet yet) is retried after 50 ms,
//! doubling up to 1 s, and logged once per distinct failure.
//!
//! # Resources coming and going
//! A resource that appears in the snapshot gets its server; one that
//! leaves it is stopped and its socket removed, after its streams sent an
//! empty list (the kubelet's capacity for it drops to 0). A resource that
//! is in the snapshot with no devices is served and registered and sends
//! an empty list: capacity 0, and the resource is ready the moment a
//! device appears. Names that the kubelet would refuse (not
//! `<domain>/<name>`, or in the `kubernetes.io` domain) are not served;
//! their status carries the reason.
//!
//! # Errors
//! Bad requests (an id that is not a device of the resource or is listed
//! twice, a negative or impossible `allocation_size`, a must-include id
//! that is not available, no ids) are `InvalidArgument`; a [`Backend`]
//! refusal is `FailedPrecondition` with its message; a preferred
//! allocation that does not fit the request is `Internal`.

mod service;
pub mod socket;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use griffin_kubelet_api::{deviceplugin as dp, pluginregistration as pr};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rpc::RpcStatus;
use super::Backend;
pub use service::OPTIONS;
use service::{DevicePluginService, WatcherService};
use socket::FileId;

/// How often each resource looks at its socket and at `kubelet.sock`.
pub const POLL: Duration = Duration::from_millis(100);
/// First delay before a failed bind or registration is tried again.
pub const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest delay between tries.
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// Deadline of one `Register` call.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stopping server may take to close its connections before it
/// is dropped.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How the plugins make themselves known to the kubelet (module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationMode {
    /// `kubelet-socket` when the kubelet's socket is there, else
    /// `plugin-watcher` when its registry directory is, else
    /// `kubelet-socket`.
    #[default]
    Auto,
    /// `Register` on `<device_plugin_dir>/kubelet.sock`.
    KubeletSocket,
    /// A socket in `plugins_registry_dir` found by the kubelet's plugin
    /// watcher.
    PluginWatcher,
}

impl RegistrationMode {
    /// The mode used with `settings`: `Auto` decided (module doc), the
    /// others as they are.
    pub fn resolve(settings: &PluginSettings) -> RegistrationMode {
        match settings.mode {
            RegistrationMode::Auto => {
                if socket::is_socket(&settings.kubelet_socket()) {
                    RegistrationMode::KubeletSocket
                } else if settings.plugins_registry_dir.is_dir() {
                    RegistrationMode::PluginWatcher
                } else {
                    RegistrationMode::KubeletSocket
                }
            }
            m => m,
        }
    }

    /// The name used in configuration (`kubelet-socket`, …).
    pub fn name(self) -> &'static str {
        match self {
            RegistrationMode::Auto => "auto",
            RegistrationMode::KubeletSocket => "kubelet-socket",
            RegistrationMode::PluginWatcher => "plugin-watcher",
        }
    }
}

/// Where the kubelet is and how to register with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// The kubelet's device-plugin directory (its `kubelet.sock`; our
    /// sockets in `kubelet-socket` mode).
    pub device_plugin_dir: PathBuf,
    /// The kubelet's plugin-watcher directory (our sockets in
    /// `plugin-watcher` mode).
    pub plugins_registry_dir: PathBuf,
    /// How to register.
    pub mode: RegistrationMode,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            device_plugin_dir: dp::DEVICE_PLUGIN_PATH.into(),
            plugins_registry_dir: pr::PLUGINS_REGISTRY_PATH.into(),
            mode: RegistrationMode::Auto,
        }
    }
}

impl PluginSettings {
    /// The kubelet's registration socket.
    pub fn kubelet_socket(&self) -> PathBuf {
        self.device_plugin_dir.join(dp::KUBELET_SOCKET)
    }

    /// The directory our sockets go to in `mode` (a resolved mode).
    pub fn socket_dir(&self, mode: RegistrationMode) -> &Path {
        match mode {
            RegistrationMode::PluginWatcher => &self.plugins_registry_dir,
            _ => &self.device_plugin_dir,
        }
    }
}

/// The socket file name of `resource`: `griffin-` and the name with `/`
/// and anything outside `[A-Za-z0-9._-]` replaced by `_`, then `.sock`
/// (`intel.com/intel_sriov_netdevice` →
/// `griffin-intel.com_intel_sriov_netdevice.sock`). Distinct valid resource
/// names give distinct file names: a domain has no `_`.
pub fn socket_file_name(resource: &str) -> String {
    let safe: String = resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("griffin-{safe}.sock")
}

/// Whether the kubelet accepts `resource` as an extended resource name: a
/// DNS subdomain prefix outside `kubernetes.io`, `/`, and a name of at most
/// 63 characters of `[A-Za-z0-9._-]` that starts and ends alphanumeric.
/// The error says what is wrong.
pub fn check_resource_name(resource: &str) -> Result<(), String> {
    let Some((domain, name)) = resource.split_once('/') else {
        return Err(format!("resource name {resource:?} has no domain prefix"));
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(format!(
            "resource name {resource:?}: {domain:?} is not a DNS subdomain"
        ));
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Err(format!(
            "resource name {resource:?}: the kubernetes.io domain is the kubelet's own"
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !name_ok {
        return Err(format!(
            "resource name {resource:?}: {name:?} is not a qualified name"
        ));
    }
    Ok(())
}

/// Where one resource's plugin stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceStatus {
    /// Its socket.
    pub socket: PathBuf,
    /// The registration mode in use (never `Auto`).
    pub mode: RegistrationMode,
    /// Whether its gRPC server is listening on `socket`.
    pub serving: bool,
    /// Whether the kubelet accepted its current registration.
    pub registered: bool,
    /// Registrations the kubelet accepted since start (a re-registration
    /// after a kubelet restart adds one).
    pub registrations: u64,
    /// The last failure (bind, registration, the kubelet's refusal), until
    /// the next success.
    pub error: Option<String>,
}

/// Every served resource's status.
pub type Statuses = BTreeMap<String, ResourceStatus>;

/// The device plugin servers of every resource, kept in line with the
/// [`Backend`]'s snapshot until the token given to [`start`] is cancelled.
///
/// [`start`]: DevicePluginManager::start
#[derive(Debug)]
pub struct DevicePluginManager {
    mode: RegistrationMode,
    status: watch::Receiver<Statuses>,
    task: JoinHandle<()>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    settings: PluginSettings,
    mode: RegistrationMode,
    status: watch::Sender<Statuses>,
}

impl DevicePluginManager {
    /// Resolves the mode, removes leftover sockets of ours and starts
    /// serving every resource of `backend`. Must be called within a tokio
    /// runtime.
    pub fn start(
        backend: Arc<dyn Backend>,
        settings: PluginSettings,
        cancel: CancellationToken,
    ) -> DevicePluginManager {
        let mode = RegistrationMode::resolve(&settings);
        if settings.mode == RegistrationMode::Auto {
            tracing::info!("device plugins: registration mode auto is {}", mode.name());
        }
        let dir = settings.socket_dir(mode).to_owned();
        for p in socket::sweep(&dir) {
            tracing::info!("device plugins: removed stale socket {}", p.display());
        }
        let (status_tx, status) = watch::channel(Statuses::new());
        let shared = Arc::new(Shared {
            backend,
            settings,
            mode,
            status: status_tx,
        });
        let task = tokio::spawn(manage(shared, cancel));
        DevicePluginManager { mode, status, task }
    }

    /// The registration mode in use.
    pub fn mode(&self) -> RegistrationMode {
        self.mode
    }

    /// The status of every resource, updated as it changes.
    pub fn status(&self) -> watch::Receiver<Statuses> {
        self.status.clone()
    }

    /// Waits until, after cancellation, every server has stopped and its
    /// socket is removed.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("device plugins: manager task failed: {e}");
        }
    }
}

/// Starts and stops the resource tasks as the snapshot changes.
async fn manage(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut snapshots = shared.backend.watch();
    let mut running: BTreeMap<String, (CancellationToken, JoinHandle<()>)> = BTreeMap::new();
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    let mut backend_gone = false;
    loop {
        let names: Vec<String> = snapshots.borrow_and_update().keys().cloned().collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|name| !names.contains(name))
            .cloned()
            .collect();
        for name in gone {
            if let Some((stop, task)) = running.remove(&name) {
                tracing::info!("device plugins: {name} left the pools; stopping its server");
                stop.cancel();
                stopping.push(task);
            }
        }
        for name in names {
            if running.contains_key(&name) {
                continue;
            }
            let stop = cancel.child_token();
            let task = tokio::spawn(serve_resource(
                Arc::clone(&shared),
                name.clone(),
                stop.clone(),
            ));
            running.insert(name, (stop, task));
        }
        stopping.retain(|t| !t.is_finished());
        if backend_gone {
            cancel.cancelled().await;
            break;
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() {
                backend_gone = true;
            },
        }
    }
    for (_, (stop, task)) in running {
        stop.cancel();
        stopping.push(task);
    }
    for t in stopping {
        let _ = t.await;
    }
}

/// Logs a resource's failures once per distinct failure and keeps its
/// status.
struct Reporter {
    shared: Arc<Shared>,
    resource: String,
    logged: Option<String>,
}

impl Reporter {
    fn update(&self, f: impl FnOnce(&mut ResourceStatus)) {
        self.shared.status.send_modify(|all| {
            if let Some(s) = all.get_mut(&self.resource) {
                f(s);
            }
        });
    }

    fn fail(&mut self, what: String) {
        if self.logged.as_deref() != Some(what.as_str()) {
            tracing::warn!("device plugin {}: {what}; retrying", self.resource);
            self.logged = Some(what.clone());
        }
        self.update(|s| s.error = Some(what));
    }

    fn clear(&mut self) {
        self.logged = None;
        self.update(|s| s.error = None);
    }
}

/// Doubling delays from [`RETRY_MIN`] to [`RETRY_MAX`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(RETRY_MIN)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(RETRY_MAX);
        d
    }
    fn reset(&mut self) {
        self.0 = RETRY_MIN;
    }
}

/// Why a socket's serving ended.
enum Ended {
    /// Cancelled or the resource left: stop for good.
    Stopped,
    /// The socket was deleted or replaced (a kubelet restart): bind again.
    SocketLost,
}

/// Serves one resource until `stop`: binds, serves, registers, and does it
/// again whenever the socket is lost.
async fn serve_resource(shared: Arc<Shared>, resource: String, stop: CancellationToken) {
    let dir = shared.settings.socket_dir(shared.mode).to_owned();
    let path = dir.join(socket_file_name(&resource));
    shared.status.send_modify(|all| {
        all.insert(
            resource.clone(),
            ResourceStatus {
                socket: path.clone(),
                mode: shared.mode,
                serving: false,
                registered: false,
                registrations: 0,
                error: None,
            },
        );
    });
    let mut report = Reporter {
        shared: Arc::clone(&shared),
        resource: resource.clone(),
        logged: None,
    };
    if let Err(why) = check_resource_name(&resource) {
        tracing::error!("device plugins: not serving {resource}: {why}");
        report.update(|s| s.error = Some(why));
        stop.cancelled().await;
        shared.status.send_modify(|all| {
            all.remove(&resource);
        });
        return;
    }
    let resource: Arc<str> = resource.into();
    let mut backoff = Backoff::new();
    // Whether the kubelet accepted a registration before: the next one is
    // a re-registration (after a kubelet restart).
    let mut registered_before = false;
    loop {
        let (listener, id) = match socket::bind(&path) {
            Ok(bound) => bound,
            Err(e) => {
                report.fail(griffin_devices::Chain(&e).to_string());
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff.next()) => continue,
                }
            }
        };
        backoff.reset();
        report.clear();
        let served = stop.child_token();
        let server = spawn_server(&shared, &resource, &path, listener, served.clone());
        report.update(|s| {
            s.serving = true;
            s.registered = false;
        });
        tracing::info!("device plugin {resource}: serving on {}", path.display());
        let ended = watch_and_register(
            &shared,
            &resource,
            &path,
            id,
            &mut registered_before,
            &stop,
            &mut report,
        )
        .await;
        served.cancel();
        if tokio::time::timeout(STOP_GRACE, server).await.is_err() {
            tracing::warn!(
                "device plugin {resource}: server did not stop in {STOP_GRACE:?}; dropped"
            );
        }
        report.update(|s| {
            s.serving = false;
            s.registered = false;
        });
        match ended {
            Ended::Stopped => {
                socket::remove_if_ours(&path, id);
                break;
            }
            Ended::SocketLost => {
                tracing::warn!(
                    "device plugin {resource}: socket {} was removed (kubelet restart?); serving it again",
                    path.display()
                );
            }
        }
    }
    shared.status.send_modify(|all| {
        all.remove(&*resource);
    });
    tracing::info!("device plugin {resource}: stopped");
}

/// Starts the gRPC server on `listener`, stopping at `served`.
fn spawn_server(
    shared: &Arc<Shared>,
    resource: &Arc<str>,
    path: &Path,
    listener: tokio::net::UnixListener,
    served: CancellationToken,
) -> JoinHandle<()> {
    let plugin = DevicePluginService {
        backend: Arc::clone(&shared.backend),
        resource: Arc::clone(resource),
        stop: served.clone(),
    };
    let mut router = tonic::transport::Server::builder()
        .add_service(dp::device_plugin_server::DevicePluginServer::new(plugin));
    if shared.mode == RegistrationMode::PluginWatcher {
        let status = shared.status.clone();
        let name = Arc::clone(resource);
        let notified = move |s: pr::RegistrationStatus| {
            if s.plugin_registered {
                let again = status
                    .borrow()
                    .get(&*name)
                    .is_some_and(|st| st.registrations > 0);
                let how = if again { "re-registered" } else { "registered" };
                tracing::info!("device plugin {name}: {how} with the kubelet (plugin watcher)");
            } else {
                tracing::warn!(
                    "device plugin {name}: the kubelet refused the registration: {}",
                    s.error
                );
            }
            status.send_modify(|all| {
                if let Some(st) = all.get_mut(&*name) {
                    st.registered = s.plugin_registered;
                    if s.plugin_registered {
                        st.registrations += 1;
                        st.error = None;
                    } else {
                        st.error =
                            Some(format!("the kubelet refused the registration: {}", s.error));
                    }
                }
            });
        };
        let watcher = WatcherService {
            resource: Arc::clone(resource),
            endpoint: path.to_owned(),
            notified: Arc::new(notified),
        };
        router = router.add_service(pr::registration_server::RegistrationServer::new(watcher));
    }
    let resource = Arc::clone(resource);
    let path = path.to_owned();
    tokio::spawn(async move {
        let incoming = griffin_kubelet_api::incoming_from_kubelet(listener, &path);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, served.cancelled_owned())
            .await
        {
            tracing::warn!(
                "device plugin {resource}: server: {}",
                griffin_devices::Chain(&e)
            );
        }
    })
}

/// Watches the socket `id` at `path` and, in `kubelet-socket` mode,
/// registers and re-registers with the kubelet, until `stop` or the socket
/// is lost.
async fn watch_and_register(
    shared: &Shared,
    resource: &str,
    path: &Path,
    id: FileId,
    registered_before: &mut bool,
    stop: &CancellationToken,
    report: &mut Reporter,
) -> Ended {
    let kubelet_socket = shared.settings.kubelet_socket();
    let register = shared.mode == RegistrationMode::KubeletSocket;
    let mut registered_with: Option<FileId> = None;
    let mut backoff = Backoff::new();
    let mut next_try = Instant::now();
    loop {
        if socket::identity(path) != Some(id) {
            return Ended::SocketLost;
        }
        if register {
            let kubelet = socket::identity(&kubelet_socket);
            if registered_with.is_some() && registered_with != kubelet {
                registered_with = None;
                report.update(|s| s.registered = false);
                tracing::info!(
                    "device plugin {resource}: the kubelet's socket changed (kubelet restart?)"
                );
            }
            if kubelet.is_none() {
                report.fail(format!(
                    "no kubelet: {} is missing",
                    kubelet_socket.display()
                ));
            }
            if let (None, Some(k)) = (registered_with, kubelet) {
                if Instant::now() >= next_try {
                    let outcome = tokio::select! {
                        () = stop.cancelled() => return Ended::Stopped,
                        r = register_once(&kubelet_socket, resource, path) => r,
                    };
                    match outcome {
                        Ok(()) => {
                            registered_with = Some(k);
                            backoff.reset();
                            report.clear();
                            report.update(|s| {
                                s.registered = true;
                                s.registrations += 1;
                            });
                            if std::mem::replace(registered_before, true) {
                                tracing::info!(
                                    "device plugin {resource}: re-registered with the kubelet after its restart"
                                );
                            } else {
                                tracing::info!(
                                    "device plugin {resource}: registered with the kubelet on {}",
                                    kubelet_socket.display()
                                );
                            }
                        }
                        Err(e) => {
                            report.fail(e);
                            next_try = Instant::now() + backoff.next();
                        }
                    }
                }
            }
        }
        // Wake at the next poll, or sooner for a registration retry.
        let wait = if register && registered_with.is_none() {
            next_try
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), POLL)
        } else {
            POLL
        };
        tokio::select! {
            () = stop.cancelled() => return Ended::Stopped,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One `Register` call on the kubelet's socket.
async fn register_once(kubelet_socket: &Path, resource: &str, path: &Path) -> Result<(), String> {
    let endpoint = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let request = dp::RegisterRequest {
        version: dp::VERSION.to_owned(),
        endpoint,
        resource_name: resource.to_owned(),
        options: Some(OPTIONS),
    };
    let mut client = dp::registration_client::RegistrationClient::new(
        griffin_kubelet_api::unix_channel(kubelet_socket),
    );
    match tokio::time::timeout(REGISTER_TIMEOUT, client.register(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!(
            "cannot register on {}: {}",
            kubelet_socket.display(),
            griffin_devices::Chain(&RpcStatus(status))
        )),
        Err(_) => Err(format!(
            "cannot register on {}: no answer in {REGISTER_TIMEOUT:?}",
            kubelet_socket.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_are_safe_and_distinct() {
        assert_eq!(
            socket_file_name("intel.com/intel_sriov_netdevice"),
            "griffin-intel.com_intel_sriov_netdevice.sock"
        );
        assert_eq!(
            socket_file_name("nvidia.com/gpu"),
            "griffin-nvidia.com_gpu.sock"
        );
        assert_eq!(socket_file_name("a/../../b c"), "griffin-a_.._.._b_c.sock");
    }

    #[test]
    fn resource_names_as_the_kubelet_checks_them() {
        for ok in [
            "nvidia.com/gpu",
            "intel.com/intel_sriov_netdevice",
            "example.com/a.b-c_d",
        ] {
            assert_eq!(check_resource_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "gpu",
            "/gpu",
            "Example.com/gpu",
            "example.com/",
            "example.com/-gpu",
            "example.com/gpu/x",
            "kubernetes.io/gpu",
            "node.kubernetes.io/gpu",
            "exa_mple.com/gpu",
        ] {
            assert!(check_resource_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_default_to_the_kubelet_paths_and_read_from_config() {
        let d = PluginSettings::default();
        assert_eq!(
            d.device_plugin_dir,
            Path::new("/var/lib/kubelet/device-plugins")
        );
        assert_eq!(
            d.plugins_registry_dir,
            Path::new("/var/lib/kubelet/plugins_registry")
        );
        assert_eq!(
            d.kubelet_socket(),
            Path::new("/var/lib/kubelet/device-plugins/kubelet.sock")
        );
        assert_eq!(d.mode, RegistrationMode::Auto);
        let s: PluginSettings =
            serde_json::from_str(r#"{"mode":"plugin-watcher","device_plugin_dir":"/x"}"#).unwrap();
        assert_eq!(s.mode, RegistrationMode::PluginWatcher);
        assert_eq!(s.device_plugin_dir, Path::new("/x"));
        assert_eq!(s.plugins_registry_dir, d.plugins_registry_dir);
        assert!(serde_json::from_str::<PluginSettings>(r#"{"mode":"both"}"#).is_err());
        assert!(serde_json::from_str::<PluginSettings>(r#"{"dir":"/x"}"#).is_err());
        for m in [
            RegistrationMode::Auto,
            RegistrationMode::KubeletSocket,
            RegistrationMode::PluginWatcher,
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
        }
    }

    #[tokio::test]
    async fn auto_picks_one_mode_from_what_is_there() {
        let root = tempfile::tempdir().unwrap();
        let settings = PluginSettings {
            device_plugin_dir: root.path().join("device-plugins"),
            plugins_registry_dir: root.path().join("plugins_registry"),
            mode: RegistrationMode::Auto,
        };
        assert_eq!(
            RegistrationMode::resolve(&settings),
            RegistrationMode::KubeletSocket
        );
        std::fs::create_dir(&settings.plugins_registry_dir).unwrap();
        assert_eq!(
            RegistrationMode::resolve(&settings),
            RegistrationMode::PluginWatcher
        );
        std::fs::create_dir(&settings.device_plugin_dir).unwrap();
        assert_eq!(
            RegistrationMode::resolve(&settings),
            RegistrationMode::PluginWatcher
        );
        let _kubelet = tokio::net::UnixListener::bind(settings.kubelet_socket()).unwrap();
        assert_eq!(
            RegistrationMode::resolve(&settings),
            RegistrationMode::KubeletSocket
        );
        let fixed = PluginSettings {
            mode: RegistrationMode::PluginWatcher,
            ..settings
        };
        assert_eq!(
            RegistrationMode::resolve(&fixed),
            RegistrationMode::PluginWatcher
        );
    }
}
