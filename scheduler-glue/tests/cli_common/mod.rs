//! Running the real `griffin` binary from integration tests.

use std::process::{Command, Output};

/// The `griffin` binary built for this test run.
pub fn griffin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_griffin"))
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
