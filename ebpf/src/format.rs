//! Files an operator writes (rules files, the daemon's configuration): the
//! syntax chosen by extension, typed decoding whose errors name the key path
//! (`probes.interval_ms: ...`, through `serde_path_to_error`), and reading
//! that only accepts a regular file of bounded size (a FIFO, a device or a
//! directory given as a path is refused, never opened for reading).

use std::{
    fmt,
    fs::{Metadata, OpenOptions},
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde_path_to_error::Segment;

/// Syntax of a file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// YAML (`.yaml`, `.yml`).
    Yaml,
}

impl Format {
    /// The format for `path`'s extension.
    pub fn from_path(path: &Path) -> Result<Self, UnknownFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Ok(Self::Toml),
            Some("yaml" | "yml") => Ok(Self::Yaml),
            _ => Err(UnknownFormat {
                path: path.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Toml => "TOML",
            Self::Yaml => "YAML",
        })
    }
}

/// A path whose extension names no supported format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: unknown extension (expected .toml, .yaml or .yml)", path = path.display())]
pub struct UnknownFormat {
    /// The file.
    pub path: PathBuf,
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A table key (struct field or map key).
    Field(String),
    /// A list position, from 0.
    Index(usize),
}

/// Text that did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The syntax.
    pub format: Format,
    /// Where: empty for a syntax error or a problem of the top level.
    pub path: Vec<Key>,
    /// What is wrong (with line and column where the parser knows them).
    pub message: String,
}

impl ParseError {
    /// The key path as written in messages: `probes.clusters.edge1[0]`.
    pub fn path_text(&self) -> String {
        let mut out = String::new();
        for key in &self.path {
            match key {
                Key::Field(name) if out.is_empty() => out.push_str(name),
                Key::Field(name) => {
                    out.push('.');
                    out.push_str(name);
                }
                Key::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// `probes.interval_ms: <message>`, or `TOML: <message>` for a syntax error
/// or one of the top level.
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.format, self.message)
        } else {
            write!(f, "{}: {}", self.path_text(), self.message)
        }
    }
}

/// Decodes `text` as a `T`. A YAML text without a document (blank, or only
/// comments) is an empty table, as an empty TOML text is.
pub fn parse<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, ParseError> {
    let error = |path: Vec<Key>, message: String| ParseError {
        format,
        path,
        message,
    };
    match format {
        Format::Toml => {
            let de = toml::Deserializer::parse(text)
                .map_err(|e| error(Vec::new(), toml_message(text, &e)))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = keys(e.path());
                let message = if path.is_empty() {
                    toml_message(text, e.inner())
                } else {
                    e.inner().message().to_owned()
                };
                error(path, message)
            })
        }
        Format::Yaml => {
            // No document (blank, or only comments) is an empty table.
            let none = serde_norway::Deserializer::from_str(text).next().is_none();
            let text = if none { "{}" } else { text };
            // serde_norway meets syntax errors only as it reaches them:
            // check the whole text first, so that they are told as such.
            serde_norway::from_str::<IgnoredAny>(text)
                .map_err(|e| error(Vec::new(), e.to_string()))?;
            serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)).map_err(
                |e| {
                    // serde_norway names (a prefix of) the path itself;
                    // say it once.
                    let message = e.inner().to_string();
                    let message = match message.split_once(": ") {
                        Some((head, rest)) if e.path().to_string().starts_with(head) => rest,
                        _ => &message,
                    };
                    error(keys(e.path()), message.to_owned())
                },
            )
        }
    }
}

fn keys(path: &serde_path_to_error::Path) -> Vec<Key> {
    path.iter()
        .map(|segment| match segment {
            Segment::Seq { index } => Key::Index(*index),
            Segment::Map { key } => Key::Field(key.clone()),
            Segment::Enum { variant } => Key::Field(variant.clone()),
            Segment::Unknown => Key::Field("?".into()),
        })
        .collect()
}

/// A TOML error's message, after its line and column when it has a span.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, inspecting or reading failed (including text that is not
    /// UTF-8).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The path names a FIFO, device, socket or directory.
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    /// The file holds more than the limit.
    #[error("larger than the limit of {}", size(*limit))]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Reads the UTF-8 text of `path`, following symbolic links (a ConfigMap
