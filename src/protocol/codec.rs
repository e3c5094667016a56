//! The chat/1 wire encoding: QUIC variable-length integers and the frames of
//! the protocol (see `docs/protocol.md`).
//!
//! Everything here is pure and synchronous so it can be property-tested and
//! fuzzed without a network. Decoding is incremental: callers feed whatever
//! bytes have arrived and get `Ok(None)` until a whole frame is buffered. The
//! frame-length limit is enforced as soon as a header is readable, so a hostile
//! peer can never make us buffer more than [`MAX_FRAME_LEN`] plus a header.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Largest value a QUIC varint can carry (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Largest frame payload either transport accepts (docs/protocol.md §2.2).
pub const MAX_FRAME_LEN: u64 = 1 << 20;

/// Largest chunk of message data a TCP sender puts in one DATA/END frame.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Longest header a frame can have: two 8-byte varints.
pub const MAX_HEADER_LEN: usize = 16;

/// Frame type numbers.
pub mod frame_type {
    pub const ACK: u64 = 0x01;
    pub const REJECT: u64 = 0x02;
    /// chat/2 only.
    pub const HELLO: u64 = 0x03;
    /// chat/2 only.
    pub const WELCOME: u64 = 0x04;
    /// chat/2 only: in a resume, which of the peer's messages are held.
    pub const RECEIVED: u64 = 0x05;
    /// chat/2 only: in a resume, how much of a file is held.
    pub const PARTIAL: u64 = 0x06;
    pub const DATA: u64 = 0x10;
    pub const END: u64 = 0x11;
    pub const CLOSE: u64 = 0x1f;
    pub const PING: u64 = 0x20;
}

/// QUIC stream types (first varint on every unidirectional stream).
pub mod stream_type {
    pub const CONTROL: u64 = 0x00;
    pub const MESSAGE: u64 = 0x01;
}

/// Why a byte sequence is not valid chat/1.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame length {0} exceeds the 1 MiB limit")]
    FrameTooLong(u64),
    #[error("malformed {0} frame payload")]
    BadPayload(&'static str),
    #[error("varint value {0} out of range")]
    VarintRange(u64),
}

/// Number of bytes the minimal encoding of `v` takes.
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends the minimal encoding of `v`. Values above [`VARINT_MAX`] cannot be
/// encoded; callers only pass ids, codes and lengths that are far below it,
/// and we saturate rather than panic so a bug cannot crash the process.
pub fn put_varint(buf: &mut impl BufMut, v: u64) {
    let v = v.min(VARINT_MAX);
    match varint_len(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Decodes a varint from the front of `buf` without consuming it.
/// Returns the value and its encoded length, or `None` if `buf` is too short.
pub fn peek_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Decodes and consumes a varint from the front of `buf`.
pub fn get_varint(buf: &mut impl Buf) -> Option<u64> {
    let chunk = buf.chunk();
    // Fast path: the whole varint is in the first chunk (always true for
    // `Bytes`/`BytesMut`/slices).
    if let Some((v, n)) = peek_varint(chunk) {
        buf.advance(n);
        return Some(v);
    }
    if !buf.has_remaining() {
        return None;
    }
    let len = 1usize << (chunk[0] >> 6);
    if buf.remaining() < len {
        return None;
    }
    let mut tmp = [0u8; 8];
    buf.copy_to_slice(&mut tmp[..len]);
    peek_varint(&tmp[..len]).map(|(v, _)| v)
}

/// Length of a chat/2 session token.
pub const TOKEN_LEN: usize = 16;

/// A chat/2 session token: names a chat to resume. It only ever travels
/// inside TLS; it is never logged or printed (so it has no `Debug` of its
/// bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token(pub [u8; TOKEN_LEN]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// One frame of chat/1 or chat/2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Ack {
        id: u64,
    },
    Reject {
        id: u64,
        code: u64,
        reason: Bytes,
    },
    Data {
        id: u64,
        chunk: Bytes,
    },
    End {
        id: u64,
        chunk: Bytes,
    },
    Close {
        code: u64,
        reason: Bytes,
    },
    /// Keep-alive. Any payload is ignored (the spec says it is empty; being
    /// lenient here costs nothing and helps interoperability).
    Ping,
    /// chat/2: the client's first frame. `idle_timeout_ms` 0 means none;
    /// `token` names a chat to resume.
    Hello {
        idle_timeout_ms: u64,
        token: Option<Token>,
    },
    /// chat/2, in a resume: the sender accepted every message of its peer
    /// below `below`, and each of `ids` (all above `below`, increasing).
    Received {
        below: u64,
        ids: Vec<u64>,
    },
    /// chat/2, in a resume: of the peer's file `id`, the first `held` bytes
    /// are stored.
    Partial {
        id: u64,
        held: u64,
    },
    /// chat/2: the server's answer to HELLO, its first frame.
    Welcome {
        token: Token,
        resume_window_ms: u64,
        resumed: bool,
        idle_timeout_ms: u64,
    },
    /// A frame type this implementation does not know; skipped by receivers.
    Unknown {
        ty: u64,
        len: usize,
    },
}

