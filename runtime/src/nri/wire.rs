//! NRI's framing (pure): the runtime and a plugin share one unix socket
//! (the *trunk*) carrying several logical connections, each a byte stream
//! of ttrpc messages.
//!
//! * Trunk frame: connection id (u32 big-endian), payload length (u32
//!   big-endian), payload. A payload is any chunk of that connection's
//!   stream: a ttrpc message may span frames or share one.
//! * ttrpc message: payload length (u32 BE), stream id (u32 BE), type (u8:
//!   1 request, 2 response), flags (u8), then the protobuf payload
//!   ([`griffin_kubelet_api::ttrpc::Request`] or `Response`).
//!
//! [`Demux`] turns trunk bytes into messages and refuses what the real
//! peers never send (oversized frames or messages) instead of buffering
//! without bound.

use std::collections::BTreeMap;

use griffin_kubelet_api::ttrpc::{HEADER_LEN, MAX_MESSAGE};

/// The connections NRI opens: the plugin's service and the runtime's.
const CONNS: [u32; 2] = [
    griffin_kubelet_api::nri::PLUGIN_SERVICE_CONN,
    griffin_kubelet_api::nri::RUNTIME_SERVICE_CONN,
];

/// Length of a trunk frame's header.
pub const TRUNK_HEADER_LEN: usize = 8;
/// Largest trunk frame payload the runtime writes (a whole ttrpc message).
pub const MAX_TRUNK_PAYLOAD: usize = HEADER_LEN + MAX_MESSAGE;

/// A framing error: the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A trunk frame longer than any the runtime writes.
    #[error("trunk frame of {0} bytes on connection {1} (limit {MAX_TRUNK_PAYLOAD})")]
    TrunkFrame(usize, u32),
    /// A ttrpc message longer than ttrpc allows.
    #[error("ttrpc message of {0} bytes on connection {1} (limit {MAX_MESSAGE})")]
    Message(usize, u32),
    /// Connection id 0 is reserved.
    #[error("trunk frame on the reserved connection 0")]
    ReservedConn,
}

/// One ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The trunk connection it came on.
    pub conn: u32,
    /// Its stream (pairs a response with its request).
    pub stream: u32,
    /// 1 request, 2 response (others are passed through).
    pub kind: u8,
    /// The protobuf payload.
    pub payload: Vec<u8>,
}

/// Encodes `msg` as one trunk frame holding one whole ttrpc message.
pub fn encode(conn: u32, stream: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TRUNK_HEADER_LEN + HEADER_LEN + payload.len());
    out.extend_from_slice(&conn.to_be_bytes());
    out.extend_from_slice(&((HEADER_LEN + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(payload);
    out
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reassembles messages from trunk bytes fed in any chunking. Frames of
/// connections NRI does not open are skipped; what is buffered is at most
/// one trunk frame plus one message per connection.
#[derive(Debug, Default)]
pub struct Demux {
    trunk: Vec<u8>,
    streams: BTreeMap<u32, Vec<u8>>,
}

impl Demux {
    /// Feeds bytes read from the trunk; returns the messages they complete,
    /// in order. After an error the trunk is unusable (the caller closes
    /// it).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Message>, WireError> {
        self.trunk.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if self.trunk.len() < TRUNK_HEADER_LEN {
                break;
            }
            let conn = be32(&self.trunk[0..4]);
            let len = be32(&self.trunk[4..8]) as usize;
            if conn == 0 {
                return Err(WireError::ReservedConn);
            }
            if len > MAX_TRUNK_PAYLOAD {
                return Err(WireError::TrunkFrame(len, conn));
            }
            if self.trunk.len() < TRUNK_HEADER_LEN + len {
                break;
            }
            if !CONNS.contains(&conn) {
                // Nobody listens there (the runtime's mux drops such
                // frames too): not buffered.
                self.trunk.drain(..TRUNK_HEADER_LEN + len);
                continue;
            }
            let stream = self.streams.entry(conn).or_default();
            stream.extend_from_slice(&self.trunk[TRUNK_HEADER_LEN..TRUNK_HEADER_LEN + len]);
            self.trunk.drain(..TRUNK_HEADER_LEN + len);
            loop {
                if stream.len() < HEADER_LEN {
                    break;
                }
                let plen = be32(&stream[0..4]) as usize;
                if plen > MAX_MESSAGE {
                    return Err(WireError::Message(plen, conn));
                }
                if stream.len() < HEADER_LEN + plen {
                    break;
                }
                out.push(Message {
                    conn,
                    stream: be32(&stream[4..8]),
                    kind: stream[8],
                    payload: stream[HEADER_LEN..HEADER_LEN + plen].to_vec(),
                });
                stream.drain(..HEADER_LEN + plen);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_round_trips_whatever_the_chunking() {
        let a = encode(1, 3, 1, b"hello");
        let b = encode(2, 1, 2, b"");
        let all = [a.clone(), b.clone()].concat();
        for cut in 0..=all.len() {
            let mut d = Demux::default();
            let mut got = d.feed(&all[..cut]).unwrap();
            got.extend(d.feed(&all[cut..]).unwrap());
            assert_eq!(
                got,
                vec![
                    Message {
                        conn: 1,
                        stream: 3,
                        kind: 1,
                        payload: b"hello".to_vec()
                    },
                    Message {
                        conn: 2,
                        stream: 1,
                        kind: 2,
                        payload: vec![]
                    }
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_message_split_over_trunk_frames_is_reassembled() {
        // The runtime's ttrpc may write the header and the payload apart:
        // two trunk frames for one message.
        let whole = encode(1, 5, 1, b"payload");
        let msg = &whole[TRUNK_HEADER_LEN..];
        let mut bytes = Vec::new();
        for part in [&msg[..HEADER_LEN], &msg[HEADER_LEN..]] {
            bytes.extend_from_slice(&1u32.to_be_bytes());
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        let got = Demux::default().feed(&bytes).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"payload");
        assert_eq!(got[0].stream, 5);
    }

    #[test]
    fn frames_of_other_connections_are_skipped() {
        let bytes = [encode(7, 1, 1, b"x"), encode(2, 1, 2, b"y")].concat();
        let got = Demux::default().feed(&bytes).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].conn, got[0].payload.as_slice()), (2, &b"y"[..]));
    }

    #[test]
    fn oversized_and_reserved_frames_are_refused() {
        let mut big = 1u32.to_be_bytes().to_vec();
        big.extend_from_slice(&((MAX_TRUNK_PAYLOAD + 1) as u32).to_be_bytes());
        assert!(matches!(
            Demux::default().feed(&big),
            Err(WireError::TrunkFrame(_, 1))
        ));
        let mut zero = 0u32.to_be_bytes().to_vec();
        zero.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(Demux::default().feed(&zero), Err(WireError::ReservedConn));
        let mut huge_msg = 1u32.to_be_bytes().to_vec();
        huge_msg.extend_from_slice(&(HEADER_LEN as u32).to_be_bytes());
        huge_msg.extend_from_slice(&((MAX_MESSAGE + 1) as u32).to_be_bytes());
        huge_msg.extend_from_slice(&[0; 6]);
        assert!(matches!(
            Demux::default().feed(&huge_msg),
            Err(WireError::Message(_, 1))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_grow_without_bound(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)
        ) {
            let mut d = Demux::default();
            for c in &chunks {
                if d.feed(c).is_err() {
                    break;
                }
            }
        }
    }
}
