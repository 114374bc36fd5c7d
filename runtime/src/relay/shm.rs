//! A shared-memory ring over a memfd: the relay's destination for
//! consumers that read payloads in place, without a syscall per datagram.
//!
//! The relay creates the memfd and hands it to every consumer that connects
//! to the ring's Unix stream socket (the descriptor goes over
//! `SCM_RIGHTS`, then the connection closes); a consumer maps it and reads
//! with [`ShmConsumer`]. A consumer that dies and comes back connects
//! again and goes on from the consumer index left in the ring.
//!
//! Layout (native byte order, little-endian on every supported target),
//! one producer (the relay queue thread) and one consumer:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"GRFNRING"` |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | slot count (a power of two) |
//! | 16 | 4 | slot size in bytes (a multiple of 8, at least 16) |
//! | 64 | 4 | producer index (free-running `u32`, own cache line) |
//! | 128 | 4 | consumer index (free-running `u32`, own cache line) |
//! | 192 | 8 | datagrams dropped because the ring was full |
//! | 256 | slots × slot size | slots: a `u32` length, then the payload |
//!
//! Slot `i & (slots - 1)` holds datagram `i`. The producer writes a slot
//! only while `producer - consumer < slots`, then stores the producer index
//! with release ordering; the consumer loads it with acquire ordering,
//! reads the slot, and stores the consumer index with release ordering.
//! The index arithmetic is that of the AF_XDP rings
//! ([`griffin_ebpf::afxdp::ring`]). A payload longer than a slot's room is
//! dropped and counted (never truncated).
//!
//! ```no_run
//! // A consumer: map the relay's ring and print datagram sizes.
//! let mut ring = griffin_runtime::relay::shm::ShmConsumer::connect(
//!     std::path::Path::new("/run/griffin/relay-video.sock"),
//! )
//! .unwrap();
//! loop {
//!     while let Some(payload) = ring.next() {
//!         println!("{} bytes", payload.len());
//!     }
//!     std::thread::sleep(std::time::Duration::from_micros(50));
//! }
//! ```

use std::{
    io,
    io::{IoSlice, IoSliceMut},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use griffin_ebpf::afxdp::ring::{ConsumerIndex, ProducerIndex};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};

/// The ring's magic bytes.
pub const MAGIC: [u8; 8] = *b"GRFNRING";
/// The layout version.
pub const VERSION: u32 = 1;
const OFF_SLOTS_N: usize = 12;
const OFF_SLOT_SIZE: usize = 16;
const OFF_PRODUCER: usize = 64;
const OFF_CONSUMER: usize = 128;
const OFF_DROPPED: usize = 192;
/// Bytes before the first slot.
pub const HEADER: usize = 256;

/// Errors of the shared-memory ring, naming the socket path.
#[derive(Debug, thiserror::Error)]
#[error("shared-memory ring {path}: {op}")]
pub struct ShmError {
    /// The ring's socket path.
    pub path: PathBuf,
    /// What failed.
    pub op: &'static str,
    /// The failure.
    #[source]
    pub source: io::Error,
}

