//! The AF_XDP relay: the user-space end of the XDP split. Frames a split's
//! `xsk` rules steer into the relay's AF_XDP sockets (one per queue, see
//! [`griffin_ebpf::afxdp`]) are stripped of their Ethernet, IP and UDP
//! headers ([`packet`]) and the UDP payloads delivered to the workload's
//! destination ([`DestinationSpec`]): a UDP port in a network namespace (a
//! pod's), a Unix datagram socket, or a shared-memory ring ([`shm`]).
//!
//! Each queue runs on its own thread with its own tokio-uring runtime: it
//! waits for the RX ring (epoll through tokio), takes up to `batch`
//! frames, narrows each to its UDP payload in place (no copy), submits the
//! batch's sends together, to UDP a GSO send per run of equal-size
//! payloads ([`dest`]), waits for their completions, then gives the frames
//! back to the fill ring. The shared-memory ring is written in place (one
//! copy, into the ring the consumer reads).
//!
//! **No allocation per frame.** A send owns the [`Frame`]s it gathers
//! from (a frame returns its UMEM chunk when dropped, onto a stack sized
//! for the UMEM), and the boxed send headers, the in-flight ops and the
//! frame vectors are made at start for the largest batch and kept; once
//! warm, a queue thread allocates nothing while it relays
//! (`runtime/tests/relay_alloc.rs` counts).
//! [`Frame::into_bytes`] gives a `bytes::Bytes` view for library users, at
//! one allocation per frame (`Bytes::from_owner` boxes its owner), which is
//! why the relay does not use it.
//!
//! **Backpressure.** Nothing waits on a consumer: sends use `MSG_DONTWAIT`,
//! so a full or absent consumer fails the send at once and the frame is
//! counted in `dropped_consumer` and recycled; a full shared ring drops
//! likewise. The fill ring is topped up after every batch whatever the
//! destination did, so the NIC queue never runs dry because of a consumer
//! (frames the kernel itself drops, e.g. on a full RX ring when the relay
//! thread is starved of CPU, are in the `kernel_*` counters). A Unix
//! consumer that closed its socket is reconnected every 100 ms while frames
//! arrive; a UDP consumer needs nothing (its port is connected; an ICMP
//! error fails one send, which sent nothing: a single datagram is counted
//! dropped, a GSO run is sent again a datagram at a time); a shared-ring
//! consumer connects again
//! and goes on from where the ring's consumer index stands.
//!
//! **Restarts.** The relay's sockets close with its process; the kernel
//! removes them from the split's XSKMAP, so until a new relay registers
//! its sockets the classifier's redirect fails and the frames fall back to
//! the stack (the split fails open). A new relay registers on the split
//! adopted from its pins, as the daemon does at start.
//!
//! Accounting: every frame a socket received is `delivered`,
//! `dropped_consumer` or `dropped_not_udp` once its batch is done.
//!
//! ```no_run
//! use griffin_runtime::relay::{DestinationSpec, Relay, RelaySpec};
//! let spec = RelaySpec {
//!     name: "video".into(),
//!     iface: "eth1".into(),
//!     queues: vec![0, 1],
//!     rules: vec![3],
//!     destination: DestinationSpec::Unix { path: "/run/video.sock".into() },
//!     batch: 64,
//! };
//! let mut split = griffin_ebpf::Datapath::adopt("eth1", "/sys/fs/bpf".as_ref()).unwrap();
//! let relay = Relay::start(&spec, &Default::default(), &mut split).unwrap();
//! println!("{:?}", relay.stats());
//! relay.stop().unwrap();
//! ```

pub mod dest;
pub mod packet;
pub mod shm;

use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use griffin_ebpf::afxdp::{BindMode, Frame, XdpConfig, XdpError, XdpSocket};
use serde::{Deserialize, Serialize};

pub use dest::DestinationSpec;

