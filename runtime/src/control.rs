//! The daemon's local control API: allocate, release and list over a Unix
//! socket in the state directory (`STATE_DIR/control.sock`, mode 0600, peer
//! credentials checked by the server). One JSON request per connection, one
//! JSON reply; mutating operations are never served over TCP.
//!
//! `griffin alloc/release/allocs` call [`call`] first and act on the state
//! directory themselves only when no daemon answers. Both paths take the
//! state directory lock for each operation, so they can be mixed safely.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alloc;
use crate::checkpoint::Target;
use crate::manager::{AllocationView, Manager};

/// File name of the socket in the state directory.
pub const SOCKET: &str = "control.sock";

/// Largest request or reply accepted.
pub const MAX_MESSAGE: u64 = 1 << 20;

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

/// Sends `req` to the daemon serving `state_dir`. `Ok(None)` when no daemon
/// serves it (no socket, or a stale one left by a killed daemon).
pub fn call(state_dir: &Path, req: &Request) -> Result<Option<Reply>, Error> {
    let path = socket_path(state_dir);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io(e)),
    };
    let mut line = serde_json::to_vec(req).expect("control requests serialise");
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut reply = Vec::new();
    s.take(MAX_MESSAGE).read_to_end(&mut reply).map_err(io)?;
    serde_json::from_slice(&reply)
        .map(Some)
        .map_err(|source| Error::Reply {
            path: path.clone(),
            source,
        })
}

/// Parses a request (pure); the error is the message to reply with.
pub fn parse(bytes: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("bad request: {e}"))
}

/// Carries out `req` on a manager opened for it.
pub fn handle(
    req: Request,
    open: impl FnOnce() -> Result<Manager, Box<dyn std::error::Error + Send + Sync>>,
) -> Reply {
    let mut m = match open() {
        Ok(m) => m,
        Err(e) => return error(&*e),
    };
    match req {
        Request::Alloc { request, target } => match m.allocate(request, target) {
            Ok(v) => Reply::Allocated(v),
            Err(e) => error(&e),
        },
        Request::Release { id } => match m.release(&id) {
            Ok(()) => Reply::Released { id },
            Err(e) => error(&e),
        },
        Request::List {} => Reply::List {
            allocations: m.list(),
            shared_pool: m.checkpoint().state.shared_pool(m.topology()).to_string(),
        },
    }
}

/// An error and its causes, `a: b: c`, as the CLI prints them.
fn error(e: &(dyn std::error::Error + 'static)) -> Reply {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    Reply::Error { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert!(call(dir.path(), &Request::List {}).unwrap().is_none());
        // A stale socket file (its daemon was killed) is the same.
        let l = std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap();
        drop(l);
        assert!(call(dir.path(), &Request::List {}).unwrap().is_none());
    }

    #[test]
    fn errors_carry_their_causes() {
        let e = std::io::Error::other("disk on fire");
        let r = handle(Request::List {}, || {
            Err(Box::new(crate::checkpoint::CheckpointError::Io {
                op: "lock",
                path: "/x/lock".into(),
                source: e,
            }))
        });
        let Reply::Error { message } = r else {
            panic!("{r:?}")
        };
        assert_eq!(message, "cannot lock /x/lock: disk on fire");
    }

    proptest! {
        #[test]
        fn garbage_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }
    }
}