/// A shared mapping of a ring.
#[derive(Debug)]
struct Map {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain shared memory; the ring protocol (indices with
// acquire/release) decides who touches which slot.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    fn shared(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: maps `len` bytes of a memfd sized to at least `len`; the
        // result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Self { ptr, len })
    }

    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= self.len && off.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked; the mapping is page
        // aligned); the word is shared with another process, hence atomic.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: as in `atomic_u32`.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Copies `data` to `off`.
    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds (checked); the caller owns these bytes under
        // the ring protocol (a slot between reserve and publish).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len())
        }
    }

    /// The bytes at `off..off + len`.
    fn slice(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: in bounds (checked); the caller owns these bytes under
        // the ring protocol (a published slot not yet released).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `shared`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn header_u32(map: &Map, off: usize) -> u32 {
    let b = map.slice(off, 4);
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// The producer end, owned by the relay: creates the memfd and serves it.
#[derive(Debug)]
pub struct ShmProducer {
    map: Arc<Map>,
    fd: Arc<OwnedFd>,
    index: ProducerIndex,
    slots: u32,
    slot_size: usize,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl ShmProducer {
    /// Creates a ring of `slots` (a power of two) slots of `slot_size`
    /// bytes (a multiple of 8, at least 16) and serves its memfd on a Unix
    /// stream socket at `path` (an existing socket file there is replaced).
    pub fn create(path: &Path, slots: u32, slot_size: u32) -> Result<Self, ShmError> {
        let err = |op: &'static str| {
            let path = path.to_owned();
            move |source: io::Error| ShmError { path, op, source }
        };
        if !slots.is_power_of_two() || slot_size < 16 || !slot_size.is_multiple_of(8) {
            return Err(err("config")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "slots must be a power of two, slot_size a multiple of 8 of at least 16",
            )));
        }
        let len = HEADER + slots as usize * slot_size as usize;
        // SAFETY: memfd_create with a NUL-terminated name; checked.
        let raw = unsafe { libc::memfd_create(c"griffin-relay".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(err("memfd_create")(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain ftruncate on our memfd; checked.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(err("ftruncate")(io::Error::last_os_error()));
        }
        let map = Map::shared(fd.as_raw_fd(), len).map_err(err("mmap"))?;
        map.write(0, &MAGIC);
        map.write(8, &VERSION.to_ne_bytes());
        map.write(OFF_SLOTS_N, &slots.to_ne_bytes());
        map.write(OFF_SLOT_SIZE, &slot_size.to_ne_bytes());
        let index = ProducerIndex::new(
            slots,
            map.atomic_u32(OFF_PRODUCER),
            map.atomic_u32(OFF_CONSUMER),
        );
        // A socket left by an earlier relay is replaced; anything else at
        // the path is not touched (bind then fails, naming it).
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(err("bind"))?;
        listener.set_nonblocking(true).map_err(err("bind"))?;
        let fd = Arc::new(fd);
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (fd, stop, path) = (Arc::clone(&fd), Arc::clone(&stop), path.to_owned());
            std::thread::Builder::new()
                .name("relay-shm".into())
                .spawn(move || serve(&listener, &fd, &stop, &path))
                .map_err(err("spawn"))?
        };
        Ok(Self {
            map: Arc::new(map),
            fd,
            index,
            slots,
            slot_size: slot_size as usize,
            stop,
            server: Some(server),
            path: path.to_owned(),
        })
    }

    /// Copies `payload` into the next slot; false (and the ring's drop
    /// counter incremented) when the ring is full or the payload does not
    /// fit a slot.
    pub fn push(&mut self, payload: &[u8]) -> bool {
        let room = self.slot_size - 4;
        let consumer = self.map.atomic_u32(OFF_CONSUMER);
        let (first, n) = if payload.len() <= room {
            self.index.reserve(1, consumer)
        } else {
            (0, 0)
        };
        if n == 0 {
            self.map
                .atomic_u64(OFF_DROPPED)
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let at = HEADER + self.index.slot(first) * self.slot_size;
        self.map.write(at, &(payload.len() as u32).to_ne_bytes());
        self.map.write(at + 4, payload);
        self.index.submit(self.map.atomic_u32(OFF_PRODUCER));
        true
    }

    /// Slots in the ring.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The memfd (for handing out by other means than the socket).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for ShmProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Hands the memfd to every client until `stop`.
fn serve(listener: &UnixListener, fd: &OwnedFd, stop: &AtomicBool, path: &Path) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                let fds = [fd.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                let iov = [IoSlice::new(&MAGIC)];
                if let Err(e) = nix::sys::socket::sendmsg::<()>(
                    stream.as_raw_fd(),
                    &iov,
                    &cmsg,
                    MsgFlags::empty(),
                    None,
                ) {
                    tracing::warn!(path = %path.display(), error = %e, "relay ring: handing out the memfd");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "relay ring: accept");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The consumer end: a mapping of the relay's ring.
#[derive(Debug)]
pub struct ShmConsumer {
    map: Map,
    index: ConsumerIndex,
    slot_size: usize,
    /// A slot handed out by `next`, released on the next call.
    held: bool,
}

impl ShmConsumer {
    /// Connects to the ring served at `path` and maps it.
    pub fn connect(path: &Path) -> Result<Self, ShmError> {
        let err = |op: &'static str| {
            let path = path.to_owned();
            move |source: io::Error| ShmError { path, op, source }
        };
        let stream = UnixStream::connect(path).map_err(err("connect"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(err("connect"))?;
        let mut magic = [0u8; 8];
        let mut iov = [IoSliceMut::new(&mut magic)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| err("recvmsg")(io::Error::from(e)))?;
        let mut fd = None;
        for cmsg in msg
            .cmsgs()
            .map_err(|e| err("recvmsg")(io::Error::from(e)))?
        {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS installed `raw` in this process;
                    // nobody else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        let fd = fd.ok_or_else(|| {
            err("recvmsg")(io::Error::new(
                io::ErrorKind::InvalidData,
                "no descriptor received",
            ))
        })?;
        Self::from_fd(&fd).map_err(err("map"))
    }

    /// Maps the ring in `fd` (a memfd from the relay), checking its header.
    pub fn from_fd(fd: &OwnedFd) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        // Mapping past the end of the file would fault on the first read:
        // the sizes are checked against the file's first.
        let size = usize::try_from(nix::sys::stat::fstat(fd)?.st_size).unwrap_or(0);
        if size < HEADER {
            return Err(bad("ring smaller than its header"));
        }
        let head = Map::shared(fd.as_raw_fd(), HEADER)?;
        if head.slice(0, 8) != MAGIC || header_u32(&head, 8) != VERSION {
            return Err(bad("not a version 1 Griffin relay ring"));
        }
        let slots = header_u32(&head, OFF_SLOTS_N);
        let slot_size = header_u32(&head, OFF_SLOT_SIZE) as usize;
        if !slots.is_power_of_two() || slot_size < 16 || !slot_size.is_multiple_of(8) {
            return Err(bad("ring header with impossible sizes"));
        }
        drop(head);
        let len = (slots as usize)
            .checked_mul(slot_size)
            .and_then(|n| n.checked_add(HEADER))
            .filter(|&n| n <= size)
            .ok_or_else(|| bad("ring header larger than the ring"))?;
        let map = Map::shared(fd.as_raw_fd(), len)?;
        let index = ConsumerIndex::new(
            slots,
            map.atomic_u32(OFF_PRODUCER),
            map.atomic_u32(OFF_CONSUMER),
        );
        Ok(Self {
            map,
            index,
            slot_size,
            held: false,
        })
    }

    /// The next payload, in place; it stays valid until the next call
    /// (which releases its slot). None when the ring is empty.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<&[u8]> {
        if self.held {
            self.index.release(1, self.map.atomic_u32(OFF_CONSUMER));
            self.held = false;
        }
        let (first, n) = self.index.peek(1, self.map.atomic_u32(OFF_PRODUCER));
        if n == 0 {
            return None;
        }
        self.held = true;
        let at = HEADER + self.index.slot(first) * self.slot_size;
        let len = (header_u32(&self.map, at) as usize).min(self.slot_size - 4);
        Some(self.map.slice(at + 4, len))
    }

    /// Datagrams the producer dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.map.atomic_u64(OFF_DROPPED).load(Ordering::Relaxed)
    }
}

impl Drop for ShmConsumer {
    fn drop(&mut self) {
        if self.held {
            self.index.release(1, self.map.atomic_u32(OFF_CONSUMER));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_cross_in_order_drops_are_counted_and_a_new_consumer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.sock");
        let mut producer = ShmProducer::create(&path, 4, 64).unwrap();
        let mut consumer = ShmConsumer::connect(&path).unwrap();
        assert_eq!(consumer.next(), None);
        for i in 0..6u8 {
            let ok = producer.push(&[i; 10]);
            assert_eq!(ok, i < 4, "datagram {i}");
        }
        assert!(!producer.push(&[0; 61]), "larger than a slot");
        assert_eq!(consumer.dropped(), 3);
        assert_eq!(consumer.next(), Some(&[0u8; 10][..]));
        assert_eq!(consumer.next(), Some(&[1u8; 10][..]));
        // The consumer goes away holding datagram 1 (released on drop);
        // the next one starts at 2.
        drop(consumer);
        assert!(producer.push(&[9; 3]));
        let mut again = ShmConsumer::connect(&path).unwrap();
        assert_eq!(again.next(), Some(&[2u8; 10][..]));
        assert_eq!(again.next(), Some(&[3u8; 10][..]));
        assert_eq!(again.next(), Some(&[9u8; 3][..]));
        assert_eq!(again.next(), None);
        drop(producer);
        assert!(!path.exists());
    }
}
