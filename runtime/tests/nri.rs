//! Griffin's NRI plugin against an in-process stand-in of the container
//! runtime's side of the socket (registration, Configure, Synchronize,
//! CreateContainer, RemoveContainer, reconnection). The real peer is
//! containerd 1.7 in `cargo xtask e2e --containerd-1.7`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use griffin_kubelet_api::nri::{
    self, ConfigureRequest, ConfigureResponse, Container, CreateContainerRequest,
    CreateContainerResponse, Empty, LinuxContainer, PodSandbox, RegisterPluginRequest,
    RemoveContainerRequest, SynchronizeRequest, SynchronizeResponse,
};
use griffin_kubelet_api::ttrpc::{self, TYPE_REQUEST, TYPE_RESPONSE};
use griffin_runtime::cpuset::CpuSet;
use griffin_runtime::nri::wire::{self, Demux, Message};
use griffin_runtime::nri::{Handler, Settings};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorder {
    runtime: Mutex<String>,
    removed: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    fn configured(&self, runtime_name: &str, _: &str) {
        *self.runtime.lock().unwrap() = runtime_name.into();
    }
    async fn create_container(&self, req: CreateContainerRequest) -> CreateContainerResponse {
        let c = req.container.unwrap();
        if c.name != "work" {
            return CreateContainerResponse::default();
        }
        CreateContainerResponse {
            adjust: Some(griffin_runtime::nri::cpuset_adjustment(
                &CpuSet::from_ids([3u32, 5]),
                &[0, 1],
            )),
            ..Default::default()
        }
    }
    fn container_removed(&self, req: &RemoveContainerRequest) {
        self.removed
            .lock()
            .unwrap()
            .push(req.container.as_ref().unwrap().id.clone());
    }
}

/// The runtime's end of one plugin connection.
struct Runtime {
    s: UnixStream,
    demux: Demux,
    queue: Vec<Message>,
}

impl Runtime {
    async fn next(&mut self) -> Message {
        let mut buf = [0u8; 4096];
        loop {
            if !self.queue.is_empty() {
                return self.queue.remove(0);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut buf))
                .await
                .expect("the plugin answered within 10 s")
                .unwrap();
            assert!(n > 0, "the plugin closed the connection");
            self.queue.extend(self.demux.feed(&buf[..n]).unwrap());
        }
    }

    /// Calls the plugin's `method`; the request is written in two trunk
    /// frames (header, then payload), as a runtime's buffered writer may.
    async fn call(&mut self, stream: u32, method: &str, payload: Vec<u8>) -> ttrpc::Response {
        let req = ttrpc::Request {
            service: nri::PLUGIN_SERVICE.into(),
            method: method.into(),
            payload,
            timeout_nano: 2_000_000_000,
            metadata: vec![],
        }
        .encode_to_vec();
        let whole = wire::encode(nri::PLUGIN_SERVICE_CONN, stream, TYPE_REQUEST, &req);
        let msg = &whole[wire::TRUNK_HEADER_LEN..];
        for part in [&msg[..ttrpc::HEADER_LEN], &msg[ttrpc::HEADER_LEN..]] {
            let mut f = nri::PLUGIN_SERVICE_CONN.to_be_bytes().to_vec();
            f.extend_from_slice(&(part.len() as u32).to_be_bytes());
            f.extend_from_slice(part);
            self.s.write_all(&f).await.unwrap();
        }
        let m = self.next().await;
        assert_eq!(
            (m.conn, m.kind, m.stream),
            (nri::PLUGIN_SERVICE_CONN, TYPE_RESPONSE, stream),
            "{method}"
        );
        ttrpc::Response::decode(&*m.payload).unwrap()
    }

    /// Accepts the plugin and answers its registration.
    async fn accept(l: &UnixListener) -> (Self, RegisterPluginRequest) {
        let (s, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
            .await
            .expect("the plugin connected within 10 s")
            .unwrap();
        let mut rt = Runtime {
            s,
            demux: Demux::default(),
            queue: vec![],
        };
        let m = rt.next().await;
        assert_eq!((m.conn, m.kind), (nri::RUNTIME_SERVICE_CONN, TYPE_REQUEST));
        let req = ttrpc::Request::decode(&*m.payload).unwrap();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            (nri::RUNTIME_SERVICE, "RegisterPlugin")
        );
        let reg = RegisterPluginRequest::decode(&*req.payload).unwrap();
        let resp = ttrpc::Response {
            status: None,
            payload: Empty {}.encode_to_vec(),
        };
        rt.s.write_all(&wire::encode(
            nri::RUNTIME_SERVICE_CONN,
            m.stream,
            TYPE_RESPONSE,
            &resp.encode_to_vec(),
        ))
        .await
        .unwrap();
        (rt, reg)
    }
}

