//! An NRI plugin: Griffin's seat in the container runtime (containerd 1.7
//! or later with NRI enabled, CRI-O 1.26 or later), so a container is
//! *created* with its cpuset instead of being corrected after it started.
//!
//! The plugin connects to the runtime's socket ([`Settings::socket`]),
//! registers, subscribes to container creation and removal, and answers
//! `CreateContainer` with the adjustment a [`Handler`] decides (for
//! Griffin: the container's CPUs and memory nodes, see
//! `crate::pods::watch`). Framing is in [`wire`]; the messages are
//! [`griffin_kubelet_api::nri`].
//!
//! A handler never fails a creation: whatever goes wrong, the container
//! is created unadjusted and the pods engine corrects it after it starts,
//! as without NRI. When the runtime goes away (restart, NRI disabled) the
//! plugin connects again every second; the socket missing is logged once.

pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use griffin_kubelet_api::nri::{
    self, ConfigureRequest, ConfigureResponse, CreateContainerRequest, CreateContainerResponse,
    Empty, Event, RegisterPluginRequest, RemoveContainerRequest, RemoveContainerResponse,
    SynchronizeRequest, SynchronizeResponse,
};
use griffin_kubelet_api::ttrpc::{self, TYPE_REQUEST, TYPE_RESPONSE};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use wire::{Demux, WireError};

/// What the runtime asks of the plugin.
pub trait Handler: Send + Sync + 'static {
    /// The runtime configured the plugin (its name, e.g. `containerd`).
    fn configured(&self, runtime_name: &str, runtime_version: &str);
    /// The adjustment for a container being created (default: none).
    fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> impl Future<Output = CreateContainerResponse> + Send;
    /// A container was removed.
    fn container_removed(&self, req: &RemoveContainerRequest);
}

/// Where and as whom the plugin registers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The runtime's NRI socket.
    pub socket: PathBuf,
    /// The plugin's name.
    pub name: String,
    /// Its index: plugins are called in ascending order (two digits).
    pub index: String,
}

