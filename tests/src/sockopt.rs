//! Socket options the kernel tests and benchmarks set: one checked call
//! each, through `nix` where it has the option.

use std::os::fd::AsFd;

use nix::sys::socket::{setsockopt, sockopt};

/// Sends UDP without a checksum (`SO_NO_CHECK`). veth offloads the UDP
/// checksum (CHECKSUM_PARTIAL); an XDP redirect turns the frame into an
/// `xdp_frame` and that state is lost, so the receiver would drop the
/// datagram as a checksum error.
pub fn no_udp_checksum(socket: &impl AsFd) {
    int(
        socket,
        libc::SOL_SOCKET,
        libc::SO_NO_CHECK,
        1,
        "SO_NO_CHECK",
    );
}

/// A receive buffer of `bytes`, past `rmem_max` (`SO_RCVBUFFORCE`, root).
pub fn force_receive_buffer(socket: &impl AsFd, bytes: usize) {
    setsockopt(socket, sockopt::RcvBufForce, &bytes)
        .unwrap_or_else(|e| panic!("SO_RCVBUFFORCE: {e}"));
}

/// Packets of an `AF_PACKET` socket skip the qdisc layer
/// (`PACKET_QDISC_BYPASS`).
pub fn packet_qdisc_bypass(socket: &impl AsFd) {
    int(
        socket,
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        1,
        "PACKET_QDISC_BYPASS",
    );
}

/// An integer option `nix` does not name; panics naming it on failure.
fn int(socket: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int, what: &str) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the duration of the call (borrowed from
    // `socket`) and `value` is a valid c_int whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{what}: {}", std::io::Error::last_os_error());
}
