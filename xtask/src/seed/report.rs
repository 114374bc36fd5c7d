//! The report of `cargo xtask bench seed-claims`:
//! `target/bench-report/seed-claims.md` (the claims table and notes),
//! `seed-claims.json` (every sample) and SVG plots (speed-up against the
//! number of noisy neighbours with the seed's ratio as a reference line;
//! per-frame latency CDFs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::stats::{self, Spread};
use super::{Mode, Plan, Sample, Workload};

/// A claim of the seed, as published.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub workload: Workload,
    pub title: &'static str,
    pub before: f64,
    pub after: f64,
    pub unit: &'static str,
    /// Higher is better (fps) or lower is better (seconds, minutes).
    pub higher_better: bool,
    /// The seed's mode "after" corresponds to here.
    pub after_mode: Mode,
}

impl Claim {
    /// The seed's speed-up.
    pub(crate) fn ratio(&self) -> f64 {
        if self.higher_better {
            self.after / self.before
        } else {
            self.before / self.after
        }
    }
}

/// The seed's three headline claims.
pub(crate) const CLAIMS: [Claim; 3] = [
    Claim {
        workload: Workload::Encode,
        title: "Video encoding, pinning (seed: H.264 encode)",
        before: 2252.0,
        after: 1290.0,
        unit: "s",
        higher_better: false,
        after_mode: Mode::Griffin,
    },
    Claim {
        workload: Workload::Detect,
        title: "Object detection, pinning (seed: YOLOv3 on an HD clip; here HOG people detector, 720p)",
        before: 20.58,
        after: 7.18,
        unit: "min",
        higher_better: false,
        after_mode: Mode::Griffin,
    },
    Claim {
        workload: Workload::Plates,
        title: "Licence-plate service, whole stack (seed: SSD-MobileNet v2 + LeNet + DeepSORT, FHD; here Haar + PP-OCR rec + SORT, FHD over a veth)",
        before: 6.061,
        after: 11.168,
        unit: "fps",
        higher_better: true,
        after_mode: Mode::GriffinXdp,
    },
];

/// Per (workload, K, mode): the samples of every round.
type Cells<'a> = BTreeMap<(Workload, u32, Mode), Vec<&'a Sample>>;

fn cells(samples: &[Sample]) -> Cells<'_> {
    let mut c: Cells<'_> = BTreeMap::new();
    for s in samples {
        c.entry((s.workload, s.hogs, s.mode)).or_default().push(s);
    }
    c
}

/// The speed-ups of `mode` over default at `k`, one per round both ran in
/// (throughput ratio: fps of the mode over fps of default).
pub(crate) fn speedups(samples: &[Sample], w: Workload, k: u32, mode: Mode) -> Vec<f64> {
    let by_round = |m: Mode| -> BTreeMap<u32, f64> {
        samples
            .iter()
            .filter(|s| s.workload == w && s.hogs == k && s.mode == m)
            .map(|s| (s.round, s.fps))
            .collect()
    };
    let base = by_round(Mode::Default);
    by_round(mode)
        .into_iter()
        .filter_map(|(r, fps)| base.get(&r).filter(|b| **b > 0.0).map(|b| fps / b))
        .collect()
}

fn fmt_spread(s: Option<Spread>, digits: usize) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.n == 1 => format!("{:.*}", digits, s.median),
        Some(s) => format!(
            "{:.*} ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        ),
    }
}

fn field(cell: Option<&Vec<&Sample>>, f: impl Fn(&Sample) -> Option<f64>) -> Option<Spread> {
    let v: Vec<f64> = cell?.iter().filter_map(|s| f(s)).collect();
    stats::spread(&v)
}

fn p99(s: &Sample) -> Option<f64> {
    stats::percentile(&s.lat_ms, 0.99)
}

fn accuracy(s: &Sample, key: &str) -> Option<f64> {
    s.accuracy.as_ref()?.get(key)?.as_f64()
}

