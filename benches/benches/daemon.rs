//! `griffin daemon` under load: requests per second and latency of
//! `POST /v1/score` and the GS-Scheduler latency route, against `GET
//! /healthz` (the HTTP stack alone: the ceiling) in the same run; then the
//! daemon's RSS and idle CPU.
//!
//! The daemon (the release binary, `$GRIFFIN_BIN`) is pinned to CPU 0, the
//! load generator (this process's main thread) to CPU 1, so "one core" is
//! the daemon's whole budget. Both run SCHED_FIFO when allowed: this machine
//! may be shared with builds, and without it the closed loop measures the
//! neighbours' time slices (see [`boost`]). The generator is a closed loop:
//! N keep-alive HTTP/1.1 connections on one epoll thread, one request in
//! flight per connection (no pipelining), each request timed from its write
//! to the last byte of its answer. Any answer but `200`, and any connection
//! error, is an error. The generator's own CPU use is reported: near 100%
//! of its core, the figures are the generator's limit, not the daemon's.
//!
//! Every route is run twice: with the client sleeping in `epoll_wait`
//! between answers, then spinning on it. Over loopback the daemon's write
//! of an answer delivers it into the client's socket on the daemon's own
//! CPU, and wakes a sleeping client on the other CPU (an IPI: on a VM, an
//! exit); a spinning client shows what the daemon costs without that, as
//! with remote clients.
//!
//! N = 16: a closed loop against one core is saturated by a few
//! connections, and past that every connection only adds queueing (Little's
//! law: mean latency = N / throughput, so 64 connections at 50k req/s cannot
//! have a p99 under 1 ms whatever the daemon does). A sweep over 1 and 64
//! connections on `/v1/score` shows both ends.
//!
//! Root: the committed `edge2s-qemu` fixture, with an allocator checkpoint
//! holding a few allocations (what a busy node's daemon reads), then without
//! one; the live node (`/`) for `/v1/score` as well. `wrk`, when installed,
//! is run on the same daemon for comparison. Targets (issue): ≥ 50k req/s on
//! `/v1/score` on one core, p99 < 1 ms, RSS ≤ 15 MiB; reported, not
//! asserted. The bench fails if the daemon dies or a route never answers 200.
//!
//! `GRIFFIN_BENCH_QUICK=1`: 0.5 s warm-up, 2 s per route and a 5 s idle
//! window instead of 1 s, 5 s and 60 s (for iterating on the bench itself).

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use griffin_benches::{griffin_bin, micros, percentile, write_report, Summary};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::resource::{getrusage, UsageWho};
use serde_json::json;

const SCORE_BODY: &str = r#"{"cpus":2,"devices":[{"kind":"nic-vf","count":1}]}"#;
const CLUSTER: &str = "edge";
const DAEMON_CPU: usize = 0;
const LOAD_CPU: usize = 1;
const CONNS: usize = 16;
const MIB: f64 = 1024.0 * 1024.0;

fn quick() -> bool {
    std::env::var_os("GRIFFIN_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty())
}

fn one_cpu(cpu: usize) -> nix::sched::CpuSet {
    let mut s = nix::sched::CpuSet::new();
    s.set(cpu).expect("cpu index");
    s
}

/// The daemon and the generator run SCHED_FIFO (lowest real-time
/// priority) when allowed: this machine may be shared (builds), and on an
/// EEVDF kernel even nice -20 does not make a waking task preempt a compiler
/// on its core, so the closed loop would measure the neighbours' slices. RT
/// throttling (95% by default) still leaves the other tasks a share. Falls
/// back to nice -20, then to nothing; the report says which it got.
fn boost() -> &'static str {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler(2) on the calling thread, with a valid
    // sched_param on the stack.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return "SCHED_FIFO 1";
    }
    // SAFETY: setpriority(2) on the calling thread; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } == 0 {
        return "nice -20";
    }
    "default (not allowed to raise)"
}

/// Scheduling of `pid` from /proc/PID/stat (policy, RT priority, nice).
fn sched_of(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    // Fields 19 (nice), 40 (rt_priority), 41 (policy), counted from 1 with
    // pid and comm as 1 and 2.
    let at = |n: usize| f.get(n - 3).copied().unwrap_or("?");
    match at(41) {
        "1" => format!("SCHED_FIFO {}", at(40)),
        "0" => format!("nice {}", at(19)),
        p => format!("policy {p}"),
    }
}

