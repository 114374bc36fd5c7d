//! AF_XDP sockets done properly: a UMEM with its fill and completion rings,
//! RX and TX rings, `XDP_USE_NEED_WAKEUP`, a zero-copy bind where the driver
//! supports it (with a logged fallback to copy mode), and frames recycled
//! through a free-frame stack without allocation.
//!
//! One [`XdpSocket`] serves one queue of one interface and owns its UMEM
//! (no `XDP_SHARED_UMEM`): the relay runs one thread per queue, so a UMEM
//! per socket keeps each queue's fill and completion rings, free stack and
//! frames on that thread with nothing shared between queues; sharing a
//! UMEM pays off only when frames move between sockets (forwarding from one
//! interface to another without a copy), which a relay that delivers to
//! user-space destinations never does.
//!
//! Frames received ([`XdpSocket::receive`]) are handed out as [`Frame`]s:
//! owned views of a UMEM chunk that put the chunk back on the socket's
//! return stack when dropped (also as the owner of a [`bytes::Bytes`],
//! [`Frame::into_bytes`]); [`XdpSocket::refill`] moves returned chunks to the
//! fill ring. The UMEM has room for the fill ring, the RX ring, the TX ring
//! and `in_flight` frames held by the application, so the fill ring can
//! always be topped up while the application holds at most that many.
//!
//! All ring access is behind this module's safe API; the index arithmetic
//! (cached indices, wrap-around) is the pure code of [`ring`], tested
//! against a model.

pub mod ring;

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ring::{ConsumerIndex, ProducerIndex};

/// Counters the kernel keeps for the socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Dropped for other reasons (e.g. frame too large for a UMEM frame).
    pub rx_dropped: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Dropped because the fill ring was empty.
    pub rx_fill_ring_empty: u64,
    /// Invalid descriptors in the RX ring.
    pub rx_invalid_descs: u64,
}

/// Errors of an AF_XDP socket; each names the interface and queue.
#[derive(Debug, thiserror::Error)]
#[error("AF_XDP socket on {iface} queue {queue}: {op}")]
pub struct XdpError {
    /// The interface.
    pub iface: String,
    /// The queue.
    pub queue: u32,
    /// What failed.
    pub op: &'static str,
    /// The failure.
    #[source]
    pub source: io::Error,
}

/// Whether to bind zero-copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy when the driver supports it, else copy mode (logged).
    #[default]
    Auto,
    /// Zero-copy or fail.
    Require,
    /// Copy mode.
    Never,
}

/// How a socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_ZEROCOPY`: the driver DMAs into the UMEM.
    ZeroCopy,
    /// `XDP_COPY`: the kernel copies frames into the UMEM.
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ZeroCopy => "zero-copy",
            Self::Copy => "copy",
        })
    }
}

/// Sizes and options of a socket. Ring sizes are powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// Bytes per UMEM frame: a power of two from 2048 to the page size.
    pub frame_size: u32,
    /// Entries of the fill ring.
    pub fill_size: u32,
    /// Entries of the completion ring.
    pub comp_size: u32,
    /// Entries of the RX ring.
    pub rx_size: u32,
    /// Entries of the TX ring.
    pub tx_size: u32,
    /// Frames the application may hold at once beyond the rings (UMEM
    /// frames = fill + rx + tx + in_flight).
    pub in_flight: u32,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// `XDP_USE_NEED_WAKEUP`: the kernel says when it needs a syscall to
    /// go on, instead of the application making one for every batch.
    pub need_wakeup: bool,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            frame_size: 2048,
            fill_size: 2048,
            comp_size: 512,
            rx_size: 2048,
            tx_size: 512,
            in_flight: 1024,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
        }
    }
}

impl XdpConfig {
    /// Frames in the UMEM.
    pub fn frame_count(&self) -> u32 {
        self.fill_size + self.rx_size + self.tx_size + self.in_flight
    }

    fn check(&self) -> Result<(), String> {
        let pow2 = |name: &str, v: u32| {
            if v.is_power_of_two() {
                Ok(())
            } else {
                Err(format!("{name} must be a power of two"))
            }
        };
        pow2("frame_size", self.frame_size)?;
        if !(2048..=4096).contains(&self.frame_size) {
            return Err("frame_size must be 2048 or 4096".into());
        }
        pow2("fill_size", self.fill_size)?;
        pow2("comp_size", self.comp_size)?;
        pow2("rx_size", self.rx_size)?;
        pow2("tx_size", self.tx_size)?;
        let frames = u64::from(self.fill_size)
            + u64::from(self.rx_size)
            + u64::from(self.tx_size)
            + u64::from(self.in_flight);
        if frames > u64::from(u32::MAX) || frames * u64::from(self.frame_size) > 1 << 36 {
            return Err("UMEM larger than 64 GiB".into());
        }
        Ok(())
    }
}

