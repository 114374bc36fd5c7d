//! The one HTTP/1.1 client of the tests and benchmarks: a request on a
//! fresh connection (`Connection: close`), its status and body. Reads are
//! bounded (a liveness bound, so a daemon that never answers fails the test
//! instead of hanging it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long an answer may take before the client gives up.
pub const READ_BOUND: Duration = Duration::from_secs(30);

/// `METHOD path` with a JSON `body` (empty: none): status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: griffin\r\n").into_bytes();
    if !body.is_empty() || method == "POST" {
        raw.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    send(addr, &raw)
}

/// A request written as raw bytes (head and body, `Connection: close` is
/// added to its head): status and body.
pub fn send(addr: SocketAddr, raw: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(READ_BOUND))?;
    let line_end = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(raw.len());
    let (line, rest) = raw.split_at(line_end);
    let mut framed = line.to_vec();
    framed.extend_from_slice(b"\r\nConnection: close");
    framed.extend_from_slice(rest);
    // A server may answer (413) before reading a large body.
    let _ = s.write_all(&framed);
    let mut answer = Vec::new();
    // A reset after the answer (unread body) is not a failure.
    if let Err(e) = s.read_to_end(&mut answer) {
        if answer.is_empty() {
            return Err(e);
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {answer:?}")))?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}
