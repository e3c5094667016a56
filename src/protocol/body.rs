//! A received message body, kept as the chunks it arrived in.
//!
//! A large message arrives in many pieces (QUIC stream chunks, TCP DATA
//! frames). Joining them into one buffer would hold the message twice at
//! the moment of joining; instead the pieces are handed on as they are, and
//! the outputs read them in order: JSON output escapes text or encodes
//! base64 piece by piece, straight into its writer. Receiving a 64 MiB
//! message then costs about 64 MiB, not two or three times that. Small
//! pieces (QUIC hands over a packet's worth at a time; a hostile TCP peer
//! may send one-byte frames) are gathered into blocks, so the bookkeeping
//! per piece cannot outgrow the message.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use base64::write::EncoderWriter;
use bytes::{Bytes, BytesMut};

/// Pieces shorter than this are copied into a block rather than kept, once
/// a body has [`KEPT`] pieces: a piece costs about 60 bytes of bookkeeping,
/// so at 1 KiB and more that is at most 6 %. (QUIC's pieces, a packet's
/// worth each, are just above it and are never copied.)
const SMALL: usize = 1024;
/// Pieces always kept as they are: a short message is never copied.
const KEPT: usize = 16;
/// Size of the blocks small pieces are gathered into.
const BLOCK: usize = 64 * 1024;

/// A message body: its bytes are the concatenation of the chunks, then the
/// tail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    chunks: Vec<Bytes>,
    /// Small pieces gathered since the last chunk.
    tail: BytesMut,
    len: usize,
}

impl Body {
    /// Adds the next piece.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        if chunk.len() >= SMALL || (self.chunks.len() < KEPT && self.tail.is_empty()) {
            self.seal_tail();
            self.chunks.push(chunk);
            return;
        }
        if self.tail.capacity() == 0 {
            self.tail.reserve(BLOCK);
        }
        self.tail.extend_from_slice(&chunk);
        if self.tail.len() >= BLOCK {
            self.seal_tail();
        }
    }

    /// Adds the next piece as a copy, gathered into blocks of the body's
    /// own. For bytes received from a peer: a piece is a slice of the
    /// buffer it was read into, and keeping it would keep that whole buffer
    /// (up to a megabyte for a few bytes), out of all proportion to what a
    /// receive budget counts.
    pub fn push_copy(&mut self, piece: &[u8]) {
        let mut rest = piece;
        self.len += rest.len();
        while !rest.is_empty() {
            if self.tail.capacity() == 0 {
                self.tail.reserve(BLOCK);
            }
            let room = (BLOCK - self.tail.len().min(BLOCK)).max(1);
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.tail.extend_from_slice(now);
            rest = later;
            if self.tail.len() >= BLOCK {
                self.seal_tail();
            }
        }
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push(self.tail.split().freeze());
        }
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]).filter(|t| !t.is_empty()))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole body in one slice: borrowed when it is one piece, joined
    /// (a copy) otherwise. For outputs that show a message to a person.
    pub fn contiguous(&self) -> Cow<'_, [u8]> {
        let mut pieces = self.pieces();
        match (pieces.next(), pieces.next()) {
            (None, _) => Cow::Borrowed(&[]),
            (Some(one), None) => Cow::Borrowed(one),
            _ => {
                let mut whole = Vec::with_capacity(self.len);
                for p in self.pieces() {
                    whole.extend_from_slice(p);
                }
                Cow::Owned(whole)
            }
        }
    }

    /// At most the first `max` bytes, in one slice.
    pub fn prefix(&self, max: usize) -> Cow<'_, [u8]> {
        match self.pieces().next() {
            None => Cow::Borrowed(&[]),
            Some(first) if first.len() >= max.min(self.len) => {
                Cow::Borrowed(&first[..max.min(first.len())])
            }
            Some(_) => {
                let mut out = Vec::with_capacity(max.min(self.len));
                for c in self.pieces() {
                    let room = max - out.len();
                    if room == 0 {
                        break;
                    }
                    out.extend_from_slice(&c[..room.min(c.len())]);
                }
                Cow::Owned(out)
            }
        }
    }

    /// The body as UTF-8 text, in pieces, if it is valid UTF-8 as a whole
    /// (a character may be split between two chunks).
    pub fn text(&self) -> Option<Text<'_>> {
        let mut pieces = Vec::with_capacity(self.chunks.len() + 1);
        // The start of a character cut off at the end of the previous chunk.
        let mut carry: Vec<u8> = Vec::new();
        for chunk in self.pieces() {
            let mut rest: &[u8] = chunk;
            while !carry.is_empty() {
                let (&first, tail) = rest.split_first()?;
                carry.push(first);
                rest = tail;
                match std::str::from_utf8(&carry) {
                    Ok(s) => {
                        pieces.push(Cow::Owned(s.to_string()));
                        carry.clear();
                    }
                    Err(e) if e.error_len().is_some() => return None,
                    Err(_) if rest.is_empty() => break,
                    Err(_) => {}
                }
            }
            if rest.is_empty() {
                continue;
            }
            match std::str::from_utf8(rest) {
                Ok(s) => pieces.push(Cow::Borrowed(s)),
                Err(e) if e.error_len().is_none() => {
                    let (valid, cut) = rest.split_at(e.valid_up_to());
                    pieces.push(Cow::Borrowed(std::str::from_utf8(valid).ok()?));
                    carry.extend_from_slice(cut);
                }
                Err(_) => return None,
            }
        }
        carry.is_empty().then_some(Text { pieces })
    }

    /// Writes the body as standard base64 (with padding).
    pub fn base64(&self) -> Base64<'_> {
        Base64(self)
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        let mut body = Body::default();
        body.push(b);
        body
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Body {
        Body::from(Bytes::from_static(b))
    }
}