/// One relay of the daemon config (`[[relays]]`) or of `griffin relay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    /// The relay's name (metrics label).
    pub name: String,
    /// The interface whose split steers frames to the relay.
    pub iface: String,
    /// Its queues served, one AF_XDP socket each (empty: queue 0).
    #[serde(default)]
    pub queues: Vec<u32>,
    /// The ids of the split's `xsk` rules that feed the relay (the rules
    /// file says where frames go); checked at start: each must be an
    /// `xsk` rule of the split steering to one of the relay's queues.
    #[serde(default)]
    pub rules: Vec<u32>,
    /// Where the payloads go.
    pub destination: DestinationSpec,
    /// Frames taken and sent per batch.
    #[serde(default = "default_batch")]
    pub batch: u32,
}

fn default_batch() -> u32 {
    64
}

impl RelaySpec {
    /// The queues served.
    pub fn queues(&self) -> Vec<u32> {
        if self.queues.is_empty() {
            vec![0]
        } else {
            self.queues.clone()
        }
    }
}

/// Errors of a relay, naming it.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// An AF_XDP socket could not be made.
    #[error("relay {relay}")]
    Socket {
        /// The relay.
        relay: String,
        /// The failure.
        #[source]
        source: XdpError,
    },
    /// A socket could not be put in the split's XSKMAP.
    #[error("relay {relay}: registering queue {queue} in the XSKMAP")]
    Register {
        /// The relay.
        relay: String,
        /// The queue.
        queue: u32,
        /// The failure.
        #[source]
        source: griffin_ebpf::Error,
    },
    /// The destination could not be set up.
    #[error("relay {relay}: destination")]
    Destination {
        /// The relay.
        relay: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The shared-memory ring could not be set up.
    #[error("relay {relay}")]
    Shm {
        /// The relay.
        relay: String,
        /// The failure.
        #[source]
        source: shm::ShmError,
    },
    /// A rule the relay names is not one of the split's `xsk` rules for
    /// its queues.
    #[error("relay {relay}: rules: {why}")]
    Rule {
        /// The relay.
        relay: String,
        /// What is wrong, naming the rule.
        why: String,
    },
    /// A queue thread failed or panicked.
    #[error("relay {relay}: queue {queue} thread")]
    Thread {
        /// The relay.
        relay: String,
        /// The queue.
        queue: u32,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    /// The queue.
    pub queue: u32,
    /// 1 when bound zero-copy.
    pub zero_copy: AtomicU64,
    /// Frames received from the socket.
    pub received: AtomicU64,
    /// The kernel's `rx_dropped` for the socket.
    pub kernel_rx_dropped: AtomicU64,
    /// The kernel's `rx_ring_full`.
    pub kernel_rx_ring_full: AtomicU64,
    /// The kernel's `rx_fill_ring_empty_descs`.
    pub kernel_fill_ring_empty: AtomicU64,
}

/// A relay's counters, updated by its queue threads.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Payloads the destination accepted.
    pub delivered: AtomicU64,
    /// Their bytes.
    pub delivered_bytes: AtomicU64,
    /// Frames dropped because the consumer was absent, full or refused.
    pub dropped_consumer: AtomicU64,
    /// Frames dropped for carrying no deliverable UDP payload.
    pub dropped_not_udp: AtomicU64,
    /// `sendmsg` calls to a datagram destination (a UDP GSO send carries
    /// several datagrams).
    pub sends: AtomicU64,
    /// Per queue.
    pub queues: Vec<QueueMetrics>,
}

/// A snapshot of a relay's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// The relay's name.
    pub name: String,
    /// The interface.
    pub iface: String,
    /// Frames received (all queues).
    pub received: u64,
    /// Payloads delivered.
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Dropped: consumer absent, full or refusing.
    pub dropped_consumer: u64,
    /// Dropped: no UDP payload.
    pub dropped_not_udp: u64,
    /// Dropped by the kernel before the relay saw them (all queues).
    pub kernel_dropped: u64,
    /// `sendmsg` calls to a datagram destination: fewer than `delivered`
    /// when UDP GSO sends carried runs of datagrams.
    #[serde(default)]
    pub sends: u64,
    /// Per queue: (queue, received, zero-copy).
    pub queues: Vec<QueueStats>,
}

