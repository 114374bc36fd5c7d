//! Discovery + distance matrix: Griffin against `lstopo-no-graphics --of xml`
//! on the same trees, in the same run.
//!
//! Trees: the largest synthetic fixture (built with the test fixture
//! builder), the committed capture of a 2-CPU virtio host, and this node
//! (`/`). For each: Griffin's in-process `discover()` (what the daemon pays),
//! and, process against process, `griffin topo --json --root T` against
//! `lstopo-no-graphics --of xml --whole-io --input T` (or without `--input`
//! for `/`). Targets (issue): under 5 ms in process for the large fixture, at
//! least 10x faster than lstopo. The synthetic trees are written to tmpfs
//! (`/dev/shm`) when there is one, as sysfs is memory-backed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use griffin_benches::{griffin_bin, micros, time, write_report, Summary};

fn run_quiet(cmd: &mut Command) {
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
}

struct Row {
    name: String,
    cpus: usize,
    devices: usize,
    in_process: Summary,
    griffin_proc: Summary,
    lstopo_proc: Summary,
}

fn bench_tree(name: &str, root: &Path, griffin: &Path) -> Row {
    let topo = griffin_devices::discover(root).expect("discover");
    let in_process = time(20, 300, || griffin_devices::discover(root).unwrap());
    let live = root == Path::new("/");
    let griffin_proc = time(3, 40, || {
        run_quiet(
            Command::new(griffin)
                .args(["topo", "--json", "--root"])
                .arg(root),
        );
    });
    let lstopo_proc = time(3, 40, || {
        let mut c = Command::new("lstopo-no-graphics");
        c.args(["--of", "xml", "--whole-io"]);
        if !live {
            c.arg("--input").arg(root);
        }
        c.arg("-");
        run_quiet(&mut c);
    });
    Row {
        name: name.to_owned(),
        cpus: topo.cpus.len(),
        devices: topo.devices.len(),
        in_process,
        griffin_proc,
        lstopo_proc,
    }
}

fn ratio(base: Duration, ours: Duration) -> f64 {
    (base.as_secs_f64() / ours.as_secs_f64() * 100.0).round() / 100.0
}

fn main() {
    let griffin = griffin_bin();
    use griffin_devices::DeviceKind::{Gpu, NicVf, Nvme};
    use griffin_tests::synthetic::Shape;
    // A two-socket edge server, and a large four-socket one.
    let edge = Shape {
        packages: 2,
        nodes_per_package: 2,
        cores_per_node: 8,
        threads: 2,
        devices_per_node: vec![Gpu, NicVf, Nvme],
        memory_per_node: 64 << 30,
    };
    let large = Shape {
        packages: 4,
        nodes_per_package: 2,
        cores_per_node: 16,
        threads: 2,
        devices_per_node: vec![Gpu, Gpu, NicVf, NicVf, Nvme],
        memory_per_node: 128 << 30,
    };
    // sysfs lives in memory: put the synthetic trees on tmpfs when there is
    // one, so file-system cost is not a disk's (both tools read the same tree).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let (edge_root, large_root) = (dir.path().join("edge"), dir.path().join("large"));
    edge.tree().write(&edge_root).unwrap();
    large.tree().write(&large_root).unwrap();
    let edge2s_root = dir.path().join("edge2s");
    griffin_tests::edge2s::tree().write(&edge2s_root).unwrap();
    let host = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/host-2cpu-virtio");
    let rows = vec![
        bench_tree(
            "fixture edge2s (hand-described, 4 NUMA, 2 switches)",
            &edge2s_root,
            &griffin,
        ),
        bench_tree(
            &format!("synthetic: {}", large.describe()),
            &large_root,
            &griffin,
        ),
        bench_tree(
            &format!("synthetic: {}", edge.describe()),
            &edge_root,
            &griffin,
        ),
        bench_tree(
            "capture edge2s-qemu (real 6.12 kernel, 4 NUMA, switch, VFs)",
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu"),
            &griffin,
        ),
        bench_tree("capture host-2cpu-virtio", &host, &griffin),
        bench_tree("this node (/)", Path::new("/"), &griffin),
    ];

    let mut md = String::from(
        "# Discovery + distance matrix vs lstopo\n\n\
         | tree | CPUs | PCI functions | discover() median | p99 | `griffin topo --json` median | `lstopo --of xml` median | process ratio (lstopo / griffin) | in-process ratio (lstopo process / discover()) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut json = Vec::new();
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} µs | {} µs | {} µs | {} µs | {}x | {}x |\n",
            r.name,
            r.cpus,
            r.devices,
            micros(r.in_process.median),
            micros(r.in_process.p99),
            micros(r.griffin_proc.median),
            micros(r.lstopo_proc.median),
            ratio(r.lstopo_proc.median, r.griffin_proc.median),
            ratio(r.lstopo_proc.median, r.in_process.median),
        ));
        json.push(serde_json::json!({
            "tree": r.name,
            "cpus": r.cpus,
            "pci_functions": r.devices,
            "discover_in_process": r.in_process.to_json(),
            "griffin_topo_process": r.griffin_proc.to_json(),
            "lstopo_process": r.lstopo_proc.to_json(),
            "ratio_process": ratio(r.lstopo_proc.median, r.griffin_proc.median),
            "ratio_in_process": ratio(r.lstopo_proc.median, r.in_process.median),
        }));
    }
    for r in &rows {
        let ms = r.in_process.median.as_secs_f64() * 1e3;
        md.push_str(&format!(
            "\n{}: discover() under 5 ms: {} ({ms:.2} ms); at least 10x faster than lstopo: in process {} ({}x), process vs process {} ({}x).",
            r.name,
            if ms < 5.0 { "met" } else { "NOT met" },
            if ratio(r.lstopo_proc.median, r.in_process.median) >= 10.0 { "met" } else { "NOT met" },
            ratio(r.lstopo_proc.median, r.in_process.median),
            if ratio(r.lstopo_proc.median, r.griffin_proc.median) >= 10.0 { "met" } else { "NOT met" },
            ratio(r.lstopo_proc.median, r.griffin_proc.median),
        ));
    }
    md.push('\n');
    write_report("discovery", &serde_json::json!({ "rows": json }), &md).unwrap();
}
