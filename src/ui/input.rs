//! What the user types, turned into messages (CLI.md): one message per input
//! line, or in `--json` mode one `{"text": …}` / `{"base64": …}` object per
//! line.
//!
//! Standard input is read on a plain thread rather than a tokio task: a
//! blocking read cannot be cancelled, and a thread is simply abandoned when
//! the process exits.

use std::io::BufRead;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// One thing the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInput {
    /// A message to send.
    Message(Bytes),
    /// A line that could not be understood; nothing is sent.
    Invalid(String),
    /// End of input.
    End,
    /// Show this chat's statistics (/stats at the terminal).
    Stats,
}

/// Starts reading standard input; lines arrive on the returned channel.
pub fn spawn_stdin(json: bool) -> mpsc::Receiver<UserInput> {
    // A few lines of slack; beyond that the reader waits, so piping a huge
    // file in does not buffer it all in memory.
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::spawn(move || {
        // Only to wait for room in the queue; it drives no I/O.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
            return;
        };
        let stdin = std::io::stdin();
        let mut lock = std::io::BufReader::with_capacity(64 * 1024, stdin.lock());
        let mut line = Vec::new();
        // Room reserved in the queue, taken a batch at a time: waiting for
        // one free slot per line would cost the session a thread wake-up per
        // line while a pipe keeps the queue full. A line is still passed on
        // as soon as it is read.
        let mut room = None;
        let mut send = |input: UserInput| -> bool {
            loop {
                if let Some(permit) = room.as_mut().and_then(Iterator::next) {
                    mpsc::Permit::send(permit, input);
                    return true;
                }
                match rt.block_on(tx.reserve_many(QUEUE / 4)) {
                    Ok(permits) => room = Some(permits),
                    Err(_) => return false,
                }
            }
        };
        loop {
            line.clear();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if !send(parse_line(&line, json)) {
                        return;
                    }
                }
                Err(e) => {
                    send(UserInput::Invalid(format!("cannot read input: {e}")));
                    break;
                }
            }
        }
        send(UserInput::End);
    });
    rx
}

/// Lines read ahead of the session.
const QUEUE: usize = 256;

/// Turns one input line (with or without its line ending) into input.
pub fn parse_line(line: &[u8], json: bool) -> UserInput {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !json {
        return UserInput::Message(Bytes::copy_from_slice(line));
    }
    match parse_json(line) {
        Ok(body) => UserInput::Message(body),
        Err(e) => UserInput::Invalid(e),
    }
}

/// Parses one input line in JSON mode. The string is moved out of the
/// parsed object, so a large message's text is not copied again on its way
/// to the transport.
fn parse_json(line: &[u8]) -> Result<Bytes, String> {
    const EXPECTED: &str = r#"expected {"text": "..."} or {"base64": "..."}"#;
    let object: Map<String, Value> = serde_json::from_slice(line).map_err(|e| {
        if e.is_data() {
            format!("input is not a JSON object ({e}); {EXPECTED}")
        } else {
            format!("input is not JSON ({e}); {EXPECTED}")
        }
    })?;
    if object.len() != 1 {
        return Err(format!("input must have exactly one key; {EXPECTED}"));
    }
    match object.into_iter().next() {
        Some((key, Value::String(text))) if key == "text" => Ok(Bytes::from(text.into_bytes())),
        Some((key, Value::String(b64))) if key == "base64" => {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("invalid base64 ({e})"))
        }
        _ => Err(EXPECTED.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_lose_only_their_line_ending() {
        assert_eq!(
            parse_line(b"hi there\n", false),
            UserInput::Message(Bytes::from_static(b"hi there"))
        );
        assert_eq!(
            parse_line(b"crlf\r\n", false),
            UserInput::Message(Bytes::from_static(b"crlf"))
        );
        assert_eq!(parse_line(b"\n", false), UserInput::Message(Bytes::new()));
        assert_eq!(
            parse_line(b"\xff\x00", false),
            UserInput::Message(Bytes::from_static(b"\xff\x00"))
        );
    }

    #[test]
    fn json_lines_carry_text_or_base64() {
        assert_eq!(
            parse_line(br#"{"text":"a\nb"}"#, true),
            UserInput::Message(Bytes::from_static(b"a\nb"))
        );
        assert_eq!(
            parse_line(br#"{"base64":"/wA="}"#, true),
            UserInput::Message(Bytes::from_static(b"\xff\x00"))
        );
        assert_eq!(
            parse_line(br#"{"text":""}"#, true),
            UserInput::Message(Bytes::new())
        );
    }

    #[test]
    fn bad_json_lines_are_reported_not_sent() {
        for bad in [
            &b"hello"[..],
            b"[1]",
            br#"{"text":1}"#,
            br#"{"base64":"!!"}"#,
            br#"{"text":"a","base64":""}"#,
            br#"{"text":"a","other":1}"#,
            br#"{}"#,
            br#"{"text":null}"#,
            br#"["hi",null]"#,
            br#"[null,"aGk="]"#,
            br#"{"text":"a","base64":null}"#,
            b"",
        ] {
            assert!(
                matches!(parse_line(bad, true), UserInput::Invalid(_)),
                "{bad:?}"
            );
        }
    }
}