/// A queue's part of [`RelayStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: u32,
    /// Frames received.
    pub received: u64,
    /// Bound zero-copy.
    pub zero_copy: bool,
    /// The kernel's `rx_dropped` (frames dropped for want of a fill-ring
    /// frame or an invalid descriptor).
    pub kernel_rx_dropped: u64,
    /// The kernel's `rx_ring_full`.
    pub kernel_rx_ring_full: u64,
    /// The kernel's fill-ring-empty count.
    pub kernel_fill_ring_empty: u64,
}

impl RelayMetrics {
    fn snapshot(&self, spec: &RelaySpec) -> RelayStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let queues: Vec<QueueStats> = self
            .queues
            .iter()
            .map(|q| QueueStats {
                queue: q.queue,
                received: load(&q.received),
                zero_copy: load(&q.zero_copy) == 1,
                kernel_rx_dropped: load(&q.kernel_rx_dropped),
                kernel_rx_ring_full: load(&q.kernel_rx_ring_full),
                kernel_fill_ring_empty: load(&q.kernel_fill_ring_empty),
            })
            .collect();
        RelayStats {
            name: spec.name.clone(),
            iface: spec.iface.clone(),
            received: queues.iter().map(|q| q.received).sum(),
            delivered: load(&self.delivered),
            delivered_bytes: load(&self.delivered_bytes),
            dropped_consumer: load(&self.dropped_consumer),
            dropped_not_udp: load(&self.dropped_not_udp),
            sends: load(&self.sends),
            kernel_dropped: queues
                .iter()
                .map(|q| q.kernel_rx_dropped + q.kernel_rx_ring_full)
                .sum(),
            queues,
        }
    }
}

/// Where running relays publish their counters for `griffin xdp stats`
/// (`<dir>/<name>.json`, rewritten by [`Relay::publish`]).
pub const STATS_DIR: &str = "/run/griffin/relay";

/// Writes `stats` to `dir/<name>.json` (a temporary file renamed over the
/// old one, so a reader never sees half a file).
pub fn publish_stats(dir: &std::path::Path, stats: &RelayStats) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", stats.name));
    let tmp = dir.join(format!(".{}.json.tmp", stats.name));
    std::fs::write(
        &tmp,
        serde_json::to_vec(stats).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)
}

/// How old a published file may be and still be a running relay's (they
/// are rewritten every second; a killed relay's file stays behind).
pub const STATS_STALE: Duration = Duration::from_secs(10);

/// The counters relays on `iface` published in `dir` (unreadable files and
/// files older than [`STATS_STALE`] are skipped; none when the directory
/// is missing).
pub fn published_stats(dir: &std::path::Path, iface: &str) -> Vec<RelayStats> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let fresh = |e: &std::fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age <= STATS_STALE))
    };
    let mut all: Vec<RelayStats> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(fresh)
        .filter_map(|e| {
            let text = griffin_ebpf::format::read_regular(&e.path(), 1 << 20).ok()?;
            serde_json::from_str::<RelayStats>(&text).ok()
        })
        .filter(|s| s.iface == iface)
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Removes what [`publish_stats`] wrote for `name`.
pub fn unpublish_stats(dir: &std::path::Path, name: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{name}.json")));
}

/// A relay's spec and live counters, apart from the relay.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    spec: RelaySpec,
    metrics: Arc<RelayMetrics>,
}

impl RelayHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        self.metrics.snapshot(&self.spec)
    }
}

/// A running relay: one thread per queue.
#[derive(Debug)]
pub struct Relay {
    spec: RelaySpec,
    metrics: Arc<RelayMetrics>,
    stop: Arc<AtomicBool>,
    threads: Vec<(u32, JoinHandle<Result<(), std::io::Error>>)>,
    modes: Vec<(u32, BindMode)>,
}

