//! What the user types, turned into messages (CLI.md): one message per input
//! line, or in `--json` mode one `{"text": …}` / `{"base64": …}` object per
//! line.
//!
//! Standard input is read on a plain thread rather than a tokio task: a
//! blocking read cannot be cancelled, and a thread is simply abandoned when
//! the process exits.
//!
//! We do not know the peer's size limit, so our own `--max-message-size`
//! bounds what we send: a longer line is refused as it is read (see
//! [`lines`](super::lines)), never kept whole first.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::json_line;
use super::lines::{Line, read_bounded};

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
/// Messages larger than `max_message` bytes are refused.
pub fn spawn_stdin(json: bool, max_message: u64) -> mpsc::Receiver<UserInput> {
    let max_line = max_line(json, max_message);
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
            let input = match read_bounded(&mut lock, &mut line, max_line) {
                Ok(Line::End) => break,
                Ok(Line::Whole) => within(
                    parse_owned_line(std::mem::take(&mut line), json),
                    max_message,
                ),
                Ok(Line::TooLong { bytes }) => UserInput::Invalid(format!(
                    "input line of {bytes} bytes is longer than a message may be \
                     (--max-message-size {max_message}{}): not sent",
                    if json { ", once decoded" } else { "" }
                )),
                Err(e) => {
                    send(UserInput::Invalid(format!("cannot read input: {e}")));
                    break;
                }
            };
            if !send(input) {
                return;
            }
        }
        send(UserInput::End);
    });
    rx
}

/// Lines read ahead of the session.
const QUEUE: usize = 256;

/// The longest input line that may hold a message of `max_message` bytes:
/// the message and a line ending (CR LF); in JSON, the message at its most
/// escaped (`\u0000` for every byte) and the object around it.
fn max_line(json: bool, max_message: u64) -> usize {
    let max = if json {
        max_message.saturating_mul(6).saturating_add(64)
    } else {
        max_message.saturating_add(2)
    };
    usize::try_from(max).unwrap_or(usize::MAX)
}

/// Refuses a message larger than `max_message`: the peer would reject it.
fn within(input: UserInput, max_message: u64) -> UserInput {
    match input {
        UserInput::Message(body) if body.len() as u64 > max_message => UserInput::Invalid(format!(
            "message of {} bytes is larger than --max-message-size {max_message}: not sent",
            body.len()
        )),
        other => other,
    }
}

/// Turns one input line (with or without its line ending) into input.
pub fn parse_line(line: &[u8], json: bool) -> UserInput {
    parse_owned_line(line.to_vec(), json)
}

/// [`parse_line`], taking the line's buffer: the message is made in it
/// (plain: the line itself; JSON: see [`json_line`](super::json_line)), so
/// a large message is held once.
pub fn parse_owned_line(mut line: Vec<u8>, json: bool) -> UserInput {
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if !json {
        return UserInput::Message(Bytes::from(line));
    }
    match json_line::body(line) {
        Ok(body) => UserInput::Message(body),
        Err(e) => UserInput::Invalid(e),
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
    fn messages_over_our_limit_are_refused() {
        assert!(matches!(
            within(parse_line(b"12345\n", false), 4),
            UserInput::Invalid(why) if why.contains("--max-message-size 4")
        ));
        assert_eq!(
            within(parse_line(b"1234\r\n", false), 4),
            UserInput::Message(Bytes::from_static(b"1234"))
        );
        // Every message within the limit fits the line bound, escaped.
        assert_eq!(max_line(false, 4), 6);
        let escaped = format!(r#"{{"text":"{}"}}"#, "\\u0001".repeat(4));
        assert!(escaped.len() <= max_line(true, 4));
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
