//! The XDP management/data path split (`griffin-ebpf`), in one run:
//!
//! 1. **Per-packet cost** with `BPF_PROG_TEST_RUN` (the kernel's own timing,
//!    mean ns per run over `REPEAT` runs in one call): Griffin's classifier on
//!    a 60-byte IPv4/UDP frame, for each path (no rule matches, a pass rule
//!    matches, a redirect rule matches) with 64 and 1024 rules, the matching
//!    rule last (the last bit of the candidate bitmaps); plus the slowest
//!    path, every rule a candidate that only its prefix set rejects (not
//!    part of the target); against the trivial
//!    `XDP_PASS` program (`griffin_ebpf::bench::Baseline`) on the same frame,
//!    interleaved with it. Target (issue 5): at most 40 ns per packet at 64
//!    rules. `BPF_PROG_TEST_RUN` without live frames does not perform the
//!    redirect: `bpf_redirect_map` finds the devmap entry (loopback here)
//!    and the program returns `XDP_REDIRECT`, so the redirect row is the
//!    program's cost up to and including the devmap lookup, not the
//!    transmit. `GRIFFIN_BENCH_XDP_PER_PACKET_ONLY=1` runs this part alone
//!    (report `xdp-per-packet`).
//! 2. **Data-path rate** on veth pairs in network namespaces:
//!
//!    ```text
//!    sender ns              node ns                        consumer ns
//!    s_if ==(wire veth)==>  n_if [XDP under test]
//!                           n_out ==(second veth)==>       c_if [trivial pass XDP]
//!    ```
//!
//!    Senders in the sender namespace, each for a fixed time: a raw one
//!    (prebuilt 60-byte UDP frames written to `s_if` through an `AF_PACKET`
//!    socket, `sendmmsg` of 64, qdisc bypass: the cheapest generator user
//!    space has here, no pktgen in this kernel) and a UDP socket one (one
//!    `send` per datagram, 18-byte payloads). Both send without a UDP
//!    checksum (see [`no_udp_checksum`]). Delivered = datagrams that reach
//!    the consumer namespace's UDP layer (`Udp: InDatagrams + RcvbufErrors`
//!    of its `/proc/net/snmp`), while a reader thread drains the socket.
//!    Scenarios, interleaved over [`ROUNDS`] rounds: (a) Griffin attached
//!    natively on `n_if` with one redirect rule into `n_out` (forwarding
//!    off in the node, so only redirected frames can arrive); (b) the kernel
//!    routing the same traffic (`ip_forward=1`, no XDP anywhere); (c)
//!    `xdp-bench redirect n_if n_out` (Debian xdp-tools, entered with
//!    `nsenter`: `ip netns exec` remounts /sys and hides bpffs) as the
//!    ceiling; it swaps the MAC addresses, so `c_if` takes the sender's MAC
//!    meanwhile. xdp-tools 1.3.1 (bookworm) cannot load on kernels that
//!    dropped the `xdp_redirect_map_err` tracepoint (seen on 6.18); then the
//!    ceiling is (c') `bench_xdp.c`'s `redirect_all`, `bpf_redirect` of every
//!    frame (what `xdp-bench redirect` does, without its MAC swap and
//!    counter), which is measured in every run anyway. A native redirect
//!    into a veth is received only when the receiving veth runs an XDP
//!    program: (a), (c) and (c') have the trivial pass program on `c_if`.
//!
//! Needs root, iproute2, bpffs and xdp-tools (`cargo xtask deps`).

use griffin_tests::{frames, netns};

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use griffin_benches::write_report;
use griffin_ebpf::{
    bench::Baseline, Action, AttachMode, AttachOptions, Datapath, Prefix, PrefixSets, Rule,
    XdpVerdict, DEFAULT_BPFFS,
};
use netns::{NetNs, PinCleanup};

/// Runs per `BPF_PROG_TEST_RUN` call.
const REPEAT: u32 = 1_000_000;
/// Timed calls per program and case (medians), at 0 and 64 rules and at
/// 1024.
const RUNS_64: usize = 11;
const RUNS_1024: usize = 5;
/// Target of issue 5 at 64 rules.
const TARGET_NS: f64 = 40.0;
const DATA_PORT: u16 = 5050;
/// UDP payload giving a 60-byte frame (14 + 20 + 8 + 18).
const PAYLOAD: usize = 18;

// ---------------------------------------------------------------- per packet

