//! Kubelets before 1.26 (grpc-go dialling a bare socket path) send the
//! socket's path as the HTTP/2 `:authority` of every call to a device
//! plugin (kubernetes/kubernetes#112597 fixed it to `localhost`). A path is
//! not a valid authority, and the h2 server under tonic resets such a
//! stream with PROTOCOL_ERROR: the kubelet's ListAndWatch fails and it
//! marks every device unhealthy.
//!
//! [`KubeletStream`] sits between the socket and the server and rewrites,
//! in the client's HEADERS frames, an `:authority` literal (static name
//! index 1) into a valid one of the same decoded length (`localhost`
//! padded with `-`), so the HPACK dynamic tables of both ends keep the same
//! sizes and stay in step. A Huffman-coded value's decoded length is taken
//! to be the socket path's (what the kubelet sends); a plain value's is
//! its own. Everything else passes unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A kubelet's connection to a device plugin, `:authority` made valid.
#[derive(Debug)]
pub struct KubeletStream {
    io: UnixStream,
    /// The decoded length of a Huffman-coded `:authority` (the socket
    /// path's length).
    path_len: usize,
    /// Bytes read, not yet framed.
    raw: Vec<u8>,
    /// Bytes ready for the server.
    ready: Vec<u8>,
    at: usize,
    /// Preface seen (frames follow), or not HTTP/2 (pass through).
    state: State,
    eof: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Preface,
    Frames,
    Through,
}

impl KubeletStream {
    /// Wraps an accepted connection to the socket at a path of `path_len`
    /// bytes.
    pub fn new(io: UnixStream, path_len: usize) -> Self {
        Self {
            io,
            path_len,
            raw: Vec::new(),
            ready: Vec::new(),
            at: 0,
            state: State::Preface,
            eof: false,
        }
    }

    /// Moves what can be decided from `raw` to `ready`.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.state = State::Through;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.ready.extend(self.raw.drain(..PREFACE.len()));
                    self.state = State::Frames;
                }
                State::Through => {
                    self.ready.append(&mut self.raw);
                    return;
                }
                State::Frames => {
                    if self.raw.len() < 9 {
                        return;
                    }
                    let len = (usize::from(self.raw[0]) << 16)
                        | (usize::from(self.raw[1]) << 8)
                        | usize::from(self.raw[2]);
                    if self.raw.len() < 9 + len {
                        return;
                    }
                    let frame: Vec<u8> = self.raw.drain(..9 + len).collect();
                    match rewrite_frame(&frame, self.path_len) {
                        Some(f) => self.ready.extend(f),
                        None => self.ready.extend(frame),
                    }
                }
            }
        }
    }
}

/// An HPACK integer with an `n`-bit prefix at `b[*i]`.
fn int(b: &[u8], i: &mut usize, n: u8) -> Option<usize> {
    let mask = (1u16 << n) as usize - 1;
    let mut v = usize::from(*b.get(*i)?) & mask;
    *i += 1;
    if v < mask {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let c = *b.get(*i)?;
        *i += 1;
        v += usize::from(c & 0x7f) << shift;
        shift += 7;
        if c & 0x80 == 0 || shift > 28 {
            return (c & 0x80 == 0).then_some(v);
        }
    }
}

fn put_int(out: &mut Vec<u8>, first: u8, n: u8, v: usize) {
    let mask = (1usize << n) - 1;
    if v < mask {
        out.push(first | v as u8);
        return;
    }
    out.push(first | mask as u8);
    let mut v = v - mask;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A string at `b[*i]`: (Huffman, bytes).
fn string<'a>(b: &'a [u8], i: &mut usize) -> Option<(bool, &'a [u8])> {
    let huffman = *b.get(*i)? & 0x80 != 0;
    let len = int(b, i, 7)?;
    let s = b.get(*i..*i + len)?;
    *i += len;
    Some((huffman, s))
}

fn valid_authority(s: &[u8]) -> bool {
    s.iter()
        .all(|c| c.is_ascii_alphanumeric() || b"-._~:[]@!$&'()*+,;=%".contains(c))
}

/// The header block with every invalid `:authority` literal replaced; None
/// when nothing changes or the block cannot be parsed.
fn rewrite_block(b: &[u8], path_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let name_index = if c & 0x80 != 0 {
            int(b, &mut i, 7)?;
            out.extend_from_slice(&b[start..i]);
            continue;
        } else if c & 0xc0 == 0x40 {
            int(b, &mut i, 6)?
        } else if c & 0xe0 == 0x20 {
            int(b, &mut i, 5)?;
            out.extend_from_slice(&b[start..i]);
            continue;
        } else {
            int(b, &mut i, 4)?
        };
        if name_index == 0 {
            string(b, &mut i)?;
        }
        let value_at = i;
        let (huffman, value) = string(b, &mut i)?;
        out.extend_from_slice(&b[start..value_at]);
        // A Huffman string of n bytes decodes to at most 8n/5 characters
        // (the shortest code is 5 bits): a shorter one is not the path
        // (e.g. a newer kubelet's `localhost`) and is left alone.
        let may_be_path = huffman && value.len() * 8 >= path_len * 5;
        if name_index == 1 && (may_be_path || (!huffman && !valid_authority(value))) {
            let len = if huffman { path_len } else { value.len() };
            let mut v: Vec<u8> = b"localhost".iter().copied().take(len).collect();
            v.resize(len, b'-');
            put_int(&mut out, 0, 7, len);
            out.extend(v);
            changed = true;
        } else {
            out.extend_from_slice(&b[value_at..i]);
        }
    }
    changed.then_some(out)
}

