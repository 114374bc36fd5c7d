//! The daemon's local control API: allocate, release and list over a Unix
//! socket in the state directory (`STATE_DIR/control.sock`, mode 0600, peer
//! credentials checked by the server). One JSON request per connection, one
//! JSON reply; mutating operations are never served over TCP.
//!
//! The daemon serves it with [`Server`]; `griffin alloc/release/allocs`
//! [`call`] it first and act on the state directory themselves only when no
//! daemon answers. Both paths take the state directory lock for each
//! operation, so they can be mixed safely.
//!
//! Limits: a request over [`MAX_MESSAGE`] bytes is refused whole, never
//! parsed in part; the server waits [`REQUEST_TIMEOUT`] for a request, the
//! client [`DEFAULT_TIMEOUT`] (or its own) for the whole exchange.
//!
//! An operation has no request id: a client whose daemon stopped answering
//! (it died or hung after reading the request) cannot know whether the
//! operation was carried out, and its error says so and names the command
//! that tells ([`Error::Closed`], [`Error::Timeout`]).

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use griffin_devices::IoAt;

use crate::alloc;
use crate::checkpoint::{self, CheckpointError, Target};
use crate::manager::{AllocationView, Manager};

/// File name of the socket in the state directory.
pub const SOCKET: &str = "control.sock";

/// Largest request or reply accepted.
pub const MAX_MESSAGE: u64 = 1 << 20;

/// How long the client waits for the daemon by default: connecting,
/// sending and the reply together. An allocation can take seconds (moving a
/// process's memory to its nodes), so this is generous.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server waits for a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket of the daemon serving `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Allocate and enforce.
    Alloc {
        /// What is asked for.
        request: alloc::Request,
        /// Where to enforce it.
        target: Target,
    },
    /// Release an allocation.
    Release {
        /// Its id.
        id: String,
    },
    /// List allocations (a struct variant so that unknown fields are
    /// refused like everywhere else).
    List {},
}

impl Request {
    /// What a client can say about this request when the daemon stopped
    /// answering after it was sent.
    fn unknown_outcome(&self) -> &'static str {
        match self {
            Request::Alloc { .. } => "; the allocation may exist: run `griffin allocs`",
            Request::Release { .. } => "; the release may have happened: run `griffin allocs`",
            Request::List {} => "",
        }
    }
}