#[derive(Clone, Copy, PartialEq)]
enum Case {
    NoMatch,
    Pass,
    Redirect,
    /// Every rule a candidate, all but the last failing on its source
    /// prefix set: the classifier's slowest path (a walk of all candidates).
    PrefixWalk,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::NoMatch => "no match",
            Self::Pass => "management pass",
            Self::Redirect => "data redirect",
            Self::PrefixWalk => "pass after n-1 prefix-set misses",
        }
    }
}

/// `n` UDP rules, each on a port range the frame is not in, except (for
/// `Pass` and `Redirect`) the last one, which matches the frame's port. For
/// `PrefixWalk`, all on the frame's port, all but the last on prefix set 1
/// (not the frame's source), the last on set 0 (see [`per_packet`]).
fn rules(n: u32, path: Case) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let last = i + 1 == n;
            if path == Case::PrefixWalk {
                return Rule::new(i, i, Action::Pass)
                    .ip_proto(frames::UDP)
                    .dst_ports(DATA_PORT..=DATA_PORT)
                    .src_set(if last { 0 } else { 1 });
            }
            let (action, ports) = match path {
                Case::Pass if last => (Action::Pass, DATA_PORT..=DATA_PORT),
                Case::Redirect if last => (Action::Redirect { slot: 0 }, DATA_PORT..=DATA_PORT),
                _ => {
                    let port = 10_000 + i as u16;
                    (Action::Redirect { slot: 0 }, port..=port)
                }
            };
            Rule::new(i, i, action)
                .ip_proto(frames::UDP)
                .dst_ports(ports)
        })
        .collect()
}

