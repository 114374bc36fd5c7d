//! Hostile inputs for parsers and loaders: damaged copies of good samples,
//! and paths that are not the regular files they seem.

use std::path::{Path, PathBuf};

use crate::Rng;

/// `sample` with a line dropped or repeated, cut short, one byte changed
/// and up to 40 bytes of printable noise (and newlines) inserted, each step
/// chosen by `rng`; bytes that are no longer UTF-8 are replaced.
pub fn mangle(sample: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<&str> = sample.lines().collect();
    let line = rng.below(lines.len() as u64 + 1) as usize;
    if line < lines.len() {
        if rng.below(2) == 0 {
            lines.insert(line, lines[line]);
        } else {
            lines.remove(line);
        }
    }
    let mut text = lines.join("\n").into_bytes();
    text.truncate(1 + rng.below(text.len() as u64 + 1) as usize);
    if text.is_empty() {
        text.push(b'\n');
    }
    let at = rng.below(text.len() as u64) as usize;
    text[at] = rng.next_u64() as u8;
    let noise: Vec<u8> = (0..rng.below(41))
        .map(|_| match rng.below(96) as u8 {
            95 => b'\n',
            c => b' ' + c,
        })
        .collect();
    let at = rng.below(text.len() as u64 + 1) as usize;
    text.splice(at..at, noise);
    String::from_utf8_lossy(&text).into_owned()
}

/// `sample` padded with a `#` comment (TOML and YAML alike) to `len`
/// bytes (`sample` is shorter).
pub fn padded(sample: &str, len: usize) -> String {
    let mut text = format!("{sample}\n#");
    text.push_str(&"#".repeat(len - text.len()));
    text
}

/// Paths that a loader of regular files of at most `limit` bytes must
/// refuse, made in `dir` with the extension `ext`, each with the cause its
/// error must name: a FIFO (a plain read waits for a writer forever), a
/// link to `/dev/zero` (endless) and `sample` padded to one byte over the
/// limit. The FIFO comes first.
pub fn refused_files(dir: &Path, ext: &str, sample: &str, limit: u64) -> Vec<(PathBuf, String)> {
    let fifo = dir.join(format!("fifo.{ext}"));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("running mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let zero = dir.join(format!("zero.{ext}"));
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("linking to /dev/zero");
    let big = dir.join(format!("big.{ext}"));
    std::fs::write(&big, padded(sample, limit as usize + 1)).expect("writing a big file");
    let size = match limit {
        l if l % (1 << 20) == 0 => format!("{} MiB", l >> 20),
        l => format!("{l} bytes"),
    };
    vec![
        (fifo, "not a regular file (a FIFO)".into()),
        (zero, "not a regular file (a character device)".into()),
        (big, format!("larger than the limit of {size}")),
    ]
}
