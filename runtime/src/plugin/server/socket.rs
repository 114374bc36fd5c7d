//! The plugin's unix sockets: bound under a hidden temporary name, given
//! mode 0600, then renamed into place, so the kubelet never sees a socket
//! with a looser mode and the final path is never followed. What sits at the
//! final path first decides: nothing (bind), a socket (a stale one of ours:
//! replaced), anything else — a symbolic link above all — is refused,
//! naming the path.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use griffin_devices::IoAt;

/// Mode of the plugin's sockets: the kubelet runs as root.
pub const SOCKET_MODE: u32 = 0o600;

/// `sun_path` of `struct sockaddr_un`, with its terminating NUL.
const SUN_PATH: usize = 108;

/// Why a socket could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something other than a socket where the plugin's socket goes.
    #[error("refusing {kind} at {path}, where a device plugin socket goes")]
    Occupied {
        /// The socket path.
        path: PathBuf,
        /// What is there (`symbolic link`, `directory`, …).
        kind: &'static str,
    },
    /// The path does not fit a unix socket address.
    #[error("socket path {path} is longer than {max} bytes")]
    TooLong {
        /// The socket path.
        path: PathBuf,
        /// The longest path a socket address holds.
        max: usize,
    },
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] IoAt),
}

/// What identifies one file: a socket re-created at the same path is a
/// different file. The change time is part of it because a file system may
/// give a deleted file's inode number to the next file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

/// The file at `path` itself (a link is not followed), if there is one.
pub fn identity(path: &Path) -> Option<FileId> {
    let m = fs::symlink_metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

/// Whether the file at `path` itself is a unix socket.
pub fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Binds a listening socket at `path` (see the module doc) and returns it
/// with the identity of the file it made.
pub fn bind(path: &Path) -> Result<(tokio::net::UnixListener, FileId), SocketError> {
    if path.as_os_str().len() >= SUN_PATH {
        return Err(SocketError::TooLong {
            path: path.to_owned(),
            max: SUN_PATH - 1,
        });
    }
    check_slot(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".griffin-{}-{}.sock",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    check_slot(&tmp)?;
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .map_err(IoAt::on::<SocketError>("bind", &tmp))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(IoAt::on::<IoAt>("set the mode of", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(IoAt::on("move a new socket to", path)));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    let id = identity(path).ok_or_else(|| IoAt {
        op: "inspect",
        path: path.to_owned(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(IoAt::on::<SocketError>("configure", path))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(IoAt::on::<SocketError>("listen on", path))?;
    Ok((listener, id))
}

/// Clears `path` for a new socket: nothing there, or a stale socket
/// (removed); anything else is refused.
fn check_slot(path: &Path) -> Result<(), SocketError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IoAt {
                op: "remove the stale socket",
                path: path.to_owned(),
                source: e,
            }
            .into()),
        },
        Ok(m) => Err(SocketError::Occupied {
            path: path.to_owned(),
            kind: if m.is_file() {
                "regular file"
            } else {
                griffin_devices::sysfs::file_kind(m.file_type())
            },
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IoAt {
            op: "inspect",
            path: path.to_owned(),
            source: e,
        }
        .into()),
    }
}

/// Removes the socket at `path` if it is still the file `id` (not one
/// another process put there since).
pub fn remove_if_ours(path: &Path, id: FileId) {
    if identity(path) == Some(id) {
        if let Err(e) = fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                let e = IoAt {
                    op: "remove",
                    path: path.to_owned(),
                    source: e,
                };
                tracing::warn!("{}", griffin_devices::Chain(&e));
            }
        }
    }
}

/// Removes the sockets Griffin leaves in `dir` (`griffin-*.sock` and the
/// hidden temporary names of [`bind`]) that a previous run did not clean
/// up; only sockets, never what a link points to. Returns what it removed.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = (name.starts_with("griffin-") || name.starts_with(".griffin-"))
            && name.ends_with(".sock");
        let path = entry.path();
        if ours && is_socket(&path) && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_with_mode_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("griffin-x.sock");
        let (l1, id1) = bind(&path).unwrap();
        let mode = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        drop(l1);
        // The file outlives the listener: a stale socket, replaced.
        let (_l2, id2) = bind(&path).unwrap();
        assert_ne!(id1, id2);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("griffin-x.sock")]);
        remove_if_ours(&path, id1);
        assert!(path.exists(), "another file's identity must not remove it");
        remove_if_ours(&path, id2);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn refuses_a_symlink_and_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        let path = dir.path().join("griffin-x.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = bind(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "refusing symbolic link at {}, where a device plugin socket goes",
                path.display()
            )
        );
        assert!(fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        let e = bind(&target).unwrap_err();
        assert!(
            matches!(
                e,
                SocketError::Occupied {
                    kind: "regular file",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_path_too_long_for_a_socket_address() {
        let path = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        assert!(matches!(
            bind(&path),
            Err(SocketError::TooLong { max: 107, .. })
        ));
    }

    #[tokio::test]
    async fn sweep_removes_only_our_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (l, _) = bind(&d.join("griffin-a.sock")).unwrap();
        drop(l);
        let (other, _) = bind(&d.join("other.sock")).unwrap();
        fs::write(d.join("griffin-file.sock"), "").unwrap();
        std::os::unix::fs::symlink(d.join("other.sock"), d.join("griffin-link.sock")).unwrap();
        let removed = sweep(d);
        assert_eq!(removed, vec![d.join("griffin-a.sock")]);
        assert!(d.join("other.sock").exists());
        assert!(d.join("griffin-file.sock").exists());
        assert!(fs::symlink_metadata(d.join("griffin-link.sock")).is_ok());
        drop(other);
    }
}