fn frame() -> Vec<u8> {
    frames::eth(
        &[],
        frames::ETH_P_IP,
        &frames::ipv4(
            frames::UDP,
            frames::V4_SRC,
            frames::V4_DST,
            0,
            &frames::udp(40000, DATA_PORT, &[0x5a; PAYLOAD]),
        ),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct CostRow {
    rules: u32,
    path: Case,
    griffin_ns: f64,
    /// The fastest Griffin call: the least disturbed by other load.
    griffin_min_ns: f64,
    baseline_ns: f64,
    /// Median of Griffin minus the baseline call made right after it: a
    /// paired difference, steadier than the difference of the medians on
    /// a machine whose speed drifts between calls.
    over_baseline_ns: f64,
    /// Redirect rows: the trivial program that only redirects, through a
    /// devmap as Griffin does (`bpf_redirect_map`): the cost of the redirect
    /// action without classification.
    redirect_floor_ns: Option<f64>,
}

/// Timed calls of Griffin and of a baseline program on one frame, paired.
struct Measured {
    griffin_ns: f64,
    griffin_min_ns: f64,
    baseline_ns: f64,
    /// Median of the per-pair differences.
    over_baseline_ns: f64,
}

/// Interleaves `runs` timed runs of Griffin and the baseline; medians.
fn measure(
    dp: &Datapath,
    base: &mut Baseline,
    frame: &[u8],
    runs: usize,
    want: XdpVerdict,
) -> Measured {
    let g = dp.test_run_timed(frame, 10_000).unwrap();
    assert_eq!(g.verdict, want, "Griffin's verdict");
    let base_want = base.test_run_timed(frame, 10_000).unwrap().verdict;
    let (mut gs, mut bs, mut ds) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let g = dp.test_run_timed(frame, REPEAT).unwrap();
        assert_eq!(g.verdict, want, "Griffin's verdict");
        gs.push(f64::from(g.ns_per_run));
        let b = base.test_run_timed(frame, REPEAT).unwrap();
        assert_eq!(b.verdict, base_want, "baseline verdict");
        bs.push(f64::from(b.ns_per_run));
        ds.push(f64::from(g.ns_per_run) - f64::from(b.ns_per_run));
    }
    Measured {
        griffin_min_ns: gs.iter().copied().fold(f64::INFINITY, f64::min),
        griffin_ns: median(gs),
        baseline_ns: median(bs),
        over_baseline_ns: median(ds),
    }
}

/// The kernel functions the verified classifier calls (see
/// `griffin_ebpf::bench::kernel_calls`): each redirect and prefix lookup
/// should be a direct call of its map's function.
fn kernel_calls() -> Vec<String> {
    let dp = Datapath::load().expect("loading Griffin's XDP program (needs root)");
    griffin_ebpf::bench::kernel_calls(&dp).expect("reading the translated program")
}

fn per_packet() -> Vec<CostRow> {
    let mut dp = Datapath::load().expect("loading Griffin's XDP program (needs root)");
    let mut base = Baseline::load().expect("loading the baseline XDP program");
    let mut redirect_base =
        Baseline::redirect_map_all(1).expect("loading the trivial redirect program");
    // The redirect path needs a devmap entry to return XDP_REDIRECT
    // (otherwise it fails open to XDP_PASS): loopback, never transmitted to.
    dp.set_redirect_target(0, 1).unwrap();
    let mut sets = PrefixSets::new();
    sets.insert(0, "192.0.2.0/24".parse::<Prefix>().unwrap())
        .unwrap();
    sets.insert(1, "203.0.113.0/24".parse::<Prefix>().unwrap())
        .unwrap();
    dp.set_prefix_sets(&sets).unwrap();
    let frame = frame();
    let mut out = Vec::new();
    dp.set_rules(&[]).unwrap();
    let m = measure(&dp, &mut base, &frame, RUNS_64, XdpVerdict::Pass);
    out.push(CostRow {
        rules: 0,
        path: Case::NoMatch,
        griffin_ns: m.griffin_ns,
        griffin_min_ns: m.griffin_min_ns,
        baseline_ns: m.baseline_ns,
        over_baseline_ns: m.over_baseline_ns,
        redirect_floor_ns: None,
    });
    for n in [64, 1024] {
        for path in [Case::NoMatch, Case::Pass, Case::Redirect, Case::PrefixWalk] {
            dp.set_rules(&rules(n, path)).unwrap();
            let want = if path == Case::Redirect {
                XdpVerdict::Redirect
            } else {
                XdpVerdict::Pass
            };
            let runs = if n > 64 { RUNS_1024 } else { RUNS_64 };
            let m = measure(&dp, &mut base, &frame, runs, want);
            let redirect_floor_ns = (path == Case::Redirect)
                .then(|| measure(&dp, &mut redirect_base, &frame, runs, want).baseline_ns);
            eprintln!(
                "{n} rules, {}: griffin {} ns, baseline {} ns, paired difference {} ns",
                path.name(),
                m.griffin_ns,
                m.baseline_ns,
                m.over_baseline_ns
            );
            out.push(CostRow {
                rules: n,
                path,
                griffin_ns: m.griffin_ns,
                griffin_min_ns: m.griffin_min_ns,
                baseline_ns: m.baseline_ns,
                over_baseline_ns: m.over_baseline_ns,
                redirect_floor_ns,
            });
        }
    }
    out
}

// ---------------------------------------------------------------- rate

const S_MAC: &str = "02:00:00:00:2a:01";
const N_MAC: &str = "02:00:00:00:2b:01";
const O_MAC: &str = "02:00:00:00:2c:01";
const S_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 35, 1);
const C_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 36, 2);

/// The split topology with the consumer on a subnet of its own, so the
/// kernel can route to it (the forwarding baseline).
struct Topology(netns::ThreeNs);

impl std::ops::Deref for Topology {
    type Target = netns::ThreeNs;

    fn deref(&self) -> &netns::ThreeNs {
        &self.0
    }
}

impl Topology {
    fn new() -> Self {
        let t = netns::ThreeNs::new("b", [S_MAC, N_MAC, O_MAC], "198.19.35");
        t.node
            .ip(&["addr", "add", "198.19.36.1/24", "dev", &t.n_out]);
        t.consumer
            .ip(&["addr", "add", "198.19.36.2/24", "dev", &t.c_if]);
        t.node.neigh("198.19.36.2", N_MAC, &t.n_out);
        t.consumer.neigh("198.19.36.1", O_MAC, &t.c_if);
        t.sender
            .ip(&["route", "add", "198.19.36.0/24", "via", "198.19.35.2"]);
        t.consumer
            .ip(&["route", "add", "default", "via", "198.19.36.1"]);
        Self(t)
    }

    fn forwarding(&self, on: bool) {
        self.node
            .sysctl("net.ipv4.ip_forward", if on { "1" } else { "0" });
    }
}

/// `Udp:` counters of the calling thread's network namespace.
fn udp_snmp() -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(n, v)| (n.to_owned(), v.parse().unwrap()))
        .collect()
}

struct Rate {
    seconds: f64,
    sent: u64,
    send_errors: u64,
    /// Reached the consumer's UDP layer.
    delivered: u64,
    /// Read by the consumer's socket.
    read: u64,
    csum_errors: u64,
}