/// Checks that each of `ids` is a rule of `active` whose action is `xsk`
/// and whose queue (the frame's own, or a fixed one) is among `queues`.
fn check_rules(
    ids: &[u32],
    queues: &[u32],
    active: &[griffin_ebpf::types::GriffinRule],
) -> Result<(), String> {
    use griffin_ebpf::types::{action, TARGET_RX_QUEUE};
    for id in ids {
        let Some(r) = active.iter().find(|r| r.id == *id) else {
            return Err(format!("rule {id} is not in the split's rules"));
        };
        if r.action != action::XSK {
            return Err(format!(
                "rule {id} does not steer to AF_XDP (its action is not xsk)"
            ));
        }
        if r.target != TARGET_RX_QUEUE && !queues.contains(&r.target) {
            return Err(format!(
                "rule {id} steers to queue {}, which the relay does not serve ({queues:?})",
                r.target
            ));
        }
    }
    Ok(())
}

/// A borrowed descriptor for tokio's readiness (the socket outlives it).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The destination as it is handed to a queue thread.
enum DestInit {
    Datagram(DestinationSpec),
    Shm(shm::ShmProducer),
}

/// The destination as one queue thread holds it.
enum QueueDest {
    Datagram(dest::DatagramDest),
    Shm(shm::ShmProducer),
}

