//! The AF_XDP relay (`griffin_runtime::relay`) against two user-space UDP
//! relays built on the kernel path, in one run (issue 19):
//!
//! ```text
//! sender ns                   node ns
//!   s_if ==(veth, 1 queue)==> n_if -> relay under test -> UDP 127.0.0.1:7100 (consumer)
//! ```
//!
//! (a) **kernel path**: a UDP socket bound on `n_addr:PORT`, `recvmmsg` of
//! 64, `sendmmsg` to the consumer; (a+GSO) the same, sending each run of
//! equal-size datagrams as one UDP GSO message of the `sendmmsg`, as
//! Griffin sends (the strongest kernel-path relay here: it isolates what
//! receiving through AF_XDP adds); (b) **epoll (tokio)**: the same socket
//! with tokio's `recv_from`/`send` on a current-thread runtime; (c)
//! **Griffin**: the split's `xsk` rule steers the port to the relay (copy
//! mode: veth has no zero-copy), io_uring GSO sends through tokio-uring. One
//! sender thread blasts UDP datagrams of 64 or 1,400 bytes for `SECS`
//! seconds per round; a consumer thread counts what reaches it. Scenarios
//! are interleaved over `ROUNDS` rounds.
//!
//! Reported per scenario and size: delivered packets per second, the relay
//! thread's CPU time per delivered packet (utime + stime of the thread
//! from `/proc/self/task/TID/stat`, 10 ms ticks) and pps per core
//! (delivered / relay-thread CPU seconds), the median and the spread
//! (min-max) over rounds, and the ratios (c)/(a) and (c)/(a+GSO) of pps per core. What the
//! relay thread does not pay is not counted for any scenario: the veth
//! transmit, XDP and the kernel's UDP receive run in the sender's softirq.
//!
//! `GRIFFIN_BENCH_RELAY_SECS` and `GRIFFIN_BENCH_RELAY_ROUNDS` shorten it
//! while developing. Needs root, iproute2, bpffs, io_uring.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use griffin_ebpf::{
    afxdp::XdpConfig, pin_dir, Action, AttachMode, AttachOptions, Datapath, Rule, DEFAULT_BPFFS,
};
use griffin_runtime::relay::dest::{gso_run, set_gso_segment};
use griffin_runtime::relay::{DestinationSpec, Relay, RelaySpec};
use griffin_tests::netns::{PinCleanup, Wire};

const PORT: u16 = 7099;
const CONSUMER: u16 = 7100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (utime + stime) of this process's thread named `comm`.
fn thread_cpu(comm: &str) -> f64 {
    let ticks = 100.0; // USER_HZ
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of the command: state is field 3; utime 14,
        // stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 13 {
            total +=
                (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / ticks;
        }
    }
    total
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Kernel,
    KernelGso,
    Tokio,
    Griffin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel recvmmsg/sendmmsg",
            Self::KernelGso => "kernel recvmmsg/sendmmsg + UDP GSO",
            Self::Tokio => "epoll (tokio)",
            Self::Griffin => "Griffin AF_XDP + io_uring",
        }
    }

    fn thread(self) -> &'static str {
        match self {
            Self::Kernel => "bench-mmsg",
            Self::KernelGso => "bench-mmsg-gso",
            Self::Tokio => "bench-tokio",
            Self::Griffin => "relay-q0",
        }
    }
}

