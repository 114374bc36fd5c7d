//! `cargo xtask e2e`: Griffin as a DaemonSet in a real single-node
//! Kubernetes.
//!
//! The run: the Kubernetes binaries from the cache ([`crate::kube`]), the
//! images of `cargo xtask image` ([`crate::image`]); the tests that need a
//! real API server (`#[ignore]`d ones using `griffin_tests::apiserver`,
//! [`APISERVER_TESTS`]) run with `GRIFFIN_KUBE_BIN` set to the cache, each
//! reported like a scenario; then, holding the
//! machine-wide lock `/run/lock/griffin-e2e.lock`, whatever a previous run
//! that was killed left is torn down from its record, the cluster is
//! started ([`cluster`]), the images imported, Griffin deployed from
//! `deploy/` with `kubectl apply`, the scenarios run ([`scenarios`]), and
//! everything torn down ([`host`]): always, also after a failure, a panic
//! or Ctrl-C/SIGTERM (a flag the waits check, a drop guard on the cluster).
//! Teardown is verified: anything left (process, mount, cgroup, link,
//! path) fails the run. The report goes to `target/e2e/report.md`, the
//! component logs (and the pods' logs) to `target/e2e/logs/`.

mod cluster;
mod containerd17;
mod host;
mod scenarios;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{image, kube};

/// Options of `cargo xtask e2e`.
#[derive(Debug)]
pub(crate) struct Opts {
    /// Only build (or verify) the Kubernetes binaries and the images.
    pub prepare: bool,
    /// Only the scenarios whose name contains this.
    pub filter: Option<String>,
    /// Keep the cluster up after the scenarios until Ctrl-C.
    pub keep: bool,
    /// containerd 1.7 (Debian trixie's, NRI enabled) instead of
    /// bookworm's 1.6.
    pub containerd17: bool,
}

pub(crate) use crate::signals::check_interrupted;

fn e2e_dir() -> PathBuf {
    crate::workspace_root().join("target/e2e")
}

/// Measured durations, for the report.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    entries: Vec<(String, Duration)>,
    /// Where a Guaranteed pod landed, per manager: (manager, placement).
    placements: Vec<(String, String)>,
}

impl Timings {
    fn add(&mut self, what: &str, d: Duration) {
        eprintln!("e2e: {what}: {:.1} s", d.as_secs_f64());
        self.entries.push((what.to_owned(), d));
    }

    /// Records where `manager` placed a Guaranteed pod (the report's side
    /// by side table).
    fn placement(&mut self, manager: &str, placement: String) {
        eprintln!("e2e: placement by {manager}: {placement}");
        self.placements.push((manager.to_owned(), placement));
    }
}

/// The test targets run against a real kube-apiserver before the cluster
/// starts: package and integration test name.
pub(crate) const APISERVER_TESTS: &[(&str, &str)] = &[
    ("griffin-tests", "apiserver"),
    ("griffin-scheduler-glue", "nrt_apiserver"),
];

/// Runs the [`APISERVER_TESTS`] whose name contains `filter` (their
/// ignored tests, one at a time: each starts its own etcd and
/// kube-apiserver) with `GRIFFIN_KUBE_BIN` set.
fn apiserver_tests(bins: &kube::Bins, filter: Option<&str>) -> Vec<scenarios::Outcome> {
    let bin_dir = bins
        .path("kube-apiserver")
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    APISERVER_TESTS
        .iter()
        .filter(|(_, test)| filter.is_none_or(|f| test.contains(f)))
        .map(|&(package, test)| {
            let t = Instant::now();
            let mut cmd = crate::cargo();
            cmd.args(["test", "-p", package, "--test", test, "--", "--ignored"])
                .args(["--test-threads=1", "--nocapture"])
                .env("GRIFFIN_KUBE_BIN", &bin_dir);
            let outcome = crate::sh(&mut cmd)
                .map(|()| format!("cargo test -p {package} --test {test} -- --ignored: passed"));
            scenarios::Outcome {
                name: test,
                outcome,
                took: t.elapsed(),
            }
        })
        .collect()
}