/// An anonymous mapping, unmapped when the last [`Arc`] to it goes.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; who may touch which bytes is
// decided by chunk ownership (a chunk is written by the kernel or the TX
// path only while no `Frame` refers to it), not by the thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access only reads chunks owned by a `Frame`.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `anonymous`; no
        // reference into it outlives the last Arc.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Chunks given back by dropped [`Frame`]s, waiting for
/// [`XdpSocket::refill`]. Its capacity is the UMEM's frame count, so a push
/// never allocates.
#[derive(Debug)]
struct Returns(Mutex<Vec<u64>>);

impl Returns {
    fn push(&self, chunk: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(chunk);
    }
}

/// A received frame: an owned view of one UMEM chunk (the bytes the kernel
/// wrote, or a narrower range of them). Dropping it returns the chunk to
/// its socket for reuse.
#[derive(Debug)]
pub struct Frame {
    umem: Arc<Mapping>,
    returns: Arc<Returns>,
    chunk: u64,
    /// Byte offset of the view in the UMEM.
    start: usize,
    len: usize,
}

impl Frame {
    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: `start..start + len` was checked to lie within the UMEM
        // when the frame was made, and narrowing only shrinks it; the chunk
        // is this frame's alone (the kernel gets it back only after drop),
        // and the mapping lives as long as the Arc.
        unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(self.start), self.len) }
    }

    /// Length of the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Narrows the view to `offset..offset + len` of the current one (both
    /// clamped to it): e.g. to a UDP payload.
    pub fn narrow(&mut self, offset: usize, len: usize) {
        let offset = offset.min(self.len);
        self.start += offset;
        self.len = len.min(self.len - offset);
    }

    /// The view as [`bytes::Bytes`] without a copy; the chunk returns to
    /// the socket when the last clone of the `Bytes` is dropped.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        self.returns.push(self.chunk);
    }
}

/// A mapped ring: the shared producer, consumer and flags words and the
/// entries.
struct MappedRing {
    map: NonNull<libc::c_void>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<u8>,
    size: u32,
}

