//! A minimal user-space AF_XDP socket: copy mode (`XDP_COPY`), one queue,
//! receive only. It owns its UMEM (an anonymous mapping cut into equal
//! frames) with a fill ring, a completion ring (required by the kernel,
//! unused without transmit) and an RX ring, all mapped at the offsets the
//! kernel reports (`XDP_MMAP_OFFSETS`).
//!
//! Register it with [`crate::Datapath::set_xsk`] under the queue it is bound
//! to; an [`crate::Action::Xsk`] rule then steers frames into it. The kernel
//! only delivers frames that arrived on the interface and queue the socket
//! is bound to; others are dropped by the kernel after the redirect.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// Errors of the AF_XDP socket; each names the interface and queue.
#[derive(Debug, thiserror::Error)]
#[error("AF_XDP socket on {iface} queue {queue}: {op}")]
pub struct XskError {
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

/// Sizes of the socket's UMEM and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Frames in the UMEM (a power of two); all start on the fill ring.
    pub frame_count: u32,
    /// Bytes per UMEM frame: a power of two from 2048 to the page size.
    pub frame_size: u32,
    /// Entries of the RX ring (a power of two).
    pub rx_ring_size: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_count: 4096,
            frame_size: 2048,
            rx_ring_size: 2048,
        }
    }
}

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

/// A mapped ring: producer and consumer indices and the descriptor array.
struct Ring {
    map: NonNull<libc::c_void>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    descs: *mut u8,
    mask: u32,
}

