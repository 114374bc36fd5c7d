//! `cargo xtask bench seed-claims`: the seed's headline results (GEdge
//! GS-Engine: CPU pinning on a busy node speeds video encoding up 1.75x and
//! YOLOv3 detection 2.87x; pinning + split data path + SR-IOV take a
//! licence-plate service from 6.061 to 11.168 fps) reproduced in shape on
//! this machine with real programs, side by side in one run.
//!
//! Workloads (one thread each; scripts in `xtask/seed/`):
//!
//! * **encode**: `ffmpeg` with libx264 (`-preset medium`, one thread) on a
//!   generated noisy 1080p clip; `-benchmark`'s real time.
//! * **detect**: OpenCV's HOG people detector on `vtest.avi` upscaled to
//!   1280x720 (`hog.py`), the stand-in for YOLOv3.
//! * **plates**: Haar plate cascade + PP-OCR recogniser (ONNX Runtime, one
//!   intra-op thread) + a SORT tracker on FHD frames with plates of known
//!   text drawn on the clip (`plates.py`), the frames fetched over TCP from a
//!   "camera" network namespace through a veth (198.18.0.0/24), while a UDP
//!   flood from the same namespace loads the management path.
//!
//! Scenarios: `K` noisy-neighbour threads (`stress-ng` CPU matrix and cache
//! stressors) for each `K` of the sweep, and the modes
//!
//! * **default**: workload and neighbours share every CPU (an unmanaged
//!   node);
//! * **griffin**: the workload's cgroup gets one exclusive CPU from the real
//!   `griffin alloc --cpus 1 --cgroup work` (no daemon: `--no-daemon` on a
//!   private state directory and cgroup root), the neighbours' cgroup joins
//!   the shared pool (`griffin alloc --cpus 0 --cgroup shared`);
//! * **griffin+xdp** (plates only): as griffin, plus `griffin xdp attach` on
//!   the node's end of the veth with a split steering the camera flow to the
//!   workload's CPU and the management flood to the shared pool (cpumap).
//!
//! Every cell is repeated in interleaved rounds (round 1 of every cell, then
//! round 2, ...); the report gives medians with min-max. `--quick` runs a few
//! frames, one round and one K: a smoke run that proves the harness works,
//! labelled as such in the report, never a result.

mod install;
mod report;
mod stats;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use griffin_tests::cgroup::remove_tree;
use griffin_tests::netns::VethPair;

/// What `cargo xtask bench seed-claims` was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    /// A short smoke run (few frames, one round, one K).
    pub quick: bool,
    /// Rounds (default 3; 1 with --quick).
    pub rounds: Option<u32>,
    /// The hog counts to sweep (default 1,2,3,5; 2 with --quick).
    pub hogs: Option<Vec<u32>>,
    /// Only workloads whose name contains this.
    pub only: Option<String>,
}

/// A workload of the seed's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Workload {
    Encode,
    Detect,
    Plates,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::Encode, Workload::Detect, Workload::Plates];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Encode => "encode",
            Workload::Detect => "detect",
            Workload::Plates => "plates",
        }
    }

    pub(crate) fn modes(self) -> &'static [Mode] {
        match self {
            Workload::Plates => &[Mode::Default, Mode::Griffin, Mode::GriffinXdp],
            _ => &[Mode::Default, Mode::Griffin],
        }
    }
}

/// How the node is managed in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Mode {
    Default,
    Griffin,
    GriffinXdp,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Griffin => "griffin",
            Mode::GriffinXdp => "griffin+xdp",
        }
    }
}

/// One cell's measurement.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub workload: Workload,
    pub mode: Mode,
    pub hogs: u32,
    pub round: u32,
    pub frames: u32,
    /// Wall-clock seconds of the workload's frames.
    pub seconds: f64,
    pub fps: f64,
    /// Per-frame latencies, ms (none for the encoder: a batch job).
    pub lat_ms: Vec<f64>,
    /// The plate pipeline's accuracy summary.
    pub accuracy: Option<serde_json::Value>,
    /// Anything else the workload reported (CPU times, detections).
    pub extra: serde_json::Value,
}