impl Rate {
    fn pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
}

/// veth offloads the UDP checksum (`CHECKSUM_PARTIAL`); an XDP redirect
/// turns the skb into a bare frame and the offload is lost, so the consumer
/// would count every redirected datagram as a checksum error. The sender
/// sends without a checksum in every scenario.
fn no_udp_checksum(socket: &UdpSocket) {
    griffin_tests::sockopt::no_udp_checksum(socket);
}

/// How the sender namespace generates traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// A UDP socket, `send` per datagram: the sender's own stack is part of
    /// every packet's cost.
    Udp,
    /// The same UDP frames prebuilt, written to `s_if` with an `AF_PACKET`
    /// socket (`PACKET_QDISC_BYPASS`, `sendmmsg` of 64): the generator costs
    /// as little as user space can make it.
    Raw,
}

/// An `AF_PACKET` socket bound to an interface, sending one prebuilt frame
/// in batches.
struct RawSender {
    fd: OwnedFd,
    frame: Vec<u8>,
}

const BATCH: usize = 64;

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

impl RawSender {
    /// Opens the socket on `iface` of the calling thread's namespace.
    fn open(iface: &str) -> Self {
        let ifindex = nix::net::if_::if_nametoindex(iface).unwrap();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set next.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll whose size we pass.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        griffin_tests::sockopt::packet_qdisc_bypass(&fd);
        let mut frame = Vec::new();
        frame.extend_from_slice(&mac(N_MAC));
        frame.extend_from_slice(&mac(S_MAC));
        frame.extend_from_slice(&frames::ETH_P_IP.to_be_bytes());
        // UDP checksum 0: none, as the socket sender (SO_NO_CHECK).
        frame.extend_from_slice(&frames::ipv4(
            frames::UDP,
            S_ADDR,
            C_ADDR,
            0,
            &frames::udp(40000, DATA_PORT, &[0x5a; PAYLOAD]),
        ));
        Self { fd, frame }
    }

    /// Sends one batch; returns (sent, failed).
    fn send_batch(&self) -> (u64, u64) {
        let mut iov = libc::iovec {
            iov_base: self.frame.as_ptr() as *mut libc::c_void,
            iov_len: self.frame.len(),
        };
        // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for m in &mut msgs {
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing at `iov`, which
        // points at `self.frame`; all outlive the call, and the kernel only
        // reads the frame and writes `msg_len`.
        let n = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n < 0 {
            (0, BATCH as u64)
        } else {
            (n as u64, BATCH as u64 - n as u64)
        }
    }
}

/// Blasts UDP from the sender namespace for `seconds` (after a warm-up)
/// and counts what the consumer namespace receives.
fn blast(t: &Topology, seconds: f64, how: Sender) -> Rate {
    let stop = AtomicBool::new(false);
    let read = AtomicU64::new(0);
    let socket = t.consumer.run(|| {
        let s = UdpSocket::bind(SocketAddr::from((C_ADDR, DATA_PORT))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s
    });
    let udp = t.sender.run(|| {
        let s = UdpSocket::bind(SocketAddr::from((S_ADDR, 0))).unwrap();
        s.connect(SocketAddr::from((C_ADDR, DATA_PORT))).unwrap();
        no_udp_checksum(&s);
        s
    });
    let raw = t.sender.run(|| RawSender::open(&t.s_if));
    let payload = [0x5au8; PAYLOAD];
    let send_for = |d: Duration| {
        let (mut sent, mut errors) = (0u64, 0u64);
        let end = Instant::now() + d;
        while Instant::now() < end {
            match how {
                Sender::Udp => {
                    for _ in 0..BATCH {
                        match udp.send(&payload) {
                            Ok(_) => sent += 1,
                            Err(_) => errors += 1,
                        }
                    }
                }
                Sender::Raw => {
                    let (s, e) = raw.send_batch();
                    sent += s;
                    errors += e;
                }
            }
        }
        (sent, errors)
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    read.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        send_for(Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(100));
        let before = t.consumer.run(udp_snmp);
        let read_before = read.load(Ordering::Relaxed);
        let started = Instant::now();
        let (sent, send_errors) = send_for(Duration::from_secs_f64(seconds));
        let elapsed = started.elapsed().as_secs_f64();
        // Let queued frames drain before the second reading.
        std::thread::sleep(Duration::from_millis(200));
        let after = t.consumer.run(udp_snmp);
        let read_after = read.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let d = |k: &str| after[k] - before[k];
        Rate {
            seconds: elapsed,
            sent,
            send_errors,
            delivered: d("InDatagrams") + d("RcvbufErrors"),
            read: read_after - read_before,
            csum_errors: d("InCsumErrors"),
        }
    })
}

