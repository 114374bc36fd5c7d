//! Compiles the C XDP programs with clang into OUT_DIR: the classifier
//! (bpf/griffin_xdp.c), the pod end of its redirects (bpf/griffin_pod.c) and
//! the benchmark baselines (bpf/bench_xdp.c); src/lib.rs, src/podpath.rs and
//! src/bench.rs embed the objects with `include_bytes_aligned!`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const SOURCES: &[&str] = &[
    "bpf/griffin_xdp.c",
    "bpf/griffin_xdp.h",
    "bpf/griffin_pod.c",
    "bpf/bench_xdp.c",
];

/// Each program: its C source and the object it becomes in OUT_DIR.
const PROGRAMS: &[(&str, &str)] = &[
    ("bpf/griffin_xdp.c", "griffin_xdp.o"),
    ("bpf/griffin_pod.c", "griffin_pod.o"),
    ("bpf/bench_xdp.c", "bench_xdp.o"),
];

fn main() {
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=GRIFFIN_CLANG");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("GRIFFIN_CLANG").unwrap_or_else(|_| "clang".to_owned());
    // The asm/ headers that linux/types.h pulls in live under the multiarch
    // include dir on Debian; the BPF target has no arch of its own.
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };

    for (source, object) in PROGRAMS {
        compile(&clang, arch, source, &out_dir.join(object));
    }
}

fn compile(clang: &str, arch: &str, source: &str, object: &Path) {
    let result = Command::new(clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .arg("-I/usr/include")
        .arg(format!("-I/usr/include/{arch}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "{clang} failed ({status}) compiling {source}; \
             the BPF headers come from libbpf-dev (cargo xtask deps installs it)"
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{clang}` not found: the XDP programs are C compiled with clang \
             (cargo xtask deps installs it)"
        ),
        Err(error) => panic!("running {clang}: {error}"),
    }
}