impl MappedRing {
    /// Maps the ring of `size` entries of `entry` bytes at `pgoff` of `fd`.
    fn map(
        fd: RawFd,
        offsets: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        pgoff: u64,
    ) -> io::Result<Self> {
        let map_len = offsets.desc as usize + size as usize * entry;
        // SAFETY: maps `map_len` bytes of the socket's ring at the offset
        // the AF_XDP API defines for it; the kernel sized the ring with the
        // setsockopt that preceded this, and the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map).ok_or_else(|| io::Error::other("mmap: null"))?;
        let at = |off: u64| {
            // SAFETY: the offsets come from XDP_MMAP_OFFSETS and lie within
            // the `map_len` bytes just mapped.
            unsafe { map.cast::<u8>().add(off as usize) }
        };
        Ok(Self {
            map,
            map_len,
            // The producer, consumer and flags words are 4-byte aligned
            // u32s the kernel updates concurrently, hence atomics.
            producer: at(offsets.producer).cast(),
            consumer: at(offsets.consumer).cast(),
            flags: at(offsets.flags).cast(),
            descs: at(offsets.desc),
            size,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`), valid as long
        // as `self`.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as in `producer`.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Writes `value` into `slot` (< size) of a ring of `T` entries.
    fn write<T>(&self, slot: usize, value: T) {
        assert!(slot < self.size as usize);
        // SAFETY: `slot` is within the ring's `size` entries of `T` (the
        // ring was mapped for that entry type); the producer owns the slot
        // between reserve and submit, so the kernel does not read it now.
        unsafe { self.descs.cast::<T>().add(slot).write_unaligned(value) }
    }

    /// Reads `slot` (< size) of a ring of `T` entries.
    fn read<T>(&self, slot: usize) -> T {
        assert!(slot < self.size as usize);
        // SAFETY: within the ring as in `write`; the consumer owns the slot
        // between peek and release (the producer's index was read with
        // Acquire), so the kernel does not write it now.
        unsafe { self.descs.cast::<T>().add(slot).read_unaligned() }
    }
}

impl Drop for MappedRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; no reference
        // into it outlives the ring.
        unsafe {
            libc::munmap(self.map.as_ptr(), self.map_len);
        }
    }
}

/// Counters the socket keeps in user space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// Frames not sent for want of a free frame or TX ring entry.
    pub tx_full: u64,
    /// Wake-up syscalls made (fill or TX ring flagged `NEED_WAKEUP`).
    pub wakeups: u64,
    /// RX descriptors outside the UMEM (never expected).
    pub invalid_descs: u64,
}

/// An AF_XDP socket bound to one queue of one interface, with its own UMEM.
pub struct XdpSocket {
    // Rings are unmapped before the socket closes (field order).
    fill: MappedRing,
    fill_idx: ProducerIndex,
    comp: MappedRing,
    comp_idx: ConsumerIndex,
    rx: MappedRing,
    rx_idx: ConsumerIndex,
    tx: MappedRing,
    tx_idx: ProducerIndex,
    fd: OwnedFd,
    umem: Arc<Mapping>,
    returns: Arc<Returns>,
    /// Chunks owned by nobody: the free-frame stack.
    free: Vec<u64>,
    /// Swapped with the returns under their lock (no allocation).
    spare: Vec<u64>,
    frame_size: u32,
    mode: BindMode,
    need_wakeup: bool,
    counters: XdpCounters,
    iface: String,
    queue: u32,
}

// SAFETY: the raw pointers refer to mappings owned by the socket; ring
// access goes through `&mut self` (or reads of kernel-updated atomics), so
// moving the socket to another thread is sound.
unsafe impl Send for XdpSocket {}

impl std::fmt::Debug for XdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("iface", &self.iface)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` whose size is passed; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(SOL_XDP, name)` into a `T` the kernel fills whole.
fn getsockopt<T: Copy>(fd: RawFd, name: libc::c_int, value: &mut T) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; `len` is updated by the
    // kernel and checked below.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, name, (value as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel answered a shorter structure",
        ));
    }
    Ok(())
}

impl XdpSocket {
    /// Creates the socket in the calling thread's network namespace and
    /// binds it to `queue` of `iface`: zero-copy first when
    /// [`XdpConfig::zero_copy`] allows (a driver without it makes the bind
    /// fail; the socket is then made again in copy mode, with a warning).
    pub fn open(iface: &str, queue: u32, config: &XdpConfig) -> Result<Self, XdpError> {
        let err = |op: &'static str| {
            let iface = iface.to_owned();
            move |source: io::Error| XdpError {
                iface,
                queue,
                op,
                source,
            }
        };
        config
            .check()
            .map_err(|why| err("config")(io::Error::new(io::ErrorKind::InvalidInput, why)))?;
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|e| err("if_nametoindex")(io::Error::from(e)))?;
        match config.zero_copy {
            ZeroCopy::Never => Self::open_in(iface, ifindex, queue, config, BindMode::Copy),
            ZeroCopy::Require => Self::open_in(iface, ifindex, queue, config, BindMode::ZeroCopy),
            ZeroCopy::Auto => {
                match Self::open_in(iface, ifindex, queue, config, BindMode::ZeroCopy) {
                    Ok(socket) => Ok(socket),
                    Err(e) if e.op == "bind" => {
                        tracing::warn!(
                            iface,
                            queue,
                            error = %e.source,
                            "AF_XDP zero-copy bind refused by the driver; using copy mode"
                        );
                        Self::open_in(iface, ifindex, queue, config, BindMode::Copy)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn open_in(
        iface: &str,
        ifindex: u32,
        queue: u32,
        config: &XdpConfig,
        mode: BindMode,
    ) -> Result<Self, XdpError> {
        let err = |op: &'static str| {
            let iface = iface.to_owned();
            move |source: io::Error| XdpError {
                iface,
                queue,
                op,
                source,
            }
        };
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(err("socket(AF_XDP)")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let frame_count = config.frame_count();
        let umem_len = frame_count as usize * config.frame_size as usize;
        let umem = Arc::new(Mapping::anonymous(umem_len).map_err(err("mmap UMEM"))?);

        // SAFETY: all-zero is a valid xdp_umem_reg (plain integers).
        let mut reg: libc::xdp_umem_reg = unsafe { std::mem::zeroed() };
        reg.addr = umem.ptr.as_ptr() as u64;
        reg.len = umem_len as u64;
        reg.chunk_size = config.frame_size;
        reg.headroom = 0;
        setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(err("XDP_UMEM_REG"))?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &config.fill_size)
            .map_err(err("XDP_UMEM_FILL_RING"))?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &config.comp_size)
            .map_err(err("XDP_UMEM_COMPLETION_RING"))?;
        setsockopt(raw, libc::XDP_RX_RING, &config.rx_size).map_err(err("XDP_RX_RING"))?;
        setsockopt(raw, libc::XDP_TX_RING, &config.tx_size).map_err(err("XDP_TX_RING"))?;

        // SAFETY: all-zero is a valid xdp_mmap_offsets.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        getsockopt(raw, libc::XDP_MMAP_OFFSETS, &mut offsets).map_err(err("XDP_MMAP_OFFSETS"))?;
        let desc = size_of::<libc::xdp_desc>();
        let rx = MappedRing::map(
            raw,
            &offsets.rx,
            config.rx_size,
            desc,
            libc::XDP_PGOFF_RX_RING as u64,
        )
        .map_err(err("mmap RX ring"))?;
        let tx = MappedRing::map(
            raw,
            &offsets.tx,
            config.tx_size,
            desc,
            libc::XDP_PGOFF_TX_RING as u64,
        )
        .map_err(err("mmap TX ring"))?;
        let fill = MappedRing::map(
            raw,
            &offsets.fr,
            config.fill_size,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )
        .map_err(err("mmap fill ring"))?;
        let comp = MappedRing::map(
            raw,
            &offsets.cr,
            config.comp_size,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )
        .map_err(err("mmap completion ring"))?;

        let fill_idx = ProducerIndex::new(fill.size, fill.producer(), fill.consumer());
        let comp_idx = ConsumerIndex::new(comp.size, comp.producer(), comp.consumer());
        let rx_idx = ConsumerIndex::new(rx.size, rx.producer(), rx.consumer());
        let tx_idx = ProducerIndex::new(tx.size, tx.producer(), tx.consumer());
        // The free stack, highest address last so the first frames used are
        // the lowest.
        let mut free = Vec::with_capacity(frame_count as usize);
        free.extend(
            (0..u64::from(frame_count))
                .rev()
                .map(|i| i * u64::from(config.frame_size)),
        );
        let mut socket = Self {
            fill,
            fill_idx,
            comp,
            comp_idx,
            rx,
            rx_idx,
            tx,
            tx_idx,
            fd,
            umem,
            returns: Arc::new(Returns(Mutex::new(Vec::with_capacity(
                frame_count as usize,
            )))),
            free,
            spare: Vec::with_capacity(frame_count as usize),
            frame_size: config.frame_size,
            mode,
            need_wakeup: config.need_wakeup,
            counters: XdpCounters::default(),
            iface: iface.to_owned(),
            queue,
        };
        // The fill ring starts full.
        socket.stock_fill_ring();

        // SAFETY: all-zero is a valid sockaddr_xdp.
        let mut addr: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        addr.sxdp_family = libc::AF_XDP as u16;
        addr.sxdp_flags = match mode {
            BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
            BindMode::Copy => libc::XDP_COPY,
        };
        if config.need_wakeup {
            addr.sxdp_flags |= libc::XDP_USE_NEED_WAKEUP;
        }
        addr.sxdp_ifindex = ifindex;
        addr.sxdp_queue_id = queue;
        // SAFETY: `addr` is a valid sockaddr_xdp of the size passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(err("bind")(io::Error::last_os_error()));
        }
        // What the kernel says it did.
        // SAFETY: all-zero is a valid xdp_options.
        let mut options: libc::xdp_options = unsafe { std::mem::zeroed() };
        if getsockopt(raw, libc::XDP_OPTIONS, &mut options).is_ok() {
            let zc = options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
            socket.mode = if zc {
                BindMode::ZeroCopy
            } else {
                BindMode::Copy
            };
        }
        tracing::debug!(
            iface,
            queue,
            ifindex,
            mode = %socket.mode,
            frames = frame_count,
            need_wakeup = config.need_wakeup,
            "AF_XDP socket bound"
        );
        Ok(socket)
    }

    /// The interface the socket is bound to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// How the socket is bound.
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// The socket's user-space counters.
    pub fn counters(&self) -> XdpCounters {
        self.counters
    }

    /// Frames on the free stack (not in a ring, not held by a [`Frame`]),
    /// counting those returned since the last refill.
    pub fn free_frames(&self) -> usize {
        self.free.len()
            + self
                .returns
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len()
    }

    fn err(&self, op: &'static str) -> impl FnOnce(io::Error) -> XdpError {
        let (iface, queue) = (self.iface.clone(), self.queue);
        move |source| XdpError {
            iface,
            queue,
            op,
            source,
        }
    }

    /// Moves the chunks dropped frames returned onto the free stack.
    fn collect_returns(&mut self) {
        {
            let mut returns = self
                .returns
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if returns.is_empty() {
                return;
            }
            std::mem::swap(&mut *returns, &mut self.spare);
        }
        // Both vectors have the UMEM's frame count as capacity.
        self.free.append(&mut self.spare);
    }

    /// Puts free frames on the fill ring, as many as it takes; returns how
    /// many.
    fn stock_fill_ring(&mut self) -> u32 {
        let (first, n) = self
            .fill_idx
            .reserve(self.free.len() as u32, self.fill.consumer());
        for i in 0..n {
            let chunk = self.free.pop().expect("reserved at most the free frames");
            self.fill
                .write(self.fill_idx.slot(first.wrapping_add(i)), chunk);
        }
        self.fill_idx.submit(self.fill.producer());
        n
    }

    /// A syscall the kernel asked for (or, without `need_wakeup`, always).
    fn wake(&mut self, flags: libc::c_int, tx: bool) -> Result<(), XdpError> {
        self.counters.wakeups += 1;
        // SAFETY: a zero-length send or receive on our socket: no buffer is
        // read or written; the result is checked.
        let rc = unsafe {
            if tx {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    flags,
                    std::ptr::null(),
                    0,
                )
            } else {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    flags,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            }
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // The kernel is busy or out of buffers: the next kick retries.
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
                _ => Err(self.err(if tx {
                    "sendto (TX wakeup)"
                } else {
                    "recvfrom (wakeup)"
                })(e)),
            };
        }
        Ok(())
    }

    /// Returns the chunks of dropped frames to the fill ring and wakes the
    /// kernel when it asked for it.
    pub fn refill(&mut self) -> Result<(), XdpError> {
        self.collect_returns();
        self.stock_fill_ring();
        if self.need_wakeup && self.fill.needs_wakeup() {
            self.wake(libc::MSG_DONTWAIT, false)?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the RX ring to have frames; true when it
    /// has.
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool, XdpError> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd; the result is checked.
        let rc = unsafe { libc::poll(&mut pollfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(self.err("poll")(e));
            }
            return Ok(false);
        }
        Ok(rc > 0)
    }

    /// Takes up to `max` frames off the RX ring into `out` (no waiting) and
    /// refills the fill ring; returns how many were taken.
    pub fn receive(&mut self, max: u32, out: &mut Vec<Frame>) -> Result<usize, XdpError> {
        let (first, n) = self.rx_idx.peek(max, self.rx.producer());
        let umem_len = self.umem.len;
        let mut taken = 0;
        for i in 0..n {
            let desc: libc::xdp_desc = self.rx.read(self.rx_idx.slot(first.wrapping_add(i)));
            let (addr, len) = (desc.addr as usize, desc.len as usize);
            let chunk = desc.addr & !(u64::from(self.frame_size) - 1);
            if addr.checked_add(len).is_none_or(|end| end > umem_len) {
                self.counters.invalid_descs += 1;
                // The chunk the kernel took from the fill ring goes back
                // to the free stack when it lies in the UMEM (a frame is
                // never lost to a bad descriptor).
                if chunk < umem_len as u64 {
                    self.free.push(chunk);
                }
                continue;
            }
            out.push(Frame {
                umem: Arc::clone(&self.umem),
                returns: Arc::clone(&self.returns),
                chunk,
                start: addr,
                len,
            });
            taken += 1;
        }
        self.rx_idx.release(n, self.rx.consumer());
        self.counters.rx_frames += taken as u64;
        self.refill()?;
        Ok(taken)
    }

    /// Moves completed TX frames to the free stack; returns how many.
    pub fn reap_completions(&mut self) -> u32 {
        let (first, n) = self.comp_idx.peek(self.comp.size, self.comp.producer());
        for i in 0..n {
            let chunk: u64 = self.comp.read(self.comp_idx.slot(first.wrapping_add(i)));
            self.free.push(chunk & !(u64::from(self.frame_size) - 1));
        }
        self.comp_idx.release(n, self.comp.consumer());
        n
    }

    /// Copies each of `frames` (whole Ethernet frames) into a free UMEM
    /// frame and puts it on the TX ring, then kicks the kernel; returns how
    /// many were queued (fewer when free frames or TX entries run out;
    /// counted as `tx_full`). Frames longer than a UMEM frame are refused.
    pub fn transmit(&mut self, frames: &[&[u8]]) -> Result<usize, XdpError> {
        self.reap_completions();
        self.collect_returns();
        // Keep the fill ring stocked first: receiving matters more.
        self.stock_fill_ring();
        // Every length checked before a TX slot is reserved: a refusal
        // leaves no reserved slot with a stale descriptor behind.
        if frames.iter().any(|d| d.len() > self.frame_size as usize) {
            return Err(self.err("transmit")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame larger than a UMEM frame",
            )));
        }
        let wanted = frames.len().min(self.free.len()) as u32;
        let (first, n) = self.tx_idx.reserve(wanted, self.tx.consumer());
        for (i, data) in frames.iter().take(n as usize).enumerate() {
            let chunk = self.free.pop().expect("reserved at most the free frames");
            // SAFETY: the chunk is on the free stack, so neither the kernel
            // nor a `Frame` refers to it; `chunk + len` lies within the UMEM
            // (chunks are whole frames, len <= frame_size).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.umem.ptr.as_ptr().add(chunk as usize),
                    data.len(),
                );
            }
            let desc = libc::xdp_desc {
                addr: chunk,
                len: data.len() as u32,
                options: 0,
            };
            self.tx
                .write(self.tx_idx.slot(first.wrapping_add(i as u32)), desc);
        }
        self.tx_idx.submit(self.tx.producer());
        self.counters.tx_frames += u64::from(n);
        self.counters.tx_full += (frames.len() - n as usize) as u64;
        // Copy mode transmits only inside the syscall; zero-copy drivers
        // flag when they need one.
        if n > 0 && (!self.need_wakeup || self.mode == BindMode::Copy || self.tx.needs_wakeup()) {
            self.wake(libc::MSG_DONTWAIT, true)?;
        }
        Ok(n as usize)
    }

    /// The kernel's drop counters for the socket.
    pub fn statistics(&self) -> Result<XskStatistics, XdpError> {
        // SAFETY: all-zero is a valid xdp_statistics.
        let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS, &mut stats)
            .map_err(|e| self.err("XDP_STATISTICS")(e))?;
        Ok(XskStatistics {
            rx_dropped: stats.rx_dropped,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty: stats.rx_fill_ring_empty_descs,
            rx_invalid_descs: stats.rx_invalid_descs,
        })
    }
}

impl AsRawFd for XdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for XdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_are_refused_naming_the_interface() {
        let config = XdpConfig {
            rx_size: 1000,
            ..XdpConfig::default()
        };
        let e = XdpSocket::open("lo", 0, &config).unwrap_err();
        assert!(e.to_string().contains("on lo queue 0"), "{e}");
        let chain = griffin_devices::Chain(&e).to_string();
        assert_eq!(chain.matches("rx_size").count(), 1, "{chain}");
    }

    #[test]
    fn the_umem_has_room_for_every_ring_and_the_frames_in_flight() {
        let c = XdpConfig::default();
        assert_eq!(c.frame_count(), 2048 + 2048 + 512 + 1024);
    }

    #[test]
    fn a_frame_narrows_within_its_view_and_returns_its_chunk_on_drop() {
        let umem = Arc::new(Mapping::anonymous(4096).unwrap());
        let returns = Arc::new(Returns(Mutex::new(Vec::with_capacity(2))));
        // SAFETY: the mapping is ours and 4096 bytes long.
        unsafe { umem.ptr.as_ptr().add(2048 + 10).write(7) };
        let mut frame = Frame {
            umem: Arc::clone(&umem),
            returns: Arc::clone(&returns),
            chunk: 2048,
            start: 2048 + 10,
            len: 100,
        };
        assert_eq!(frame.data()[0], 7);
        frame.narrow(90, 50);
        assert_eq!(frame.len(), 10);
        frame.narrow(20, 5);
        assert!(frame.is_empty());
        let bytes = frame.into_bytes();
        let clone = bytes.clone();
        drop(bytes);
        assert!(returns.0.lock().unwrap().is_empty());
        drop(clone);
        assert_eq!(*returns.0.lock().unwrap(), vec![2048]);
    }
}
