//! Fuzzes the parsers of text that users and files hand us (JSON input
//! lines, allow files, fingerprints) and the renderer of peer bytes: none may
//! panic, and rendered text must carry no control characters other than
//! newline and tab.
#![no_main]

use chat::trust::identity::Fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chat::ui::input::parse_line(data, true);
    let _ = chat::ui::input::parse_line(data, false);
    let shown = chat::ui::render::sanitize(data);
    for c in shown.chars() {
        assert!(
            c == '\n' || c == '\t' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "raw control {c:?}"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chat::trust::allow::parse(text);
        let _ = text.parse::<Fingerprint>();
        let line = chat::ui::render::sanitize_line(text);
        assert!(!line.contains('\n'));
    }
});
