//! The kubelet's gRPC APIs that Griffin speaks, generated with tonic/prost
//! from `.proto` files written from the published API (field names and
//! numbers are facts of the protocol, see `proto/`), plus the unix-socket
//! plumbing both sides need. No logic lives here: the device plugin is
//! `griffin_runtime::deviceplugin`, the kubelet stand-in used by tests is
//! `griffin_tests::kubelet`.

use std::path::{Path, PathBuf};

/// Device Plugin API `v1beta1` (package `v1beta1`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all
)]
pub mod deviceplugin {
    tonic::include_proto!("v1beta1");

    /// The API version sent in `RegisterRequest.version`.
    pub const VERSION: &str = "v1beta1";
    /// `Device.health` of a usable device.
    pub const HEALTHY: &str = "Healthy";
    /// `Device.health` of a device the kubelet must not hand out.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// The kubelet's device-plugin directory.
    pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins";
    /// The kubelet's registration socket, in [`DEVICE_PLUGIN_PATH`].
    pub const KUBELET_SOCKET: &str = "kubelet.sock";
}

/// Plugin registration API `v1` (package `pluginregistration`), the
/// kubelet's plugin-watcher mode.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all
)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");

    /// `PluginInfo.type` of a device plugin.
    pub const DEVICE_PLUGIN: &str = "DevicePlugin";
    /// The kubelet's plugin-watcher directory.
    pub const PLUGINS_REGISTRY_PATH: &str = "/var/lib/kubelet/plugins_registry";
}

/// PodResources API `v1` (package `v1`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all
)]
pub mod podresources {
    tonic::include_proto!("v1");

    /// The kubelet's pod-resources directory.
    pub const POD_RESOURCES_PATH: &str = "/var/lib/kubelet/pod-resources";
    /// The kubelet's PodResources socket, in [`POD_RESOURCES_PATH`].
    pub const SOCKET: &str = "kubelet.sock";
}

/// The container runtime's Node Resource Interface (package
/// `nri.pkg.api.v1alpha1`): the messages Griffin's NRI plugin exchanges
/// with containerd or CRI-O (`griffin_runtime::nri`). They travel over
/// ttrpc ([`ttrpc`]) multiplexed on one unix socket, not gRPC.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all
)]
pub mod nri {
    tonic::include_proto!("nri.pkg.api.v1alpha1");

    /// The runtime's service (called by the plugin).
    pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
    /// The plugin's service (called by the runtime).
    pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
    /// The runtime's default socket.
    pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
    /// The multiplexed connection carrying the plugin's service.
    pub const PLUGIN_SERVICE_CONN: u32 = 1;
    /// The multiplexed connection carrying the runtime's service.
    pub const RUNTIME_SERVICE_CONN: u32 = 2;
}

/// ttrpc's request and response envelopes (package `ttrpc`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all
)]
pub mod ttrpc {
    tonic::include_proto!("ttrpc");

    /// Length of the header before every message.
    pub const HEADER_LEN: usize = 10;
    /// Largest message payload.
    pub const MAX_MESSAGE: usize = 4 << 20;
    /// Header type of a request.
    pub const TYPE_REQUEST: u8 = 1;
    /// Header type of a response.
    pub const TYPE_RESPONSE: u8 = 2;
}

/// A gRPC channel to a unix socket. The connection is made lazily, on the
/// first call, and re-made after it breaks (the kubelet restarts).
pub fn unix_channel(path: impl AsRef<Path>) -> tonic::transport::Channel {
    let path: PathBuf = path.as_ref().to_owned();
    // The URI is required by the API but never dialled: the connector below
    // always opens `path`.
    tonic::transport::Endpoint::from_static("http://[::1]:0").connect_with_connector_lazy(
        tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }),
    )
}

pub mod authority;

/// The kubelet's connections to a device plugin's socket bound at `path`,
/// each with its `:authority` made valid ([`authority`]), as a stream for
/// `tonic::transport::Server::serve_with_incoming`.
pub fn incoming_from_kubelet(
    listener: tokio::net::UnixListener,
    path: &Path,
) -> impl tokio_stream::Stream<Item = std::io::Result<authority::KubeletStream>> {
    use tokio_stream::StreamExt;
    let len = path.as_os_str().len();
    tokio_stream::wrappers::UnixListenerStream::new(listener)
        .map(move |s| s.map(|s| authority::KubeletStream::new(s, len)))
}

/// The connections accepted on a bound unix listener, as a stream for
/// `tonic::transport::Server::serve_with_incoming`.
pub fn incoming(listener: tokio::net::UnixListener) -> tokio_stream::wrappers::UnixListenerStream {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}