impl Sample {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.workload.name(),
            "mode": self.mode.name(),
            "hogs": self.hogs,
            "round": self.round,
            "frames": self.frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "latencies_ms": self.lat_ms,
            "accuracy": self.accuracy,
            "extra": self.extra,
        })
    }
}

/// The run's shape.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub quick: bool,
    pub rounds: u32,
    pub hogs: Vec<u32>,
    pub workloads: Vec<Workload>,
    pub encode_frames: u32,
    pub detect_frames: u32,
    pub plate_frames: u32,
    /// The management flood's rate, datagrams per second of 1000 bytes.
    pub flood_pps: u32,
    /// CPUs this machine has online (the fair-share estimate and the
    /// report's notes depend on it).
    pub cpus: u32,
}

impl Plan {
    fn new(o: &Opts) -> Result<Self> {
        let workloads: Vec<Workload> = Workload::ALL
            .into_iter()
            .filter(|w| o.only.as_deref().is_none_or(|f| w.name().contains(f)))
            .collect();
        if workloads.is_empty() {
            bail!(
                "--only {:?} names no workload (encode, detect, plates)",
                o.only
            );
        }
        let hogs = o
            .hogs
            .clone()
            .unwrap_or_else(|| if o.quick { vec![2] } else { vec![1, 2, 3, 5] });
        if hogs.is_empty() {
            bail!("--hogs: no hog count");
        }
        let rounds = o.rounds.unwrap_or(if o.quick { 1 } else { 3 });
        if rounds == 0 {
            bail!("--rounds: at least 1");
        }
        let (encode_frames, detect_frames, plate_frames) =
            if o.quick { (30, 4, 4) } else { (120, 60, 40) };
        Ok(Self {
            quick: o.quick,
            rounds,
            hogs,
            workloads,
            encode_frames,
            detect_frames,
            plate_frames,
            flood_pps: 10_000,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        })
    }

    fn cells(&self) -> Vec<(u32, u32, Workload, Mode)> {
        let mut out = Vec::new();
        for round in 1..=self.rounds {
            for &k in &self.hogs {
                for &w in &self.workloads {
                    for &m in w.modes() {
                        out.push((round, k, w, m));
                    }
                }
            }
        }
        out
    }

    fn cell_deadline(&self) -> Duration {
        Duration::from_secs(if self.quick { 600 } else { 1800 })
    }
}

/// Runs the benchmark and writes the report.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    let plan = Plan::new(opts)?;
    // Ctrl-C or SIGTERM ends the run between (or inside) cells with its
    // cgroups, allocations, processes, split and namespaces removed.
    let _signals = crate::signals::catch();
    crate::deps::ensure(false)?;
    let dir = crate::workspace_root().join("target/seed");
    let env = install::prepare(&dir)?;
    let griffin = crate::build_griffin(true)?;
    let report_dir = crate::workspace_root().join("target/bench-report");
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let plates_clip = if plan.workloads.contains(&Workload::Plates) {
        Some(render_plates(&env, &dir, plan.plate_frames)?)
    } else {
        None
    };

    let sandbox = Sandbox::create()?;
    let state = tempfile_state()?;
    let ctx = Ctx {
        env,
        griffin,
        sandbox,
        state,
        logs,
        plates_clip,
        net: None,
        plan: plan.clone(),
    };
    let mut ctx = ctx;
    if plan.workloads.contains(&Workload::Plates) {
        let net = VethPair::with_addrs("gsd", CAMERA_ADDR, NODE_ADDR);
        // The camera's segments complete their checksums before they leave
        // (in every mode, for a like-for-like comparison): the XDP split's
        // redirect would lose veth's deferred checksum, and the pipeline's
        // TCP connection would never open.
        net.a.tx_checksum_off(&net.a_if);
        ctx.net = Some(net);
    }

    let cells = plan.cells();
    let started = Instant::now();
    let mut samples = Vec::new();
    for (i, &(round, k, w, m)) in cells.iter().enumerate() {
        let label = format!(
            "[{}/{}] round {round}/{} K={k} {} {}",
            i + 1,
            cells.len(),
            plan.rounds,
            w.name(),
            m.name()
        );
        crate::signals::check_interrupted()?;
        eprintln!("seed-claims {label} ...");
        let s = ctx
            .cell(w, m, k, round)
            .with_context(|| format!("seed-claims cell {label}"))?;
        let done = started.elapsed().as_secs_f64();
        let eta = done / (i + 1) as f64 * (cells.len() - i - 1) as f64;
        eprintln!(
            "seed-claims {label}: {:.2} fps, {:.1} s{}; {:.0} s elapsed, ~{:.0} s left",
            s.fps,
            s.seconds,
            stats::percentile(&s.lat_ms, 0.99)
                .map(|p| format!(", p99 {p:.0} ms"))
                .unwrap_or_default(),
            done,
            eta
        );
        samples.push(s);
        // Partial results survive an interrupted run.
        write_samples(&report_dir, &plan, &samples)?;
    }
    let versions = ctx.env.freeze.clone();
    drop(ctx);
    report::write(&report_dir, &plan, &samples, started.elapsed(), &versions)?;
    Ok(())
}