impl Frame {
    /// The frame's type number.
    pub fn ty(&self) -> u64 {
        match self {
            Frame::Ack { .. } => frame_type::ACK,
            Frame::Reject { .. } => frame_type::REJECT,
            Frame::Data { .. } => frame_type::DATA,
            Frame::End { .. } => frame_type::END,
            Frame::Close { .. } => frame_type::CLOSE,
            Frame::Ping => frame_type::PING,
            Frame::Hello { .. } => frame_type::HELLO,
            Frame::Welcome { .. } => frame_type::WELCOME,
            Frame::Received { .. } => frame_type::RECEIVED,
            Frame::Partial { .. } => frame_type::PARTIAL,
            Frame::Unknown { ty, .. } => *ty,
        }
    }

    /// Short name for log lines and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Ack { .. } => "ACK",
            Frame::Reject { .. } => "REJECT",
            Frame::Data { .. } => "DATA",
            Frame::End { .. } => "END",
            Frame::Close { .. } => "CLOSE",
            Frame::Ping => "PING",
            Frame::Hello { .. } => "HELLO",
            Frame::Welcome { .. } => "WELCOME",
            Frame::Received { .. } => "RECEIVED",
            Frame::Partial { .. } => "PARTIAL",
            Frame::Unknown { .. } => "unknown",
        }
    }

    /// Appends the encoded frame to `buf`. `Unknown` frames encode as that
    /// type with `len` zero bytes (used by tests that exercise skipping).
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Frame::Ack { id } => {
                put_header(buf, frame_type::ACK, varint_len(*id));
                put_varint(buf, *id);
            }
            Frame::Reject { id, code, reason } => {
                put_header(
                    buf,
                    frame_type::REJECT,
                    varint_len(*id) + varint_len(*code) + reason.len(),
                );
                put_varint(buf, *id);
                put_varint(buf, *code);
                buf.put_slice(reason);
            }
            Frame::Data { id, chunk } | Frame::End { id, chunk } => {
                encode_chunk_header(buf, self.ty(), *id, chunk.len());
                buf.put_slice(chunk);
            }
            Frame::Close { code, reason } => {
                put_header(buf, frame_type::CLOSE, varint_len(*code) + reason.len());
                put_varint(buf, *code);
                buf.put_slice(reason);
            }
            Frame::Ping => put_header(buf, frame_type::PING, 0),
            Frame::Hello {
                idle_timeout_ms,
                token,
            } => {
                let token_len = token.map_or(0, |_| TOKEN_LEN);
                put_header(
                    buf,
                    frame_type::HELLO,
                    varint_len(*idle_timeout_ms) + token_len,
                );
                put_varint(buf, *idle_timeout_ms);
                if let Some(t) = token {
                    buf.put_slice(&t.0);
                }
            }
            Frame::Welcome {
                token,
                resume_window_ms,
                resumed,
                idle_timeout_ms,
            } => {
                put_header(
                    buf,
                    frame_type::WELCOME,
                    TOKEN_LEN + varint_len(*resume_window_ms) + 1 + varint_len(*idle_timeout_ms),
                );
                buf.put_slice(&token.0);
                put_varint(buf, *resume_window_ms);
                put_varint(buf, u64::from(*resumed));
                put_varint(buf, *idle_timeout_ms);
            }
            Frame::Received { below, ids } => {
                let len = varint_len(*below) + ids.iter().map(|&i| varint_len(i)).sum::<usize>();
                put_header(buf, frame_type::RECEIVED, len);
                put_varint(buf, *below);
                for &id in ids {
                    put_varint(buf, id);
                }
            }
            Frame::Partial { id, held } => {
                put_header(
                    buf,
                    frame_type::PARTIAL,
                    varint_len(*id) + varint_len(*held),
                );
                put_varint(buf, *id);
                put_varint(buf, *held);
            }
            Frame::Unknown { ty, len } => {
                put_header(buf, *ty, *len);
                buf.put_bytes(0, *len);
            }
        }
    }
}