/// A body known to be UTF-8 text; displays as that text.
pub struct Text<'a> {
    pieces: Vec<Cow<'a, str>>,
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces.iter().try_for_each(|p| f.write_str(p))
    }
}

/// A body displayed as base64.
pub struct Base64<'a>(&'a Body);

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut encoder =
            EncoderWriter::new(FmtWriter(f), &base64::engine::general_purpose::STANDARD);
        for chunk in self.0.pieces() {
            encoder.write_all(chunk).map_err(|_| fmt::Error)?;
        }
        encoder.finish().map(|_| ()).map_err(|_| fmt::Error)
    }
}

/// Lets the base64 encoder (an `io::Write` adapter) write to a formatter;
/// what it writes is always ASCII.
struct FmtWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for FmtWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.write_str(s).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    fn split(bytes: &[u8], cuts: &[usize]) -> Body {
        let mut body = Body::default();
        let mut at = 0;
        for &c in cuts {
            let c = c.min(bytes.len()).max(at);
            body.push(Bytes::copy_from_slice(&bytes[at..c]));
            at = c;
        }
        body.push(Bytes::copy_from_slice(&bytes[at..]));
        body
    }

    #[test]
    fn a_character_split_between_chunks_is_still_text() {
        let s = "a€b😀c";
        for cut in 0..=s.len() {
            let body = split(s.as_bytes(), &[cut]);
            assert_eq!(body.text().map(|t| t.to_string()).as_deref(), Some(s));
        }
        let body = split("😀".as_bytes(), &[1, 2, 3]);
        assert_eq!(body.text().unwrap().to_string(), "😀");
    }

    #[test]
    fn large_chunks_are_kept_and_characters_split_between_them_still_read() {
        let text = "a€😀".repeat(2000); // 16,000 bytes
        for first in [SMALL, SMALL + 1, SMALL + 2, SMALL + 3, 2 * SMALL + 5] {
            let body = split(text.as_bytes(), &[first, first + SMALL + 1]);
            assert_eq!(
                body.pieces().count(),
                3,
                "pieces of 4 KiB and more are kept"
            );
            assert_eq!(body.text().unwrap().to_string(), text);
            assert_eq!(body.contiguous().as_ref(), text.as_bytes());
            assert_eq!(
                body.base64().to_string(),
                base64::engine::general_purpose::STANDARD.encode(&text)
            );
        }
        let mut bad = text.clone().into_bytes();
        bad[SMALL + 7] = 0xff;
        assert!(split(&bad, &[SMALL]).text().is_none());
    }

    #[test]
    fn small_pieces_are_gathered_into_blocks() {
        let mut body = Body::default();
        for _ in 0..100_000 {
            body.push(Bytes::from_static(b"x"));
        }
        assert_eq!(body.len(), 100_000);
        assert!(
            body.chunks.len() <= KEPT + 2,
            "{} chunks",
            body.chunks.len()
        );
        assert_eq!(body.contiguous().len(), 100_000);
    }

    #[test]
    fn invalid_or_truncated_utf8_is_not_text() {
        assert!(split(b"ab\xff", &[1]).text().is_none());
        assert_eq!(split("€".as_bytes(), &[2]).pieces().count(), 2);
        assert!(split(&"€".as_bytes()[..2], &[1]).text().is_none());
        assert!(split(b"\xe2\x82x", &[1]).text().is_none());
        assert!(Body::default().text().unwrap().to_string().is_empty());
    }

    proptest! {
        #[test]
        fn pieces_agree_with_the_whole(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                       cuts in proptest::collection::vec(0usize..64, 0..6),
                                       text in ".{0,20}") {
            let mut cuts = cuts;
            cuts.sort_unstable();
            for input in [bytes.clone(), text.into_bytes()] {
                let body = split(&input, &cuts);
                prop_assert_eq!(body.len(), input.len());
                let whole = body.contiguous();
                prop_assert_eq!(whole.as_ref(), input.as_slice());
                for max in [0, 1, 7, 100] {
                    let head = body.prefix(max);
                    prop_assert_eq!(head.as_ref(), &input[..max.min(input.len())]);
                }
                let want = std::str::from_utf8(&input).ok().map(str::to_string);
                prop_assert_eq!(body.text().map(|t| t.to_string()), want);
                prop_assert_eq!(
                    body.base64().to_string(),
                    base64::engine::general_purpose::STANDARD.encode(&input)
                );
            }
        }
    }

    #[test]
    fn copied_pieces_are_gathered_into_blocks_of_its_own() {
        let big = Bytes::from(vec![7u8; 3 * BLOCK]);
        let mut b = Body::default();
        for piece in [&big[..10], &big[..BLOCK], &big[..2 * BLOCK + 5]] {
            b.push_copy(piece);
        }
        assert_eq!(b.len(), 10 + BLOCK + 2 * BLOCK + 5);
        assert_eq!(b.contiguous().len(), b.len());
        assert!(b.pieces().all(|p| p.len() <= BLOCK));
        // None of them is a slice of `big`.
        let range = big.as_ptr_range();
        assert!(b.pieces().all(|p| !range.contains(&p.as_ptr())));
    }
}