/// mount is a chain of them), if it is a regular file of at most `limit`
/// bytes. Anything else is refused before it is opened, so a FIFO cannot
/// block and a device cannot feed endless bytes; the opened file is checked
/// again (the path may change in between), opened non-blocking, and read no
/// further than the limit.
pub fn read_regular(path: &Path, limit: u64) -> Result<String, ReadError> {
    check_regular(&std::fs::metadata(path)?, limit)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check_regular(&file.metadata()?, limit)?;
    // It may have grown since: read one byte more than the limit at most.
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    String::from_utf8(bytes)
        .map_err(|e| ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn check_regular(meta: &Metadata, limit: u64) -> Result<(), ReadError> {
    if !meta.is_file() {
        return Err(ReadError::NotRegular(griffin_devices::sysfs::file_kind(
            meta.file_type(),
        )));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        a: u32,
        inner: Inner,
        list: Vec<Inner>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn extensions_choose_the_format() {
        assert_eq!(Format::from_path(Path::new("a/r.toml")), Ok(Format::Toml));
        assert_eq!(Format::from_path(Path::new("r.yaml")), Ok(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("r.yml")), Ok(Format::Yaml));
        let e = Format::from_path(Path::new("dir/r.json")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dir/r.json: unknown extension (expected .toml, .yaml or .yml)"
        );
    }

    #[test]
    fn empty_texts_are_empty_tables() {
        for format in [Format::Toml, Format::Yaml] {
            assert_eq!(parse::<Outer>("", format).unwrap(), Outer::default());
            assert_eq!(parse::<Outer>(" \n", format).unwrap(), Outer::default());
            assert_eq!(parse::<Outer>("# a\n", format).unwrap(), Outer::default());
        }
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = parse::<Outer>("a = 1\n[[list]]\nn = 1\n[[list]]\nn = 300\n", Format::Toml)
            .unwrap_err();
        assert_eq!(
            e.path,
            [
                Key::Field("list".into()),
                Key::Index(1),
                Key::Field("n".into())
            ]
        );
        assert!(
            e.to_string()
                .starts_with("list[1].n: invalid value: integer `300`"),
            "{e}"
        );
        let e = parse::<Outer>("inner:\n  n: x\n", Format::Yaml).unwrap_err();
        // The path once, with the position serde_norway knows.
        assert!(
            e.to_string()
                .starts_with("inner.n: invalid type: string \"x\""),
            "{e}"
        );
        assert!(e.message.contains("line 2"), "{e}");
        let e = parse::<Outer>("list:\n  - n: 1\n  - n: -1\n", Format::Yaml).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("list[1].n: invalid type: integer `-1`"),
            "{e}"
        );
        // An unknown key is the last step of the path.
        let e = parse::<Outer>("inner:\n  m: 1\n", Format::Yaml).unwrap_err();
        assert!(
            e.to_string().starts_with("inner.m: unknown field `m`"),
            "{e}"
        );
        let e = parse::<Outer>("a = 1\nzz = 2\n", Format::Toml).unwrap_err();
        assert_eq!(e.path, [Key::Field("zz".into())]);
        assert!(e.to_string().starts_with("zz: unknown field `zz`"), "{e}");
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse::<Outer>("a = 1\nb = [\n", Format::Toml).unwrap_err();
        assert!(e.path.is_empty());
        assert!(e.to_string().starts_with("TOML: line 2, column "), "{e}");
        let e = parse::<Outer>("a = 1\n[inner]\nn = 1\n[inner]\n", Format::Toml).unwrap_err();
        assert!(e.to_string().starts_with("TOML: line 4, column "), "{e}");
        let e = parse::<Outer>("7", Format::Yaml).unwrap_err();
        assert!(e.to_string().starts_with("YAML: invalid type"), "{e}");
        let e = parse::<Outer>("a: [1\n", Format::Yaml).unwrap_err();
        assert!(e.path.is_empty());
        assert!(e.to_string().contains("line "), "{e}");
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(read_regular(&file, 6).unwrap(), "a = 1\n");
        // Through a symbolic link (a ConfigMap mount is made of them).
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular(&link, 6).unwrap(), "a = 1\n");
        let e = read_regular(&file, 5).unwrap_err();
        assert_eq!(e.to_string(), "larger than the limit of 5 bytes");
        let e = read_regular(dir.path(), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        std::fs::write(&file, b"a = \"\xff\"\n").unwrap();
        let e = read_regular(&file, 1 << 20).unwrap_err();
        assert!(matches!(&e, ReadError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData));
        let e = read_regular(&dir.path().join("missing"), 1 << 20).unwrap_err();
        assert!(matches!(&e, ReadError::Io(io) if io.kind() == std::io::ErrorKind::NotFound));
    }

    /// Regression (issue 14 D3): a FIFO was opened for reading, which blocks
    /// until a writer comes, and `/dev/zero` read until memory ran out; both
    /// are refused. Each read runs on a thread so that the old behaviour
    /// fails the test instead of hanging it.
    #[test]
    fn fifos_devices_and_oversize_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (path, cause) in
            griffin_tests::hostile::refused_files(dir.path(), "toml", "a = 1", 1 << 20)
        {
            let got =
                griffin_tests::liveness::within(std::time::Duration::from_secs(10), move || {
                    read_regular(&path, 1 << 20).map_err(|e| e.to_string())
                });
            assert_eq!(got, Some(Err(cause)));
        }
    }
}