/// Writes the header of a DATA or END frame carrying `chunk_len` bytes of
/// message `id`, so that senders can append the chunk without copying it
/// through a `Frame`.
pub fn encode_chunk_header(buf: &mut BytesMut, ty: u64, id: u64, chunk_len: usize) {
    put_header(buf, ty, varint_len(id) + chunk_len);
    put_varint(buf, id);
}

fn put_header(buf: &mut BytesMut, ty: u64, len: usize) {
    put_varint(buf, ty);
    put_varint(buf, len as u64);
}

/// Which protocol a connection speaks, as its ALPN selected: it decides
/// which frame types exist (on chat/1, chat/2's types are unknown, skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    #[default]
    V1,
    V2,
}

/// Parses a chat/1 frame payload of type `ty`. `payload` is exactly the
/// frame's body.
pub fn parse_payload(ty: u64, payload: Bytes) -> Result<Frame, CodecError> {
    parse_payload_as(Version::V1, ty, payload)
}

/// Parses a frame payload of type `ty` as `version` defines it.
pub fn parse_payload_as(
    version: Version,
    ty: u64,
    mut payload: Bytes,
) -> Result<Frame, CodecError> {
    let len = payload.len();
    match ty {
        frame_type::HELLO if version == Version::V2 => {
            let idle_timeout_ms =
                get_varint(&mut payload).ok_or(CodecError::BadPayload("HELLO"))?;
            let token = match payload.len() {
                0 => None,
                TOKEN_LEN => Some(token(&payload)),
                _ => return Err(CodecError::BadPayload("HELLO")),
            };
            Ok(Frame::Hello {
                idle_timeout_ms,
                token,
            })
        }
        frame_type::RECEIVED if version == Version::V2 => {
            let bad = CodecError::BadPayload("RECEIVED");
            let below = get_varint(&mut payload).ok_or(bad.clone())?;
            let mut ids = Vec::new();
            let mut last = below;
            while payload.has_remaining() {
                let id = get_varint(&mut payload).ok_or(bad.clone())?;
                // Listed ids are above `below` and strictly increasing.
                if id <= last {
                    return Err(bad);
                }
                ids.push(id);
                last = id;
            }
            Ok(Frame::Received { below, ids })
        }
        frame_type::PARTIAL if version == Version::V2 => {
            let bad = CodecError::BadPayload("PARTIAL");
            let id = get_varint(&mut payload).ok_or(bad.clone())?;
            let held = get_varint(&mut payload).ok_or(bad.clone())?;
            if held == 0 || payload.has_remaining() {
                return Err(bad);
            }
            Ok(Frame::Partial { id, held })
        }
        frame_type::WELCOME if version == Version::V2 => {
            let bad = CodecError::BadPayload("WELCOME");
            if payload.len() < TOKEN_LEN {
                return Err(bad);
            }
            let token = token(&payload.split_to(TOKEN_LEN));
            let resume_window_ms = get_varint(&mut payload).ok_or(bad.clone())?;
            let resumed = match get_varint(&mut payload) {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(bad),
            };
            let idle_timeout_ms = get_varint(&mut payload).ok_or(bad.clone())?;
            if payload.has_remaining() {
                return Err(bad);
            }
            Ok(Frame::Welcome {
                token,
                resume_window_ms,
                resumed,
                idle_timeout_ms,
            })
        }
        frame_type::ACK => {
            let id = get_varint(&mut payload).ok_or(CodecError::BadPayload("ACK"))?;
            if payload.has_remaining() {
                return Err(CodecError::BadPayload("ACK"));
            }
            Ok(Frame::Ack { id })
        }
        frame_type::REJECT => {
            let id = get_varint(&mut payload).ok_or(CodecError::BadPayload("REJECT"))?;
            let code = get_varint(&mut payload).ok_or(CodecError::BadPayload("REJECT"))?;
            Ok(Frame::Reject {
                id,
                code,
                reason: payload,
            })
        }
        frame_type::DATA => {
            let id = get_varint(&mut payload).ok_or(CodecError::BadPayload("DATA"))?;
            Ok(Frame::Data { id, chunk: payload })
        }
        frame_type::END => {
            let id = get_varint(&mut payload).ok_or(CodecError::BadPayload("END"))?;
            Ok(Frame::End { id, chunk: payload })
        }
        frame_type::CLOSE => {
            let code = get_varint(&mut payload).ok_or(CodecError::BadPayload("CLOSE"))?;
            Ok(Frame::Close {
                code,
                reason: payload,
            })
        }
        frame_type::PING => Ok(Frame::Ping),
        ty => Ok(Frame::Unknown { ty, len }),
    }
}

