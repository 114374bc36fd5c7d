//! What the daemon's HTTP endpoints serve from: the discovered topology
//! with its prepared allocator (replaced on re-discovery), the allocation
//! state read from the checkpoint (read-only: the daemon never takes the
//! allocator lock, so `griffin alloc` keeps working beside it; the decoded
//! state is cached, see [`Node::state`]), the node's names and its metrics.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use griffin_devices::Topology;
use griffin_runtime::alloc::{Allocator, State};
use griffin_runtime::checkpoint;
use griffin_runtime::cpuset::CpuSet;

use crate::metrics::Metrics;
use crate::summary::NodeSummary;

/// The allocation state cannot be read (the message names the file); the
/// endpoints answer 503 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// What the endpoint serves from.
#[derive(Debug)]
pub struct Node {
    /// The discovered topology and an allocator prepared for it; replaced
    /// together on re-discovery.
    current: RwLock<Arc<Current>>,
    /// Directory of the allocator checkpoint.
    pub state_dir: PathBuf,
    /// CPUs never handed out exclusively.
    pub reserved: CpuSet,
    /// Reported node name.
    pub node_name: String,
    /// Reported cluster name.
    pub cluster_name: String,
    /// Cleared while shutting down (`/readyz` then answers 503).
    pub ready: AtomicBool,
    /// Metrics served on `/metrics`.
    pub metrics: Metrics,
    /// The last decoded checkpoint.
    cache: Mutex<Option<Cached>>,
}

/// A decoded checkpoint and the file version it came from.
#[derive(Debug)]
struct Cached {
    /// `None`: there was no checkpoint (an empty state).
    id: Option<FileId>,
    /// When the file was last looked at.
    checked: Instant,
    /// The file's mtime was over a second old when it was read: a later
    /// replacement cannot carry the same (coarse, per-tick) mtime, so an
    /// equal identity proves an equal file.
    settled: bool,
    bytes: Vec<u8>,
    state: Arc<State>,
}

/// What identifies one version of the checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn settled(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns > 1_000_000_000
    }

    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

impl Node {
    /// A node serving `topo` and the checkpoint in `state_dir`.
    pub fn new(
        topo: Topology,
        state_dir: PathBuf,
        reserved: CpuSet,
        node_name: String,
        cluster_name: String,
    ) -> Self {
        Self {
            current: RwLock::new(prepare(topo)),
            state_dir,
            reserved,
            node_name,
            cluster_name,
            ready: AtomicBool::new(true),
            metrics: Metrics::default(),
            cache: Mutex::new(None),
        }
    }

    /// The current topology.
    pub fn topo(&self) -> Arc<Topology> {
        self.current().topo.clone()
    }