fn write_samples(dir: &Path, plan: &Plan, samples: &[Sample]) -> Result<()> {
    let json = serde_json::json!({
        "quick": plan.quick,
        "rounds": plan.rounds,
        "hogs": plan.hogs,
        "samples": samples.iter().map(Sample::to_json).collect::<Vec<_>>(),
    });
    let path = dir.join("seed-claims.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The camera's and the node's ends of the veth (198.18.0.0/15, the test
/// networks' range).
const CAMERA_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 1);
const NODE_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 2);
const CAMERA_PORT: u16 = 9000;
const FLOOD_PORT: u16 = 7000;

/// The plate clip (rendered once per frame count and script version, kept
/// in `target/seed/data`).
fn render_plates(env: &install::Env, dir: &Path, frames: u32) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let script = env.scripts.join("plates.py");
    let text = std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?;
    let h = Sha256::digest(&text);
    let tag: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let out = data.join(format!("plates-{frames}-{tag}.bin"));
    if out.exists() {
        return Ok(out);
    }
    eprintln!(
        "seed-claims: rendering {frames} FHD plate frames into {}",
        out.display()
    );
    crate::sh(
        install::python(&env.python)
            .arg(&script)
            .arg("render")
            .arg("--clip")
            .arg(&env.clip)
            .arg("--out")
            .arg(&out)
            .arg("--frames")
            .arg(frames.to_string()),
    )?;
    Ok(out)
}

/// A private state directory for `griffin alloc --no-daemon` (mode 0700,
/// owned by root, as Griffin requires).
fn tempfile_state() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("griffin-seed-state")
        .tempdir()
        .context("creating a state directory")
}

/// Everything a cell needs.
struct Ctx {
    env: install::Env,
    griffin: PathBuf,
    sandbox: Sandbox,
    state: tempfile::TempDir,
    logs: PathBuf,
    plates_clip: Option<PathBuf>,
    net: Option<VethPair>,
    plan: Plan,
}

/// An allocation made with `griffin alloc`.
#[derive(Debug)]
struct Alloc {
    id: String,
    /// Its exclusive CPUs (none for a shared-pool one).
    cpus: Vec<u32>,
}

/// The `cpus` of `griffin alloc --json`: a list of CPU ids (or a cpulist
/// string).
fn alloc_cpus(v: &serde_json::Value) -> Option<Vec<u32>> {
    match v {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|c| c.as_u64().and_then(|c| u32::try_from(c).ok()))
            .collect(),
        serde_json::Value::String(s) => {
            Some(griffin_devices::parse::cpulist(s).ok()?.iter().collect())
        }
        _ => None,
    }
}

impl Ctx {
    fn griffin(&self) -> Command {
        let mut c = Command::new(&self.griffin);
        c.env("RUST_LOG", "warn");
        c
    }

    fn state_args(&self, c: &mut Command) {
        c.arg("--no-daemon")
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--cgroup-root")
            .arg(&self.sandbox.root);
    }