#[tokio::test]
async fn the_plugin_registers_subscribes_adjusts_creations_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nri.sock");
    let stop = CancellationToken::new();
    let h = Arc::new(Recorder::default());
    // The plugin starts before the runtime: it retries until the socket
    // is there.
    let plugin = tokio::spawn(griffin_runtime::nri::run(
        Settings {
            socket: sock.clone(),
            name: "griffin".into(),
            index: "10".into(),
        },
        h.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let l = UnixListener::bind(&sock).unwrap();
    let (mut rt, reg) = Runtime::accept(&l).await;
    assert_eq!(
        (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
        ("griffin", "10")
    );

    let r = rt
        .call(
            1,
            "Configure",
            ConfigureRequest {
                runtime_name: "containerd".into(),
                runtime_version: "1.7.24".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .await;
    assert!(r.status.is_none(), "{r:?}");
    let c = ConfigureResponse::decode(&*r.payload).unwrap();
    // CREATE_CONTAINER (4) and REMOVE_CONTAINER (11): bits 3 and 10.
    assert_eq!(c.events, (1 << 3) | (1 << 10));
    assert_eq!(*h.runtime.lock().unwrap(), "containerd");

    let r = rt
        .call(
            3,
            "Synchronize",
            SynchronizeRequest::default().encode_to_vec(),
        )
        .await;
    let sync = SynchronizeResponse::decode(&*r.payload).unwrap();
    assert!(sync.update.is_empty());

    let create = |name: &str| CreateContainerRequest {
        pod: Some(PodSandbox {
            uid: "u1".into(),
            name: "p".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        container: Some(Container {
            id: "c1".into(),
            name: name.into(),
            linux: Some(LinuxContainer {
                cgroups_path: "/kubepods/podu1/c1".into(),
                resources: None,
            }),
            ..Default::default()
        }),
    };
    let r = rt
        .call(5, "CreateContainer", create("work").encode_to_vec())
        .await;
    let cpu = CreateContainerResponse::decode(&*r.payload)
        .unwrap()
        .adjust
        .unwrap()
        .linux
        .unwrap()
        .resources
        .unwrap()
        .cpu
        .unwrap();
    assert_eq!((cpu.cpus.as_str(), cpu.mems.as_str()), ("3,5", "0,1"));
    let r = rt
        .call(7, "CreateContainer", create("sidecar").encode_to_vec())
        .await;
    assert_eq!(
        CreateContainerResponse::decode(&*r.payload).unwrap(),
        CreateContainerResponse::default()
    );

    let r = rt
        .call(
            9,
            "RemoveContainer",
            RemoveContainerRequest {
                pod: None,
                container: create("work").container,
            }
            .encode_to_vec(),
        )
        .await;
    assert!(r.status.is_none());
    assert_eq!(*h.removed.lock().unwrap(), ["c1"]);

    let r = rt.call(11, "PostStartContainer", vec![]).await;
    assert_eq!(r.status.map(|s| s.code), Some(12), "UNIMPLEMENTED");
    let r = rt.call(13, "CreateContainer", vec![0xff, 0xff]).await;
    assert_eq!(r.status.map(|s| s.code), Some(3), "INVALID_ARGUMENT");

    // The runtime restarts: the plugin registers again.
    drop(rt);
    let (_rt, reg) = Runtime::accept(&l).await;
    assert_eq!(reg.plugin_name, "griffin");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), plugin)
        .await
        .expect("the plugin stopped")
        .unwrap();
}
