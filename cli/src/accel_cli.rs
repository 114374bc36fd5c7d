//! `griffin accelerations`: the daemon's per-pod acceleration records
//! (`GET /v1/accelerations` on its node-score listener), and `griffin
//! accelerations validate`, which checks an annotation value offline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use griffin_runtime::accel::{request, AccelerationRecord, Outcome};

/// Largest answer read from the daemon, bytes.
const MAX_ANSWER: u64 = 16 << 20;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AccelArgs {
    #[command(subcommand)]
    command: Option<AccelCommand>,
    /// The daemon's node-score listener (`griffin daemon --listen`).
    #[arg(long, default_value = "127.0.0.1:8420")]
    daemon: String,
    /// Seconds to wait for the daemon's answer.
    #[arg(long, default_value_t = griffin_runtime::control::DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    daemon_timeout: u64,
    /// JSON output (the daemon's answer, pretty-printed).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum AccelCommand {
    /// Check an annotation value (a file, or `-` for stdin, at most
    /// 256 KiB): print the parsed request as JSON, or the error naming the
    /// field (exit status 1).
    Validate {
        /// The value's file, or `-` for stdin.
        file: PathBuf,
    },
}

pub fn run(a: AccelArgs) -> anyhow::Result<()> {
    match a.command {
        Some(AccelCommand::Validate { file }) => validate(&file),
        None => list(&a),
    }
}

fn validate(file: &std::path::Path) -> anyhow::Result<()> {
    let (name, text) = if file == std::path::Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(request::MAX_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
        if bytes.len() > request::MAX_BYTES {
            bail!("stdin: more than {} bytes", request::MAX_BYTES);
        }
        let text = String::from_utf8(bytes).context("stdin: not UTF-8")?;
        ("stdin".to_owned(), text)
    } else {
        let text = griffin_ebpf::format::read_regular(file, request::MAX_BYTES as u64)
            .with_context(|| format!("reading {}", file.display()))?;
        (file.display().to_string(), text)
    };
    let r = request::parse(&text).with_context(|| name.clone())?;
    let mut out = crate::stdout();
    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    Ok(())
}

fn list(a: &AccelArgs) -> anyhow::Result<()> {
    let body = get(
        &a.daemon,
        "/v1/accelerations",
        Duration::from_secs(a.daemon_timeout),
    )?;
    let records: Vec<AccelerationRecord> = serde_json::from_slice(&body)
        .with_context(|| format!("the daemon at {}: unexpected answer", a.daemon))?;
    let mut out = std::io::BufWriter::new(crate::stdout());
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
    } else {
        out.write_all(table(&records).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// One line per container (a pod without containers gets one), the pod's
/// columns on its first; a failure's reason on a line of its own.
fn table(records: &[AccelerationRecord]) -> String {
    if records.is_empty() {
        return "no accelerations\n".into();
    }
    let header = [
        "POD",
        "STATE",
        "AT",
        "CONTAINER",
        "CPUS",
        "MEMS",
        "DEVICES",
        "VF",
        "XDP",
    ];
    let mut rows: Vec<Result<[String; 9], String>> = Vec::new();
    for r in records {
        let state = match &r.outcome {
            Outcome::Realized => "realized",
            Outcome::Failed { .. } => "failed",
            Outcome::Released => "released",
        };
        let pod = [
            format!("{}/{}", r.pod.namespace, r.pod.name),
            state.to_owned(),
            r.at.to_string(),
        ];
        let containers: Vec<[String; 6]> = r
            .containers
            .iter()
            .map(|c| {
                let devices: Vec<String> = c
                    .devices
                    .iter()
                    .map(|(res, ids)| format!("{res}={}", ids.join(",")))
                    .collect();
                let vf = c.vf.as_ref().map_or("-".to_owned(), |vf| {
                    let mut s = vf.pci_address.to_string();
                    if let Some(n) = &vf.netdev {
                        s.push_str(&format!(" {n}"));
                    }
                    if let Some(ns) = &vf.netns {
                        s.push_str(&format!(" in {ns}"));
                    }
                    s
                });
                let list = |v: &[u32]| {
                    let v: Vec<String> = v.iter().map(u32::to_string).collect();
                    if v.is_empty() {
                        "-".to_owned()
                    } else {
                        v.join(",")
                    }
                };
                [
                    c.name.clone(),
                    if c.cpus.is_empty() {
                        "-".into()
                    } else {
                        c.cpus.to_string()
                    },
                    list(&c.mems),
                    if devices.is_empty() {
                        "-".into()
                    } else {
                        devices.join(" ")
                    },
                    vf,
                    list(&c.xdp_rules),
                ]
            })
            .collect();
        if containers.is_empty() {
            let [p, s, t] = pod.clone();
            rows.push(Ok([
                p,
                s,
                t,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]));
        }
        for (i, c) in containers.into_iter().enumerate() {
            let [p, s, t] = if i == 0 {
                pod.clone()
            } else {
                [String::new(), String::new(), String::new()]
            };
            let [n, cpus, mems, dev, vf, xdp] = c;
            rows.push(Ok([p, s, t, n, cpus, mems, dev, vf, xdp]));
        }
        if let Outcome::Failed { reason } = &r.outcome {
            rows.push(Err(format!("  reason: {reason}")));
        }
    }
    let mut widths = header.map(str::len);
    for row in rows.iter().flatten() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.map(str::to_owned));
    for row in rows {
        match row {
            Ok(cells) => out.push_str(&line(&cells)),
            Err(text) => {
                out.push_str(&text);
                out.push('\n');
            }
        }
    }
    out
}

/// `GET path` from the daemon at `addr` (`HOST:PORT`, `http://` allowed)
/// over HTTP/1.1: the body of a `200` answer; any other status is an error
/// with the daemon's `{"error"}` message.
fn get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let host = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .with_context(|| format!("--daemon {addr}: not HOST:PORT"))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let e = last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
        return Err(e).with_context(|| format!("connecting to the daemon at {host}"));
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let context = || format!("the daemon at {host}");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .with_context(context)?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut answer)
        .with_context(|| format!("{}: no answer within {timeout:?}", context()))?;
    if answer.len() as u64 > MAX_ANSWER {
        bail!("{}: answer larger than {MAX_ANSWER} bytes", context());
    }
    let (status, body) = parse_answer(&answer).with_context(context)?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        bail!("{}: {status} {message}", context());
    }
    Ok(body)
}

/// The status and body of an HTTP/1.1 answer read to its end
/// (`Content-Length` or chunked).
fn parse_answer(answer: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("answer cut short in its headers")?;
    let head = std::str::from_utf8(&answer[..end]).context("headers not UTF-8")?;
    let mut body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .context("not an HTTP/1.x answer")?;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().context("bad Content-Length")?;
            body = body.get(..n).context("answer cut short in its body")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk cut short")?;
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .context("bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        out.extend_from_slice(body.get(..size).context("chunk cut short")?);
        body = body.get(size + 2..).context("chunk cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_by_length_or_chunks() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]extra";
        assert_eq!(parse_answer(a).unwrap(), (200, b"[]".to_vec()));
        let a = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"e\r\n2;x\r\n\"}\r\n0\r\n\r\n";
        assert_eq!(parse_answer(a).unwrap(), (404, b"{\"e\"}".to_vec()));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n[]").is_err());
        assert!(parse_answer(b"SSH-2.0\r\n\r\n").is_err());
    }
}