    /// `griffin alloc --cpus N --cgroup CGROUP --json`.
    fn alloc(&self, cpus: u32, cgroup: &str) -> Result<Alloc> {
        let mut c = self.griffin();
        c.arg("alloc");
        self.state_args(&mut c);
        c.args(["--cpus", &cpus.to_string(), "--cgroup", cgroup, "--json"]);
        let out = c.output().context("running griffin alloc")?;
        if !out.status.success() {
            bail!(
                "griffin alloc --cpus {cpus} --cgroup {cgroup}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("griffin alloc --json output")?;
        let id = v["id"]
            .as_str()
            .context("griffin alloc --json: no id")?
            .to_owned();
        let cpus = alloc_cpus(&v["cpus"])
            .with_context(|| format!("griffin alloc --json: cpus {}", v["cpus"]))?;
        Ok(Alloc { id, cpus })
    }

    fn release(&self, id: &str) -> Result<()> {
        let mut c = self.griffin();
        c.arg("release");
        self.state_args(&mut c);
        c.arg(id).stdout(Stdio::null());
        crate::sh(&mut c)
    }

    fn log(&self, name: &str) -> Result<(PathBuf, std::fs::File)> {
        let p = self.logs.join(name);
        let f = std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok((p, f))
    }

    /// One cell: neighbours, placement, the workload; everything stopped
    /// and released after, also on failure.
    fn cell(&self, w: Workload, m: Mode, k: u32, round: u32) -> Result<Sample> {
        self.sandbox.reset()?;
        let mut guard = CellGuard {
            ctx: self,
            allocs: Vec::new(),
            children: Vec::new(),
            xdp: None,
        };
        let mut exclusive = None;
        if m != Mode::Default {
            let work = self.alloc(1, "work")?;
            exclusive = Some(work.cpus.clone());
            guard.allocs.push(work.id);
            let shared = self.alloc(0, "shared")?;
            guard.allocs.push(shared.id);
        }
        if k > 0 {
            let cpu_hogs = k.div_ceil(2);
            let cache_hogs = k - cpu_hogs;
            let (_, log) = self.log("stress-ng.log")?;
            let mut args: Vec<OsString> = vec!["stress-ng".into()];
            args.extend(["--cpu".into(), cpu_hogs.to_string().into()]);
            args.extend(["--cpu-method".into(), "matrixprod".into()]);
            if cache_hogs > 0 {
                args.extend(["--cache".into(), cache_hogs.to_string().into()]);
            }
            // Never outlives its cell, even when the harness is killed.
            let secs = self.plan.cell_deadline().as_secs() + 30;
            args.extend(["--timeout".into(), secs.to_string().into()]);
            guard
                .children
                .push(self.spawn_in("shared", &args, None, Stdio::null(), log)?);
            // Let the neighbours get going.
            std::thread::sleep(Duration::from_millis(500));
        }
        let deadline = self.plan.cell_deadline();
        let tag = format!("{}-{}-k{k}-r{round}", w.name(), m.name());
        let out = match w {
            Workload::Encode => self.encode(&tag, deadline)?,
            Workload::Detect => self.detect(&tag, deadline)?,
            Workload::Plates => self.plates(&tag, m, exclusive.as_deref(), &mut guard, deadline)?,
        };
        drop(guard);
        Ok(Sample {
            workload: w,
            mode: m,
            hogs: k,
            round,
            ..out
        })
    }

    /// Starts `args` inside the sandbox's cgroup `cgroup` (it joins before
    /// it executes, so every process and thread it makes is inside),
    /// optionally inside a network namespace.
    fn spawn_in(
        &self,
        cgroup: &str,
        args: &[OsString],
        netns: Option<&griffin_tests::netns::NetNs>,
        stdout: Stdio,
        stderr: std::fs::File,
    ) -> Result<Child> {
        let procs = self.sandbox.root.join(cgroup).join("cgroup.procs");
        let make = move || {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("echo $$ > \"$0\" && exec \"$@\"")
                .arg(&procs)
                .args(args)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONNOUSERSITE", "1")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            c.spawn()
        };
        let child = match netns {
            Some(ns) => ns.run(make),
            None => make(),
        };
        child.with_context(|| format!("starting {:?}", args.first()))
    }

    fn python_args(&self, script: &str) -> Vec<OsString> {
        vec![
            self.env.python.clone().into(),
            self.env.scripts.join(script).into(),
        ]
    }

    fn encode(&self, tag: &str, deadline: Duration) -> Result<Sample> {
        let frames = self.plan.encode_frames;
        let (log_path, log) = self.log(&format!("{tag}.log"))?;
        let args: Vec<OsString> = [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-benchmark",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30,noise=alls=10:allf=t",
            "-frames:v",
            &frames.to_string(),
            "-filter_threads",
            "1",
            "-filter_complex_threads",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "medium",
            "-threads",
            "1",
            "-x264-params",
            "threads=1:lookahead-threads=1",
            "-f",
            "null",
            "-",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let child = self.spawn_in("work", &args, None, Stdio::null(), log)?;
        wait_stdout(child, deadline, "ffmpeg", &log_path)?;
        let text = std::fs::read_to_string(&log_path)
            .with_context(|| format!("reading {}", log_path.display()))?;
        let (utime, stime, rtime) = parse_bench(&text)
            .with_context(|| format!("no `bench: utime=` line in {}", log_path.display()))?;
        Ok(Sample {
            workload: Workload::Encode,
            mode: Mode::Default,
            hogs: 0,
            round: 0,
            frames,
            seconds: rtime,
            fps: f64::from(frames) / rtime,
            lat_ms: Vec::new(),
            accuracy: None,
            extra: serde_json::json!({"utime_s": utime, "stime_s": stime}),
        })
    }

    fn detect(&self, tag: &str, deadline: Duration) -> Result<Sample> {
        let frames = self.plan.detect_frames;
        let (log_path, log) = self.log(&format!("{tag}.log"))?;
        let mut args = self.python_args("hog.py");
        args.extend(["--clip".into(), self.env.clip.clone().into()]);
        args.extend(["--frames".into(), frames.to_string().into()]);
        let child = self.spawn_in("work", &args, None, Stdio::piped(), log)?;
        let out = wait_stdout(child, deadline, "hog.py", &log_path)?;
        parse_result(Workload::Detect, &out)
    }

    fn plates(
        &self,
        tag: &str,
        m: Mode,
        exclusive: Option<&[u32]>,
        guard: &mut CellGuard<'_>,
        deadline: Duration,
    ) -> Result<Sample> {
        let net = self.net.as_ref().context("no camera network")?;
        let clip = self.plates_clip.as_ref().context("no plate clip")?;
        let frames = self.plan.plate_frames;
        let node = format!("{NODE_ADDR}:{CAMERA_PORT}");
        let flood_to = format!("{NODE_ADDR}:{FLOOD_PORT}");
        if m == Mode::GriffinXdp {
            let excl = exclusive
                .and_then(|c| c.first().copied())
                .context("griffin+xdp without an exclusive CPU")?;
            let shared = self
                .sandbox
                .online
                .iter()
                .copied()
                .find(|&c| c != excl)
                .context("no shared CPU")?;
            guard.xdp = Some(self.attach_split(net, excl, shared)?);
        }
        let secs = deadline.as_secs().to_string();
        // The management path: a receiver on the node, a flood from the
        // camera's namespace, both neighbours in the shared pool.
        let mut recv = self.python_args("flood.py");
        recv.extend(
            [
                "recv",
                "--bind",
                &format!("{NODE_ADDR}:{FLOOD_PORT}"),
                "--seconds",
                &secs,
            ]
            .map(OsString::from),
        );
        let (_, log) = self.log(&format!("{tag}-flood-recv.log"))?;
        guard
            .children
            .push(self.spawn_in("shared", &recv, Some(&net.b), Stdio::null(), log)?);
        let mut send = self.python_args("flood.py");
        send.extend(
            [
                "send".to_owned(),
                "--to".to_owned(),
                flood_to,
                "--rate".to_owned(),
                self.plan.flood_pps.to_string(),
                "--seconds".to_owned(),
                secs,
            ]
            .map(OsString::from),
        );
        let (_, log) = self.log(&format!("{tag}-flood-send.log"))?;
        guard
            .children
            .push(self.spawn_in("shared", &send, Some(&net.a), Stdio::null(), log)?);
        // The pipeline on the node, the camera in its namespace.
        let (log_path, log) = self.log(&format!("{tag}.log"))?;
        let mut args = self.python_args("plates.py");
        args.extend(["pipeline".into(), "--listen".into(), node.clone().into()]);
        args.extend(["--frames".into(), frames.to_string().into()]);
        let pipeline = self.spawn_in("work", &args, Some(&net.b), Stdio::piped(), log)?;
        let mut cam = self.python_args("plates.py");
        cam.extend(["camera".into(), "--file".into(), clip.clone().into()]);
        cam.extend(["--connect".into(), node.into()]);
        let (_, log) = self.log(&format!("{tag}-camera.log"))?;
        guard
            .children
            .push(self.spawn_in("shared", &cam, Some(&net.a), Stdio::null(), log)?);
        let out = wait_stdout(pipeline, deadline, "plates.py pipeline", &log_path)?;
        parse_result(Workload::Plates, &out)
    }

    /// `griffin xdp attach` on the node's end of the veth: the camera flow
    /// to the workload's CPU, the management flood to the shared pool.
    fn attach_split(&self, net: &VethPair, excl: u32, shared: u32) -> Result<XdpGuard> {
        let rules = self.state.path().join("split.toml");
        std::fs::write(
            &rules,
            format!(
                "[[rules]]\nname = \"camera\"\npriority = 10\naction = \"cpu\"\ncpu = {excl}\n\
                 protocol = \"tcp\"\ndst_ports = {CAMERA_PORT}\n\n\
                 [[rules]]\nname = \"management\"\npriority = 20\naction = \"cpu\"\ncpu = {shared}\n\
                 protocol = \"udp\"\ndst_ports = {FLOOD_PORT}\n"
            ),
        )
        .with_context(|| format!("writing {}", rules.display()))?;
        let iface = net.b_if.clone();
        let mut c = self.griffin();
        c.args(["xdp", "attach", &iface, "--rules"])
            .arg(&rules)
            .args(["--mode", "native"]);
        let status = net.b.run(move || c.status());
        let status = status.context("running griffin xdp attach")?;
        let guard = XdpGuard {
            griffin: self.griffin.clone(),
            iface,
            ns: net.b.name.clone(),
        };
        if !status.success() {
            bail!("griffin xdp attach {} failed with {status}", guard.iface);
        }
        Ok(guard)
    }
}

/// Stops a cell's processes and releases its allocations, also when the
/// cell fails half-way.
struct CellGuard<'a> {
    ctx: &'a Ctx,
    allocs: Vec<String>,
    children: Vec<Child>,
    xdp: Option<XdpGuard>,
}

impl Drop for CellGuard<'_> {
    fn drop(&mut self) {
        for cg in ["work", "shared"] {
            self.ctx.sandbox.kill_all(cg);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.xdp = None;
        for id in self.allocs.drain(..).rev() {
            if let Err(e) = self.ctx.release(&id) {
                eprintln!("seed-claims: releasing {id}: {e:#}");
            }
        }
    }
}

/// Detaches the split and removes its pins.
struct XdpGuard {
    griffin: PathBuf,
    iface: String,
    ns: String,
}

impl Drop for XdpGuard {
    fn drop(&mut self) {
        let ns = std::fs::File::open(Path::new("/run/netns").join(&self.ns));
        let griffin = self.griffin.clone();
        let iface = self.iface.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(ns) = ns {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on this helper thread only, with a
                // descriptor it owns; no memory is passed.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                    let _ = Command::new(griffin)
                        .args(["xdp", "detach", &iface])
                        .stdout(Stdio::null())
                        .status();
                }
            }
        })
        .join();
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/griffin").join(&self.iface));
        let _ = std::fs::remove_dir("/sys/fs/bpf/griffin");
        let _ = std::fs::remove_file(format!("/run/griffin/xdp/{}.json", self.iface));
        let _ = std::fs::remove_dir("/run/griffin/xdp");
        let _ = std::fs::remove_dir("/run/griffin");
    }
}

