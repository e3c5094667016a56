//! One `--json` input line, `{"text": …}` or `{"base64": …}`, made into a
//! message body in the line's own buffer where it can be: a large message is
//! held once, not as the line, then the parsed string, then the decoded
//! bytes.
//!
//! The string is borrowed from the line when it has no escapes (always so
//! for base64), then moved to the front of the buffer (text) or decoded
//! there block by block (base64: the decoded bytes never overtake the
//! characters still to be read); the buffer becomes the body. A text with
//! escapes is unescaped into a new string, no longer than the line.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

pub const EXPECTED: &str = r#"expected {"text": "..."} or {"base64": "..."}"#;

/// The one object a line holds; anything else is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input<'a> {
    #[serde(borrow, default, deserialize_with = "cow_str")]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "cow_str")]
    base64: Option<Cow<'a, str>>,
}

/// Where the body is, once the parse no longer borrows the line.
enum Found {
    TextAt(Range<usize>),
    Text(String),
    Base64At(Range<usize>),
    Base64(String),
}

/// The message a line (without its line ending) carries.
pub fn body(mut line: Vec<u8>) -> Result<Bytes, String> {
    let found = {
        let input: Input = serde_json::from_slice(&line).map_err(|e| {
            if e.is_data() {
                format!("input is not such an object ({e}); {EXPECTED}")
            } else {
                format!("input is not JSON ({e}); {EXPECTED}")
            }
        })?;
        match (input.text, input.base64) {
            (Some(text), None) => match within(&line, &text) {
                Some(at) => Found::TextAt(at),
                None => Found::Text(text.into_owned()),
            },
            (None, Some(b64)) => match within(&line, &b64) {
                Some(at) => Found::Base64At(at),
                None => Found::Base64(b64.into_owned()),
            },
            (Some(_), Some(_)) => {
                return Err(format!("input must have exactly one key; {EXPECTED}"));
            }
            (None, None) => return Err(EXPECTED.to_string()),
        }
    };
    match found {
        Found::TextAt(at) => {
            line.copy_within(at.clone(), 0);
            line.truncate(at.len());
            Ok(Bytes::from(line))
        }
        Found::Text(text) => {
            drop(line);
            Ok(Bytes::from(text.into_bytes()))
        }
        Found::Base64At(at) => decode_in_place(line, at),
        Found::Base64(b64) => {
            drop(line);
            STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("invalid base64 ({e})"))
        }
    }
}

/// Where `s` lies in `line`, if it was borrowed from it.
fn within(line: &[u8], s: &str) -> Option<Range<usize>> {
    let start = (s.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let end = start.checked_add(s.len())?;
    (end <= line.len()).then_some(start..end)
}

/// Base64 characters decoded at once: whole quads, so each block decodes
/// on its own.
const BLOCK: usize = 4 * 1024;

/// Decodes the base64 at `at` into the front of `line`, which becomes the
/// body. Writing never overtakes reading: 4 characters give 3 bytes.
fn decode_in_place(mut line: Vec<u8>, at: Range<usize>) -> Result<Bytes, String> {
    let mut out = [0u8; BLOCK / 4 * 3];
    let mut written = 0;
    let mut read = at.start;
    while read < at.end {
        let n = (at.end - read).min(BLOCK);
        let block = &line[read..read + n];
        // Padding ends the text: a block that ends in it with more to come
        // would pass here yet not as a whole.
        if read + n < at.end && block.last() == Some(&b'=') {
            return Err("invalid base64 (padding before the end)".into());
        }
        let got = STANDARD
            .decode_slice(block, &mut out)
            .map_err(|e| format!("invalid base64 ({e})"))?;
        line[written..written + got].copy_from_slice(&out[..got]);
        written += got;
        read += n;
    }
    line.truncate(written);
    Ok(Bytes::from(line))
}

/// A string field, borrowed from the input when it has no escapes.
fn cow_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    d.deserialize_str(CowStr).map(Some)
}

struct CowStr;

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<u8> {
        body(line.as_bytes().to_vec()).unwrap().to_vec()
    }

    #[test]
    fn text_with_and_without_escapes() {
        assert_eq!(ok(r#"{"text":"plain"}"#), b"plain");
        assert_eq!(ok(r#" { "text" : "a\nb\u00e9" } "#), "a\nbé".as_bytes());
        assert_eq!(ok(r#"{"text":""}"#), b"");
    }

    #[test]
    fn base64_across_many_blocks_decodes_in_place() {
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 2, 3, BLOCK / 4 * 3, BLOCK / 4 * 3 + 1, bytes.len()] {
            let line = format!(r#"{{"base64":"{}"}}"#, STANDARD.encode(&bytes[..len]));
            assert_eq!(ok(&line), &bytes[..len], "{len} bytes");
        }
        // An escaped solidus is still base64 (not borrowed, decoded apart).
        assert_eq!(ok(r#"{"base64":"\/w=="}"#), b"\xff");
    }

    #[test]
    fn padding_inside_is_refused_even_at_a_block_boundary() {
        let mut b64 = "A".repeat(BLOCK - 4);
        b64.push_str("QQ==QQ==");
        let line = format!(r#"{{"base64":"{b64}"}}"#);
        assert!(body(line.into_bytes()).is_err());
    }
}
