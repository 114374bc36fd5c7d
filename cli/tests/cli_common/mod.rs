//! Running the real `griffin` binary from integration tests.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::process::{Command, Output};

pub mod sandbox;

/// The `griffin` binary built for this test run, or the one
/// `GRIFFIN_TEST_BIN` names (a long campaign run from a copy, unaffected by
/// later builds).
pub fn griffin_path() -> std::path::PathBuf {
    std::env::var_os("GRIFFIN_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_griffin").into())
        .into()
}

/// [`griffin_path`] as a command.
pub fn griffin() -> Command {
    Command::new(griffin_path())
}

/// Bytes as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success, showing both streams otherwise; returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// One HTTP/1.1 request to `addr`; returns status and body.
pub fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    griffin_tests::http::request(addr, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path:.60}: {e}"))
}

/// A `griffin daemon` started by a test on an ephemeral port; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub gsch_addr: std::net::SocketAddr,
}

/// `griffin daemon` on ephemeral ports.
pub fn daemon_command() -> Command {
    let mut c = griffin();
    c.args([
        "daemon",
        "--listen",
        "127.0.0.1:0",
        "--gsch-listen",
        "127.0.0.1:0",
    ]);
    c
}

impl Daemon {
    /// Starts `griffin daemon --listen 127.0.0.1:0 ARGS` and waits for the
    /// line naming its address.
    pub fn start(args: &[&std::ffi::OsStr]) -> Self {
        Self::spawn(daemon_command().args(args))
    }

    /// Starts `command` (a [`daemon_command`] with more set) and waits for
    /// the lines naming its addresses.
    pub fn spawn(command: &mut Command) -> Self {
        Self::try_spawn(command).expect("the daemon exited before naming its addresses")
    }

    /// As [`Daemon::spawn`], but `None` (the process reaped) when it exits
    /// before naming both addresses.
    pub fn try_spawn(command: &mut Command) -> Option<Self> {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut next_addr = || {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            let addr = line
                .split("http://")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                .parse()
                .unwrap();
            Some(addr)
        };
        let (Some(addr), Some(gsch_addr)) = (next_addr(), next_addr()) else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        Some(Self {
            child,
            addr,
            gsch_addr,
        })
    }

    /// One HTTP/1.1 request; returns status and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        request(self.addr, method, path, body)
    }

    /// A request to the GS-Scheduler listener.
    pub fn gsch(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, text) = request(self.gsch_addr, "GET", path, b"");
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, v)
    }

    /// A request whose answer must be `200` JSON.
    pub fn json(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let (status, text) = self.request(method, path, body.as_bytes());
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