/// One scenario measured with each sender.
struct Pair {
    raw: Rate,
    udp: Rate,
}

fn blast_both(t: &Topology, seconds: f64) -> Pair {
    Pair {
        raw: blast(t, seconds, Sender::Raw),
        udp: blast(t, seconds, Sender::Udp),
    }
}

struct RateReport {
    griffin: Pair,
    griffin_redirected: u64,
    griffin_fallbacks: u64,
    kernel: Pair,
    redirect_all: Pair,
    xdp_bench: Result<Pair, String>,
    /// Per round: Griffin's rates over the kernel's and over the
    /// redirect-all program's of the same round, (raw, udp).
    round_ratios: Vec<[(f64, f64); 2]>,
}

impl RateReport {
    /// The ceiling: xdp-bench when it ran, else the redirect-all program.
    fn ceiling(&self) -> (&'static str, &Pair) {
        match &self.xdp_bench {
            Ok(x) => ("xdp-bench", x),
            Err(_) => ("redirect-all", &self.redirect_all),
        }
    }
}

/// Waits until `iface` in `ns` shows an XDP program (or `timeout`).
fn wait_for_xdp(ns: &NetNs, iface: &str, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "link", "show", "dev", iface])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("prog/xdp") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

const XDP_BENCH_LOCK: &str = "/run/xdp-bench.lck";

/// Runs `xdp-bench redirect n_if n_out` in the node namespace while
/// blasting; the error says why it did not run.
fn xdp_bench(t: &Topology, seconds: f64) -> Result<Pair, String> {
    // A lock left by an xdp-bench that is gone would refuse this run.
    if let Ok(pid) = std::fs::read_to_string(XDP_BENCH_LOCK) {
        let alive = pid
            .trim()
            .parse::<i32>()
            .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
        if !alive {
            let _ = std::fs::remove_file(XDP_BENCH_LOCK);
        }
    }
    let netns = format!("--net=/run/netns/{}", t.node.name);
    let child = Command::new("nsenter")
        .arg(&netns)
        .args(["xdp-bench", "redirect", "-m", "native"])
        .args([&t.n_if, &t.n_out])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("running nsenter xdp-bench: {e} (cargo xtask deps installs xdp-tools)")
        })?;
    let pid = child.id();
    let attached = wait_for_xdp(&t.node, &t.n_if, Duration::from_secs(10));
    let rate = attached.then(|| blast_both(t, seconds));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    // xdp-tools 1.3 leaves its lock file behind when it fails to load.
    if std::fs::read_to_string(XDP_BENCH_LOCK).is_ok_and(|p| p.trim() == pid.to_string()) {
        let _ = std::fs::remove_file(XDP_BENCH_LOCK);
    }
    rate.ok_or_else(|| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format!("xdp-bench redirect did not attach: {}", why.join(" / "))
    })
}

/// Rounds of every scenario, interleaved, so that a slow patch of the
/// machine does not land on one scenario only.
const ROUNDS: usize = 5;

impl Rate {
    fn add(&mut self, other: &Rate) {
        self.seconds += other.seconds;
        self.sent += other.sent;
        self.send_errors += other.send_errors;
        self.delivered += other.delivered;
        self.read += other.read;
        self.csum_errors += other.csum_errors;
    }
}

impl Pair {
    fn add(&mut self, other: &Pair) {
        self.raw.add(&other.raw);
        self.udp.add(&other.udp);
    }
}

fn accumulate(total: &mut Option<Pair>, round: Pair) {
    match total {
        Some(t) => t.add(&round),
        None => *total = Some(round),
    }
}

/// The consumer veth's NAPI receives native redirects only with an XDP
/// program on it: the trivial one, detached when the result drops.
fn consumer_xdp(t: &Topology) -> Baseline {
    let mut baseline = Baseline::load().unwrap();
    t.consumer
        .run(|| baseline.attach_native(&t.c_if))
        .expect("native XDP on the consumer veth");
    baseline
}