fn token(bytes: &[u8]) -> Token {
    let mut t = [0u8; TOKEN_LEN];
    t.copy_from_slice(&bytes[..TOKEN_LEN]);
    Token(t)
}

/// Incremental frame decoder over a growing byte buffer.
#[derive(Debug, Default)]
pub struct FrameDecoder;

impl FrameDecoder {
    /// Takes one whole chat/1 frame off the front of `buf`, or returns
    /// `Ok(None)` if more bytes are needed. On `Ok(None)` the buffer's
    /// capacity has been reserved for the rest of the frame, never more
    /// than the limit allows.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.decode_as(Version::V1, buf)
    }

    /// Like [`decode`](Self::decode), for a connection speaking `version`.
    pub fn decode_as(
        &mut self,
        version: Version,
        buf: &mut BytesMut,
    ) -> Result<Option<Frame>, CodecError> {
        let Some((ty, ty_len)) = peek_varint(buf) else {
            return Ok(None);
        };
        let Some((len, len_len)) = peek_varint(&buf[ty_len..]) else {
            return Ok(None);
        };
        if len > MAX_FRAME_LEN {
            return Err(CodecError::FrameTooLong(len));
        }
        let header = ty_len + len_len;
        // `len` is at most 1 MiB here, so the cast cannot truncate.
        let total = header + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(header);
        let payload = buf.split_to(len as usize).freeze();
        parse_payload_as(version, ty, payload).map(Some)
    }
}

