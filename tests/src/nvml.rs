//! The NVML stand-in (`tests/nvml-standin/standin.c`): a shared library
//! with the calls of NVML's C ABI that GPU health watching makes, driven by
//! the environment (the GPUs it reports) and a file of events, so that the
//! daemon's real `nvml-wrapper` path runs on machines without a GPU. The
//! real NVML is not here; what it adds over this stand-in (which XIDs a
//! GPU raises, and when) is not tested on this machine.

use std::path::{Path, PathBuf};

/// The environment variable naming the GPUs' PCI addresses.
pub const GPUS_ENV: &str = "GRIFFIN_NVML_STANDIN_GPUS";
/// The environment variable naming the events file.
pub const EVENTS_ENV: &str = "GRIFFIN_NVML_STANDIN_EVENTS";

/// Compiles the stand-in with the machine's C compiler (`cc`) into `dir`
/// and returns the library's path.
pub fn build_standin(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("nvml-standin/standin.c");
    let out = dir.join("libnvidia-ml-standin.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc {}: {status}", src.display());
    out
}

/// Appends one event line to the events file (`<pci address> <xid>`,
/// `* <xid>` or `lost`).
pub fn raise(events: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(events)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Waits up to 20 s until every GPU of `gpus` is registered for events
/// (NVML delivers no event raised before).
pub fn wait_registered(events: &Path, gpus: &[&str]) {
    let file = PathBuf::from(format!("{}.registered", events.display()));
    let t = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if gpus.iter().all(|g| text.lines().any(|l| l == *g)) {
            return;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "GPUs {gpus:?} not registered for NVML events within 20 s: {text:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
