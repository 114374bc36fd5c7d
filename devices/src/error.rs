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
    /// Files that each parse but contradict each other.
    #[error("{path} is inconsistent: {what}")]
    Inconsistent {
        /// The file where the contradiction shows.
        path: PathBuf,
        /// What contradicts what.
        what: String,
    },
}