/// Runs the e2e.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    let _signals = crate::signals::catch();
    let mut timings = Timings::default();
    let bins = kube::ensure()?;
    match bins.obtained {
        kube::Obtained::Built(d) => timings.add("Kubernetes binaries built (cold)", d),
        kube::Obtained::Reused(d) => timings.add("Kubernetes binaries reused (cache verified)", d),
    }
    let t = Instant::now();
    let images = image::run()?;
    timings.add("release build and images", t.elapsed());
    if opts.prepare {
        return Ok(());
    }
    // They do not involve a container runtime: the containerd 1.6 pass
    // runs them.
    let api_results = if opts.containerd17 {
        Vec::new()
    } else {
        let t = Instant::now();
        let r = apiserver_tests(&bins, opts.filter.as_deref());
        timings.add("tests against a real kube-apiserver", t.elapsed());
        r
    };
    let griffin = images
        .iter()
        .find(|i| i.name.contains("/griffin:"))
        .context("no griffin image")?
        .clone();
    let busybox = images
        .iter()
        .find(|i| i.name.contains("/busybox:"))
        .context("no busybox image")?
        .clone();
    let _lock = crate::cache::lock(
        std::path::Path::new("/run/lock/griffin-e2e.lock"),
        "cargo xtask e2e on this machine",
    )?;
    if let Some(old) = host::Record::load()? {
        eprintln!("e2e: a previous run left its record; tearing down what it started");
        for d in host::teardown(&old) {
            eprintln!("e2e: previous run: {d}");
        }
        let left = host::leftovers(&old);
        if !left.is_empty() {
            bail!(
                "a previous run's leftovers could not be removed: {}",
                left.join("; ")
            );
        }
    }
    let dir = e2e_dir();
    let run_dir = dir.join("run");
    let logs = dir.join("logs");
    let containerd_bin = if opts.containerd17 {
        Some(containerd17::ensure()?)
    } else {
        None
    };
    let mut cluster = cluster::Cluster::prepare(&run_dir, &logs, &bins)?;
    cluster.containerd_bin = containerd_bin;
    let outcome = run_cluster(&mut cluster, &bins, opts, &griffin, &busybox, &mut timings);
    // Pod logs are under the kubelet's root: keep them before teardown.
    copy_pod_logs(&logs);
    let t = Instant::now();
    let (did, left) = cluster.teardown();
    timings.add("teardown", t.elapsed());
    for d in &did {
        eprintln!("e2e teardown: {d}");
    }
    let (mut results, error) = match outcome {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    results.splice(0..0, api_results);
    let runtime = if opts.containerd17 {
        "containerd 1.7 (Debian trixie's package, NRI enabled) and runc from Debian"
    } else {
        "containerd and runc from Debian"
    };
    let report = report(
        runtime,
        &results,
        error.as_ref(),
        &timings,
        &left,
        &griffin,
        &busybox,
    );
    fs::write(dir.join("report.md"), &report)?;
    eprintln!("{report}");
    eprintln!("e2e: report in {}", dir.join("report.md").display());
    if let Some(e) = error {
        return Err(e);
    }
    if !left.is_empty() {
        bail!("teardown left: {}", left.join("; "));
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.name)
        .collect();
    if !failed.is_empty() {
        bail!("e2e scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_cluster(
    c: &mut cluster::Cluster,
    bins: &kube::Bins,
    opts: &Opts,
    griffin: &image::Built,
    busybox: &image::Built,
    timings: &mut Timings,
) -> Result<Vec<scenarios::Outcome>> {
    let t = Instant::now();
    c.start(bins, &[griffin, busybox], &busybox.name)?;
    timings.add(
        "cluster up (etcd start to node Ready, images imported)",
        t.elapsed(),
    );
    let mut ctx = scenarios::Ctx {
        c,
        griffin: griffin.clone(),
        busybox: busybox.clone(),
        griffin_cli: crate::target_dir().join("release/griffin"),
        timings,
    };
    let out = scenarios::run_all(&mut ctx, opts.filter.as_deref())?;
    if opts.keep {
        eprintln!(
            "e2e: the cluster stays up (--keep): kubectl --kubeconfig {} …; Ctrl-C tears it down",
            c.kubeconfig.display()
        );
        while check_interrupted().is_ok() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    Ok(out)
}

/// Copies the pods' logs (the kubelet's /var/log/pods) into `logs/pods`.
fn copy_pod_logs(logs: &std::path::Path) {
    let src = std::path::Path::new("/var/log/pods");
    let Ok(rd) = fs::read_dir(src) else { return };
    for pod in rd.flatten() {
        let Ok(containers) = fs::read_dir(pod.path()) else {
            continue;
        };
        for c in containers.flatten() {
            let Ok(files) = fs::read_dir(c.path()) else {
                continue;
            };
            for f in files.flatten() {
                let to = logs.join("pods").join(format!(
                    "{}_{}_{}",
                    pod.file_name().to_string_lossy(),
                    c.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
                let _ = fs::create_dir_all(logs.join("pods"));
                let _ = fs::copy(f.path(), to);
            }
        }
    }
}

fn report(
    runtime: &str,
    results: &[scenarios::Outcome],
    error: Option<&anyhow::Error>,
    timings: &Timings,
    left: &[String],
    griffin: &image::Built,
    busybox: &image::Built,
) -> String {
    let mut r = String::from("# cargo xtask e2e\n\n");
    let _ = writeln!(
        r,
        "Kubernetes {} (Debian's source package, Debian's Go), {runtime}, on this machine ({} CPUs).\n",
        kube::VERSION,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        r,
        "Images: `{}` {}; `{}` {}.\n",
        griffin.name, griffin.digest, busybox.name, busybox.digest
    );
    if let Some(e) = error {
        let _ = writeln!(r, "**The run failed before or between scenarios:** {e:#}\n");
    }
    r.push_str("## Scenarios\n\n| scenario | result | time | detail |\n|---|---|---|---|\n");
    for o in results {
        let (res, detail) = match &o.outcome {
            Ok(d) => ("pass", d.clone()),
            Err(e) => ("**FAIL**", format!("{e:#}")),
        };
        let _ = writeln!(
            r,
            "| {} | {res} | {:.1} s | {} |",
            o.name,
            o.took.as_secs_f64(),
            detail.replace('\n', " ").replace('|', "\\|")
        );
    }
    if !timings.placements.is_empty() {
        r.push_str("\n## A Guaranteed pod (cpu 1, memory 32Mi) placed by each manager\n\n| manager | placement |\n|---|---|\n");
        for (who, what) in &timings.placements {
            let _ = writeln!(r, "| {who} | {what} |");
        }
    }
    r.push_str("\n## Timings\n\n");
    for (what, d) in &timings.entries {
        let _ = writeln!(r, "- {what}: {:.1} s", d.as_secs_f64());
    }
    r.push_str("\n## Teardown\n\n");
    if left.is_empty() {
        r.push_str("Nothing left behind (processes, container processes, shims, mounts, cgroups, the bridge, created paths, sysctls checked).\n");
    } else {
        let _ = writeln!(r, "**Left behind:** {}", left.join("; "));
    }
    r
}
