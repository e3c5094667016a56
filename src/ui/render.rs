//! Safe rendering of bytes that came from the network.
//!
//! Nothing the peer sends may reach the terminal as a control sequence: a
//! message, a reason phrase or a log field could otherwise move the cursor,
//! retitle the window, overwrite earlier lines or reverse text direction.
//! Everything from the peer that is displayed goes through [`sanitize`].

use std::fmt::Write;

/// Renders `bytes` as printable text: valid UTF-8 stays as it is except for
/// control characters (C0 other than newline and tab, DEL, C1) and bidi
/// controls, which become visible escapes such as `\x1b` or `\u{202e}`;
/// bytes that are not UTF-8 become `\xNN`.
pub fn sanitize(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    sanitize_into(&mut out, bytes, true);
    out
}

/// Bytes of a body rendered at a time by [`sanitize_pieces`].
const WINDOW: usize = 64 * 1024;

/// [`sanitize`] for a body read piece by piece (a large message is never
/// joined into one buffer, nor rendered into one string): `emit` gets the
/// rendering a window of about 64 KiB at a time, and the windows together
/// are exactly what [`sanitize`] would give for the whole. A character
/// split between pieces is carried over to the next window.
pub fn sanitize_pieces<'a>(pieces: impl Iterator<Item = &'a [u8]>, mut emit: impl FnMut(&str)) {
    let mut window: Vec<u8> = Vec::new();
    let mut text = String::new();
    let mut render = |window: &mut Vec<u8>, last: bool| {
        text.clear();
        let held = sanitize_into(&mut text, window, last);
        emit(&text);
        window.drain(..window.len() - held);
    };
    for piece in pieces {
        for part in piece.chunks(WINDOW) {
            window.extend_from_slice(part);
            if window.len() >= WINDOW {
                render(&mut window, false);
            }
        }
    }
    render(&mut window, true);
}

/// Appends [`sanitize`]'s rendering of `bytes` to `out`. Unless `last`, an
/// incomplete UTF-8 sequence at the very end is left out (its length is
/// returned): the next bytes may complete it.
fn sanitize_into(out: &mut String, bytes: &[u8], last: bool) -> usize {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(out, c);
        }
        let invalid = chunk.invalid();
        let at_end = invalid.as_ptr_range().end == bytes.as_ptr_range().end;
        let incomplete = std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none());
        if !last && at_end && incomplete && !invalid.is_empty() {
            return invalid.len();
        }
        for b in invalid {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    0
}

/// Like [`sanitize`] for text already known to be UTF-8 (e.g. a reason
/// phrase decoded with replacement characters); also escapes newlines, since
/// such text is shown on one line.
pub fn sanitize_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => push_char(&mut out, c),
        }
    }
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\n' | '\t' => out.push(c),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x20 || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        // C1 controls, including the 8-bit CSI (U+009B) some terminals obey.
        '\u{80}'..='\u{9f}' => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        // Bidi marks, embeddings, overrides and isolates (Trojan Source).
        '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sanitizing_piece_by_piece_gives_what_sanitizing_the_whole_does() {
        let mut whole = Vec::new();
        for i in 0..40_000u32 {
            whole.extend_from_slice("aé€😀\n\x1b\u{202e}".as_bytes());
            whole.push((i % 256) as u8);
        }
        whole.extend_from_slice(&"€".as_bytes()[..2]);
        let want = sanitize(&whole);
        for cut in [
            1,
            2,
            3,
            7,
            1000,
            WINDOW - 1,
            WINDOW,
            WINDOW + 1,
            whole.len(),
        ] {
            let mut got = String::new();
            sanitize_pieces(whole.chunks(cut), |s| got.push_str(s));
            assert!(got == want, "pieces of {cut} bytes rendered differently");
        }
    }

    use super::*;

    fn no_controls(s: &str) {
        for c in s.chars() {
            assert!(
                c == '\n'
                    || c == '\t'
                    || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
                "raw control {c:?} in {s:?}"
            );
        }
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            sanitize("héllo, wörld ✓\tok\nnext".as_bytes()),
            "héllo, wörld ✓\tok\nnext"
        );
    }

    #[test]
    fn escape_sequences_become_visible() {
        let csi = sanitize(b"\x1b[2J\x1b[H");
        assert_eq!(csi, "\\x1b[2J\\x1b[H");
        let osc_title = sanitize(b"\x1b]0;pwned\x07");
        assert_eq!(osc_title, "\\x1b]0;pwned\\x07");
        let unterminated = sanitize(b"\x1b]2;title forever");
        assert_eq!(unterminated, "\\x1b]2;title forever");
        for s in [csi, osc_title, unterminated] {
            no_controls(&s);
        }
    }

    #[test]
    fn carriage_return_cannot_overwrite() {
        assert_eq!(sanitize(b"safe\rEVIL"), "safe\\rEVIL");
    }

    #[test]
    fn c1_del_and_bidi_are_escaped() {
        let s = sanitize("a\u{9b}31mb\x7fc\u{202e}txt.exe\u{2066}".as_bytes());
        assert_eq!(s, "a\\u{9b}31mb\\x7fc\\u{202e}txt.exe\\u{2066}");
        no_controls(&s);
    }

    #[test]
    fn invalid_utf8_is_shown_as_hex() {
        assert_eq!(sanitize(b"ok\xff\xfe!"), "ok\\xff\\xfe!");
        // A C1 control encoded as a raw 8-bit byte is invalid UTF-8, so it is
        // escaped too.
        assert_eq!(sanitize(b"\x9b2J"), "\\x9b2J");
    }

    #[test]
    fn one_line_form_escapes_newlines() {
        assert_eq!(sanitize_line("a\nb\x1b"), "a\\nb\\x1b");
    }
}
