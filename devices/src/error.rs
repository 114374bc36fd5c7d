//! Discovery errors. Each names the file or directory it is about; the
//! underlying cause is the error's `source()`, not repeated in its message.

use std::path::PathBuf;

use crate::parse::ParseError;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A file or directory that exists could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content could not be parsed.
    #[error("cannot parse {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with its content.
        #[source]
        source: ParseError,
    },
    /// A directory discovery needs is missing (a truncated tree, or a root
    /// that is not a sysfs capture).
    #[error("{path} is missing")]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// Something other than a regular file where discovery reads a file (a
    /// FIFO, a device, a socket, a directory, or a symlink where sysfs has
    /// an attribute).
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A file over the bound of what discovery reads from one file.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound, bytes.
        limit: usize,
    },
    /// Files that each parse but contradict each other.
    #[error("{path} is inconsistent: {what}")]
    Inconsistent {
        /// The file where the contradiction shows.
        path: PathBuf,
        /// What contradicts what.
        what: String,
    },
}

/// An error with its causes, `outer: cause: root cause`: the one way
/// Griffin's libraries print an error chain (in log fields and in reasons
/// carried as text). Griffin's own errors never repeat their source in their
/// message; a cause whose text an outer message already holds (some
/// third-party errors print their source) is shown once.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let message = cause.to_string();
            if !shown.contains(&message) {
                write!(f, ": {message}")?;
                shown.push_str(&message);
            }
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_each_cause_once() {
        let e = DiscoveryError::Read {
            path: "/sys/x".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(Chain(&e).to_string(), "cannot read /sys/x: gone");
        // A wrapper whose message already holds its cause's text.
        #[derive(Debug, thiserror::Error)]
        #[error("loading failed: gone")]
        struct Repeats(#[source] std::io::Error);
        let r = Repeats(std::io::Error::other("gone"));
        assert_eq!(Chain(&r).to_string(), "loading failed: gone");
    }
}
