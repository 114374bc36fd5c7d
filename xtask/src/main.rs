//! `cargo xtask`: the project's one entry point for setting up, running,
//! testing and benchmarking Griffin.

mod cache;
mod deps;
mod e2e;
mod fuzz;
mod image;
mod kube;
mod seed;
mod signals;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// Benchmarks other than the default set.
#[derive(Debug, Subcommand)]
enum BenchWhich {
    /// The seed's claims (video encoding, object detection, licence-plate
    /// pipeline) with real programs against noisy neighbours, default vs
    /// Griffin; report and SVG plots in target/bench-report/seed-claims.*.
    SeedClaims {
        /// A short smoke run (few frames, one round, one K), labelled as
        /// such in the report: proves the harness, measures nothing.
        #[arg(long)]
        quick: bool,
        /// Rounds per cell (default 3, 1 with --quick).
        #[arg(long)]
        rounds: Option<u32>,
        /// Noisy-neighbour counts to sweep (default 1,2,3,5; 2 with --quick).
        #[arg(long, value_delimiter = ',')]
        hogs: Option<Vec<u32>>,
        /// Only workloads whose name contains this (encode, detect, plates).
        #[arg(long)]
        only: Option<String>,
    },
}

/// Griffin's developer tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Check the Debian packages the build and tests need, and install the
    /// missing ones (as root on Debian/Ubuntu) or print the exact command.
    Deps {
        /// Only check; exit non-zero if something is missing.
        #[arg(long)]
        check: bool,
    },
    /// The main job: run the Griffin daemon in the foreground (`griffin
    /// daemon`, release build) with the embedded default configuration,
    /// until Ctrl-C or SIGTERM.
    Run {
        /// Extra arguments passed to `griffin daemon`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Everything that can run here: fmt, clippy, unit and privileged tests,
    /// the Kubernetes e2e, the guest test bed.
    Test,
    /// Benchmarks, compared against a baseline in the same run; the report
    /// goes to target/bench-report/. `cargo xtask bench seed-claims` runs
    /// the seed's headline claims with real workloads instead (minutes).
    Bench {
        #[command(subcommand)]
        which: Option<BenchWhich>,
    },
    /// The long fuzzing campaign: every input surface's fuzz tests with many
    /// more inputs than CI runs (release build); the report goes to
    /// target/fuzz-report/fuzz.md.
    Fuzz {
        /// Inputs per fuzz test.
        #[arg(long, default_value_t = 1_000_000)]
        cases: u32,
        /// Only surfaces whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// Boot a QEMU guest with a real kernel and the hardware shapes Griffin
    /// manages (NUMA, PCIe switches, SR-IOV, RDMA, cgroup v2) and run the
    /// guest tests inside it. Tests needing hardware the topology lacks are
    /// reported as filtered out. One run at a time per checkout (a second
    /// waits for the lock on target/vm). Exit status is the guest's.
    VmTest {
        /// Guest topology (edge2s, small).
        #[arg(long, default_value = "edge2s")]
        topology: String,
        /// Only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Keep the guest's root directory under target/vm for inspection.
        #[arg(long)]
        keep: bool,
        /// Save the guest's sysfs capture as tests/fixtures/TOPOLOGY-qemu.
        #[arg(long)]
        update_fixture: bool,
    },
    /// OCI image archives (no base image): Griffin's (release binary and
    /// exactly its shared libraries) and the e2e's busybox image; prints
    /// name, archive path and image digest of each (target/image/).
    Image,
    /// Griffin as a DaemonSet in a real single-node Kubernetes (v1.20.2
    /// built from Debian's source package, cached in /var/cache/griffin):
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler with
    /// Griffin's extender, kubelet on containerd; deploys deploy/ and the
    /// image of `cargo xtask image`, runs the scenarios, always tears
    /// everything down. Report in target/e2e/report.md, logs in target/e2e/.
    E2e {
        /// Only build (or verify) the Kubernetes binaries and the images.
        #[arg(long)]
        prepare: bool,
        /// Only the scenarios whose name contains this (and those they
        /// need).
        #[arg(long)]
        filter: Option<String>,
        /// containerd 1.7 with NRI enabled (Debian trixie's package, fetched
        /// and cached) instead of bookworm's containerd 1.6.
        #[arg(long = "containerd-1.7")]
        containerd17: bool,
        /// Keep the cluster up after the scenarios, until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Snapshot the sysfs/procfs subset discovery reads into OUT/sys and
    /// OUT/proc, for replay with `griffin topo --root OUT`.
    CaptureSysfs {
        /// Output directory (created; must be empty if it exists).
        out: PathBuf,
        /// Capture below this root instead of `/`.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match cli.task {
        Task::Deps { check } => deps::ensure(check),
        Task::Run { args } => run(&args),
        Task::Test => test(),
        Task::Bench { which: None } => bench(),
        Task::Bench {
            which:
                Some(BenchWhich::SeedClaims {
                    quick,
                    rounds,
                    hogs,
                    only,
                }),
        } => seed::run(&seed::Opts {
            quick,
            rounds,
            hogs,
            only,
        }),
        Task::Fuzz { cases, only } => fuzz::run(cases, only.as_deref()),
        Task::VmTest {
            topology,
            filter,
            keep,
            update_fixture,
        } => {
            deps::ensure(false)?;
            vm::run(&vm::Opts {
                topology,
                filter,
                keep,
                update_fixture,
            })
        }
        Task::Image => image::run().map(drop),
        Task::E2e {
            prepare,
            filter,
            containerd17,
            keep,
        } => {
            deps::ensure(false)?;
            e2e::run(&e2e::Opts {
                prepare,
                filter,
                keep,
                containerd17,
            })
        }
        Task::CaptureSysfs { out, root } => {
            let stats = griffin_devices::capture::capture(&root, &out)?;
            eprintln!(
                "captured {} files and {} links from {} into {} ({} unreadable attributes skipped)",
                stats.files,
                stats.links,
                root.display(),
                out.display(),
                stats.skipped
            );
            Ok(())
        }
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command, echoing it, failing with its exit status.
pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the `griffin` binary (release or debug) and returns its path.
pub(crate) fn build_griffin(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "-p", "griffin-cli", "--bin", "griffin"]);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("griffin"))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn run(args: &[String]) -> Result<()> {
    deps::ensure(false)?;
    let bin = build_griffin(true)?;
    // The daemon in the foreground with the embedded default config; it
    // prints where it serves and stops on Ctrl-C / SIGTERM.
    let mut cmd = Command::new(bin);
    cmd.args(["--log", "info", "daemon"]).args(args);
    sh(&mut cmd)
}

fn test() -> Result<()> {
    let started = Instant::now();
    deps::ensure(false)?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The guest tests are not a default target (`test = false`): linted
    // explicitly.
    sh(cargo().args([
        "clippy",
        "--quiet",
        "-p",
        "griffin-tests",
        "--test",
        "guest",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Privileged tests run here too: CI runs as root on a real kernel.
    sh(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    let host = started.elapsed();
    // Griffin deployed from deploy/ and its image into a real single-node
    // Kubernetes (the first run on a machine builds Kubernetes: minutes).
    e2e::run(&e2e::Opts {
        prepare: false,
        filter: None,
        keep: false,
        containerd17: false,
    })?;
    // The same scenarios on containerd 1.7 with NRI enabled.
    e2e::run(&e2e::Opts {
        prepare: false,
        filter: None,
        keep: false,
        containerd17: true,
    })?;
    let e2e = started.elapsed() - host;
    // The seed-claims harness as a smoke run, so it cannot rot: it must
    // complete and write its report; no speed is asserted.
    seed::run(&seed::Opts {
        quick: true,
        rounds: None,
        hogs: None,
        only: None,
    })?;
    let seed = started.elapsed() - host - e2e;
    // Then the privileged tests on a real kernel with NUMA, switches,
    // SR-IOV and cgroup v2: the guest test bed.
    vm::run(&vm::Opts {
        topology: "edge2s".into(),
        filter: None,
        keep: false,
        update_fixture: false,
    })?;
    eprintln!(
        "xtask test: all passed in {:.0?} (host {:.0?}, e2e {:.0?}, seed-claims --quick {:.0?}, guest test bed {:.0?})",
        started.elapsed(),
        host,
        e2e,
        seed,
        started.elapsed() - host - e2e - seed
    );
    Ok(())
}

fn bench() -> Result<()> {
    deps::ensure(false)?;
    let report = workspace_root().join("target/bench-report");
    std::fs::create_dir_all(&report).with_context(|| format!("creating {}", report.display()))?;
    let griffin = build_griffin(true)?;
    sh(cargo()
        .args(["bench", "-p", "griffin-benches"])
        .env("GRIFFIN_BIN", griffin)
        .env("GRIFFIN_BENCH_REPORT", &report))?;
    eprintln!("bench reports in {}", report.display());
    Ok(())
}