/// A HEADERS frame with its block rewritten; None: unchanged.
fn rewrite_frame(f: &[u8], path_len: usize) -> Option<Vec<u8>> {
    let (kind, flags) = (f[3], f[4]);
    if kind != HEADERS || flags & END_HEADERS == 0 {
        return None;
    }
    let payload = &f[9..];
    let pad = if flags & PADDED != 0 {
        usize::from(*payload.first()?)
    } else {
        0
    };
    let head = usize::from(flags & PADDED != 0) + if flags & PRIORITY != 0 { 5 } else { 0 };
    if head + pad > payload.len() {
        return None;
    }
    let block = rewrite_block(&payload[head..payload.len() - pad], path_len)?;
    let len = head + block.len() + pad;
    if len >= 1 << 24 {
        return None;
    }
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(&f[3..9]);
    out.extend_from_slice(&payload[..head]);
    out.extend(block);
    out.extend_from_slice(&payload[payload.len() - pad..]);
    Some(out)
}

impl AsyncRead for KubeletStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.at < this.ready.len() {
                let n = (this.ready.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.ready[this.at..this.at + n]);
                this.at += n;
                if this.at == this.ready.len() {
                    this.ready.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // What never made a whole frame goes as it came.
                this.ready.append(&mut this.raw);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut tmp = [0u8; 16384];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.raw.extend_from_slice(rb.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl AsyncWrite for KubeletStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for KubeletStream {
    type ConnectInfo = <UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// grpc-go's block: :method POST (indexed 3), :scheme http (indexed
    /// 6), :path literal with indexing (name 4), :authority literal with
    /// indexing (name 1, Huffman, 5 bytes standing for a 7-byte path).
    #[test]
    fn huffman_authority_becomes_localhost_of_the_path_length() {
        let mut block = vec![0x83, 0x86, 0x44, 0x03, b'/', b'a', b'b'];
        block.extend_from_slice(&[0x41, 0x85, 1, 2, 3, 4, 5]);
        block.extend_from_slice(&[
            0x40, 0x02, b't', b'e', 0x08, b't', b'r', b'a', b'i', b'l', b'e', b'r', b's',
        ]);
        let f = frame(HEADERS, END_HEADERS, &block);
        let got = rewrite_frame(&f, 7).expect("rewritten");
        let mut want_block = vec![0x83, 0x86, 0x44, 0x03, b'/', b'a', b'b', 0x41, 0x07];
        want_block.extend_from_slice(b"localho");
        want_block.extend_from_slice(&[
            0x40, 0x02, b't', b'e', 0x08, b't', b'r', b'a', b'i', b'l', b'e', b'r', b's',
        ]);
        assert_eq!(got, frame(HEADERS, END_HEADERS, &want_block));
    }

    #[test]
    fn plain_path_keeps_its_length_padded_and_padding_kept() {
        let path = b"/run/x/some.sock";
        let mut block = vec![0x01, path.len() as u8];
        block.extend_from_slice(path);
        let mut payload = vec![2u8];
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0, 0]);
        let f = frame(HEADERS, END_HEADERS | PADDED, &payload);
        let got = rewrite_frame(&f, 99).expect("rewritten");
        let mut want = vec![2u8, 0x01, path.len() as u8];
        want.extend_from_slice(b"localhost-------");
        want.extend_from_slice(&[0, 0]);
        assert_eq!(got, frame(HEADERS, END_HEADERS | PADDED, &want));
    }

    #[test]
    fn valid_authority_and_other_frames_unchanged() {
        let block = [
            0x41, 0x09, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't',
        ];
        assert_eq!(
            rewrite_frame(&frame(HEADERS, END_HEADERS, &block), 40),
            None
        );
        // A Huffman value too short to be the 40-byte path (7 bytes decode
        // to at most 11 characters): a newer kubelet's `localhost`.
        let short = [0x41, 0x87, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            rewrite_frame(&frame(HEADERS, END_HEADERS, &short), 40),
            None
        );
        let data = [0x41, 0x85, 1, 2, 3, 4, 5];
        assert_eq!(rewrite_frame(&frame(0x0, 0, &data), 40), None);
        // Without END_HEADERS (CONTINUATION follows): left alone.
        assert_eq!(rewrite_frame(&frame(HEADERS, 0, &data), 40), None);
    }

    #[test]
    fn long_lengths_use_continuation_bytes() {
        let mut out = Vec::new();
        put_int(&mut out, 0, 7, 200);
        let mut i = 0;
        assert_eq!(int(&out, &mut i, 7), Some(200));
        assert_eq!(out, vec![0x7f, 73]);
    }
}