/// Waits for `child` (at most `deadline`, then kills it) and returns its
/// standard output; a failure names its log.
fn wait_stdout(mut child: Child, deadline: Duration, what: &str, log: &Path) -> Result<String> {
    let reader = child.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if crate::signals::check_interrupted().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: interrupted (SIGINT/SIGTERM)");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within {} s (log: {})",
                deadline.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    if !status.success() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        bail!(
            "{what} failed with {status} (log {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(out)
}

/// ffmpeg `-benchmark`'s last `bench: utime=Us stime=Ss rtime=Rs` line.
pub(crate) fn parse_bench(text: &str) -> Option<(f64, f64, f64)> {
    let line = text.lines().rev().find(|l| l.contains("bench: utime="))?;
    let field = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest.find('s')?;
        rest[..end].parse().ok()
    };
    Some((field("utime=")?, field("stime=")?, field("rtime=")?))
}

/// A Python workload's result line.
pub(crate) fn parse_result(w: Workload, out: &str) -> Result<Sample> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{}: no result line in {out:?}", w.name()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("{}: result line", w.name()))?;
    let num = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("{}: no {k}", w.name()))
    };
    let frames = num("frames")? as u32;
    let seconds = num("seconds")?;
    let fps = num("fps")?;
    let lat_ms: Vec<f64> = v["latencies_ms"]
        .as_array()
        .with_context(|| format!("{}: no latencies_ms", w.name()))?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    if lat_ms.len() != frames as usize {
        bail!(
            "{}: {} latencies for {frames} frames",
            w.name(),
            lat_ms.len()
        );
    }
    let accuracy = v.get("accuracy").cloned();
    if let Some(o) = v.as_object_mut() {
        for k in ["frames", "seconds", "fps", "latencies_ms", "accuracy"] {
            o.remove(k);
        }
    }
    Ok(Sample {
        workload: w,
        mode: Mode::Default,
        hogs: 0,
        round: 0,
        frames,
        seconds,
        fps,
        lat_ms,
        accuracy,
        extra: v,
    })
}