/// Pins the child to `cpu` (if any) and raises its priority ([`boost`]), in
/// the child before exec.
fn place(cmd: &mut Command, cpu: Option<usize>) {
    let set = cpu.map(one_cpu);
    // SAFETY: between fork and exec only plain syscalls run:
    // sched_setaffinity(2) on a set built before the fork, then
    // sched_setscheduler(2) or setpriority(2); nothing allocates or locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(set) = &set {
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set)?;
            }
            boost();
            Ok(())
        });
    }
}

/// Both CPUs usable by this process (else the run is unpinned and says so).
fn can_pin() -> bool {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .is_ok_and(|s| s.is_set(DAEMON_CPU).unwrap_or(false) && s.is_set(LOAD_CPU).unwrap_or(false))
}

// ---------------------------------------------------------------- the daemon

struct Daemon {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    gsch_addr: SocketAddr,
}

impl Daemon {
    fn start(bin: &Path, root: &Path, state: &Path, config: &Path, pin: bool) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg("daemon")
            .arg("--root")
            .arg(root)
            .arg("--state-dir")
            .arg(state)
            .args(["--listen", "127.0.0.1:0", "--gsch-listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        place(&mut cmd, pin.then_some(DAEMON_CPU));
        let mut child = cmd.spawn().expect("spawning griffin daemon");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut next_addr = |what: &str| -> SocketAddr {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.split("http://")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {what} address in {line:?} (daemon died?)"))
        };
        let addr = next_addr("node-score");
        let gsch_addr = next_addr("GS-Scheduler");
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let pid = child.id() as i32;
        Self {
            child,
            pid,
            addr,
            gsch_addr,
        }
    }

    /// Panics (failing the bench) if the daemon has exited.
    fn assert_alive(&mut self, when: &str) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("griffin daemon died {when}: {st}");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection: status, body.
fn one_shot(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    griffin_tests::http::send(addr, request.as_bytes())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: griffin\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: griffin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits (bounded by attempts) until `request` answers 200.
fn wait_200(addr: SocketAddr, request: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..200 {
        match one_shot(addr, request) {
            Ok((200, body)) => return Ok(body),
            Ok((st, body)) => last = format!("{st} {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last)
}

// ------------------------------------------------------------- CPU and memory

/// CPU time (user + system) of every thread of `pid`, from schedstat
/// (nanoseconds), falling back to /proc/PID/stat (clock ticks).
fn proc_cpu(pid: i32) -> Duration {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(v) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return Duration::from_nanos(ns);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, the 12th after ")".
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
    Duration::from_secs_f64(ticks as f64 / clk_tck())
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf(3) only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Context switches (voluntary + not) of every thread of `pid`: wake-ups.
fn proc_switches(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// `VmRSS` and `VmHWM` of `pid`, bytes.
fn rss(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Per-CPU (busy, steal, total) jiffies from /proc/stat.
fn cpu_times() -> Vec<(u64, u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal (guest counted in user).
            let total: u64 = f.iter().take(8).sum();
            let idle = f.get(3).unwrap_or(&0) + f.get(4).unwrap_or(&0);
            let steal = *f.get(7).unwrap_or(&0);
            (total - idle - steal, steal, total)
        })
        .collect()
}

fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let d =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

/// CPU use over a window, as fractions of one CPU.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    daemon: f64,
    generator: f64,
    /// Busy share of the daemon's and the generator's CPUs (everything on
    /// them: softirqs, other processes).
    daemon_core_busy: f64,
    load_core_busy: f64,
    /// Hypervisor steal on the daemon's CPU.
    daemon_core_steal: f64,
}

struct CpuMark {
    at: Instant,
    daemon: Duration,
    generator: Duration,
    cores: Vec<(u64, u64, u64)>,
}

impl CpuMark {
    fn now(pid: i32) -> Self {
        Self {
            at: Instant::now(),
            daemon: proc_cpu(pid),
            generator: thread_cpu(),
            cores: cpu_times(),
        }
    }

    fn since(&self, pid: i32) -> Cpu {
        let end = Self::now(pid);
        let wall = end.at.duration_since(self.at).as_secs_f64();
        let core = |i: usize| -> (f64, f64) {
            match (self.cores.get(i), end.cores.get(i)) {
                (Some(a), Some(b)) if b.2 > a.2 => {
                    let t = (b.2 - a.2) as f64;
                    ((b.0 - a.0) as f64 / t, (b.1 - a.1) as f64 / t)
                }
                _ => (f64::NAN, f64::NAN),
            }
        };
        Cpu {
            daemon: (end.daemon.saturating_sub(self.daemon)).as_secs_f64() / wall,
            generator: (end.generator.saturating_sub(self.generator)).as_secs_f64() / wall,
            daemon_core_busy: core(DAEMON_CPU).0,
            load_core_busy: core(LOAD_CPU).0,
            daemon_core_steal: core(DAEMON_CPU).1,
        }
    }
}

// ------------------------------------------------------------ load generator

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    sent: Instant,
}

impl Conn {
    fn open(addr: SocketAddr, epoll: &Epoll, index: usize) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, index as u64))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            sent: Instant::now(),
        })
    }

    fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.sent = Instant::now();
        // One small request on an idle connection: the socket buffer is
        // empty, so a short write would be a broken connection.
        let n = self.stream.write(request)?;
        if n != request.len() {
            return Err(std::io::Error::other("short write"));
        }
        Ok(())
    }

    /// Reads what is there; `Some(status)` once a whole answer is in.
    fn receive(&mut self) -> std::io::Result<Option<u16>> {
        let mut chunk = [0u8; 8192];
        let n = match self.stream.read(&mut chunk) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        match parse_response(&self.buf).map_err(std::io::Error::other)? {
            Some((status, len)) if len == self.buf.len() => {
                self.buf.clear();
                Ok(Some(status))
            }
            Some(_) => Err(std::io::Error::other("bytes after the answer")),
            None => Ok(None),
        }
    }
}

/// `Some((status, total length))` once `buf` holds a whole answer; answers
/// must carry `Content-Length` (the daemon's all do).
fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Err("no end of headers in 64 KiB".into())
        } else {
            Ok(None)
        };
    };
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
        .ok_or("no status line")?;
    let len = head
        .split(|&b| b == b'\n')
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_at(l.iter().position(|&b| b == b':')?);
            k.eq_ignore_ascii_case(b"content-length")
                .then(|| {
                    std::str::from_utf8(&v[1..])
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .flatten()
        })
        .ok_or("answer without Content-Length")?;
    let total = head_end + 4 + len;
    Ok((buf.len() >= total).then_some((status, total)))
}

struct Load {
    conns: usize,
    /// The generator busy-polled (never slept in epoll_wait).
    spin: bool,
    /// epoll_wait calls in the measured window, and those that found nothing
    /// (the generator's slack when it spins).
    polls: u64,
    empty_polls: u64,
    /// Answered 200 in the measured window.
    ok: u64,
    /// Non-200 answers and connection errors in the measured window.
    errors: u64,
    warmup_errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    first_error: Option<String>,
    measured: Duration,
    latency: Vec<Duration>,
    cpu: Cpu,
}

impl Load {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.measured.as_secs_f64()
    }

    /// The generator, not the daemon, may have been the limit: over 90% of
    /// its core when it sleeps between events, or under 5% empty polls when
    /// it spins.
    fn saturated(&self) -> bool {
        if self.spin {
            (self.empty_polls as f64) < 0.05 * self.polls as f64
        } else {
            self.cpu.generator >= 0.9
        }
    }

    fn q(&self, q: f64) -> Duration {
        if self.latency.is_empty() {
            Duration::ZERO
        } else {
            percentile(&self.latency, q)
        }
    }
}