/// An error of one connection to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum NriError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The runtime broke the framing.
    #[error("framing")]
    Wire(#[from] WireError),
    /// A message did not decode.
    #[error("decoding {0}")]
    Decode(&'static str, #[source] prost::DecodeError),
    /// The runtime refused the registration.
    #[error("registration refused: {0}")]
    Refused(String),
    /// The runtime closed the connection.
    #[error("the runtime closed the connection")]
    Closed,
}

/// The events subscribed to.
pub const EVENTS: [Event; 2] = [Event::CreateContainer, Event::RemoveContainer];

/// The event mask of `events` (bit `event - 1`, as the runtime reads it).
pub fn event_mask(events: &[Event]) -> i32 {
    events
        .iter()
        .fold(0, |m, e| m | 1 << ((*e as i32).saturating_sub(1)))
}

/// Runs the plugin until `stop`: connects, registers, serves; again one
/// second after the connection ends.
pub async fn run<H: Handler>(s: Settings, h: Arc<H>, stop: CancellationToken) {
    let mut last: Option<String> = None;
    loop {
        match session(&s, &h, &stop).await {
            Ok(()) => return,
            Err(e) => {
                let msg = griffin_devices::Chain(&e).to_string();
                if last.as_ref() != Some(&msg) {
                    tracing::warn!(socket = %s.socket.display(), error = %msg, "NRI: not connected to the container runtime; containers are pinned after they start; retrying every second");
                    last = Some(msg);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

type Writer = Arc<Mutex<OwnedWriteHalf>>;

async fn send(w: &Writer, frame: Vec<u8>) -> Result<(), NriError> {
    w.lock()
        .await
        .write_all(&frame)
        .await
        .map_err(|e| NriError::Io("writing to the runtime".into(), e))
}

/// The registration's stream on the runtime's connection.
const REGISTER_STREAM: u32 = 1;

async fn session<H: Handler>(
    s: &Settings,
    h: &Arc<H>,
    stop: &CancellationToken,
) -> Result<(), NriError> {
    let conn = UnixStream::connect(&s.socket)
        .await
        .map_err(|e| NriError::Io(format!("connecting to {}", s.socket.display()), e))?;
    let (mut rd, wr) = conn.into_split();
    let wr: Writer = Arc::new(Mutex::new(wr));
    let req = ttrpc::Request {
        service: nri::RUNTIME_SERVICE.into(),
        method: "RegisterPlugin".into(),
        payload: RegisterPluginRequest {
            plugin_name: s.name.clone(),
            plugin_idx: s.index.clone(),
            nri_version: String::new(),
        }
        .encode_to_vec(),
        timeout_nano: 0,
        metadata: vec![],
    };
    send(
        &wr,
        wire::encode(
            nri::RUNTIME_SERVICE_CONN,
            REGISTER_STREAM,
            TYPE_REQUEST,
            &req.encode_to_vec(),
        ),
    )
    .await?;
    let mut demux = Demux::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = rd.read(&mut buf) => r.map_err(|e| NriError::Io("reading from the runtime".into(), e))?,
        };
        if n == 0 {
            return Err(NriError::Closed);
        }
        for m in demux.feed(&buf[..n])? {
            match (m.conn, m.kind) {
                (nri::RUNTIME_SERVICE_CONN, TYPE_RESPONSE) if m.stream == REGISTER_STREAM => {
                    let r = ttrpc::Response::decode(&*m.payload)
                        .map_err(|e| NriError::Decode("the registration response", e))?;
                    match r.status {
                        Some(st) if st.code != 0 => return Err(NriError::Refused(st.message)),
                        _ => {
                            tracing::info!(socket = %s.socket.display(), plugin = %s.name, "NRI: registered with the container runtime")
                        }
                    }
                }
                (nri::PLUGIN_SERVICE_CONN, TYPE_REQUEST) => {
                    let req = ttrpc::Request::decode(&*m.payload)
                        .map_err(|e| NriError::Decode("a request", e))?;
                    let (h, wr, stream) = (h.clone(), wr.clone(), m.stream);
                    // Served concurrently: a creation that takes a while
                    // does not hold the others up.
                    tokio::spawn(async move {
                        let resp = serve(&*h, req).await;
                        let frame = wire::encode(
                            nri::PLUGIN_SERVICE_CONN,
                            stream,
                            TYPE_RESPONSE,
                            &resp.encode_to_vec(),
                        );
                        if let Err(e) = send(&wr, frame).await {
                            tracing::warn!(error = %griffin_devices::Chain(&e), "NRI: cannot answer the runtime");
                        }
                    });
                }
                (conn, kind) => {
                    tracing::debug!(conn, kind, stream = m.stream, "NRI: message ignored")
                }
            }
        }
    }
}

/// The adjustment that creates a container on `cpus` with memory on
/// `mems`.
pub fn cpuset_adjustment(cpus: &crate::cpuset::CpuSet, mems: &[u32]) -> nri::ContainerAdjustment {
    nri::ContainerAdjustment {
        annotations: Default::default(),
        linux: Some(nri::LinuxContainerAdjustment {
            resources: Some(nri::LinuxResources {
                memory: None,
                cpu: Some(nri::LinuxCpu {
                    cpus: cpus.to_string(),
                    mems: mems
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    ..Default::default()
                }),
            }),
        }),
    }
}

fn ok(payload: Vec<u8>) -> ttrpc::Response {
    ttrpc::Response {
        status: None,
        payload,
    }
}

fn error(code: i32, message: String) -> ttrpc::Response {
    ttrpc::Response {
        status: Some(ttrpc::Status { code, message }),
        payload: vec![],
    }
}

/// gRPC status codes used in answers.
const INVALID_ARGUMENT: i32 = 3;
const UNIMPLEMENTED: i32 = 12;

/// Answers one request of the runtime.
pub async fn serve<H: Handler>(h: &H, req: ttrpc::Request) -> ttrpc::Response {
    if req.service != nri::PLUGIN_SERVICE {
        return error(UNIMPLEMENTED, format!("service {} not served", req.service));
    }
    fn bad(what: &str, e: prost::DecodeError) -> ttrpc::Response {
        error(INVALID_ARGUMENT, format!("decoding {what}: {e}"))
    }
    match req.method.as_str() {
        "Configure" => match ConfigureRequest::decode(&*req.payload) {
            Ok(c) => {
                tracing::info!(runtime = %c.runtime_name, version = %c.runtime_version, "NRI: configured by the container runtime");
                h.configured(&c.runtime_name, &c.runtime_version);
                ok(ConfigureResponse {
                    events: event_mask(&EVENTS),
                    request_timeout: 0,
                }
                .encode_to_vec())
            }
            Err(e) => bad("ConfigureRequest", e),
        },
        // Existing containers are the pods engine's (it reconciles them
        // from the API server and their cgroups): nothing to update here.
        "Synchronize" => match SynchronizeRequest::decode(&*req.payload) {
            Ok(_) => ok(SynchronizeResponse {
                update: vec![],
                more: false,
            }
            .encode_to_vec()),
            Err(e) => bad("SynchronizeRequest", e),
        },
        "CreateContainer" => match CreateContainerRequest::decode(&*req.payload) {
            Ok(c) => ok(h.create_container(c).await.encode_to_vec()),
            Err(e) => bad("CreateContainerRequest", e),
        },
        "RemoveContainer" => match RemoveContainerRequest::decode(&*req.payload) {
            Ok(r) => {
                h.container_removed(&r);
                ok(RemoveContainerResponse {}.encode_to_vec())
            }
            Err(e) => bad("RemoveContainerRequest", e),
        },
        "Shutdown" => {
            tracing::info!("NRI: the container runtime is shutting down");
            ok(Empty {}.encode_to_vec())
        }
        "StateChange" => ok(Empty {}.encode_to_vec()),
        other => error(UNIMPLEMENTED, format!("method {other} not served")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Nothing;

    impl Handler for Nothing {
        fn configured(&self, _: &str, _: &str) {}
        async fn create_container(&self, _: CreateContainerRequest) -> CreateContainerResponse {
            CreateContainerResponse::default()
        }
        fn container_removed(&self, _: &RemoveContainerRequest) {}
    }

    const METHODS: [&str; 8] = [
        "Configure",
        "Synchronize",
        "CreateContainer",
        "RemoveContainer",
        "Shutdown",
        "StateChange",
        "UpdateContainer",
        "",
    ];

    proptest! {
        /// Whatever the runtime sends in a request, the plugin answers
        /// (a payload or an error status) and never panics.
        #[test]
        fn any_request_gets_an_answer(
            method in 0..METHODS.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            other_service in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let req = ttrpc::Request {
                service: if other_service { "x.Y".into() } else { nri::PLUGIN_SERVICE.into() },
                method: METHODS[method].into(),
                payload: payload.clone(),
                timeout_nano: 0,
                metadata: vec![],
            };
            let resp = rt.block_on(serve(&Nothing, req));
            if other_service || METHODS[method] == "UpdateContainer" || METHODS[method].is_empty() {
                prop_assert_eq!(resp.status.map(|s| s.code), Some(UNIMPLEMENTED));
            }
        }
    }

    #[test]
    fn the_event_mask_has_bit_event_minus_one() {
        // CREATE_CONTAINER = 4 -> bit 3; REMOVE_CONTAINER = 11 -> bit 10.
        assert_eq!(event_mask(&EVENTS), (1 << 3) | (1 << 10));
        assert_eq!(event_mask(&[Event::RunPodSandbox]), 1);
    }
}