/// Decodes a reason phrase for display: invalid UTF-8 becomes U+FFFD, never
/// an error (docs/protocol.md §2.2).
pub fn reason_text(reason: &[u8]) -> String {
    String::from_utf8_lossy(reason).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(f: &Frame) -> BytesMut {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        b
    }

    #[test]
    fn varint_examples_from_rfc9000() {
        // RFC 9000 §A.1 sample encodings.
        let cases: &[(&[u8], u64)] = &[
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
            (&[0x40, 0x25], 37),
        ];
        for (bytes, v) in cases {
            assert_eq!(peek_varint(bytes), Some((*v, bytes.len())));
        }
        let mut b = BytesMut::new();
        put_varint(&mut b, 15_293);
        assert_eq!(&b[..], &[0x7b, 0xbd]);
    }

    #[test]
    fn ack_with_trailing_bytes_is_an_error() {
        let mut b = BytesMut::new();
        put_varint(&mut b, frame_type::ACK);
        put_varint(&mut b, 2);
        b.put_slice(&[5, 0]);
        assert_eq!(
            FrameDecoder.decode(&mut b),
            Err(CodecError::BadPayload("ACK"))
        );
    }

    #[test]
    fn empty_payloads_that_need_varints_are_errors() {
        for ty in [
            frame_type::ACK,
            frame_type::REJECT,
            frame_type::DATA,
            frame_type::END,
            frame_type::CLOSE,
        ] {
            assert!(parse_payload(ty, Bytes::new()).is_err(), "type {ty:#x}");
        }
        // REJECT needs two varints.
        assert!(parse_payload(frame_type::REJECT, Bytes::from_static(&[1])).is_err());
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut b = BytesMut::new();
        put_varint(&mut b, frame_type::DATA);
        put_varint(&mut b, VARINT_MAX);
        assert_eq!(
            FrameDecoder.decode(&mut b),
            Err(CodecError::FrameTooLong(VARINT_MAX))
        );
        let mut b = BytesMut::new();
        put_varint(&mut b, 0x7777);
        put_varint(&mut b, MAX_FRAME_LEN + 1);
        assert!(FrameDecoder.decode(&mut b).is_err());
    }

    #[test]
    fn frame_of_exactly_the_limit_is_accepted() {
        let f = Frame::Data {
            id: 0,
            chunk: Bytes::from(vec![7u8; MAX_FRAME_LEN as usize - 1]),
        };
        let mut b = encode(&f);
        assert_eq!(FrameDecoder.decode(&mut b), Ok(Some(f)));
    }

    #[test]
    fn non_minimal_varints_are_accepted() {
        // ACK id 5 with the id written in 8 bytes and the length in 2.
        let mut b = BytesMut::from(&[0x40, 0x01, 0x40, 0x08, 0xc0, 0, 0, 0, 0, 0, 0, 5][..]);
        assert_eq!(FrameDecoder.decode(&mut b), Ok(Some(Frame::Ack { id: 5 })));
        assert!(b.is_empty());
    }

    #[test]
    fn unknown_frames_are_skipped_by_length() {
        let mut b = encode(&Frame::Unknown { ty: 0x3f, len: 3 });
        Frame::Ack { id: 9 }.encode(&mut b);
        assert_eq!(
            FrameDecoder.decode(&mut b),
            Ok(Some(Frame::Unknown { ty: 0x3f, len: 3 }))
        );
        assert_eq!(FrameDecoder.decode(&mut b), Ok(Some(Frame::Ack { id: 9 })));
    }

    #[test]
    fn hello_and_welcome_are_chat2_only_and_exactly_shaped() {
        let hello = Frame::Hello {
            idle_timeout_ms: 10_000,
            token: Some(Token([7; TOKEN_LEN])),
        };
        let welcome = Frame::Welcome {
            token: Token([9; TOKEN_LEN]),
            resume_window_ms: 0,
            resumed: false,
            idle_timeout_ms: 3_000,
        };
        for f in [hello, welcome] {
            let mut b = encode(&f);
            assert_eq!(
                FrameDecoder.decode_as(Version::V2, &mut b),
                Ok(Some(f.clone()))
            );
            // On chat/1 the same bytes are a frame of an unknown type.
            let mut b = encode(&f);
            assert!(matches!(
                FrameDecoder.decode(&mut b),
                Ok(Some(Frame::Unknown { .. }))
            ));
        }
        // A token of another length, bytes left over, `resumed` of 2.
        for payload in [&[0x00, 1, 2, 3][..], &[0x00; 1 + TOKEN_LEN + 1][..]] {
            assert!(
                parse_payload_as(
                    Version::V2,
                    frame_type::HELLO,
                    Bytes::copy_from_slice(payload)
                )
                .is_err()
            );
        }
        let mut w = vec![0u8; TOKEN_LEN];
        w.extend_from_slice(&[0, 2, 0]);
        assert!(
            parse_payload_as(Version::V2, frame_type::WELCOME, Bytes::from(w.clone())).is_err()
        );
        w[TOKEN_LEN + 1] = 1;
        w.push(0);
        assert!(parse_payload_as(Version::V2, frame_type::WELCOME, Bytes::from(w)).is_err());
    }

    #[test]
    fn received_lists_increasing_ids_above_its_floor() {
        let f = Frame::Received {
            below: 5,
            ids: vec![7, 9, 1 << 40],
        };
        let mut b = encode(&f);
        assert_eq!(FrameDecoder.decode_as(Version::V2, &mut b), Ok(Some(f)));
        for ids in [&[5u64][..], &[7, 7], &[9, 8]] {
            let mut b = BytesMut::new();
            put_varint(&mut b, 5);
            for &id in ids {
                put_varint(&mut b, id);
            }
            assert!(
                parse_payload_as(Version::V2, frame_type::RECEIVED, b.freeze()).is_err(),
                "{ids:?}"
            );
        }
        let p = Frame::Partial { id: 3, held: 100 };
        let mut b = encode(&p);
        assert_eq!(FrameDecoder.decode_as(Version::V2, &mut b), Ok(Some(p)));
        let mut zero = BytesMut::new();
        put_varint(&mut zero, 3);
        put_varint(&mut zero, 0);
        assert!(parse_payload_as(Version::V2, frame_type::PARTIAL, zero.freeze()).is_err());
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let id = 0..=VARINT_MAX;
        let bytes = proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        prop_oneof![
            id.clone().prop_map(|id| Frame::Ack { id }),
            (id.clone(), 0..=VARINT_MAX, bytes.clone())
                .prop_map(|(id, code, reason)| Frame::Reject { id, code, reason }),
            (id.clone(), bytes.clone()).prop_map(|(id, chunk)| Frame::Data { id, chunk }),
            (id, bytes.clone()).prop_map(|(id, chunk)| Frame::End { id, chunk }),
            (0..=VARINT_MAX, bytes).prop_map(|(code, reason)| Frame::Close { code, reason }),
            Just(Frame::Ping),
            (0x21..=VARINT_MAX, 0usize..100).prop_map(|(ty, len)| Frame::Unknown { ty, len }),
        ]
    }

    proptest! {
        #[test]
        fn varints_round_trip(v in 0..=VARINT_MAX) {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            prop_assert_eq!(b.len(), varint_len(v));
            prop_assert_eq!(peek_varint(&b), Some((v, b.len())));
        }

        #[test]
        fn frames_round_trip_when_fed_in_pieces(
            frames in proptest::collection::vec(arb_frame(), 1..8),
            cut in 1usize..64,
        ) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            // Feed the bytes `cut` at a time, as a socket might deliver them.
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(cut) {
                buf.extend_from_slice(piece);
                while let Some(f) = FrameDecoder.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_overreserve(
            input in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = FrameDecoder.decode(&mut buf) {}
            // Never reserve more than one maximal frame, whatever the header says.
            prop_assert!(buf.capacity() <= MAX_HEADER_LEN + MAX_FRAME_LEN as usize + input.len());
        }
    }
}