    /// The current topology with its prepared allocator.
    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the topology after a re-discovery.
    pub fn set_topo(&self, topo: Topology) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = prepare(topo);
    }

    /// The current allocation state, read from the checkpoint.
    ///
    /// The file is looked at again at most every [`RECHECK`] (a `stat` per
    /// request was a measurable share of a score's cost); changes made
    /// through the daemon's control socket are seen at once
    /// ([`Node::invalidate`]), changes made behind its back within
    /// `RECHECK`. Decoding is skipped when the file is unchanged: same
    /// inode, size and mtime for a file settled before it was cached, else
    /// the same bytes (inode numbers are reused and mtimes are per clock
    /// tick, so identity alone could miss two quick replacements).
    pub fn state(&self) -> Result<Arc<State>, Unavailable> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.checked.elapsed() < RECHECK {
                return Ok(c.state.clone());
            }
        }
        let path = self.state_dir.join("checkpoint");
        let unavailable = Unavailable;
        let checked = Instant::now();
        let id = match std::fs::metadata(&path) {
            Ok(m) => Some(FileId::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unavailable(format!("reading {}: {e}", path.display()))),
        };
        if let Some(c) = cache.as_mut() {
            if c.id == id && (id.is_none() || c.settled) {
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let (bytes, settled) = match id {
            Some(id) => (
                std::fs::read(&path)
                    .map_err(|e| unavailable(format!("reading {}: {e}", path.display())))?,
                id.settled(),
            ),
            None => (Vec::new(), true),
        };
        // `id` was taken before reading: if the file was replaced in between,
        // the cached identity is older than the bytes and a later look reads
        // again.
        if let Some(c) = cache.as_mut() {
            if c.id.is_some() && id.is_some() && c.bytes == bytes {
                c.id = id;
                c.settled = settled;
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let mut state = if id.is_some() {
            checkpoint::decode(&bytes)
                .map_err(|why| unavailable(format!("checkpoint {}: {why}", path.display())))?
                .state
        } else {
            State::default()
        };
        state.reserved = self.reserved.clone();
        let state = Arc::new(state);
        *cache = Some(Cached {
            id,
            checked,
            settled,
            bytes,
            state: state.clone(),
        });
        Ok(state)
    }

    /// Forgets the cached state: the next request reads the checkpoint.
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The node summary of `GET /v1/node` for `state`.
    pub fn summary(&self, state: &State) -> NodeSummary {
        crate::summary::summary(&self.topo(), state, &self.node_name, &self.cluster_name)
    }
}

/// A topology and the allocator prepared for it (built once per discovery).
#[derive(Debug)]
pub struct Current {
    /// The topology.
    pub topo: Arc<Topology>,
    /// The allocator deciding on it.
    pub alloc: Allocator<'static>,
}

fn prepare(topo: Topology) -> Arc<Current> {
    let topo = Arc::new(topo);
    Arc::new(Current {
        topo: topo.clone(),
        alloc: Allocator::shared(topo),
    })
}

/// How long a look at the checkpoint file is trusted ([`Node::state`]).
pub const RECHECK: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;
    use griffin_runtime::checkpoint::{encode, Checkpoint};

    fn node(dir: &std::path::Path) -> Node {
        let topo = griffin_tests::synthetic::Shape {
            packages: 1,
            nodes_per_package: 2,
            cores_per_node: 2,
            threads: 1,
            devices_per_node: vec![],
            memory_per_node: 1 << 30,
        }
        .topology();
        Node::new(
            topo,
            dir.to_owned(),
            CpuSet::default(),
            "n".into(),
            "c".into(),
        )
    }

    fn checkpoint_with(reserved_marker: &[u32]) -> Vec<u8> {
        // Allocations are what the state shows; the marker makes each
        // version distinct while keeping the encoded length equal.
        let mut cp = Checkpoint::default();
        for &cpu in reserved_marker {
            let id = format!("a{cpu:06}");
            cp.state.allocations.insert(
                id.clone(),
                griffin_runtime::alloc::Allocation {
                    id,
                    request: Default::default(),
                    placement: griffin_runtime::alloc::Placement {
                        cpus: CpuSet::from_ids([cpu]),
                        mems: vec![0],
                        devices: vec![],
                        memory_bytes: 0,
                        reasons: vec![],
                        cost: 0,
                    },
                },
            );
        }
        encode(&cp)
    }

    #[test]
    fn quick_same_length_rewrites_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let path = dir.path().join("checkpoint");
        // Past the re-check window, whatever the machine's speed.
        let later = || std::thread::sleep(RECHECK * 2);
        assert!(n.state().unwrap().allocations.is_empty());
        let (a, b) = (checkpoint_with(&[1]), checkpoint_with(&[2]));
        assert_eq!(a.len(), b.len());
        std::fs::write(&path, &a).unwrap();
        // Within the window the last look stands; invalidate() ends it.
        n.invalidate();
        assert!(n.state().unwrap().allocations.contains_key("a000001"));
        // Same inode, same length, same coarse mtime tick: only the bytes
        // tell the versions apart.
        std::fs::write(&path, &b).unwrap();
        later();
        let s = n.state().unwrap();
        assert!(s.allocations.contains_key("a000002"), "{s:?}");
        // Unchanged file: the same decoded state is handed out.
        later();
        assert!(Arc::ptr_eq(&s, &n.state().unwrap()));
        std::fs::remove_file(&path).unwrap();
        later();
        assert!(n.state().unwrap().allocations.is_empty());
        std::fs::write(&path, b"garbage").unwrap();
        later();
        let e = n.state().unwrap_err();
        assert!(e.0.contains("checkpoint"), "{e}");
    }
}