/// Closed loop on `conns` connections: `warmup`, then `measure`.
fn run_load(
    addr: SocketAddr,
    request: &str,
    conns: usize,
    warmup: Duration,
    measure: Duration,
    daemon_pid: i32,
    spin: bool,
) -> Load {
    let request = request.as_bytes();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
    let mut cs: Vec<Conn> = (0..conns)
        .map(|i| Conn::open(addr, &epoll, i).expect("connecting to the daemon"))
        .collect();
    let mut events = vec![EpollEvent::empty(); conns];
    let mut latency_ns: Vec<u64> = Vec::with_capacity(1 << 20);
    let (mut ok, mut errors, mut warmup_errors) = (0u64, 0u64, 0u64);
    let mut statuses = std::collections::BTreeMap::new();
    let mut first_error = None;
    let start = Instant::now();
    let mut mark: Option<CpuMark> = None;
    for c in &mut cs {
        c.send(request).expect("first request");
    }
    let mut reconnects = 0u32;
    let (mut polls, mut empty_polls) = (0u64, 0u64);
    let timeout = if spin { 0u16 } else { 10u16 };
    loop {
        let now = Instant::now();
        if mark.is_none() && now >= start + warmup {
            mark = Some(CpuMark::now(daemon_pid));
        }
        if mark.as_ref().is_some_and(|m| now >= m.at + measure) {
            break;
        }
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        };
        if mark.is_some() {
            polls += 1;
            empty_polls += u64::from(n == 0);
        }
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let outcome = cs[i].receive();
            let done = Instant::now();
            let measuring = mark.as_ref().is_some_and(|m| done >= m.at);
            let failed = match outcome {
                Ok(None) => continue,
                Ok(Some(200)) => {
                    if measuring {
                        ok += 1;
                        latency_ns.push(done.duration_since(cs[i].sent).as_nanos() as u64);
                    }
                    cs[i].send(request).err().map(|e| format!("write: {e}"))
                }
                Ok(Some(status)) => {
                    *statuses.entry(status).or_insert(0) += 1;
                    let e = format!("status {status}");
                    match cs[i].send(request) {
                        Ok(()) => Some(e),
                        Err(w) => Some(format!("{e}, then write: {w}")),
                    }
                }
                Err(e) => Some(format!("read: {e}")),
            };
            let Some(why) = failed else { continue };
            if measuring {
                errors += 1;
            } else {
                warmup_errors += 1;
            }
            first_error.get_or_insert(why.clone());
            // A broken connection: replace it (a dead daemon fails here).
            if why.starts_with("read") || why.contains("write") {
                reconnects += 1;
                assert!(
                    reconnects < 10_000,
                    "the daemon keeps dropping connections: {why}"
                );
                let _ = epoll.delete(&cs[i].stream);
                cs[i] = Conn::open(addr, &epoll, i)
                    .unwrap_or_else(|e| panic!("reconnecting after {why}: {e} (daemon died?)"));
                cs[i].send(request).expect("request after reconnecting");
            }
        }
    }
    let mark = mark.expect("measured window");
    let cpu = mark.since(daemon_pid);
    let measured = mark.at.elapsed();
    drop(cs);
    latency_ns.sort_unstable();
    Load {
        conns,
        spin,
        polls,
        empty_polls,
        ok,
        errors,
        warmup_errors,
        statuses,
        first_error,
        measured,
        latency: latency_ns.into_iter().map(Duration::from_nanos).collect(),
        cpu,
    }
}

