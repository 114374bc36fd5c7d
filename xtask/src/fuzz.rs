//! `cargo xtask fuzz`: the long fuzzing campaign. The fuzz tests of every
//! input surface run in CI with a few hundred cases each; here each runs
//! with `--cases` inputs (release build), one surface after another, and
//! the inputs tried, the time taken and the outcome of each go to
//! `target/fuzz-report/fuzz.md`. A failing surface prints its shrunk input
//! (proptest) and fails the run after the others have run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// An input surface: its name, and the fuzz tests that cover it (package,
/// target, exact test names).
struct Surface {
    name: &'static str,
    package: &'static str,
    target: &'static [&'static str],
    tests: &'static [&'static str],
}

const SURFACES: &[Surface] = &[
    Surface {
        name: "HTTP request bodies (shapes, batches, extender args)",
        package: "griffin-scheduler-glue",
        target: &["--lib"],
        tests: &[
            "request::tests::mangled_requests_never_panic",
            "request::tests::random_bytes_never_panic",
        ],
    },
    Surface {
        name: "HTTP paths, query strings, methods (both listeners)",
        package: "griffin-scheduler-glue",
        target: &["--test", "routes_fuzz"],
        tests: &["any_request_gets_a_documented_answer"],
    },
    Surface {
        name: "Kubernetes quantities",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &[
            "quantity::tests::any_text_never_panics",
            "quantity::tests::integers_are_exact",
        ],
    },
    Surface {
        name: "NRI: trunk bytes and the runtime's requests",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &[
            "nri::wire::tests::arbitrary_bytes_never_panic_or_grow_without_bound",
            "nri::tests::any_request_gets_an_answer",
        ],
    },
    Surface {
        name: "control socket requests",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &[
            "control::tests::garbage_requests_never_panic",
            "control::tests::mangled_requests_never_panic",
        ],
    },
    Surface {
        name: "checkpoint bytes",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &[
            "checkpoint::tests::garbage_checkpoints_never_panic",
            "checkpoint::tests::mangled_checkpoints_never_panic",
        ],
    },
    Surface {
        name: "daemon config (TOML, YAML)",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &["config::tests::garbage_configs_never_panic"],
    },
    Surface {
        name: "device pool configs (sriov-network-device-plugin config.json, [[pools]])",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &[
            "pools::sriovdp::tests::garbage_configs_never_panic",
            "pools::sriovdp::tests::wrong_types_are_refused_by_name",
            "pools::spec::tests::mangled_pool_specs_never_panic",
            "pools::spec::tests::any_resource_and_values_are_checked",
        ],
    },
    Surface {
        name: "pod acceleration annotations (JSON, YAML, the seed's forms)",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &[
            "accel::request::tests::mangled_annotations_never_panic",
            "accel::request::tests::any_field_value_is_checked_by_name",
            "accel::request::tests::canonical_json_round_trips",
        ],
    },
    Surface {
        name: "kernel uevent messages",
        package: "griffin-runtime",
        target: &["--lib"],
        tests: &["uevent::tests::garbage_never_panics"],
    },
    Surface {
        name: "XDP rules files (TOML, YAML)",
        package: "griffin-ebpf",
        target: &["--lib"],
        tests: &[
            "rules_file::tests::mangled_files_are_accepted_whole_or_refused_saying_where",
            "rules_file::tests::garbage_never_panics",
            "rules_file::tests::rule_like_garbage_never_panics",
        ],
    },
    Surface {
        name: "sysfs and procfs text",
        package: "griffin-devices",
        target: &["--test", "parse_props"],
        tests: &[
            "parsers_never_panic_on_arbitrary_text",
            "parsers_never_panic_on_sysfs_like_text",
            "cpulist_roundtrips",
            "cpumask_matches_cpulist",
            "pci_address_roundtrips",
        ],
    },
    Surface {
        name: "sysfs trees (damaged files, FIFOs, device links, loops, huge counts)",
        package: "griffin-tests",
        target: &["--test", "bad_input"],
        tests: &[
            "damaged_trees_never_panic",
            "hostile_trees_end_in_ok_or_an_error",
        ],
    },
];

pub(crate) fn run(cases: u32, only: Option<&str>) -> Result<()> {
    let report_dir = crate::workspace_root().join("target/fuzz-report");
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    let mut report = format!(
        "# Fuzzing campaign\n\n{cases} inputs per fuzz test (proptest cases, release build).\n\n\
         | surface | tests | inputs | time | result |\n|---|---|---|---|---|\n"
    );
    let mut failed = Vec::new();
    for s in SURFACES
        .iter()
        .filter(|s| only.is_none_or(|o| s.name.contains(o)))
    {
        eprintln!("fuzz: {} ({cases} inputs per test)", s.name);
        let started = Instant::now();
        let mut cmd = crate::cargo();
        cmd.args(["test", "--release", "-p", s.package])
            .args(s.target)
            .arg("--")
            .args(s.tests)
            .arg("--exact")
            .env("PROPTEST_CASES", cases.to_string())
            .env("GRIFFIN_FUZZ_CASES", cases.to_string());
        let out = cmd
            .output()
            .with_context(|| format!("running the {} fuzz tests", s.name))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tests = passed_count(&text);
        let elapsed = started.elapsed();
        // Every named test must have run: a renamed test fails the campaign
        // instead of silently leaving its surface unfuzzed.
        let result = if out.status.success() && tests == s.tests.len() {
            "no finding".to_owned()
        } else {
            failed.push(s.name);
            eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
            format!("FAILED ({})", out.status)
        };
        eprintln!("fuzz: {}: {tests} tests, {result}, {elapsed:.0?}", s.name);
        let _ = writeln!(
            report,
            "| {} | {tests} | {} | {:.0} s | {result} |",
            s.name,
            u64::from(cases) * tests as u64,
            elapsed.as_secs_f64()
        );
    }
    let path = report_dir.join("fuzz.md");
    write(&path, &report)?;
    eprintln!("fuzz report in {}", path.display());
    if !failed.is_empty() {
        bail!("fuzzing found failures in: {}", failed.join(", "));
    }
    Ok(())
}

/// Tests passed, from libtest's summary lines.
fn passed_count(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passed_tests_are_counted_from_every_summary() {
        let out = "running 2 tests\ntest result: ok. 2 passed; 0 failed\n\
                   test result: ok. 0 passed; 0 failed\ntest result: ok. 3 passed; 0 failed\n";
        assert_eq!(super::passed_count(out), 5);
        assert_eq!(
            super::passed_count("test result: FAILED. 1 passed; 1 failed"),
            0
        );
    }
}