/// The benchmark's own cpuset cgroup root (`griffin-seed-<pid>` below the
/// cpuset hierarchy), handed to Griffin as `--cgroup-root`, with the
/// workload's cgroup `work` and the neighbours' `shared` below it. Removed
/// on drop (its processes killed first).
struct Sandbox {
    hierarchy: PathBuf,
    root: PathBuf,
    v1: bool,
    all: String,
    online: Vec<u32>,
}

impl Sandbox {
    fn create() -> Result<Self> {
        let v1 = Path::new("/sys/fs/cgroup/cpuset");
        let (hierarchy, is_v1) = if v1.join("cpuset.cpus").exists() {
            (v1.to_path_buf(), true)
        } else {
            let v2 = Path::new("/sys/fs/cgroup");
            let controllers =
                std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "cpuset") {
                bail!("no cpuset cgroup hierarchy (v1 /sys/fs/cgroup/cpuset or v2 with cpuset)");
            }
            write(&v2.join("cgroup.subtree_control"), "+cpuset")?;
            (v2.to_path_buf(), false)
        };
        let root = hierarchy.join(format!("griffin-seed-{}", std::process::id()));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating {} (needs root)", root.display()))?;
        let all = read(&hierarchy.join(if is_v1 {
            "cpuset.cpus"
        } else {
            "cpuset.cpus.effective"
        }))?;
        let online = griffin_devices::parse::cpulist(&all)
            .with_context(|| format!("the hierarchy's CPUs {all:?}"))?
            .iter()
            .collect();
        let s = Self {
            hierarchy,
            root,
            v1: is_v1,
            all,
            online,
        };
        if s.v1 {
            let mems = read(&s.hierarchy.join("cpuset.mems"))?;
            write(&s.root.join("cpuset.cpus"), &s.all)?;
            write(&s.root.join("cpuset.mems"), &mems)?;
            for c in ["work", "shared"] {
                let d = s.root.join(c);
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
                write(&d.join("cpuset.mems"), &mems)?;
            }
        } else {
            write(&s.root.join("cgroup.subtree_control"), "+cpuset")?;
            for c in ["work", "shared"] {
                let d = s.root.join(c);
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            }
        }
        s.reset()?;
        Ok(s)
    }

    /// Both cgroups back on every CPU (the default mode's node).
    fn reset(&self) -> Result<()> {
        for c in ["work", "shared"] {
            let f = self.root.join(c).join("cpuset.cpus");
            write(&f, if self.v1 { &self.all } else { "" })?;
        }
        Ok(())
    }

    /// Kills every process in the cgroup, until it is empty (5 s at most).
    fn kill_all(&self, cgroup: &str) {
        let procs = self.root.join(cgroup).join("cgroup.procs");
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<i32> = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() || Instant::now() > end {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid read from our own cgroup; no
                // memory is passed.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for c in ["work", "shared"] {
            self.kill_all(c);
        }
        remove_tree(&self.root, &self.hierarchy.join("cgroup.procs"));
    }
}