/// (a) Griffin on n_if redirecting UDP 5000-5100 into n_out; returns the
/// rates and Griffin's redirect and fallback counts.
fn griffin_scenario(t: &Topology, seconds: f64, out_index: u32) -> (Pair, u64, u64) {
    let _consumer = consumer_xdp(t);
    let _pins = PinCleanup(griffin_ebpf::pin_dir(Path::new(DEFAULT_BPFFS), &t.n_if));
    let options = AttachOptions {
        mode: AttachMode::Native,
        ..AttachOptions::default()
    };
    let mut dp = t
        .node
        .run(|| Datapath::attach(&t.n_if, &options))
        .expect("attaching Griffin natively on the wire veth");
    t.node.run(|| dp.set_redirect_target(0, out_index)).unwrap();
    dp.set_rules(&[Rule::new(1, 10, Action::Redirect { slot: 0 })
        .ip_proto(frames::UDP)
        .dst_ports(5000..=5100)])
        .unwrap();
    let before = dp.counters().unwrap();
    let pair = blast_both(t, seconds);
    let after = dp.counters().unwrap();
    t.node.run(|| dp.detach()).unwrap();
    (
        pair,
        after.actions.redirect.packets - before.actions.redirect.packets,
        after.fallbacks.packets - before.fallbacks.packets,
    )
}

/// (b) The kernel routes: forwarding on, no XDP anywhere.
fn kernel_scenario(t: &Topology, seconds: f64) -> Pair {
    t.forwarding(true);
    let pair = blast_both(t, seconds);
    t.forwarding(false);
    pair
}

/// (c') The redirect-all baseline program on n_if.
fn redirect_all_scenario(t: &Topology, seconds: f64, out_index: u32) -> Pair {
    let _consumer = consumer_xdp(t);
    let mut ceiling = Baseline::redirect_all(out_index).unwrap();
    t.node
        .run(|| ceiling.attach_native(&t.n_if))
        .expect("native XDP on the wire veth");
    blast_both(t, seconds)
}

/// (c) xdp-bench redirect. It swaps the MACs: the consumer takes the
/// sender's MAC meanwhile.
fn xdp_bench_scenario(t: &Topology, seconds: f64) -> Result<Pair, String> {
    let _consumer = consumer_xdp(t);
    t.consumer
        .ip(&["link", "set", "dev", &t.c_if, "address", S_MAC]);
    let result = xdp_bench(t, seconds);
    t.consumer
        .ip(&["link", "set", "dev", &t.c_if, "address", N_MAC]);
    result
}

fn rate(seconds: f64) -> RateReport {
    let t = Topology::new();
    t.forwarding(false);
    let out_index = t
        .node
        .run(|| nix::net::if_::if_nametoindex(t.n_out.as_str()))
        .unwrap();
    let (mut griffin, mut kernel, mut redirect_all) = (None, None, None);
    let mut xdp_bench: Option<Result<Pair, String>> = None;
    let (mut redirected, mut fallbacks) = (0, 0);
    let mut round_ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        eprintln!("rate round {}/{ROUNDS}", round + 1);
        let (g, r, f) = griffin_scenario(&t, seconds, out_index);
        redirected += r;
        fallbacks += f;
        let k = kernel_scenario(&t, seconds);
        let a = redirect_all_scenario(&t, seconds, out_index);
        round_ratios.push([pps_ratio(&g, &k), pps_ratio(&g, &a)]);
        accumulate(&mut griffin, g);
        accumulate(&mut kernel, k);
        accumulate(&mut redirect_all, a);
        // Once it failed, xdp-bench is not retried.
        match &mut xdp_bench {
            Some(Err(_)) => {}
            Some(Ok(total)) => {
                if let Ok(pair) = xdp_bench_scenario(&t, seconds) {
                    total.add(&pair);
                }
            }
            None => xdp_bench = Some(xdp_bench_scenario(&t, seconds)),
        }
    }
    RateReport {
        griffin: griffin.unwrap(),
        griffin_redirected: redirected,
        griffin_fallbacks: fallbacks,
        kernel: kernel.unwrap(),
        redirect_all: redirect_all.unwrap(),
        xdp_bench: xdp_bench.unwrap(),
        round_ratios,
    }
}

/// a's delivered rates over b's, (raw sender, udp sender).
fn pps_ratio(a: &Pair, b: &Pair) -> (f64, f64) {
    (a.raw.pps() / b.raw.pps(), a.udp.pps() / b.udp.pps())
}