/// The kernel-path relays: `recvmmsg` of 64, then `sendmmsg` to the
/// consumer: (a) one message per datagram; with `gso` (a+GSO), as Griffin
/// sends, one UDP GSO message per run of equal-size datagrams (the last of
/// a run may be shorter), gathered from the receive buffers.
fn mmsg_relay(socket: &UdpSocket, out: &UdpSocket, stop: &AtomicBool, gso: bool) {
    const B: usize = 64;
    let mut bufs = vec![[0u8; 2048]; B];
    let mut lens = [0usize; B];
    // One control buffer per outgoing message: cmsghdr + u16, aligned.
    let mut cmsgs = vec![[0u64; 4]; B];
    while !stop.load(Ordering::Relaxed) {
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: `msgs` holds B valid headers whose buffers live until the
        // call returns; the result is checked.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                B as u32,
                libc::MSG_WAITFORONE,
                &mut timeout,
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        // Each iovec shrinks to what was received.
        for i in 0..n {
            lens[i] = msgs[i].msg_len as usize;
            iov[i].iov_len = lens[i];
        }
        if !gso {
            // SAFETY: the first n headers describe received data; the
            // socket is connected; the result is not needed (a full
            // consumer drops).
            unsafe {
                libc::sendmmsg(
                    out.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                );
            }
            continue;
        }
        // Runs of equal sizes → one GSO message each, grouped as Griffin
        // groups them.
        let mut out_msgs: Vec<libc::mmsghdr> = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let k = gso_run(lens[i..n].iter().copied(), usize::MAX);
            // SAFETY: all-zero is a valid mmsghdr.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov[i];
            m.msg_hdr.msg_iovlen = k;
            if k > 1 {
                let slot = out_msgs.len();
                set_gso_segment(&mut m.msg_hdr, &mut cmsgs[slot], lens[i] as u16);
            }
            out_msgs.push(m);
            i += k;
        }
        // sendmmsg stops at a failed message: the ones after it are sent
        // by the next call (a failed one is dropped, as a full consumer
        // drops).
        let mut at = 0;
        while at < out_msgs.len() {
            // SAFETY: each message points at iovecs and control data that
            // live until the call returns.
            let r = unsafe {
                libc::sendmmsg(
                    out.as_raw_fd(),
                    out_msgs[at..].as_mut_ptr(),
                    (out_msgs.len() - at) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            at += if r > 0 { r as usize } else { 1 };
        }
    }
}

/// The epoll relay: tokio recv_from / send.
fn tokio_relay(socket: UdpSocket, out: UdpSocket, stop: &AtomicBool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        socket.set_nonblocking(true).unwrap();
        out.set_nonblocking(true).unwrap();
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        let out = tokio::net::UdpSocket::from_std(out).unwrap();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
            {
                let _ = out.try_send(&buf[..n]);
            }
        }
    });
}

struct Sample {
    pps: f64,
    cpu_ns_per_pkt: f64,
    pps_per_core: f64,
    /// Every CPU's busy time (user, nice, system, irq, softirq: sender,
    /// consumer and softirq work included) per delivered packet.
    machine_ns_per_pkt: f64,
}

/// Busy time of all CPUs so far, seconds (`/proc/stat`, USER_HZ ticks).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    busy as f64 / hz as f64
}

