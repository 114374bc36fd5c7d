//! Discovery errors, the I/O error every crate shares ([`IoAt`]) and the one
//! chain formatter ([`Chain`]). Each error names the file or directory it is
//! about; the underlying cause is the error's `source()`, not repeated in its
//! message.

use std::io;
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
        source: io::Error,
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

/// An operation on a path failed: `cannot {op} {path}`, the I/O error its
/// source. The one shape of "I/O on this file" in Griffin's libraries; an
/// error enum carries it as `#[error(transparent)] Io(#[from] IoAt)`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}")]
pub struct IoAt {
    /// What was being done (`read`, `write`, `bind`, …).
    pub op: &'static str,
    /// The file, directory or socket.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl IoAt {
    /// For `map_err`: the error of doing `op` on `path`, made from its cause.
    /// Any error type that converts from an `IoAt` can be the result.
    pub fn on<E: From<IoAt>>(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> E {
        let path = path.into();
        move |source| IoAt { op, path, source }.into()
    }
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
            source: io::Error::other("gone"),
        };
        assert_eq!(Chain(&e).to_string(), "cannot read /sys/x: gone");
        // A wrapper whose message already holds its cause's text.
        #[derive(Debug, thiserror::Error)]
        #[error("loading failed: gone")]
        struct Repeats(#[source] io::Error);
        let r = Repeats(io::Error::other("gone"));
        assert_eq!(Chain(&r).to_string(), "loading failed: gone");
    }

    /// An enum carrying an `IoAt` transparently shows it and its cause once.
    #[test]
    fn io_at_names_op_and_path() {
        #[derive(Debug, thiserror::Error)]
        enum Outer {
            #[error(transparent)]
            Io(#[from] IoAt),
        }
        let e: Outer = IoAt::on("bind", "/run/g/s")(io::Error::other("busy"));
        assert_eq!(e.to_string(), "cannot bind /run/g/s");
        assert_eq!(Chain(&e).to_string(), "cannot bind /run/g/s: busy");
    }
}