impl Ring {
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
        let base = map.cast::<u8>();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS and lie within the
        // `map_len` bytes just mapped; the producer and consumer words are
        // 4-byte aligned u32s the kernel updates concurrently, hence atomics.
        let (producer, consumer, descs) = unsafe {
            (
                base.add(offsets.producer as usize).cast::<AtomicU32>(),
                base.add(offsets.consumer as usize).cast::<AtomicU32>(),
                base.add(offsets.desc as usize),
            )
        };
        Ok(Self {
            map: NonNull::new(map).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?,
            map_len,
            producer,
            consumer,
            descs,
            mask: size - 1,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`), valid as long
        // as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { &*self.consumer }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; no reference
        // into it outlives the ring.
        unsafe {
            libc::munmap(self.map.as_ptr(), self.map_len);
        }
    }
}

/// An AF_XDP socket bound to one queue of one interface in copy mode.
pub struct XskSocket {
    // Rings are unmapped before the socket closes (field order).
    fill: Ring,
    /// Mandatory for binding; unused without transmit.
    _completion: Ring,
    rx: Ring,
    umem: NonNull<u8>,
    umem_len: usize,
    frame_size: u32,
    fd: OwnedFd,
    iface: String,
    queue: u32,
}

// SAFETY: the raw pointers refer to mappings owned by the socket; all access
// goes through `&mut self` (or reads of kernel-updated atomics), so moving
// the socket to another thread is sound.
unsafe impl Send for XskSocket {}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("iface", &self.iface)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

fn is_pow2(n: u32) -> bool {
    n != 0 && n & (n - 1) == 0
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

impl XskSocket {
    /// Creates the socket in the calling thread's network namespace, with
    /// its UMEM and rings, and binds it to `queue` of `iface` in copy mode.
    pub fn open(iface: &str, queue: u32, config: &XskConfig) -> Result<Self, XskError> {
        let err = |op: &'static str| {
            let iface = iface.to_owned();
            move |source: io::Error| XskError {
                iface,
                queue,
                op,
                source,
            }
        };
        let invalid = |what: &str| {
            err("config")(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} must be a power of two"),
            ))
        };
        if !is_pow2(config.frame_count) {
            return Err(invalid("frame_count"));
        }
        if !is_pow2(config.frame_size) || config.frame_size < 2048 {
            return Err(invalid("frame_size (at least 2048)"));
        }
        if !is_pow2(config.rx_ring_size) {
            return Err(invalid("rx_ring_size"));
        }
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|e| err("if_nametoindex")(io::Error::from(e)))?;

        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(err("socket(AF_XDP)")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let umem_len = config.frame_count as usize * config.frame_size as usize;
        // SAFETY: an anonymous private mapping; the result is checked.
        let umem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if umem == libc::MAP_FAILED {
            return Err(err("mmap UMEM")(io::Error::last_os_error()));
        }
        let umem = NonNull::new(umem.cast::<u8>()).expect("mmap never returns null on success");
        // From here on, the UMEM is unmapped by this guard until the socket
        // owns it.
        struct Umem(NonNull<u8>, usize);
        impl Drop for Umem {
            fn drop(&mut self) {
                // SAFETY: unmaps the mapping created above, unused elsewhere.
                unsafe {
                    libc::munmap(self.0.as_ptr().cast(), self.1);
                }
            }
        }
        let umem_guard = Umem(umem, umem_len);

        // SAFETY: all-zero is a valid xdp_umem_reg (plain integers).
        let mut reg: libc::xdp_umem_reg = unsafe { std::mem::zeroed() };
        reg.addr = umem.as_ptr() as u64;
        reg.len = umem_len as u64;
        reg.chunk_size = config.frame_size;
        reg.headroom = 0;
        let raw = fd.as_raw_fd();
        setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(err("XDP_UMEM_REG"))?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &config.frame_count)
            .map_err(err("XDP_UMEM_FILL_RING"))?;
        // The completion ring is mandatory even without transmit.
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &config.rx_ring_size)
            .map_err(err("XDP_UMEM_COMPLETION_RING"))?;
        setsockopt(raw, libc::XDP_RX_RING, &config.rx_ring_size).map_err(err("XDP_RX_RING"))?;

        // SAFETY: all-zero is a valid xdp_mmap_offsets.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `offsets` is writable for `len` bytes, `len` is updated
        // by the kernel; the result is checked.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(err("XDP_MMAP_OFFSETS")(io::Error::last_os_error()));
        }
        if len as usize != size_of::<libc::xdp_mmap_offsets>() {
            return Err(err("XDP_MMAP_OFFSETS")(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel without ring flags offsets",
            )));
        }
        let rx = Ring::map(
            raw,
            &offsets.rx,
            config.rx_ring_size,
            size_of::<libc::xdp_desc>(),
            libc::XDP_PGOFF_RX_RING as u64,
        )
        .map_err(err("mmap RX ring"))?;
        let fill = Ring::map(
            raw,
            &offsets.fr,
            config.frame_count,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )
        .map_err(err("mmap fill ring"))?;
        let completion = Ring::map(
            raw,
            &offsets.cr,
            config.rx_ring_size,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )
        .map_err(err("mmap completion ring"))?;

        std::mem::forget(umem_guard);
        let mut socket = Self {
            fill,
            _completion: completion,
            rx,
            umem,
            umem_len,
            frame_size: config.frame_size,
            fd,
            iface: iface.to_owned(),
            queue,
        };
        // Every frame starts on the fill ring.
        for frame in 0..config.frame_count {
            socket.refill(u64::from(frame) * u64::from(config.frame_size));
        }

        // SAFETY: all-zero is a valid sockaddr_xdp.
        let mut addr: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        addr.sxdp_family = libc::AF_XDP as u16;
        addr.sxdp_flags = libc::XDP_COPY;
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
            return Err(err("bind (XDP_COPY)")(io::Error::last_os_error()));
        }
        tracing::debug!(iface, queue, ifindex, "AF_XDP socket bound in copy mode");
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

    /// Puts the UMEM frame at `addr` on the fill ring. The fill ring has an
    /// entry for every frame, so it never overflows.
    fn refill(&mut self, addr: u64) {
        let producer = self.fill.producer().load(Ordering::Relaxed);
        let slot = (producer & self.fill.mask) as usize;
        // SAFETY: `slot` is within the ring's `mask + 1` u64 entries; the
        // kernel does not read this entry before the producer moves past it.
        unsafe {
            self.fill.descs.cast::<u64>().add(slot).write(addr);
        }
        self.fill
            .producer()
            .store(producer.wrapping_add(1), Ordering::Release);
    }

    /// Waits up to `timeout` for frames, then returns every frame on the RX
    /// ring (copied out; their UMEM frames go back to the fill ring). Empty
    /// when none arrived in time.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<Vec<u8>>, XskError> {
        let err = |op: &'static str| {
            let (iface, queue) = (self.iface.clone(), self.queue);
            move |source: io::Error| XskError {
                iface,
                queue,
                op,
                source,
            }
        };
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
                return Err(err("poll")(e));
            }
        }
        let consumer = self.rx.consumer().load(Ordering::Relaxed);
        let producer = self.rx.producer().load(Ordering::Acquire);
        let mut frames = Vec::with_capacity(producer.wrapping_sub(consumer) as usize);
        let mut index = consumer;
        while index != producer {
            let slot = (index & self.rx.mask) as usize;
            // SAFETY: `slot` is within the RX ring; entries between the
            // consumer and the producer (read with Acquire) are written by
            // the kernel and not touched again until the consumer moves.
            let desc = unsafe {
                self.rx
                    .descs
                    .cast::<libc::xdp_desc>()
                    .add(slot)
                    .read_unaligned()
            };
            let (addr, len) = (desc.addr as usize, desc.len as usize);
            if addr + len <= self.umem_len {
                // SAFETY: the kernel wrote `len` bytes at `addr` of the UMEM
                // (checked to lie within it) and owns the frame no more.
                let data = unsafe { std::slice::from_raw_parts(self.umem.as_ptr().add(addr), len) };
                frames.push(data.to_vec());
            }
            let chunk = desc.addr & !(u64::from(self.frame_size) - 1);
            index = index.wrapping_add(1);
            self.rx.consumer().store(index, Ordering::Release);
            self.refill(chunk);
        }
        Ok(frames)
    }

    /// The kernel's drop counters for the socket.
    pub fn statistics(&self) -> Result<XskStatistics, XskError> {
        // SAFETY: all-zero is a valid xdp_statistics.
        let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `stats` is writable for `len` bytes; checked below.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut stats as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(XskError {
                iface: self.iface.clone(),
                queue: self.queue,
                op: "XDP_STATISTICS",
                source: io::Error::last_os_error(),
            });
        }
        Ok(XskStatistics {
            rx_dropped: stats.rx_dropped,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty: stats.rx_fill_ring_empty_descs,
            rx_invalid_descs: stats.rx_invalid_descs,
        })
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        // The rings unmap themselves; the UMEM is ours.
        // SAFETY: unmaps the UMEM mapping created in `open`; the frames
        // handed out were copied, so nothing refers into it.
        unsafe {
            libc::munmap(self.umem.as_ptr().cast(), self.umem_len);
        }
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_are_refused_naming_the_interface() {
        let config = XskConfig {
            frame_size: 1000,
            ..XskConfig::default()
        };
        let e = XskSocket::open("lo", 0, &config).unwrap_err();
        assert!(e.to_string().contains("on lo queue 0"), "{e}");
        // The reason is the cause, printed once by the chain.
        let chain = griffin_devices::Chain(&e).to_string();
        assert!(!e.to_string().contains("frame_size"), "{e}");
        assert_eq!(chain.matches("frame_size").count(), 1, "{chain}");
    }
}