fn round(wire: &Wire, split: &mut Datapath, kind: Kind, size: usize, secs: u64) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let consumer = wire
        .node
        .udp_receiver(std::net::Ipv4Addr::LOCALHOST, CONSUMER);
    let to = SocketAddr::from(([127, 0, 0, 1], CONSUMER));
    let mut relay = None;
    let mut worker = None;
    match kind {
        Kind::Griffin => {
            split
                .set_rules(&[Rule::new(1, 5, Action::Xsk { queue: None })
                    .ip_proto(17)
                    .dst_ports(PORT..=PORT)])
                .unwrap();
            let spec = RelaySpec {
                name: "bench".into(),
                iface: wire.n_if.clone(),
                queues: vec![0],
                rules: vec![1],
                destination: DestinationSpec::Udp {
                    addr: to,
                    netns: None,
                },
                batch: 64,
            };
            relay = Some(
                wire.node
                    .run(|| Relay::start(&spec, &XdpConfig::default(), split))
                    .unwrap(),
            );
        }
        Kind::Kernel | Kind::KernelGso | Kind::Tokio => {
            split.set_rules(&[]).unwrap();
            let (socket, out) = wire.node.run(|| {
                let s = UdpSocket::bind((wire.n_addr, PORT)).unwrap();
                griffin_tests::sockopt::force_receive_buffer(&s, 16 << 20);
                // recvmmsg's own timeout is only looked at after a datagram
                // arrived: without this the relay would wait for ever once
                // the sender stops.
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let o = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
                o.connect(to).unwrap();
                (s, o)
            });
            let stop = Arc::clone(&stop);
            worker = Some(
                std::thread::Builder::new()
                    .name(kind.thread().into())
                    .spawn(move || match kind {
                        Kind::Kernel => mmsg_relay(&socket, &out, &stop, false),
                        Kind::KernelGso => mmsg_relay(&socket, &out, &stop, true),
                        _ => tokio_relay(socket, out, &stop),
                    })
                    .unwrap(),
            );
        }
    }
    let counter = {
        let (stop, delivered) = (Arc::clone(&stop), Arc::clone(&delivered));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if consumer.recv_from(&mut buf).is_ok() {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sender = wire.sender.run(|| {
        let s = UdpSocket::bind((wire.s_addr, 0)).unwrap();
        s.connect((wire.n_addr, PORT)).unwrap();
        s
    });
    std::thread::sleep(Duration::from_millis(100));
    let cpu0 = thread_cpu(kind.thread());
    let busy0 = machine_busy();
    let d0 = delivered.load(Ordering::Relaxed);
    let start = Instant::now();
    let body = vec![0x5au8; size];
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..64 {
            let _ = sender.send(&body);
        }
    }
    // Let the queues drain.
    std::thread::sleep(Duration::from_millis(200));
    let elapsed = start.elapsed().as_secs_f64();
    let got = (delivered.load(Ordering::Relaxed) - d0) as f64;
    let cpu = (thread_cpu(kind.thread()) - cpu0).max(0.01);
    let busy = machine_busy() - busy0;
    stop.store(true, Ordering::Relaxed);
    if let Some(r) = relay {
        r.stop().unwrap();
    }
    if let Some(w) = worker {
        w.join().unwrap();
    }
    counter.join().unwrap();
    Sample {
        pps: got / elapsed,
        cpu_ns_per_pkt: cpu * 1e9 / got.max(1.0),
        pps_per_core: got / cpu,
        machine_ns_per_pkt: busy * 1e9 / got.max(1.0),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (min, max)
}

fn main() {
    let secs = env_or("GRIFFIN_BENCH_RELAY_SECS", 2);
    let rounds = env_or("GRIFFIN_BENCH_RELAY_ROUNDS", 5) as usize;
    let wire = Wire::new("bq", 1, "198.18.20");
    let _pins = PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &wire.n_if));
    let options = AttachOptions {
        mode: AttachMode::Native,
        ..AttachOptions::default()
    };
    let mut split = wire
        .node
        .run(|| Datapath::attach(&wire.n_if, &options))
        .unwrap();
    let kinds = [Kind::Kernel, Kind::KernelGso, Kind::Tokio, Kind::Griffin];
    let sizes = [64usize, 1400];
    let mut results: Vec<(Kind, usize, Vec<Sample>)> = Vec::new();
    for &size in &sizes {
        for &kind in &kinds {
            results.push((kind, size, Vec::new()));
        }
    }
    for r in 0..rounds {
        for &size in &sizes {
            for &kind in &kinds {
                let s = round(&wire, &mut split, kind, size, secs);
                eprintln!(
                    "round {r} {size} B {}: {:.0} pps, {:.0} ns CPU/pkt",
                    kind.name(),
                    s.pps,
                    s.cpu_ns_per_pkt
                );
                results
                    .iter_mut()
                    .find(|(k, z, _)| *k == kind && *z == size)
                    .unwrap()
                    .2
                    .push(s);
            }
        }
    }
    let mut md = format!(
        "# AF_XDP relay vs kernel-path relays\n\nveth (1 queue, copy mode: no zero-copy on veth), {rounds} rounds of {secs} s per scenario, interleaved; \
         one sender thread; delivered = datagrams the consumer socket received. CPU = the relay thread's utime+stime (10 ms ticks); \
         the kernel's receive work (veth, XDP, UDP) runs in the sender's softirq and is not in any relay's figure; \
         in copy mode that includes (c)'s copy of each frame into the UMEM, while (a) and (b) pay their copy to user space in the relay thread, \
         so the relay-thread figure favours (c). Machine CPU = every CPU's busy time over the round (sender, softirq, relay, consumer) per \
         delivered packet: the fair whole-path cost.\n\n\
         | size | relay | delivered pps (median, min-max) | relay CPU ns/pkt (median) | pps per core (median, min-max) | machine CPU ns/pkt (median, min-max) |\n|---|---|---|---|---|---|\n"
    );
    let mut json = Vec::new();
    for (kind, size, samples) in &results {
        let pps: Vec<f64> = samples.iter().map(|s| s.pps).collect();
        let ppc: Vec<f64> = samples.iter().map(|s| s.pps_per_core).collect();
        let cpu: Vec<f64> = samples.iter().map(|s| s.cpu_ns_per_pkt).collect();
        let mach: Vec<f64> = samples.iter().map(|s| s.machine_ns_per_pkt).collect();
        let ((pmin, pmax), (cmin, cmax), (mmin, mmax)) =
            (spread(&pps), spread(&ppc), spread(&mach));
        md += &format!(
            "| {size} B | {} | {:.0} ({pmin:.0}-{pmax:.0}) | {:.0} | {:.0} ({cmin:.0}-{cmax:.0}) | {:.0} ({mmin:.0}-{mmax:.0}) |\n",
            kind.name(),
            median(pps.clone()),
            median(cpu.clone()),
            median(ppc.clone()),
            median(mach.clone()),
        );
        json.push(serde_json::json!({
            "size": size, "relay": kind.name(), "pps": pps, "pps_per_core": ppc, "cpu_ns_per_pkt": cpu,
            "machine_ns_per_pkt": mach,
        }));
    }
    md += "\n| size | ratio | per round | median | goal 1.5 |\n|---|---|---|---|---|\n";
    for &size in &sizes {
        let get = |k: Kind, f: fn(&Sample) -> f64| {
            results
                .iter()
                .find(|(kk, z, _)| *kk == k && *z == size)
                .unwrap()
                .2
                .iter()
                .map(f)
                .collect::<Vec<f64>>()
        };
        // (c)/(a) of relay-thread pps per core, and (a)/(c) of machine CPU
        // per packet (the same sense: above 1 favours Griffin).
        let per_core: Vec<f64> = get(Kind::Griffin, |s| s.pps_per_core)
            .iter()
            .zip(get(Kind::Kernel, |s| s.pps_per_core))
            .map(|(g, k)| g / k)
            .collect();
        let machine: Vec<f64> = get(Kind::Kernel, |s| s.machine_ns_per_pkt)
            .iter()
            .zip(get(Kind::Griffin, |s| s.machine_ns_per_pkt))
            .map(|(k, g)| k / g)
            .collect();
        // Against the kernel relay that sends with GSO as Griffin does:
        // what receiving through AF_XDP adds (no goal: the issue's is
        // against (a)).
        let per_core_gso: Vec<f64> = get(Kind::Griffin, |s| s.pps_per_core)
            .iter()
            .zip(get(Kind::KernelGso, |s| s.pps_per_core))
            .map(|(g, k)| g / k)
            .collect();
        for (what, ratios, goal) in [
            ("(c)/(a) relay-thread pps per core", per_core, true),
            ("(a)/(c) machine CPU per packet", machine, true),
            ("(c)/(a+GSO) relay-thread pps per core", per_core_gso, false),
        ] {
            let m = median(ratios.clone());
            md += &format!(
                "| {size} B | {what} | {} | {m:.2} | {} |\n",
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match (goal, m >= 1.5) {
                    (false, _) => "(no goal)",
                    (true, true) => "met",
                    (true, false) => "not met",
                }
            );
        }
    }
    griffin_benches::write_report("relay", &serde_json::Value::Array(json), &md).unwrap();
}