fn read(p: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_owned())
}

fn write(p: &Path, v: &str) -> Result<()> {
    std::fs::write(p, v).with_context(|| format!("writing {v:?} to {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_cpus_read_lists_and_cpulists() {
        assert_eq!(alloc_cpus(&serde_json::json!([0])), Some(vec![0]));
        assert_eq!(alloc_cpus(&serde_json::json!([])), Some(vec![]));
        assert_eq!(alloc_cpus(&serde_json::json!("1,3-4")), Some(vec![1, 3, 4]));
        assert_eq!(alloc_cpus(&serde_json::json!([-1])), None);
        assert_eq!(alloc_cpus(&serde_json::json!(null)), None);
    }

    #[test]
    fn ffmpeg_bench_line_is_parsed() {
        let text = "frame=  30 fps=...\nbench: utime=18.123s stime=0.456s rtime=20.010s\nbench: maxrss=420000kB\n";
        assert_eq!(parse_bench(text), Some((18.123, 0.456, 20.01)));
        assert_eq!(parse_bench("no bench here"), None);
    }

    #[test]
    fn result_line_is_parsed_and_checked() {
        let out = "noise\n{\"frames\": 2, \"seconds\": 0.5, \"fps\": 4.0, \"latencies_ms\": [200.0, 300.0], \"detections_per_frame\": 4.5}\n";
        let s = parse_result(Workload::Detect, out).unwrap();
        assert_eq!(
            (s.frames, s.fps, s.lat_ms.clone()),
            (2, 4.0, vec![200.0, 300.0])
        );
        assert_eq!(s.extra["detections_per_frame"], 4.5);
        assert!(s.extra.get("latencies_ms").is_none());
        let short = "{\"frames\": 3, \"seconds\": 0.5, \"fps\": 6.0, \"latencies_ms\": [1.0]}";
        assert!(parse_result(Workload::Detect, short).is_err());
        assert!(parse_result(Workload::Detect, "Traceback ...").is_err());
    }

    /// The tracker's and the accuracy computation's own tests (pure Python,
    /// `xtask/seed/test_*.py`).
    #[test]
    fn python_tracker_and_accuracy_tests_pass() {
        let dir = crate::workspace_root().join("xtask/seed");
        let out = Command::new("python3")
            .args(["-m", "unittest", "discover", "-s"])
            .arg(&dir)
            .args(["-p", "test_*.py"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("running python3");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let ran: u32 = err
            .lines()
            .find_map(|l| {
                l.strip_prefix("Ran ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("unittest's `Ran N tests` line");
        assert!(ran >= 10, "only {ran} Python tests ran:\n{err}");
    }

    #[test]
    fn cells_interleave_rounds_and_give_plates_three_modes() {
        let plan = Plan::new(&Opts {
            quick: false,
            rounds: None,
            hogs: None,
            only: None,
        })
        .unwrap();
        let cells = plan.cells();
        assert_eq!(cells.len(), 3 * 4 * (2 + 2 + 3));
        // Round 1 of every cell comes before any round 2.
        let first_r2 = cells.iter().position(|c| c.0 == 2).unwrap();
        assert!(cells[..first_r2].iter().all(|c| c.0 == 1));
        assert_eq!(first_r2, 4 * 7);
        let q = Plan::new(&Opts {
            quick: true,
            rounds: None,
            hogs: None,
            only: Some("plates".into()),
        })
        .unwrap();
        assert_eq!(q.cells().len(), 3);
        assert!(Plan::new(&Opts {
            quick: true,
            rounds: None,
            hogs: None,
            only: Some("yolo".into()),
        })
        .is_err());
    }
}