/// Writes the Markdown report, the plots, and prints where they are.
pub(crate) fn write(
    dir: &Path,
    plan: &Plan,
    samples: &[Sample],
    took: Duration,
    versions: &str,
) -> Result<()> {
    let c = cells(samples);
    let mut md = String::new();
    let quick = if plan.quick {
        "\n> **QUICK SMOKE RUN** (`--quick`): a few frames, one round, one K. It shows the harness works; \
         its numbers are noise, **not** the claims' result. Run `cargo xtask bench seed-claims` on a quiet machine.\n"
    } else {
        ""
    };
    let _ = writeln!(
        md,
        "# The seed's headline claims, reproduced with real workloads\n{quick}\n\
         Node: {} CPUs, no GPU, no SR-IOV NIC. {} round(s), interleaved; noisy neighbours K = {:?} \
         (`stress-ng`: ⌈K/2⌉ `--cpu` matrixprod + ⌊K/2⌋ `--cache`); frames per run: encode {}, detect {}, plates {}. \
         Took {:.0} s. Medians with min–max over rounds; speed-ups are per-round ratios of throughput \
         (mode over default in the same round and K).\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.rounds,
        plan.hogs,
        plan.encode_frames,
        plan.detect_frames,
        plan.plate_frames,
        took.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| claim | K | seed before | seed after | seed ratio | ours before (default) | ours after | ours ratio | p99 frame latency before → after (ms) | accuracy (after) | rounds |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for claim in CLAIMS {
        let w = claim.workload;
        if !plan.workloads.contains(&w) {
            continue;
        }
        for &k in &plan.hogs {
            let before = c.get(&(w, k, Mode::Default));
            let after = c.get(&(w, k, claim.after_mode));
            let (b, a, digits, unit) = if claim.higher_better {
                (
                    field(before, |s| Some(s.fps)),
                    field(after, |s| Some(s.fps)),
                    2,
                    "fps",
                )
            } else {
                (
                    field(before, |s| Some(s.seconds)),
                    field(after, |s| Some(s.seconds)),
                    1,
                    "s",
                )
            };
            let ratio = stats::spread(&speedups(samples, w, k, claim.after_mode));
            let lat = if w == Workload::Encode {
                "n/a (batch job)".to_owned()
            } else {
                format!(
                    "{} → {}",
                    fmt_spread(field(before, p99), 0),
                    fmt_spread(field(after, p99), 0)
                )
            };
            let acc = if w == Workload::Plates {
                format!(
                    "read {} / detected {}",
                    fmt_spread(field(after, |s| accuracy(s, "read_accuracy")), 2),
                    fmt_spread(field(after, |s| accuracy(s, "recall")), 2)
                )
            } else if w == Workload::Detect {
                format!(
                    "{} people/frame",
                    fmt_spread(
                        field(after, |s| s.extra.get("detections_per_frame")?.as_f64()),
                        1
                    )
                )
            } else {
                "n/a".to_owned()
            };
            let rounds = after.map_or(0, Vec::len).min(before.map_or(0, Vec::len));
            let _ = writeln!(
                md,
                "| {} ({}) | {k} | {} {u} | {} {u} | {:.2}× | {} {unit} | {} {unit} | {}× | {lat} | {acc} | {rounds} |",
                claim.title,
                claim.after_mode.name(),
                claim.before,
                claim.after,
                claim.ratio(),
                fmt_spread(b, digits),
                fmt_spread(a, digits),
                fmt_spread(ratio, 2),
                u = claim.unit,
            );
        }
    }
    // Every cell, for the record.
    let _ = writeln!(
        md,
        "\n## Every cell\n\n| workload | K | mode | fps | seconds | p50 ms | p99 ms | rounds |\n|---|---|---|---|---|---|---|---|"
    );
    for ((w, k, m), v) in &c {
        let _ = writeln!(
            md,
            "| {} | {k} | {} | {} | {} | {} | {} | {} |",
            w.name(),
            m.name(),
            fmt_spread(field(Some(v), |s| Some(s.fps)), 2),
            fmt_spread(field(Some(v), |s| Some(s.seconds)), 1),
            fmt_spread(field(Some(v), |s| stats::percentile(&s.lat_ms, 0.5)), 0),
            fmt_spread(field(Some(v), p99), 0),
            v.len()
        );
    }
    if let Some(m) = c
        .iter()
        .filter(|((w, _, _), _)| *w == Workload::Plates)
        .flat_map(|(_, v)| v.iter())
        .find_map(|s| s.accuracy.clone())
    {
        let _ = writeln!(
            md,
            "\nPlate accuracy summary of one run (for the fields): `{m}`"
        );
    }
    md.push_str(&notes(plan.cpus));
    let plots = plot_all(dir, plan, samples)?;
    let _ = writeln!(md, "\n## Plots\n");
    for p in &plots {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let _ = writeln!(md, "![{name}]({name})");
    }
    let _ = writeln!(
        md,
        "\n## Python tools (venv `target/seed/venv`, `pip freeze`)\n\n```\n{}\n```",
        versions.trim()
    );
    let path = dir.join("seed-claims.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!("{md}");
    eprintln!("seed-claims: report {}", path.display());
    Ok(())
}

/// The speed-up pinning can give a one-thread workload among `k`
/// one-thread hogs on `cpus` CPUs when CPU time is shared fairly:
/// unpinned it gets `cpus/(k+1)` of a CPU (at most one), pinned a whole
/// one.
pub(crate) fn fair_share(k: u32, cpus: u32) -> f64 {
    ((f64::from(k) + 1.0) / f64::from(cpus.max(1))).max(1.0)
}

fn notes(cpus: u32) -> String {
    let others = if cpus == 2 {
        "the other".to_owned()
    } else {
        format!("the other {}", cpus.saturating_sub(1))
    };
    format!("
## Why the shapes differ from the seed's

- **{cpus} CPUs.** Griffin gives the one-thread workload one exclusive CPU and confines every neighbour to {others}
  (the shared pool, which is never emptied). Unpinned, the workload gets about {cpus}/(K+1) of a CPU among K hogs
  (at most one), so the expected speed-up is about max(1, (K+1)/{cpus}) (the dotted line in the plots); the seed's
  larger node had more room on both sides.
{REST}")
}

const REST: &str = "- **Shared cache.** The vCPUs share a last-level cache that cpusets cannot partition; the `--cache` stressors slow the
  pinned workload too, so pinning recovers CPU time, not cache.
- **No GPU.** The seed's detectors ran on GPUs; here the stand-ins (HOG, Haar + PP-OCR) run on one CPU thread, so
  absolute times and frame rates are not comparable, only the ratios.
- **No SR-IOV.** The seed's whole-stack claim includes SR-IOV VFs; here the camera flow crosses a veth between
  network namespaces and the split data path is Griffin's XDP program on the node's end (camera flow to the workload's
  CPU, management flood to the shared pool through a cpumap). On a veth the receive work runs on the sending CPU, so
  the split has less to win than on a NIC.
- **Stand-in workloads.** No YOLO or SSD weights ship in any Debian or PyPI package that installs offline; HOG (weights
  compiled into OpenCV) and the Haar plate cascade are what a node without downloads can run.
";

/// The colour of a mode in the plots.
fn colour(m: Mode) -> RGBColor {
    match m {
        Mode::Default => RGBColor(200, 60, 40),
        Mode::Griffin => RGBColor(30, 100, 200),
        Mode::GriffinXdp => RGBColor(20, 150, 80),
    }
}

fn plot_all(dir: &Path, plan: &Plan, samples: &[Sample]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for claim in CLAIMS {
        if !plan.workloads.contains(&claim.workload) {
            continue;
        }
        let p = dir.join(format!("seed-claims-speedup-{}.svg", claim.workload.name()));
        plot_speedup(&p, plan, samples, &claim)
            .with_context(|| format!("plotting {}", p.display()))?;
        out.push(p);
        if claim.workload != Workload::Encode {
            let p = dir.join(format!("seed-claims-latency-{}.svg", claim.workload.name()));
            plot_latency(&p, plan, samples, claim.workload)
                .with_context(|| format!("plotting {}", p.display()))?;
            out.push(p);
        }
    }
    Ok(out)
}

fn plot_speedup(path: &Path, plan: &Plan, samples: &[Sample], claim: &Claim) -> Result<()> {
    let w = claim.workload;
    let modes: Vec<Mode> = w
        .modes()
        .iter()
        .copied()
        .filter(|m| *m != Mode::Default)
        .collect();
    let series: Vec<(Mode, Vec<(f64, Spread)>)> = modes
        .iter()
        .map(|&m| {
            let pts = plan
                .hogs
                .iter()
                .filter_map(|&k| Some((f64::from(k), stats::spread(&speedups(samples, w, k, m))?)))
                .collect();
            (m, pts)
        })
        .collect();
    let k_max = plan.hogs.iter().copied().max().unwrap_or(1);
    let x_max = f64::from(k_max) + 0.5;
    let x_min = (f64::from(plan.hogs.iter().copied().min().unwrap_or(0)) - 0.5).min(0.5);
    let y_top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, s)| s.max))
        .fold(claim.ratio().max(fair_share(k_max, plan.cpus)), f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let quick = if plan.quick { " [QUICK SMOKE RUN]" } else { "" };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: speed-up vs noisy neighbours{quick}", w.name()),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, 0.0..y_top)?;
    chart
        .configure_mesh()
        .x_desc("noisy-neighbour threads K (stress-ng)")
        .y_desc("throughput speed-up over default (x)")
        .x_labels(plan.hogs.len().max(2) + 2)
        .draw()?;
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            [(x_min, 1.0), (x_max, 1.0)],
            grey.stroke_width(1),
        ))?
        .label("1x (no change)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    let seed = claim.ratio();
    let black = RGBColor(0, 0, 0);
    chart
        .draw_series(DashedLineSeries::new(
            [(x_min, seed), (x_max, seed)],
            10,
            6,
            black.stroke_width(2),
        ))?
        .label(format!("seed's ratio {seed:.2}x"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], black.stroke_width(2)));
    let est: Vec<(f64, f64)> = plan
        .hogs
        .iter()
        .map(|&k| (f64::from(k), fair_share(k, plan.cpus)))
        .collect();
    let purple = RGBColor(150, 90, 170);
    chart
        .draw_series(DashedLineSeries::new(est, 3, 5, purple.stroke_width(2)))?
        .label(format!(
            "fair-share estimate max(1, (K+1)/{0}) on {0} CPUs",
            plan.cpus
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], purple));
    for (m, pts) in &series {
        let col = colour(*m);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(k, s)| (*k, s.median)),
                col.stroke_width(2),
            ))?
            .label(format!("{} (median, min-max)", m.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        chart.draw_series(
            pts.iter()
                .map(|(k, s)| Circle::new((*k, s.median), 5, col.filled())),
        )?;
        chart.draw_series(pts.iter().map(|(k, s)| {
            ErrorBar::new_vertical(*k, s.min, s.median, s.max, col.stroke_width(2), 12)
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(black)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_latency(path: &Path, plan: &Plan, samples: &[Sample], w: Workload) -> Result<()> {
    let k = plan.hogs.iter().copied().max().unwrap_or(0);
    let series: Vec<(Mode, Vec<(f64, f64)>)> = w
        .modes()
        .iter()
        .map(|&m| {
            let all: Vec<f64> = samples
                .iter()
                .filter(|s| s.workload == w && s.hogs == k && s.mode == m)
                .flat_map(|s| s.lat_ms.iter().copied())
                .collect();
            (m, stats::cdf(&all))
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let quick = if plan.quick { " [QUICK SMOKE RUN]" } else { "" };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: per-frame latency CDF, K={k} neighbours{quick}",
                w.name()
            ),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..1.02)?;
    chart
        .configure_mesh()
        .x_desc("per-frame latency (ms)")
        .y_desc("fraction of frames at or below")
        .draw()?;
    for (m, pts) in &series {
        if pts.is_empty() {
            continue;
        }
        let col = colour(*m);
        // A step function: each frame's latency raises the curve.
        let mut steps = vec![(pts[0].0, 0.0)];
        let mut prev = 0.0;
        for &(x, y) in pts {
            steps.push((x, prev));
            steps.push((x, y));
            prev = y;
        }
        let p99 =
            stats::percentile(&pts.iter().map(|p| p.0).collect::<Vec<_>>(), 0.99).unwrap_or(0.0);
        chart
            .draw_series(LineSeries::new(steps, col.stroke_width(2)))?
            .label(format!(
                "{} (p99 {p99:.0} ms, {} frames)",
                m.name(),
                pts.len()
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: Workload, m: Mode, k: u32, round: u32, fps: f64) -> Sample {
        Sample {
            workload: w,
            mode: m,
            hogs: k,
            round,
            frames: 10,
            seconds: 10.0 / fps,
            fps,
            lat_ms: vec![1000.0 / fps; 10],
            accuracy: None,
            extra: serde_json::json!({}),
        }
    }

    #[test]
    fn seed_ratios_are_the_published_ones() {
        let r: Vec<String> = CLAIMS.iter().map(|c| format!("{:.2}", c.ratio())).collect();
        assert_eq!(r, ["1.75", "2.87", "1.84"]);
    }

    #[test]
    fn the_fair_share_estimate_follows_the_cpu_count() {
        assert_eq!(fair_share(3, 2), 2.0);
        assert_eq!(fair_share(1, 4), 1.0);
        assert_eq!(fair_share(7, 4), 2.0);
        assert!(notes(4).contains("**4 CPUs.**") && notes(4).contains("(K+1)/4"));
        assert!(notes(2).contains("to the other\n"));
    }

    #[test]
    fn speedups_pair_rounds_and_skip_unpaired_ones() {
        let w = Workload::Detect;
        let s = vec![
            sample(w, Mode::Default, 2, 1, 2.0),
            sample(w, Mode::Griffin, 2, 1, 3.0),
            sample(w, Mode::Default, 2, 2, 1.0),
            sample(w, Mode::Griffin, 2, 2, 3.0),
            // Round 3 has no default sample: not paired.
            sample(w, Mode::Griffin, 2, 3, 9.0),
            // Another K is not mixed in.
            sample(w, Mode::Default, 5, 1, 1.0),
        ];
        assert_eq!(speedups(&s, w, 2, Mode::Griffin), vec![1.5, 3.0]);
        assert!(speedups(&s, w, 5, Mode::Griffin).is_empty());
    }

    #[test]
    fn report_and_plots_are_written_and_quick_runs_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            quick: true,
            rounds: 2,
            hogs: vec![1, 3],
            workloads: Workload::ALL.to_vec(),
            encode_frames: 10,
            detect_frames: 10,
            plate_frames: 10,
            flood_pps: 1,
            cpus: 4,
        };
        let mut s = Vec::new();
        for w in Workload::ALL {
            for k in [1, 3] {
                for r in 1..=2 {
                    for &m in w.modes() {
                        let fps = if m == Mode::Default { 1.0 } else { 2.0 };
                        s.push(sample(w, m, k, r, fps + f64::from(r) / 10.0));
                    }
                }
            }
        }
        write(
            dir.path(),
            &plan,
            &s,
            Duration::from_secs(3),
            "numpy==2.4.6",
        )
        .unwrap();
        let md = std::fs::read_to_string(dir.path().join("seed-claims.md")).unwrap();
        assert!(md.contains("QUICK SMOKE RUN"), "{md}");
        assert!(md.contains("**4 CPUs.**"), "{md}");
        assert!(md.contains("| 1.75×"), "{md}");
        for name in [
            "seed-claims-speedup-encode.svg",
            "seed-claims-speedup-detect.svg",
            "seed-claims-latency-detect.svg",
            "seed-claims-speedup-plates.svg",
            "seed-claims-latency-plates.svg",
        ] {
            let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(svg.starts_with("<svg"), "{name}");
            assert!(svg.contains("QUICK SMOKE RUN"), "{name}");
            assert!(md.contains(name), "{name} not linked");
        }
        let speedup =
            std::fs::read_to_string(dir.path().join("seed-claims-speedup-plates.svg")).unwrap();
        assert!(
            speedup.contains("seed&apos;s ratio 1.84x") || speedup.contains("seed's ratio 1.84x")
        );
        assert!(speedup.contains("griffin+xdp"));
    }
}
