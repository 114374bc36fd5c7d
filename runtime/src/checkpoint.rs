//! The crash-safe checkpoint of the allocator's state.
//!
//! File `STATE_DIR/checkpoint`: one header line
//! `griffin-checkpoint v1 len=<bytes> crc32=<hex>` followed by the JSON
//! payload ([`Checkpoint`]). Written atomically: a temporary file in the same
//! directory, `fsync`, `rename` over the old file, `fsync` of the directory.
//! The previous good checkpoint is kept as `checkpoint.prev` (hard-linked
//! before the rename), so one bad write never leaves nothing to fall back on.
//!
//! Loading verifies the header, the length and the checksum. A file that
//! fails is moved aside to `checkpoint.corrupt-<unix time>` for inspection;
//! the caller then rebuilds the state (see `crate::manager`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alloc::State;

/// Current on-disk format version.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &str = "griffin-checkpoint";

/// Where an allocation is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Only Griffin's own cgroup (a reservation; no workload attached yet).
    None,
    /// A workload's own cgroup, relative to the cgroup root.
    Cgroup(String),
    /// A process moved into Griffin's cgroup for the allocation.
    Pid(u32),
}

/// Everything persisted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The allocator state (reserved CPUs and allocations).
    pub state: State,
    /// Enforcement target per allocation id.
    pub targets: std::collections::BTreeMap<String, Target>,
    /// Next allocation number (ids are never reused).
    pub next_id: u64,
    /// Cleanups still to do after a release (the target's cgroup to reset
    /// to the shared pool, Griffin's cgroup to remove).
    pub pending_cleanup: Vec<(String, Target)>,
}

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the state directory.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file exists but is damaged (moved aside to `kept`).
    #[error("checkpoint {path} is corrupt ({why}); kept as {kept}")]
    Corrupt {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        why: String,
        /// Where it was moved.
        kept: PathBuf,
    },
}

type Result<T> = std::result::Result<T, CheckpointError>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { op, path, source }
}

/// Encodes a checkpoint: header line plus JSON.
pub fn encode(cp: &Checkpoint) -> Vec<u8> {
    let payload = serde_json::to_vec(cp).expect("checkpoint serialises");
    let mut out = format!(
        "{MAGIC} v{FORMAT_VERSION} len={} crc32={:08x}\n",
        payload.len(),
        crc32fast::hash(&payload)
    )
    .into_bytes();
    out.extend_from_slice(&payload);
    out
}

/// Decodes and verifies a checkpoint; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err("not a Griffin checkpoint".into());
    }
    let version = words.next().ok_or("no version")?;
    if version != format!("v{FORMAT_VERSION}") {
        return Err(format!("unsupported format {version}"));
    }
    let field = |w: Option<&str>, key: &str| -> std::result::Result<String, String> {
        w.and_then(|w| w.strip_prefix(key))
            .map(str::to_owned)
            .ok_or_else(|| format!("header lacks {key}"))
    };
    let len: usize = field(words.next(), "len=")?
        .parse()
        .map_err(|_| "bad length")?;
    let crc = u32::from_str_radix(&field(words.next(), "crc32=")?, 16)
        .map_err(|_| "bad checksum field")?;
    let payload = &bytes[nl + 1..];
    if payload.len() != len {
        return Err(format!(
            "payload is {} bytes, header says {len} (truncated?)",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("payload: {e}"))
}

/// The checkpoint file of a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(Self { dir })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    /// Path of the previous good checkpoint.
    pub fn prev_path(&self) -> PathBuf {
        self.dir.join("checkpoint.prev")
    }

    /// Loads the checkpoint: `Ok(None)` when there is none yet; a damaged
    /// one is moved aside and reported as [`CheckpointError::Corrupt`].
    pub fn load(&self) -> Result<Option<Checkpoint>> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        match decode(&bytes) {
            Ok(cp) => Ok(Some(cp)),
            Err(why) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let kept = self.dir.join(format!("checkpoint.corrupt-{stamp}"));
                fs::rename(&path, &kept).map_err(io_err("move aside", &path))?;
                Err(CheckpointError::Corrupt { path, why, kept })
            }
        }
    }

    /// Loads `checkpoint.prev` if it is intact.
    pub fn load_prev(&self) -> Option<Checkpoint> {
        decode(&fs::read(self.prev_path()).ok()?).ok()
    }

    /// Writes the checkpoint atomically and durably.
    pub fn save(&self, cp: &Checkpoint) -> Result<()> {
        let path = self.path();
        let tmp = self
            .dir
            .join(format!("checkpoint.tmp-{}", std::process::id()));
        let bytes = encode(cp);
        {
            let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(&bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        // Keep the current good file as .prev (a hard link: no copy, atomic).
        let prev = self.prev_path();
        if path.exists() {
            let staged = self
                .dir
                .join(format!("checkpoint.prev.tmp-{}", std::process::id()));
            let _ = fs::remove_file(&staged);
            fs::hard_link(&path, &staged).map_err(io_err("link", &path))?;
            fs::rename(&staged, &prev).map_err(io_err("rename", &staged))?;
        }
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        let d = fs::File::open(&self.dir).map_err(io_err("open", &self.dir))?;
        d.sync_all().map_err(io_err("fsync", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut cp = Checkpoint {
            next_id: 7,
            ..Default::default()
        };
        cp.targets.insert("a-1".into(), Target::Pid(42));
        cp.targets
            .insert("a-2".into(), Target::Cgroup("pods/p1".into()));
        cp
    }

    #[test]
    fn roundtrip_and_damage_is_detected() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes).unwrap(), sample());
        // Truncation.
        assert!(decode(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        // A flipped byte in the payload.
        let mut bad = bytes.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x01;
        assert!(decode(&bad).is_err());
        // Garbage and empty files.
        assert!(decode(b"").is_err());
        assert!(decode(b"hello\nworld")
            .unwrap_err()
            .contains("not a Griffin"));
        assert!(decode(b"griffin-checkpoint v9 len=0 crc32=0\n")
            .unwrap_err()
            .contains("unsupported"));
    }

    #[test]
    fn save_load_keeps_prev_and_moves_corrupt_aside() {
        let dir = std::env::temp_dir().join(format!("griffin-cp-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        assert!(store.load().unwrap().is_none());
        let mut cp = sample();
        store.save(&cp).unwrap();
        cp.next_id = 8;
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap().unwrap().next_id, 8);
        assert_eq!(store.load_prev().unwrap().next_id, 7);
        fs::write(store.path(), b"griffin-checkpoint v1 len=3 crc32=0\nabc").unwrap();
        match store.load() {
            Err(CheckpointError::Corrupt { kept, .. }) => assert!(kept.exists()),
            other => panic!("{other:?}"),
        }
        assert!(!store.path().exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