impl Relay {
    /// Opens a socket per queue of `spec.iface` (in the calling thread's
    /// network namespace), registers each in `split`'s XSKMAP under its
    /// queue, and starts the queue threads.
    pub fn start(
        spec: &RelaySpec,
        xdp: &XdpConfig,
        split: &mut griffin_ebpf::Datapath,
    ) -> Result<Self, RelayError> {
        let relay = spec.name.clone();
        let queues = spec.queues();
        if !spec.rules.is_empty() {
            let active = split
                .active_rules()
                .map_err(|source| RelayError::Register {
                    relay: relay.clone(),
                    queue: queues[0],
                    source,
                })?;
            check_rules(&spec.rules, &queues, &active).map_err(|why| RelayError::Rule {
                relay: relay.clone(),
                why,
            })?;
        }
        let mut sockets = Vec::new();
        for &queue in &queues {
            let socket =
                XdpSocket::open(&spec.iface, queue, xdp).map_err(|source| RelayError::Socket {
                    relay: relay.clone(),
                    source,
                })?;
            sockets.push(socket);
        }
        // Destinations are made before any socket is registered, so a bad
        // one leaves the split as it was.
        let mut dests = Vec::new();
        for &queue in &queues {
            dests.push(match &spec.destination {
                DestinationSpec::Shm {
                    path,
                    slots,
                    slot_size,
                } => {
                    let mut name = path.clone().into_os_string();
                    name.push(format!(".{queue}"));
                    DestInit::Shm(
                        shm::ShmProducer::create(name.as_ref(), *slots, *slot_size).map_err(
                            |source| RelayError::Shm {
                                relay: relay.clone(),
                                source,
                            },
                        )?,
                    )
                }
                DestinationSpec::Udp { addr, netns } => {
                    // Checked now (a missing namespace is an error), then
                    // opened again on the queue thread.
                    dest::udp_socket_in(*addr, netns.as_deref()).map_err(|source| {
                        RelayError::Destination {
                            relay: relay.clone(),
                            source,
                        }
                    })?;
                    DestInit::Datagram(spec.destination.clone())
                }
                DestinationSpec::Unix { .. } => DestInit::Datagram(spec.destination.clone()),
            });
        }
        for socket in &sockets {
            split
                .set_xsk(socket.queue(), socket.as_raw_fd())
                .map_err(|source| RelayError::Register {
                    relay: relay.clone(),
                    queue: socket.queue(),
                    source,
                })?;
        }
        let metrics = Arc::new(RelayMetrics {
            queues: sockets
                .iter()
                .map(|s| QueueMetrics {
                    queue: s.queue(),
                    zero_copy: AtomicU64::new(u64::from(s.mode() == BindMode::ZeroCopy)),
                    ..QueueMetrics::default()
                })
                .collect(),
            ..RelayMetrics::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let modes = sockets.iter().map(|s| (s.queue(), s.mode())).collect();
        let mut threads: Vec<(u32, JoinHandle<Result<(), std::io::Error>>)> = Vec::new();
        for (i, (socket, dest)) in sockets.into_iter().zip(dests).enumerate() {
            let queue = socket.queue();
            let (metrics, q_stop) = (Arc::clone(&metrics), Arc::clone(&stop));
            let batch = spec.batch.clamp(1, xdp.in_flight.max(1));
            let name = spec.name.clone();
            let handle = std::thread::Builder::new()
                .name(format!("relay-q{queue}"))
                .spawn(move || {
                    let dest = match dest {
                        DestInit::Datagram(spec) => {
                            QueueDest::Datagram(dest::DatagramDest::new(spec))
                        }
                        DestInit::Shm(ring) => QueueDest::Shm(ring),
                    };
                    let r = tokio_uring::Runtime::new(&tokio_uring::builder()).and_then(|rt| {
                        rt.block_on(run_queue(socket, dest, &metrics, i, &q_stop, batch))
                    });
                    // Said when it happens, not only when the relay is
                    // stopped: the queue's socket is closed, so its frames
                    // take the kernel path from now on.
                    if let Err(e) = &r {
                        tracing::error!(relay = %name, queue, error = %e, "relay queue stopped; its frames fall back to the kernel stack");
                    }
                    r
                })
                .map_err(|source| RelayError::Thread {
                    relay: relay.clone(),
                    queue,
                    source,
                });
            let handle = match handle {
                Ok(h) => h,
                Err(e) => {
                    // The queues already started stop with the relay that
                    // could not start.
                    stop.store(true, Ordering::Release);
                    for (_, t) in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            };
            threads.push((queue, handle));
        }
        tracing::info!(
            relay = %spec.name,
            iface = %spec.iface,
            queues = ?queues,
            destination = %spec.destination,
            "relay started"
        );
        Ok(Self {
            spec: spec.clone(),
            metrics,
            stop,
            threads,
            modes,
        })
    }

    /// The relay's spec.
    pub fn spec(&self) -> &RelaySpec {
        &self.spec
    }

    /// How each queue's socket is bound.
    pub fn modes(&self) -> &[(u32, BindMode)] {
        &self.modes
    }

    /// The live counters.
    pub fn metrics(&self) -> Arc<RelayMetrics> {
        Arc::clone(&self.metrics)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        self.metrics.snapshot(&self.spec)
    }

    /// A cheap handle on the counters (for a metrics collector).
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            spec: self.spec.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Writes the counters to `dir` ([`publish_stats`]).
    pub fn publish(&self, dir: &std::path::Path) -> std::io::Result<()> {
        publish_stats(dir, &self.stats())
    }

    /// True while every queue thread runs.
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|(_, h)| !h.is_finished())
    }

    /// Stops the queue threads (their sockets close and leave the XSKMAP)
    /// and returns the first failure of any.
    pub fn stop(mut self) -> Result<RelayStats, RelayError> {
        self.stop.store(true, Ordering::Release);
        let mut first = None;
        for (queue, handle) in std::mem::take(&mut self.threads) {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("panicked")));
            if let Err(source) = result {
                first.get_or_insert(RelayError::Thread {
                    relay: self.spec.name.clone(),
                    queue,
                    source,
                });
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(self.stats()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for (_, handle) in std::mem::take(&mut self.threads) {
            let _ = handle.join();
        }
    }
}

/// How long a queue thread waits for frames before looking at its stop
/// flag and the kernel's counters.
const IDLE: Duration = Duration::from_millis(100);

/// One queue's loop, on its tokio-uring runtime.
async fn run_queue(
    mut socket: XdpSocket,
    mut dest: QueueDest,
    metrics: &RelayMetrics,
    index: usize,
    stop: &AtomicBool,
    batch: u32,
) -> std::io::Result<()> {
    let qm = &metrics.queues[index];
    // SAFETY: the descriptor is the socket's, which this function owns and
    // drops only after `ready` (declared later, dropped first); it stays
    // open and the same for `ready`'s whole life.
    let ready = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            Fd(socket.as_raw_fd()),
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(std::io::Error::from)?;
    let mut frames: Vec<Frame> = Vec::with_capacity(batch as usize);
    let mut scratch = Scratch::new(batch as usize);
    let mut last_stats = Instant::now();
    let xdp_err = |e: XdpError| std::io::Error::other(griffin_devices::Chain(&e).to_string());
    let kernel_stats = |socket: &XdpSocket| {
        if let Ok(s) = socket.statistics() {
            qm.kernel_rx_dropped.store(s.rx_dropped, Ordering::Relaxed);
            qm.kernel_rx_ring_full
                .store(s.rx_ring_full, Ordering::Relaxed);
            qm.kernel_fill_ring_empty
                .store(s.rx_fill_ring_empty, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Acquire) {
        if last_stats.elapsed() >= IDLE {
            last_stats = Instant::now();
            kernel_stats(&socket);
        }
        let n = socket.receive(batch, &mut frames).map_err(xdp_err)?;
        if n == 0 {
            if let Ok(guard) = tokio::time::timeout(IDLE, ready.readable()).await {
                // Cleared before the next receive looks at the ring: a
                // frame arriving after that look wakes the thread again.
                guard?.clear_ready();
            }
            continue;
        }
        qm.received.fetch_add(n as u64, Ordering::Relaxed);
        // Each frame narrowed to its UDP payload in place; the others
        // dropped (their chunks go back).
        frames.retain_mut(|frame| match packet::udp_payload(frame.data()) {
            Ok(range) => {
                frame.narrow(range.start, range.len());
                true
            }
            Err(_) => {
                metrics.dropped_not_udp.fetch_add(1, Ordering::Relaxed);
                false
            }
        });
        deliver(&mut dest, &mut frames, metrics, &mut scratch).await;
        // Every frame of the batch is dropped by now: its chunk goes back
        // to the fill ring.
        socket.refill().map_err(xdp_err)?;
    }
    // The last counts, so the stats `stop` returns are complete.
    kernel_stats(&socket);
    Ok(())
}

/// What a queue thread reuses from batch to batch, so that delivering
/// allocates nothing: the send batches (each boxed, holding its
/// `msghdr`), the in-flight sends, and the frames to send again.
// Boxed: a batch's header must stay put while its op, which moves, runs.
#[allow(clippy::vec_box)]
struct Scratch {
    spare: Vec<Box<dest::SendBatch>>,
    ops: Vec<dest::InFlightSend>,
    retry: Vec<Frame>,
    runs: Vec<usize>,
}

impl Scratch {
    /// Room for a batch of `batch` frames sent one per op, the most a
    /// batch can take.
    fn new(batch: usize) -> Self {
        Self {
            spare: (0..batch).map(|_| dest::SendBatch::new()).collect(),
            ops: Vec::with_capacity(batch),
            retry: Vec::with_capacity(batch),
            runs: Vec::with_capacity(batch),
        }
    }
}

/// Sends the payloads of `frames` (emptied); every one ends up delivered
/// or counted as dropped.
async fn deliver(
    dest: &mut QueueDest,
    frames: &mut Vec<Frame>,
    metrics: &RelayMetrics,
    scratch: &mut Scratch,
) {
    let count = |n: usize, bytes: usize| {
        metrics.delivered.fetch_add(n as u64, Ordering::Relaxed);
        metrics
            .delivered_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    };
    let dg = match dest {
        QueueDest::Shm(ring) => {
            for frame in frames.drain(..) {
                if ring.push(frame.data()) {
                    count(1, frame.len());
                } else {
                    metrics.dropped_consumer.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        QueueDest::Datagram(dg) => dg,
    };
    let Some(fd) = dg.socket() else {
        metrics
            .dropped_consumer
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        frames.clear();
        return;
    };
    let Scratch {
        spare,
        ops,
        retry,
        runs,
    } = scratch;
    // A run refused as a whole is sent again, a datagram at a time: once.
    let mut gso_below = dg.gso_below();
    loop {
        // All on the submission queue first: one io_uring_enter for the
        // batch when the thread waits below.
        queue_sends(&fd, frames, gso_below, spare, ops, runs);
        for op in ops.drain(..) {
            let (result, mut batch) = op.await;
            metrics.sends.fetch_add(1, Ordering::Relaxed);
            let n = batch.frames.len();
            match result {
                Ok(bytes) => count(n, bytes),
                // The path refuses GSO at this size (over its MTU; EIO: an
                // IPsec route, or a device without checksum offload on
                // older kernels): never again at this size.
                Err(e)
                    if n > 1
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::EMSGSIZE | libc::EIO)
                        ) =>
                {
                    dg.gso_refused(batch.frames[0].len(), &e);
                    retry.append(&mut batch.frames);
                }
                // An ICMP error left on the socket fails the next send,
                // which sent nothing: the run goes again.
                Err(e) if n > 1 && e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    retry.append(&mut batch.frames);
                }
                Err(e) => {
                    metrics
                        .dropped_consumer
                        .fetch_add(n as u64, Ordering::Relaxed);
                    dg.failed(&e);
                }
            }
            batch.clear();
            spare.push(batch);
        }
        if gso_below == 0 {
            // The second pass sent single datagrams, never retried.
            debug_assert!(retry.is_empty());
            metrics
                .dropped_consumer
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            retry.clear();
            return;
        }
        if retry.is_empty() {
            return;
        }
        gso_below = 0;
        std::mem::swap(frames, retry);
    }
}

/// Puts `frames` (emptied) on the submission queue as sends: each run
/// [`dest::gso_run`] finds (payloads of one size below `gso_below`) as
/// one UDP GSO send, the others one datagram per send; `runs` is scratch.
#[allow(clippy::vec_box)] // as in `Scratch`
fn queue_sends(
    fd: &std::rc::Rc<std::os::fd::OwnedFd>,
    frames: &mut Vec<Frame>,
    gso_below: usize,
    spare: &mut Vec<Box<dest::SendBatch>>,
    ops: &mut Vec<dest::InFlightSend>,
    runs: &mut Vec<usize>,
) {
    runs.clear();
    let mut at = 0;
    while at < frames.len() {
        let n = dest::gso_run(frames[at..].iter().map(Frame::len), gso_below);
        runs.push(n);
        at += n;
    }
    let mut it = frames.drain(..);
    for &n in runs.iter() {
        let mut batch = spare.pop().unwrap_or_else(dest::SendBatch::new);
        batch.frames.extend(it.by_ref().take(n));
        let segment = (n > 1).then(|| batch.frames[0].len() as u16);
        ops.push(dest::send(fd, batch, segment));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_a_relay_names_must_steer_to_its_queues() {
        use griffin_ebpf::types::{action, GriffinRule, TARGET_RX_QUEUE};
        let rule = |id, action, target| GriffinRule {
            id,
            action,
            target,
            ..GriffinRule::default()
        };
        let active = [
            rule(1, action::XSK, TARGET_RX_QUEUE),
            rule(2, action::XSK, 3),
            rule(4, action::CPU, 1),
        ];
        assert_eq!(check_rules(&[1, 2], &[0, 3], &active), Ok(()));
        assert_eq!(
            check_rules(&[9], &[0], &active),
            Err("rule 9 is not in the split's rules".into())
        );
        assert_eq!(
            check_rules(&[4], &[0], &active),
            Err("rule 4 does not steer to AF_XDP (its action is not xsk)".into())
        );
        assert_eq!(
            check_rules(&[2], &[0, 1], &active),
            Err("rule 2 steers to queue 3, which the relay does not serve ([0, 1])".into())
        );
    }

    #[test]
    fn a_killed_relays_stale_counters_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let stats = |name: &str| RelayStats {
            name: name.into(),
            iface: "eth1".into(),
            delivered: 7,
            ..RelayStats::default()
        };
        publish_stats(dir.path(), &stats("live")).unwrap();
        publish_stats(dir.path(), &stats("killed")).unwrap();
        publish_stats(
            dir.path(),
            &RelayStats {
                iface: "eth2".into(),
                ..stats("other")
            },
        )
        .unwrap();
        // The killed relay stopped rewriting its file a minute ago.
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("killed.json"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let listed = published_stats(dir.path(), "eth1");
        assert_eq!(listed, vec![stats("live")]);
        unpublish_stats(dir.path(), "live");
        assert!(published_stats(dir.path(), "eth1").is_empty());
    }
}
