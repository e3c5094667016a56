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
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
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