/// "lo–hi" of the per-round ratios picked by `pick`, two decimals.
fn ratio_range(rounds: &[[(f64, f64); 2]], pick: impl Fn(&[(f64, f64); 2]) -> f64) -> String {
    let (lo, hi) = rounds
        .iter()
        .map(pick)
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    format!("{lo:.2}–{hi:.2}")
}

// ---------------------------------------------------------------- report

fn pair_json(p: &Pair) -> serde_json::Value {
    serde_json::json!({"raw_sender": rate_json(&p.raw), "udp_sender": rate_json(&p.udp)})
}

fn rate_json(r: &Rate) -> serde_json::Value {
    serde_json::json!({
        "seconds": r.seconds, "sent": r.sent, "send_errors": r.send_errors,
        "delivered": r.delivered, "read_by_consumer": r.read,
        "csum_errors": r.csum_errors, "pps": r.pps(),
    })
}

fn main() {
    let seconds: f64 = std::env::var("GRIFFIN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let costs = per_packet();
    let calls = kernel_calls();
    // The per-packet part alone (seconds instead of minutes): its own report.
    let per_packet_only = std::env::var_os("GRIFFIN_BENCH_XDP_PER_PACKET_ONLY").is_some();
    let rate = (!per_packet_only).then(|| rate(seconds));

    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let mut md = String::from("# XDP split: per-packet cost and data-path rate\n\n");
    md += &format!(
        "## Per-packet cost (`BPF_PROG_TEST_RUN`, {REPEAT} runs per call, median of {RUNS_64} \
         calls at 0/64 rules and {RUNS_1024} at 1024, 60-byte IPv4/UDP frame, matching rule last)\n\n\
         `XDP_REDIRECT` is the program's verdict only: test runs do not transmit. \
         \"Griffin over baseline\" is the median of the differences between each Griffin call and \
         the baseline call right after it.\n\n\
         | rules | path | Griffin ns/pkt | Griffin fastest call | trivial XDP_PASS ns/pkt | Griffin over baseline | trivial redirect ns/pkt |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for c in &costs {
        md += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:+.0} ns | {} |\n",
            c.rules,
            if c.rules == 0 {
                "no rules"
            } else {
                c.path.name()
            },
            c.griffin_ns,
            c.griffin_min_ns,
            c.baseline_ns,
            c.over_baseline_ns,
            c.redirect_floor_ns
                .map_or_else(|| "-".to_owned(), |f| format!("{f:.0}"))
        );
    }
    let worst64 = costs
        .iter()
        .filter(|c| c.rules == 64 && c.path != Case::PrefixWalk)
        .map(|c| c.griffin_ns)
        .fold(0.0, f64::max);
    let worst64_min = costs
        .iter()
        .filter(|c| c.rules == 64 && c.path != Case::PrefixWalk)
        .map(|c| c.griffin_min_ns)
        .fold(0.0, f64::max);
    let met = worst64 <= TARGET_NS;
    md += &format!(
        "\nTarget ≤ {TARGET_NS:.0} ns per packet at 64 rules, judged on the medians: **{}** \
         (worst path {worst64:.0} ns; {worst64_min:.0} ns in its fastest call).\n\n",
        if met { "met" } else { "not met" }
    );
    md += &format!(
        "Kernel functions the verified program calls (map redirects and prefix lookups are direct \
         calls, none through the generic helpers): {}.\n\n",
        calls.join(", ")
    );
    let per_packet_json = serde_json::json!({
        "repeat": REPEAT,
        "frame_bytes": frame().len(),
        "rows": costs.iter().map(|c| serde_json::json!({
            "rules": c.rules, "path": c.path.name(),
            "griffin_ns": c.griffin_ns, "griffin_min_ns": c.griffin_min_ns,
            "baseline_ns": c.baseline_ns,
            "over_baseline_ns": c.over_baseline_ns,
            "trivial_redirect_ns": c.redirect_floor_ns,
        })).collect::<Vec<_>>(),
        "target_ns_at_64_rules": TARGET_NS,
        "worst_ns_at_64_rules": worst64,
        "worst_fastest_call_ns_at_64_rules": worst64_min,
        "target_met": met,
        "kernel_calls": calls,
    });
    let Some(rate) = rate else {
        let json = serde_json::json!({ "per_packet": per_packet_json });
        write_report("xdp-per-packet", &json, &md).unwrap();
        return;
    };

    md += &format!(
        "## Data-path rate (veth, 60-byte UDP frames; {ROUNDS} interleaved rounds of {seconds} s \
         per scenario and sender, rates over all rounds)\n\n\
         Delivered = datagrams reaching the consumer namespace's UDP layer. Senders: **raw** = \
         prebuilt frames through an AF_PACKET socket (`sendmmsg` of {BATCH}, qdisc bypass); \
         **udp** = a UDP socket, one `send` per datagram (the sender's own stack in every packet).\n\n\
         | scenario | raw: sent | raw: delivered pps | udp: sent | udp: delivered pps | udp: read by consumer |\n\
         |---|---|---|---|---|---|\n"
    );
    let row = |name: &str, p: &Pair| {
        format!(
            "| {name} | {} | {:.0} | {} | {:.0} | {} |\n",
            p.raw.sent,
            p.raw.pps(),
            p.udp.sent,
            p.udp.pps(),
            p.udp.read
        )
    };
    md += &row("(a) Griffin XDP redirect", &rate.griffin);
    md += &row("(b) kernel IP forwarding", &rate.kernel);
    if let Ok(x) = &rate.xdp_bench {
        md += &row("(c) xdp-bench redirect", x);
    }
    md += &row(
        "(c') redirect-all program (bench_xdp.c)",
        &rate.redirect_all,
    );
    let (ceiling_name, ceiling) = rate.ceiling();
    let ratio = |a: &Pair, b: &Pair| {
        let (raw, udp) = pps_ratio(a, b);
        (r2(raw), r2(udp))
    };
    let over_kernel = ratio(&rate.griffin, &rate.kernel);
    let over_ceiling = ratio(&rate.griffin, ceiling);
    let rounds = &rate.round_ratios;
    // Per-round ratios are kept for the redirect-all ceiling only.
    let ceiling_range = |pick: fn(&[(f64, f64); 2]) -> f64| {
        if rate.xdp_bench.is_err() {
            format!(" ({})", ratio_range(rounds, pick))
        } else {
            String::new()
        }
    };
    md += &format!(
        "\nGriffin redirected {} frames in its rounds, warm-ups included ({} fallbacks to the stack).\n\n\
         Ratios of the rates over all rounds; in brackets, the lowest and highest ratio of a single \
         round (the spread of this machine).\n\n\
         | ratio | raw sender | udp sender |\n|---|---|---|\n\
         | griffin/kernel | **{:.2}x** ({}) | {:.2}x ({}) |\n\
         | griffin/{ceiling_name} | **{:.2}x**{} | {:.2}x{} |\n",
        rate.griffin_redirected,
        rate.griffin_fallbacks,
        over_kernel.0,
        ratio_range(rounds, |r| r[0].0),
        over_kernel.1,
        ratio_range(rounds, |r| r[0].1),
        over_ceiling.0,
        ceiling_range(|r| r[1].0),
        over_ceiling.1,
        ceiling_range(|r| r[1].1),
    );
    if let Err(why) = &rate.xdp_bench {
        md += &format!(
            "\nxdp-bench did not run, so the ceiling is the redirect-all program \
             (`bpf_redirect` of every frame: what `xdp-bench redirect` does, without its MAC swap \
             and per-CPU counter). {why}\n"
        );
    }

    let json = serde_json::json!({
        "per_packet": per_packet_json,
        "rate": {
            "griffin": pair_json(&rate.griffin),
            "griffin_redirected": rate.griffin_redirected,
            "griffin_fallbacks": rate.griffin_fallbacks,
            "kernel": pair_json(&rate.kernel),
            "redirect_all": pair_json(&rate.redirect_all),
            "xdp_bench": rate.xdp_bench.as_ref().ok().map(pair_json),
            "xdp_bench_error": rate.xdp_bench.as_ref().err(),
            "ceiling": ceiling_name,
            "griffin_over_kernel": {"raw_sender": over_kernel.0, "udp_sender": over_kernel.1},
            "griffin_over_ceiling": {"raw_sender": over_ceiling.0, "udp_sender": over_ceiling.1},
            "rounds": rounds.iter().map(|[k, a]| serde_json::json!({
                "griffin_over_kernel": {"raw_sender": r2(k.0), "udp_sender": r2(k.1)},
                "griffin_over_redirect_all": {"raw_sender": r2(a.0), "udp_sender": r2(a.1)},
            })).collect::<Vec<_>>(),
        },
    });
    write_report("xdp", &json, &md).unwrap();
}