/// A control reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// The new allocation.
    Allocated(AllocationView),
    /// The allocation was released.
    Released {
        /// Its id.
        id: String,
    },
    /// Every allocation and the shared pool.
    List {
        /// Allocations by id.
        allocations: Vec<AllocationView>,
        /// CPUs of the shared pool (cpulist).
        shared_pool: String,
    },
    /// The operation failed; `message` is the whole cause chain.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, writing or reading the socket.
    #[error("control socket {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state directory is unsafe (see [`checkpoint::check_dir`]).
    #[error(transparent)]
    State(#[from] CheckpointError),
    /// Something other than a socket (a link, a file) at the socket's path.
    #[error("control socket {path} is a {kind}, not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there.
        kind: &'static str,
    },
    /// No whole reply within the timeout (the daemon is stopped or hung).
    #[error("the daemon at {path} did not answer within {} s{note}", .after.as_secs_f64())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The timeout.
        after: Duration,
        /// What state the operation may have left, if it was sent.
        note: &'static str,
    },
    /// The daemon closed the connection without a reply (it died).
    #[error("the daemon at {path} closed the connection before answering{note}")]
    Closed {
        /// The socket.
        path: PathBuf,
        /// What state the operation may have left.
        note: &'static str,
    },
    /// The reply is not a control reply.
    #[error("control socket {path}: bad reply")]
    Reply {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Connects to a Unix socket, waiting at most `timeout` (a daemon that is
/// stopped with a full backlog would otherwise block `connect` forever).
fn connect(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let tv = nix::sys::time::TimeVal::new(
        timeout.as_secs().try_into().unwrap_or(i64::MAX),
        timeout.subsec_micros().into(),
    );
    // Unix sockets bound connect(2) by the send timeout.
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

/// Sends `req` to the daemon serving `state_dir`, waiting at most `timeout`
/// in all. `Ok(None)` when no daemon serves it (no socket, or a stale one
/// left by a killed daemon).
pub fn call(state_dir: &Path, req: &Request, timeout: Duration) -> Result<Option<Reply>, Error> {
    // A zero socket timeout would mean none at all.
    let timeout = timeout.max(Duration::from_micros(1));
    let path = socket_path(state_dir);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(m) => {
            return Err(Error::NotASocket {
                path,
                kind: griffin_devices::sysfs::file_kind(m.file_type()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    checkpoint::check_dir(state_dir)?;
    let deadline = Instant::now() + timeout;
    let timeout_err = |note| Error::Timeout {
        path: path.clone(),
        after: timeout,
        note,
    };
    let mut s = match connect(&path, timeout) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) if timed_out(&e) => return Err(timeout_err("")),
        Err(e) => return Err(io(e)),
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut line = serde_json::to_vec(req).expect("control requests serialise");
    line.push(b'\n');
    // A request cut short is never carried out (the daemon waits for its
    // end), so a timeout while sending leaves nothing behind.
    s.set_write_timeout(Some(left().ok_or_else(|| timeout_err(""))?))
        .map_err(io)?;
    match s.write_all(&line) {
        Ok(()) => {}
        Err(e) if timed_out(&e) => return Err(timeout_err("")),
        Err(e) => return Err(io(e)),
    }
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let note = req.unknown_outcome();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(left().ok_or_else(|| timeout_err(note))?))
            .map_err(io)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&chunk[..n]);
                if reply.len() as u64 > MAX_MESSAGE {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(timeout_err(note)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(io(e)),
        }
    }
    if reply.is_empty() {
        return Err(Error::Closed { path, note });
    }
    serde_json::from_slice(&reply)
        .map(Some)
        .map_err(|source| Error::Reply { path, source })
}

/// Parses a request (pure); the error is the message to reply with.
pub fn parse(bytes: &[u8]) -> Result<Request, String> {
    if bytes.len() as u64 > MAX_MESSAGE {
        return Err(format!(
            "request over {MAX_MESSAGE} bytes: refused, nothing was done"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("bad request: {e}"))
}

/// Any error, for [`handle`]'s manager seam.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What control requests are carried out on: the allocation [`Manager`]
/// (a fake in tests).
pub trait Allocations {
    /// Decides, persists and applies an allocation.
    fn allocate(
        &mut self,
        request: alloc::Request,
        target: Target,
    ) -> Result<AllocationView, BoxError>;
    /// Releases an allocation.
    fn release(&mut self, id: &str) -> Result<(), BoxError>;
    /// Every allocation and the shared pool (cpulist).
    fn list(&self) -> (Vec<AllocationView>, String);
}

impl Allocations for Manager {
    fn allocate(
        &mut self,
        request: alloc::Request,
        target: Target,
    ) -> Result<AllocationView, BoxError> {
        Ok(Manager::allocate(self, request, target)?)
    }

    fn release(&mut self, id: &str) -> Result<(), BoxError> {
        Ok(Manager::release(self, id)?)
    }

    fn list(&self) -> (Vec<AllocationView>, String) {
        let pool = self.checkpoint().state.shared_pool(self.topology());
        (Manager::list(self), pool.to_string())
    }
}

/// Carries out `req` on a manager opened for it.
pub fn handle<M: Allocations>(req: Request, open: impl FnOnce() -> Result<M, BoxError>) -> Reply {
    let mut m = match open() {
        Ok(m) => m,
        Err(e) => return error(&*e),
    };
    match req {
        Request::Alloc { request, target } => match m.allocate(request, target) {
            Ok(v) => Reply::Allocated(v),
            Err(e) => error(&*e),
        },
        Request::Release { id } => match m.release(&id) {
            Ok(()) => Reply::Released { id },
            Err(e) => error(&*e),
        },
        Request::List {} => {
            let (allocations, shared_pool) = m.list();
            Reply::List {
                allocations,
                shared_pool,
            }
        }
    }
}

/// An error and its causes, `a: b: c`, as the CLI prints them.
fn error(e: &(dyn std::error::Error + 'static)) -> Reply {
    Reply::Error {
        message: griffin_devices::Chain(e).to_string(),
    }
}

/// Why the control socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state directory is unsafe or cannot be created.
    #[error(transparent)]
    State(#[from] CheckpointError),
    /// A live daemon answers on the socket.
    #[error("another griffin daemon serves {dir} (its control socket {socket} answers)")]
    Busy {
        /// The state directory.
        dir: PathBuf,
        /// Its socket.
        socket: PathBuf,
    },
    /// Something other than a socket at the socket's path (left alone).
    #[error("control socket {path} is a {kind}, not a socket: remove it by hand")]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there.
        kind: &'static str,
    },
    /// Binding, registering or removing the socket.
    #[error(transparent)]
    Io(#[from] IoAt),
}

/// The daemon's control socket, bound and not yet served.
#[derive(Debug)]
pub struct Server {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    store: checkpoint::Store,
}

impl Server {
    /// Binds `STATE_DIR/control.sock` (the directory created 0700 if
    /// missing and refused if unsafe, see [`checkpoint::Store::open`]). A
    /// socket a live daemon answers on means a second daemon on the same
    /// state: refused ([`ServerError::Busy`]). A stale one (its daemon was
    /// killed) is replaced; anything else at that path is refused.
    pub fn bind(state_dir: &Path) -> Result<Self, ServerError> {
        use std::os::unix::fs::PermissionsExt;
        let store = checkpoint::Store::open(state_dir)?;
        let path = socket_path(state_dir);
        let io = |op, path: &Path| IoAt::on::<ServerError>(op, path.to_path_buf());
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(&path).is_ok() {
                    return Err(ServerError::Busy {
                        dir: state_dir.to_path_buf(),
                        socket: path,
                    });
                }
                std::fs::remove_file(&path).map_err(io("remove the stale socket", &path))?;
                tracing::info!(path = %path.display(), "replaced a stale control socket");
            }
            Ok(m) => {
                return Err(ServerError::NotASocket {
                    path,
                    kind: griffin_devices::sysfs::file_kind(m.file_type()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspect", &path)(e)),
        }
        // The default umask already leaves others without the write
        // permission connect(2) needs; 0600 then makes it explicit. Peer
        // credentials are checked on every connection regardless.
        let listener = std::os::unix::net::UnixListener::bind(&path).map_err(io("bind", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod 0600", &path))?;
        listener
            .set_nonblocking(true)
            .map_err(io("set non-blocking", &path))?;
        Ok(Self {
            listener,
            path,
            store,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint store of the state directory served.
    pub fn store(&self) -> &checkpoint::Store {
        &self.store
    }

    /// Serves requests until `stop` resolves, then lets the operations
    /// already running finish and answer, and removes the socket file.
    ///
    /// Each request from root (or this process's user) is carried out on a
    /// blocking thread on a manager from `open` (which takes the state
    /// directory lock and reconciles), then `on_change` is called. Must run
    /// inside a Tokio runtime.
    pub async fn serve<M, O, C>(
        self,
        open: O,
        on_change: C,
        stop: impl Future<Output = ()>,
    ) -> Result<(), ServerError>
    where
        M: Allocations + 'static,
        O: Fn() -> Result<M, BoxError> + Send + Sync + 'static,
        C: Fn() + Send + Sync + 'static,
    {
        let Self { listener, path, .. } = self;
        let listener =
            tokio::net::UnixListener::from_std(listener)
                .map_err(IoAt::on::<ServerError>("register", &path))?;
        let ops = Arc::new(Ops { open, on_change });
        let mut running = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        running.spawn(connection(stream, ops.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        while running.join_next().await.is_some() {}
        drop(listener);
        std::fs::remove_file(&path).map_err(IoAt::on("remove", path))
    }
}

/// What a connection carries requests out with.
struct Ops<O, C> {
    open: O,
    on_change: C,
}

/// Reads a request of at most [`MAX_MESSAGE`] bytes; a longer one is read
/// to its end (closing on unread data would reset the connection and the
/// peer would never see why it was refused) and discarded.
async fn read_request(stream: &mut tokio::net::UnixStream) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut buf = Vec::new();
        (&mut *stream)
            .take(MAX_MESSAGE + 1)
            .read_to_end(&mut buf)
            .await?;
        if buf.len() as u64 > MAX_MESSAGE {
            tokio::io::copy(&mut *stream, &mut tokio::io::sink()).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(buf)) => Ok(buf),
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Err(_) => Err(format!(
            "no whole request within {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn connection<M, O, C>(mut stream: tokio::net::UnixStream, ops: Arc<Ops<O, C>>)
where
    M: Allocations + 'static,
    O: Fn() -> Result<M, BoxError> + Send + Sync + 'static,
    C: Fn() + Send + Sync + 'static,
{
    use tokio::io::AsyncWriteExt;
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let euid = nix::unistd::geteuid().as_raw();
    // The request is read whoever sent it, so that the refusal is seen.
    let request = read_request(&mut stream).await;
    let reply = match (uid, request) {
        (Some(uid), _) if uid != 0 && uid != euid => {
            tracing::warn!(uid, "control connection refused: not root");
            Reply::Error {
                message: format!("permission denied: uid {uid} is not root"),
            }
        }
        (None, _) => Reply::Error {
            message: "permission denied: peer credentials unavailable".into(),
        },
        (Some(_), Err(message)) => Reply::Error { message },
        (Some(uid), Ok(bytes)) => match parse(&bytes) {
            Ok(req) => {
                tracing::info!(uid, request = ?req, "control request");
                let ops = ops.clone();
                tokio::task::spawn_blocking(move || {
                    let reply = handle(req, &ops.open);
                    (ops.on_change)();
                    reply
                })
                .await
                .unwrap_or_else(|e| Reply::Error {
                    message: format!("control operation failed: {e}"),
                })
            }
            Err(message) => Reply::Error { message },
        },
    };
    if let Reply::Error { message } = &reply {
        tracing::info!(%message, "control request failed");
    }
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    let write = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, write).await.is_err() {
        tracing::warn!("control reply not taken within the timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let r = Request::Alloc {
            request: alloc::Request {
                cpus: 2,
                ..Default::default()
            },
            target: Target::Pid(7),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(parse(text.as_bytes()).unwrap(), r);
        assert_eq!(parse(br#"{"op": "list"}"#).unwrap(), Request::List {});
        for bad in [
            &br#"{"op": "list", "force": true}"#[..],
            br#"{"op": "format-disk"}"#,
            br#"{"op": "release"}"#,
            b"",
        ] {
            let Err(message) = parse(bad) else {
                panic!("{bad:?} parsed");
            };
            assert!(message.starts_with("bad request"), "{message}");
        }
    }

    #[test]
    fn a_missing_daemon_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let list = || call(dir.path(), &Request::List {}, DEFAULT_TIMEOUT);
        assert!(list().unwrap().is_none());
        // A stale socket file (its daemon was killed) is the same.
        let l = std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap();
        drop(l);
        assert!(list().unwrap().is_none());
    }

    #[test]
    fn errors_carry_their_causes() {
        let e = std::io::Error::other("disk on fire");
        let r = handle::<Fake>(Request::List {}, || {
            Err(Box::new(CheckpointError::Io(IoAt {
                op: "lock",
                path: "/x/lock".into(),
                source: e,
            })))
        });
        let Reply::Error { message } = r else {
            panic!("{r:?}")
        };
        assert_eq!(message, "cannot lock /x/lock: disk on fire");
    }

    /// Allocations in memory: what the server carried out.
    #[derive(Debug, Clone, Default)]
    struct Fake(Arc<Mutex<BTreeMap<String, AllocationView>>>);

    impl Allocations for Fake {
        fn allocate(
            &mut self,
            request: alloc::Request,
            target: Target,
        ) -> Result<AllocationView, BoxError> {
            let mut m = self.0.lock().unwrap();
            let id = format!("a{:06}", m.len());
            let v = AllocationView {
                id: id.clone(),
                cpus: crate::cpuset::CpuSet::from_ids(0..request.cpus),
                mems: vec![0],
                devices: vec![],
                reasons: vec![],
                target,
                cgroup: format!("griffin/{id}"),
            };
            m.insert(id, v.clone());
            Ok(v)
        }

        fn release(&mut self, id: &str) -> Result<(), BoxError> {
            match self.0.lock().unwrap().remove(id) {
                Some(_) => Ok(()),
                None => Err(format!("no allocation {id}").into()),
            }
        }

        fn list(&self) -> (Vec<AllocationView>, String) {
            (
                self.0.lock().unwrap().values().cloned().collect(),
                "0-1".into(),
            )
        }
    }

    /// A server on a tempdir state directory, served on a runtime thread of
    /// its own; stopped (and its socket removed) on drop.
    struct Serving {
        dir: tempfile::TempDir,
        fake: Fake,
        changes: Arc<std::sync::atomic::AtomicUsize>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
    }

    impl Serving {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let server = Server::bind(dir.path()).unwrap();
            let fake = Fake::default();
            let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (f, c) = (fake.clone(), changes.clone());
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(server.serve(
                    move || Ok(f.clone()),
                    move || {
                        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    },
                    async move {
                        let _ = stopped.await;
                    },
                ))
            });
            Self {
                dir,
                fake,
                changes,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn call(&self, req: &Request) -> Result<Option<Reply>, Error> {
            call(self.dir.path(), req, DEFAULT_TIMEOUT)
        }

        fn stop(&mut self) -> Result<(), ServerError> {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
        }
    }

    impl Drop for Serving {
        fn drop(&mut self) {
            let _ = self.stop();
        }
    }

    fn alloc_req(cpus: u32) -> Request {
        Request::Alloc {
            request: alloc::Request {
                cpus,
                ..Default::default()
            },
            target: Target::None,
        }
    }

    #[test]
    fn serves_requests_and_refuses_a_second_daemon() {
        let mut s = Serving::start();
        let Some(Reply::Allocated(v)) = s.call(&alloc_req(2)).unwrap() else {
            panic!()
        };
        assert_eq!(v.id, "a000000");
        let Some(Reply::List { allocations, .. }) = s.call(&Request::List {}).unwrap() else {
            panic!()
        };
        assert_eq!(allocations.len(), 1);
        let r = s
            .call(&Request::Release {
                id: "a000009".into(),
            })
            .unwrap();
        assert!(
            matches!(&r, Some(Reply::Error { message }) if message == "no allocation a000009"),
            "{r:?}"
        );
        assert_eq!(s.changes.load(std::sync::atomic::Ordering::SeqCst), 3);
        // A second daemon on the same state directory.
        let e = Server::bind(s.dir.path()).unwrap_err();
        assert!(matches!(e, ServerError::Busy { .. }), "{e:?}");
        assert!(e.to_string().contains("another griffin daemon"), "{e}");
        let sock = socket_path(s.dir.path());
        s.stop().unwrap();
        assert!(!sock.exists(), "the socket is removed on stop");
        // Now no daemon: a stale socket is replaced.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        drop(Server::bind(s.dir.path()).unwrap());
    }

    /// D4: a link at the socket's path is neither replaced by the server
    /// nor connected through by the client.
    #[test]
    fn a_link_at_the_socket_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("real.sock");
        let _real = std::os::unix::net::UnixListener::bind(&target).unwrap();
        std::os::unix::fs::symlink(&target, socket_path(dir.path())).unwrap();
        let e = Server::bind(dir.path()).unwrap_err();
        assert!(e.to_string().contains("symbolic link, not a socket"), "{e}");
        let e = call(dir.path(), &Request::List {}, DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("symbolic link, not a socket"), "{e}");
        assert!(std::fs::symlink_metadata(socket_path(dir.path()))
            .unwrap()
            .is_symlink());
    }

    /// D8: `{"op":"release",...}` followed by 1 MiB of spaces and garbage
    /// was cut at 1 MiB, parsed and carried out. It is refused whole.
    #[test]
    fn an_oversized_request_is_refused_whole() {
        let s = Serving::start();
        let Some(Reply::Allocated(v)) = s.call(&alloc_req(1)).unwrap() else {
            panic!()
        };
        let mut req = format!(r#"{{"op":"release","id":"{}"}}"#, v.id).into_bytes();
        req.extend(std::iter::repeat_n(b' ', 1 << 20));
        req.extend_from_slice(b"TRAILING-GARBAGE");
        let mut c = UnixStream::connect(socket_path(s.dir.path())).unwrap();
        c.write_all(&req).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        let r: Reply = serde_json::from_str(&reply).unwrap();
        assert!(
            matches!(&r, Reply::Error { message } if message.contains("over 1048576 bytes")),
            "{r:?}"
        );
        assert!(s.fake.0.lock().unwrap().contains_key(&v.id), "not released");
    }

    /// Only root (or the server's own user) may use the socket, whatever
    /// the file modes say. The peer is a thread that changed its own
    /// credentials (raw setresuid(2) affects the calling thread only).
    #[test]
    fn unprivileged_peers_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let s = Serving::start();
        let sock = socket_path(s.dir.path());
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let dir = s.dir.path().to_path_buf();
        let r = std::thread::spawn(move || {
            // SAFETY: the raw syscall (not glibc's setresuid, which would
            // change every thread) drops this thread's credentials only;
            // the thread ends after the call.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            call(&dir, &alloc_req(1), DEFAULT_TIMEOUT)
        })
        .join()
        .unwrap();
        assert!(
            matches!(&r, Ok(Some(Reply::Error { message })) if message == "permission denied: uid 65534 is not root"),
            "{r:?}"
        );
        assert!(s.fake.0.lock().unwrap().is_empty());
        // Root gets through.
        assert!(matches!(
            s.call(&Request::List {}).unwrap(),
            Some(Reply::List { .. })
        ));
    }

    /// A daemon that reads the request and never answers (stopped or hung),
    /// and one that dies before answering: the client says so, names the
    /// socket, and what state an allocation may be in.
    #[test]
    fn a_silent_or_dying_daemon_is_reported_with_what_it_may_have_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let daemon = std::thread::spawn(move || {
            // First connection: read the request, hold on, say nothing.
            let (mut hung, _) = l.accept().unwrap();
            let mut req = Vec::new();
            hung.read_to_end(&mut req).unwrap();
            // Second: read the request and close without a reply.
            let (mut dying, _) = l.accept().unwrap();
            dying.read_to_end(&mut req).unwrap();
            drop(dying);
            hung
        });
        let e = call(dir.path(), &alloc_req(1), Duration::from_millis(300)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains("did not answer within 0.3 s")
                && msg.contains("the allocation may exist: run `griffin allocs`"),
            "{msg}"
        );
        let e = call(dir.path(), &alloc_req(1), DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(e, Error::Closed { .. }), "{e:?}");
        assert!(
            e.to_string().ends_with(
                "closed the connection before answering; the allocation may exist: run `griffin allocs`"
            ),
            "{e}"
        );
        drop(daemon.join().unwrap());
    }

    proptest! {
        #[test]
        fn garbage_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        /// Mangled valid requests: a refusal or a request that round-trips.
        #[test]
        fn mangled_requests_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
            splice in prop_oneof![
                Just(String::new()),
                Just("-1".to_owned()),
                Just("4294967296".to_owned()),
                Just("null".to_owned()),
                Just(r#""pid": 0"#.to_owned()),
                Just(r#"{"cgroup": "../../x"}"#.to_owned()),
                "[ -~]{0,20}",
            ],
            at in any::<u16>(),
        ) {
            let req = [alloc_req(2), Request::Release { id: "a000001".into() }, Request::List {}];
            let mut body = serde_json::to_vec(&req[which]).unwrap();
            for (i, byte) in edits {
                let i = usize::from(i) % body.len();
                body[i] = byte;
            }
            let at = usize::from(at) % (body.len() + 1);
            body.splice(at..at, splice.bytes());
            if let Ok(r) = parse(&body) {
                prop_assert_eq!(parse(&serde_json::to_vec(&r).unwrap()).unwrap(), r);
            }
        }
    }
}