// ------------------------------------------------------------------ wrk

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// `wrk` (if installed) on the same route, pinned like the generator: its
/// "Requests/sec", 50% and 99% latency lines.
fn wrk(
    wrk: &Path,
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
    seconds: u64,
    dir: &Path,
) -> Option<String> {
    let mut cmd = Command::new(wrk);
    cmd.args([
        "-t1",
        &format!("-c{CONNS}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(body) = body {
        let script = dir.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{body}'\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n"
            ),
        )
        .ok()?;
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    place(&mut cmd, Some(LOAD_CPU));
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let mut parts: Vec<String> = [
        pick("Requests/sec"),
        pick("50%"),
        pick("99%"),
        pick("Non-2xx"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        parts.push("no output".into());
    }
    Some(parts.join("; "))
}

// ------------------------------------------------------------------ setup

/// A checkpoint with a few allocations on the fixture, as a busy node's
/// daemon reads on every request.
fn write_checkpoint(root: &Path, state: &Path) -> usize {
    use griffin_devices::DeviceKind::NicVf;
    use griffin_runtime::alloc::{allocate, DeviceWant, Request, State};
    use griffin_runtime::checkpoint::{encode, Checkpoint, Target};
    let topo = griffin_devices::discover(root).expect("discovering the fixture");
    let mut st = State::default();
    let mut targets = std::collections::BTreeMap::new();
    let reqs = [
        Request {
            cpus: 2,
            devices: vec![DeviceWant::Kind {
                kind: NicVf,
                count: 1,
            }],
            memory_bytes: 256 << 20,
            ..Default::default()
        },
        Request {
            cpus: 2,
            memory_bytes: 128 << 20,
            ..Default::default()
        },
        Request {
            cpus: 2,
            ..Default::default()
        },
    ];
    for (i, r) in reqs.into_iter().enumerate() {
        let id = format!("a{:06}", i + 1);
        match allocate(&topo, &st, &r) {
            Ok(p) => {
                st.commit(id.clone(), r, p).expect("commit");
                targets.insert(id, Target::Pid(1_000_000 + i as u32));
            }
            Err(e) => eprintln!("daemon bench: checkpoint allocation {id} refused: {}", e.0),
        }
    }
    let n = st.allocations.len();
    let cp = Checkpoint {
        state: st,
        targets,
        next_id: n as u64 + 1,
        pending_cleanup: Vec::new(),
    };
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(state.join("checkpoint"), encode(&cp)).unwrap();
    n
}

/// A TCP listener standing in for the cluster's master: accepts the
/// daemon's probe connections and closes them.
fn probe_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    addr
}

// ------------------------------------------------------------------ report

struct Row {
    name: String,
    load: Load,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        format!("{:.0}%", x * 100.0)
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn row_json(r: &Row, ceiling: f64) -> serde_json::Value {
    let l = &r.load;
    json!({
        "route": r.name,
        "connections": l.conns,
        "requests_per_s": l.rps().round(),
        "ratio_to_healthz": l.rps() / ceiling,
        "latency": if l.latency.is_empty() { json!(null) } else { Summary::of(l.latency.clone()).to_json() },
        "p999_us": micros(l.q(0.999)),
        "ok": l.ok,
        "errors": l.errors,
        "warmup_errors": l.warmup_errors,
        "statuses": l.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "first_error": l.first_error,
        "measured_s": l.measured.as_secs_f64(),
        "daemon_cpu": l.cpu.daemon,
        "generator_cpu": l.cpu.generator,
        "daemon_core_busy": l.cpu.daemon_core_busy,
        "daemon_core_steal": l.cpu.daemon_core_steal,
        "load_core_busy": l.cpu.load_core_busy,
        "generator_spins": l.spin,
        "generator_polls": l.polls,
        "generator_empty_polls": l.empty_polls,
        "generator_saturated": l.saturated(),
    })
}

fn row_md(r: &Row, ceiling: f64) -> String {
    let l = &r.load;
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {} | {} | {} |\n",
        r.name,
        l.conns,
        l.rps(),
        ms(l.q(0.5)),
        ms(l.q(0.99)),
        ms(l.q(0.999)),
        if l.errors + l.warmup_errors == 0 {
            "0".to_owned()
        } else {
            format!("**{}** (+{} in warm-up)", l.errors, l.warmup_errors)
        },
        l.rps() / ceiling,
        pct(l.cpu.daemon),
        pct(l.cpu.daemon_core_busy),
        if l.spin {
            format!(
                "{} (spins; {} of polls empty)",
                pct(l.cpu.generator),
                pct(l.empty_polls as f64 / l.polls.max(1) as f64)
            )
        } else {
            pct(l.cpu.generator)
        },
    )
}

const TABLE_HEAD: &str = "| route | conns | req/s | p50 | p99 | p99.9 | errors | ratio to /healthz | daemon CPU | CPU 0 busy | generator CPU |\n\
                          |---|---|---|---|---|---|---|---|---|---|---|\n";

fn main() {
    let bin = griffin_bin();
    let (warmup, measure, idle_s) = if quick() {
        (Duration::from_millis(500), Duration::from_secs(2), 5u64)
    } else {
        (Duration::from_secs(1), Duration::from_secs(5), 60u64)
    };
    let pin = can_pin();
    if pin {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one_cpu(LOAD_CPU))
            .expect("pinning the generator");
    } else {
        eprintln!(
            "daemon bench: CPUs {DAEMON_CPU} and {LOAD_CPU} not both usable: running unpinned"
        );
    }
    let gen_sched = boost();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let allocations = write_checkpoint(&fixture, &state);
    let master = probe_target();
    let config = tmp.path().join("griffin.toml");
    // Default probe interval (5 s): the idle figures are those of a stock
    // daemon with one peer.
    std::fs::write(
        &config,
        format!(
            "node_name = \"bench\"\ncluster_name = \"{CLUSTER}\"\n\
             [probes]\nclusters = {{ {CLUSTER} = [\"{master}\"] }}\n"
        ),
    )
    .unwrap();

    let mut d = Daemon::start(&bin, &fixture, &state, &config, pin);
    let latency_path = format!("/monitoring/clusters/{CLUSTER}/latency");
    let t = Instant::now();
    let body = wait_200(d.gsch_addr, &get(&latency_path))
        .unwrap_or_else(|e| panic!("{latency_path} never answered 200: {e}"));
    eprintln!(
        "daemon bench: daemon pid {} on {} / {}; {latency_path} answered {} after {:?}",
        d.pid,
        d.addr,
        d.gsch_addr,
        body.trim(),
        t.elapsed()
    );
    let (score_status, score_answer) = one_shot(d.addr, &post("/v1/score", SCORE_BODY)).unwrap();
    assert_eq!(score_status, 200, "POST /v1/score: {score_answer}");
    // Settle: the start-up allocations are done.
    std::thread::sleep(Duration::from_millis(500));
    let (rss_start, hwm_start) = rss(d.pid);
    let daemon_sched = sched_of(d.pid);

    let mut rows: Vec<Row> = Vec::new();
    let run = |d: &mut Daemon,
               name: &str,
               addr: SocketAddr,
               req: &str,
               conns: usize,
               measure: Duration,
               spin: bool|
     -> Load {
        eprintln!(
            "daemon bench: {name}, {conns} connections{}: {:.1} s warm-up + {:.1} s",
            if spin { ", spinning client" } else { "" },
            warmup.as_secs_f64(),
            measure.as_secs_f64()
        );
        let l = run_load(addr, req, conns, warmup, measure, d.pid, spin);
        d.assert_alive(&format!("under load on {name}"));
        eprintln!(
            "daemon bench:   {:.0} req/s, p99 {}, {} errors, generator CPU {}",
            l.rps(),
            ms(l.q(0.99)),
            l.errors,
            pct(l.cpu.generator)
        );
        l
    };
    // POST /v1/score with the bench's request to daemon `d`: one row.
    let score_row = |d: &mut Daemon, name: &str, conns: usize, measure: Duration| {
        let (addr, req) = (d.addr, post("/v1/score", SCORE_BODY));
        Row {
            name: name.into(),
            load: run(d, name, addr, &req, conns, measure, false),
        }
    };
    let score_ckpt = format!("POST /v1/score (checkpoint, {allocations} allocations)");
    let plan: [(&str, SocketAddr, String); 3] = [
        ("GET /healthz", d.addr, get("/healthz")),
        (&score_ckpt, d.addr, post("/v1/score", SCORE_BODY)),
        (
            "GET /monitoring/clusters/edge/latency (GS listener)",
            d.gsch_addr,
            get(&latency_path),
        ),
    ];
    for (name, addr, req) in &plan {
        let load = run(&mut d, name, *addr, req, CONNS, measure, false);
        rows.push(Row {
            name: (*name).to_owned(),
            load,
        });
    }
    // Again with a client that never sleeps: then the daemon's writes never
    // have to wake it on the other CPU (on a VM an IPI, a VM exit), a cost
    // of a local client that remote schedulers do not impose.
    let mut spun = Vec::new();
    for (name, addr, req) in &plan {
        let load = run(&mut d, name, *addr, req, CONNS, measure, true);
        spun.push(Row {
            name: (*name).to_owned(),
            load,
        });
    }
    // The same request on a node without allocations (no checkpoint file).
    std::fs::remove_file(state.join("checkpoint")).unwrap();
    let name = "POST /v1/score (no checkpoint)";
    rows.push(score_row(&mut d, name, CONNS, measure));
    let ceiling = rows[0].load.rps().max(1.0);

    // Connection sweep on /v1/score: latency is queueing past saturation.
    let mut sweep = Vec::new();
    for conns in [1, 64] {
        sweep.push(score_row(&mut d, name, conns, measure / 2));
    }

    // wrk, when installed, on the same daemon: a second opinion.
    let mut wrk_lines = Vec::new();
    if let Some(w) = find_in_path("wrk") {
        let secs = measure.as_secs().max(2);
        for (path, body) in [("/healthz", None), ("/v1/score", Some(SCORE_BODY))] {
            eprintln!("daemon bench: wrk {path}, {CONNS} connections, {secs} s");
            if let Some(line) = wrk(&w, d.addr, path, body, secs, tmp.path()) {
                wrk_lines.push((path, line));
            }
            d.assert_alive(&format!("under wrk on {path}"));
        }
    }

    // Idle: RSS and CPU with no client, sampled every second.
    let (rss_after, _) = rss(d.pid);
    eprintln!("daemon bench: idle for {idle_s} s (RSS, CPU)");
    let idle_start = Instant::now();
    let cpu0 = proc_cpu(d.pid);
    let sw0 = proc_switches(d.pid);
    let mut rss_max = rss_after;
    let mut hwm = 0;
    for i in 1..=idle_s {
        let next = idle_start + Duration::from_secs(i);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        d.assert_alive("while idle");
        let (r, h) = rss(d.pid);
        rss_max = rss_max.max(r);
        hwm = hwm.max(h);
    }
    let idle_wall = idle_start.elapsed().as_secs_f64();
    let idle_cpu = (proc_cpu(d.pid).saturating_sub(cpu0)).as_secs_f64() / idle_wall;
    let idle_wakeups = (proc_switches(d.pid) - sw0) as f64 / idle_wall;
    drop(d);

    // The live node, if this machine's sysfs can be discovered.
    let live_state = tmp.path().join("live-state");
    let live = match griffin_devices::discover("/") {
        Ok(_) => {
            let mut dl = Daemon::start(&bin, Path::new("/"), &live_state, &config, pin);
            wait_200(dl.addr, &get("/healthz")).expect("live daemon /healthz");
            let name = "POST /v1/score (live node `/`, no checkpoint)";
            Some(score_row(&mut dl, name, CONNS, measure))
        }
        Err(e) => {
            eprintln!("daemon bench: live node not discoverable ({e}): skipped");
            None
        }
    };

    // ---- report
    let score = &rows[1].load;
    let score_spun = &spun[1].load;
    let spun_ceiling = spun[0].load.rps().max(1.0);
    let p99_ok = |rs: &[Row]| rs.iter().all(|r| r.load.q(0.99) < Duration::from_millis(1));
    let all_rows: Vec<&Row> = rows
        .iter()
        .chain(spun.iter())
        .chain(sweep.iter())
        .chain(live.iter())
        .collect();
    let total_errors: u64 = all_rows
        .iter()
        .map(|r| r.load.errors + r.load.warmup_errors)
        .sum();
    let gen_saturated: Vec<String> = all_rows
        .iter()
        .filter(|r| r.load.saturated())
        .map(|r| {
            format!(
                "{} ({} conns{})",
                r.name,
                r.load.conns,
                if r.load.spin { ", spinning" } else { "" }
            )
        })
        .collect();
    let mut md = format!(
        "# griffin daemon under load\n\n\
         Daemon: `{}` (release), root: the `edge2s-qemu` fixture, a tokio current-thread runtime {}.\n\
         Load: closed loop, keep-alive HTTP/1.1, one request in flight per connection, each timed write → last byte; \
         {:.1} s warm-up + {:.1} s measured per route (sweep: half). `POST /v1/score` body: `{SCORE_BODY}`.\n\n",
        bin.display(),
        if pin {
            format!("pinned to CPU {DAEMON_CPU}; the generator (one epoll thread) pinned to CPU {LOAD_CPU}")
        } else {
            "unpinned (CPUs 0 and 1 not both available)".to_owned()
        },
        warmup.as_secs_f64(),
        measure.as_secs_f64(),
    );
    md += "Client sleeping in `epoll_wait` between answers (each answer may have to wake it on the other CPU):\n\n";
    md += TABLE_HEAD;
    for r in &rows {
        md += &row_md(r, ceiling);
    }
    md += "\nClient spinning (`epoll_wait` with a zero timeout: the daemon never has to wake it; \
           what the daemon costs when its clients are not on its own host; ratios to the spinning /healthz):\n\n";
    md += TABLE_HEAD;
    for r in &spun {
        md += &row_md(r, spun_ceiling);
    }
    md += "\nConnection sweep (sleeping client) and the live node:\n\n";
    md += TABLE_HEAD;
    for r in sweep.iter().chain(live.iter()) {
        md += &row_md(r, ceiling);
    }
    md += "\n\"daemon CPU\" is the daemon's CPU time over wall time (100% = its whole core; real-time throttling caps it at 95%); \
           \"CPU 0 busy\" everything on the daemon's core (loopback softirqs, other processes).\n";
    md += &format!(
        "Scheduling: daemon {daemon_sched}, generator {gen_sched} (this machine may be shared: see the doc of the bench).\n",
    );
    let shared: Vec<String> = all_rows
        .iter()
        .filter(|r| r.load.cpu.daemon_core_busy - r.load.cpu.daemon > 0.15)
        .map(|r| {
            format!(
                "{} ({} conns: {} of CPU 0 not the daemon's)",
                r.name,
                r.load.conns,
                pct(r.load.cpu.daemon_core_busy - r.load.cpu.daemon)
            )
        })
        .collect();
    if !shared.is_empty() && daemon_sched.starts_with("SCHED_FIFO") {
        md += &format!(
            "CPU 0 also ran other work during: {} (real-time daemon: only in time it left idle or the 5% throttle).\n",
            shared.join("; ")
        );
    } else if !shared.is_empty() {
        md += &format!(
            "**CPU 0 was shared with other work during**: {}; there the figures understate the daemon.\n",
            shared.join("; ")
        );
    }
    if !wrk_lines.is_empty() {
        md += &format!(
            "\nwrk (`-t1 -c{CONNS}`, pinned to CPU {LOAD_CPU} and boosted like the generator; a second opinion on req/s, \
             its latency percentiles are its own measurement):\n\n"
        );
        for (p, l) in &wrk_lines {
            md += &format!("- {p}: {l}\n");
        }
    } else {
        md += "\nwrk: not installed, not compared.\n";
    }
    md += &format!(
        "\nMemory and idle CPU (after the load, {idle_s} s with no client, one probe peer every 5 s):\n\n\
         | RSS at start | RSS after load | max RSS idle | VmHWM | idle CPU | wake-ups/s |\n|---|---|---|---|---|---|\n\
         | {:.2} MiB | {:.2} MiB | {:.2} MiB | {:.2} MiB | {:.3}% | {:.1} |\n",
        rss_start as f64 / MIB,
        rss_after as f64 / MIB,
        rss_max as f64 / MIB,
        hwm.max(hwm_start) as f64 / MIB,
        idle_cpu * 100.0,
        idle_wakeups,
    );
    let hwm = hwm.max(hwm_start);
    // VmHWM is updated lazily by the kernel and may trail a VmRSS sample.
    let peak = hwm.max(rss_max);
    md += &format!(
        "\nTargets (issue):\n\n\
         - `POST /v1/score` ≥ 50k req/s on one core (checkpoint with {allocations} allocations): \
           {:.0} req/s with a sleeping client: {}; {:.0} req/s with a spinning client: {}\n\
         - p99 < 1 ms ({CONNS} connections, every route of the first two tables): sleeping client {}; spinning client {} \
           (`/v1/score` p99 {} / {})\n\
         - RSS ≤ 15 MiB: max {:.2} MiB, VmHWM {:.2} MiB: {}\n",
        score.rps(),
        met(score.rps() >= 50_000.0),
        score_spun.rps(),
        met(score_spun.rps() >= 50_000.0),
        met(p99_ok(&rows)),
        met(p99_ok(&spun)),
        ms(score.q(0.99)),
        ms(score_spun.q(0.99)),
        rss_max as f64 / MIB,
        hwm as f64 / MIB,
        met(peak as f64 <= 15.0 * MIB),
    );
    if total_errors > 0 {
        md += &format!(
            "\n**This run had {total_errors} errors** (see the table; first: {:?}).\n",
            all_rows.iter().find_map(|r| r.load.first_error.clone())
        );
    } else {
        md += "\nNo errors: every request answered 200.\n";
    }
    if gen_saturated.is_empty() {
        md += "The generator had slack on every route (under 90% of its core; when spinning, over 5% of its polls empty): \
               the figures are the daemon's.\n";
    } else {
        md += &format!(
            "**The generator was at its limit on: {}** — there the figures are a lower bound of the daemon's capacity.\n",
            gen_saturated.join(", ")
        );
    }
    let json = json!({
        "pinned": pin,
        "daemon_sched": daemon_sched,
        "generator_sched": gen_sched,
        "connections": CONNS,
        "warmup_s": warmup.as_secs_f64(),
        "measure_s": measure.as_secs_f64(),
        "routes": rows.iter().map(|r| row_json(r, ceiling)).collect::<Vec<_>>(),
        "routes_spinning_client": spun.iter().map(|r| row_json(r, spun_ceiling)).collect::<Vec<_>>(),
        "sweep": sweep.iter().map(|r| row_json(r, ceiling)).collect::<Vec<_>>(),
        "live": live.as_ref().map(|r| row_json(r, ceiling)),
        "wrk": wrk_lines.iter().map(|(p, l)| json!({"route": p, "summary": l})).collect::<Vec<_>>(),
        "memory": {
            "rss_start_bytes": rss_start,
            "rss_after_load_bytes": rss_after,
            "rss_idle_max_bytes": rss_max,
            "vm_hwm_bytes": hwm,
        },
        "idle": {"seconds": idle_s, "cpu": idle_cpu, "wakeups_per_s": idle_wakeups},
        "targets": {
            "score_rps_50k": score.rps() >= 50_000.0,
            "score_rps_50k_spinning_client": score_spun.rps() >= 50_000.0,
            "p99_under_1ms": p99_ok(&rows),
            "p99_under_1ms_spinning_client": p99_ok(&spun),
            "rss_15mib": peak as f64 <= 15.0 * MIB,
        },
        "errors": total_errors,
        "generator_saturated": gen_saturated,
    });
    write_report("daemon", &json, &md).unwrap();
    if all_rows.iter().any(|r| r.load.ok == 0) {
        eprintln!("daemon bench: a route answered no request with 200");
        std::process::exit(1);
    }
}
