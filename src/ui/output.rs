//! What the user sees: chat events rendered either as plain lines for people
//! or as one JSON object per line for scripts (CLI.md, `--json`).
//!
//! The session reports events through the [`Output`] trait and never formats
//! anything itself, so the terminal front end can be replaced without
//! touching the chat logic.

use std::fmt::Display;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::protocol::body::Body;
use crate::protocol::{MessageId, close_code, reject_code};
use crate::transport::Disconnect;
use crate::trust::identity::Fingerprint;
use crate::ui::render::{sanitize, sanitize_line};

/// Receives every event the user should know about.
pub trait Output: Send {
    fn listening(&mut self, transport: &str, addr: SocketAddr, fingerprint: Fingerprint);
    /// `label` is the allow list's name for the peer, if it has one.
    fn connected(
        &mut self,
        transport: &str,
        peer: SocketAddr,
        fingerprint: Option<Fingerprint>,
        label: Option<&str>,
    );
    fn sent(&mut self, id: MessageId, body: &[u8]);
    fn ack(&mut self, id: MessageId, rtt: Duration);
    fn rejected(&mut self, id: MessageId, code: u64, reason: &str);
    fn message(&mut self, id: MessageId, body: &Body);
    fn disconnected(&mut self, why: &Disconnect, unacked: &[MessageId]);
    fn error(&mut self, message: &str);
    /// A status line for people (plain mode only; JSON has no such event).
    fn info(&mut self, message: &str);
    /// A status line only worth showing to a person at a terminal (plain
    /// output to a pipe keeps its lines as they were).
    fn notice(&mut self, _message: &str) {}
    /// Writes out what the per-message events (`sent`, `ack`, `rejected`,
    /// `message`) left buffered. The session calls it whenever it has
    /// nothing else to do, so a burst of messages costs one write, not one
    /// per event, and a lone event is not held back. Other events are
    /// written at once.
    fn flush(&mut self) {}
}

/// Output buffer for stdout: large enough that a burst of events goes out
/// in a few writes.
const STDOUT_BUFFER: usize = 64 * 1024;

/// Creates the output for the chosen mode, writing to stdout.
pub fn stdout(json: bool) -> Box<dyn Output> {
    let out = BufWriter::with_capacity(STDOUT_BUFFER, std::io::stdout());
    if json {
        Box::new(JsonOutput { out })
    } else {
        Box::new(PlainOutput { out })
    }
}

/// One JSON object per line.
pub struct JsonOutput<W> {
    pub out: W,
}

/// The per-message events are plain structs rather than `json!` values:
/// they are written for every message, and a `Value` costs a map and a
/// string per key each time.
#[derive(Serialize)]
struct SentEvent {
    event: &'static str,
    id: MessageId,
    bytes: usize,
}

#[derive(Serialize)]
struct AckEvent {
    event: &'static str,
    id: MessageId,
    rtt_us: u64,
}

#[derive(Serialize)]
struct RejectedEvent<'a> {
    event: &'static str,
    id: MessageId,
    code: u64,
    reason: &'a str,
}

/// How a `message` event is written: the body is escaped (or base64
/// encoded) straight from its chunks into the writer, never copied whole.
#[derive(Serialize)]
struct MessageEvent<'a> {
    event: &'static str,
    id: MessageId,
    bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Streamed<crate::protocol::body::Text<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<Streamed<crate::protocol::body::Base64<'a>>>,
}

/// Serializes as a JSON string by streaming its `Display` output.
struct Streamed<T>(T);

impl<T: Display> Serialize for Streamed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<W: Write + Send> JsonOutput<W> {
    /// Writes one event line and flushes it.
    fn emit(&mut self, v: Value) {
        self.queue(&v);
        Output::flush(self);
    }

    /// Writes one event line, left in the buffer until the next flush.
    fn queue(&mut self, v: &impl Serialize) {
        // stdout going away (a closed pipe) is not worth crashing over; the
        // chat itself decides when to end.
        let _ = serde_json::to_writer(&mut self.out, v)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
    }
}

impl<W: Write + Send> Output for JsonOutput<W> {
    fn listening(&mut self, transport: &str, addr: SocketAddr, fingerprint: Fingerprint) {
        self.emit(json!({"event": "listening", "transport": transport,
            "addr": addr.to_string(), "fingerprint": fingerprint.to_string()}));
    }

    fn connected(
        &mut self,
        transport: &str,
        peer: SocketAddr,
        fingerprint: Option<Fingerprint>,
        label: Option<&str>,
    ) {
        let mut v = json!({"event": "connected", "transport": transport,
            "peer": peer.to_string(), "fingerprint": fingerprint.map(|f| f.to_string())});
        if let Some(label) = label {
            v["label"] = Value::from(label);
        }
        self.emit(v);
    }

    fn sent(&mut self, id: MessageId, body: &[u8]) {
        self.queue(&SentEvent {
            event: "sent",
            id,
            bytes: body.len(),
        });
    }

    fn ack(&mut self, id: MessageId, rtt: Duration) {
        let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.queue(&AckEvent {
            event: "ack",
            id,
            rtt_us,
        });
    }

    fn rejected(&mut self, id: MessageId, code: u64, reason: &str) {
        self.queue(&RejectedEvent {
            event: "rejected",
            id,
            code,
            reason,
        });
    }

    fn message(&mut self, id: MessageId, body: &Body) {
        let text = body.text();
        let base64 = text.is_none().then(|| Streamed(body.base64()));
        self.queue(&MessageEvent {
            event: "message",
            id,
            bytes: body.len(),
            text: text.map(Streamed),
            base64,
        });
    }

    fn disconnected(&mut self, why: &Disconnect, unacked: &[MessageId]) {
        self.emit(json!({"event": "disconnected", "reason": why.describe(),
            "code": why.code(), "unacked": unacked}));
    }

    fn error(&mut self, message: &str) {
        self.emit(json!({"event": "error", "message": message}));
    }

    fn info(&mut self, _message: &str) {}

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// Plain lines for a person. Everything from the peer is sanitized.
pub struct PlainOutput<W> {
    pub out: W,
}

impl<W: Write + Send> PlainOutput<W> {
    /// Writes a line and flushes it.
    fn line(&mut self, s: &str) {
        self.queue(s);
        Output::flush(self);
    }

    /// Writes a line, left in the buffer until the next flush.
    fn queue(&mut self, s: &str) {
        let _ = writeln!(self.out, "{s}");
    }
}

/// Who the peer is, for people: its allow-list label (escaped) and
/// fingerprint, or `identity` and the fingerprint; `None` without one.
pub fn peer_identity(fingerprint: Option<Fingerprint>, label: Option<&str>) -> Option<String> {
    let fp = fingerprint?;
    Some(match label {
        Some(label) => format!("{} {fp}", sanitize_line(label)),
        None => format!("identity {fp}"),
    })
}

/// A REJECT code in words, for people.
pub fn reject_kind(code: u64) -> &'static str {
    match code {
        reject_code::TOO_LARGE => "too large",
        reject_code::REFUSED => "refused",
        _ => "rejected",
    }
}

pub fn format_rtt(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

impl<W: Write + Send> Output for PlainOutput<W> {
    fn listening(&mut self, transport: &str, addr: SocketAddr, fingerprint: Fingerprint) {
        self.line(&format!("listening on {addr} ({transport})"));
        self.line(&format!("server fingerprint: {fingerprint}"));
        self.line(&format!(
            "clients connect with: chat --mode client --transport {transport} --addr HOST:{} --fingerprint {fingerprint}",
            addr.port()
        ));
        self.line("waiting for a client…");
    }

    fn connected(
        &mut self,
        transport: &str,
        peer: SocketAddr,
        fingerprint: Option<Fingerprint>,
        label: Option<&str>,
    ) {
        let who = peer_identity(fingerprint, label).unwrap_or_else(|| "no identity".into());
        self.line(&format!("connected to {peer} over {transport} ({who})"));
    }

    fn sent(&mut self, _id: MessageId, _body: &[u8]) {
        // The user already sees what they typed; the ack line confirms it.
    }

    fn ack(&mut self, id: MessageId, rtt: Duration) {
        self.queue(&format!("✓ #{id} {}", format_rtt(rtt)));
    }

    fn rejected(&mut self, id: MessageId, code: u64, reason: &str) {
        let what = reject_kind(code);
        self.queue(&format!(
            "✗ #{id} rejected: {what} ({})",
            sanitize_line(reason)
        ));
    }

    fn message(&mut self, id: MessageId, body: &Body) {
        let text = sanitize(&body.contiguous());
        // Continuation lines are indented under the header line.
        let text = text.replace('\n', "\n    ");
        self.queue(&format!("peer #{id}: {text}"));
    }

    fn disconnected(&mut self, why: &Disconnect, unacked: &[MessageId]) {
        let code = match why.code() {
            Some(c) => format!(" ({})", close_code::name(c)),
            None => String::new(),
        };
        self.line(&format!(
            "disconnected: {}{code}",
            sanitize_line(&why.describe())
        ));
        if !unacked.is_empty() {
            let ids: Vec<String> = unacked.iter().map(|id| format!("#{id}")).collect();
            self.line(&format!("? not confirmed: {}", ids.join(" ")));
        }
    }

    fn error(&mut self, message: &str) {
        self.line(&format!("error: {message}"));
    }

    fn info(&mut self, message: &str) {
        self.line(message);
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_lines(f: impl FnOnce(&mut JsonOutput<Vec<u8>>)) -> Vec<Value> {
        let mut o = JsonOutput { out: Vec::new() };
        f(&mut o);
        String::from_utf8(o.out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn message_events_carry_text_or_base64() {
        let v = json_lines(|o| {
            o.message(0, &Body::from("hé".as_bytes()));
            o.message(1, &Body::from(&b"\xff\x00"[..]));
        });
        assert_eq!(
            v[0],
            json!({"event": "message", "id": 0, "bytes": 3, "text": "hé"})
        );
        assert_eq!(
            v[1],
            json!({"event": "message", "id": 1, "bytes": 2, "base64": "/wA="})
        );
    }

    #[test]
    fn per_message_events_have_their_fields_in_order() {
        let mut o = JsonOutput { out: Vec::new() };
        o.sent(3, b"abc");
        o.ack(3, Duration::from_micros(1500));
        o.rejected(4, 1, "too \"large\"");
        o.message(5, &Body::from(&b"a\nb"[..]));
        let text = String::from_utf8(o.out).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"event":"sent","id":3,"bytes":3}"#,
                "\n",
                r#"{"event":"ack","id":3,"rtt_us":1500}"#,
                "\n",
                r#"{"event":"rejected","id":4,"code":1,"reason":"too \"large\""}"#,
                "\n",
                r#"{"event":"message","id":5,"bytes":3,"text":"a\nb"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn disconnected_lists_unacked_and_code() {
        let v = json_lines(|o| {
            o.disconnected(
                &Disconnect::Lost {
                    reason: "connection lost (idle timeout)".into(),
                },
                &[3, 4],
            );
            o.disconnected(
                &Disconnect::Peer {
                    code: 1,
                    reason: "busy".into(),
                },
                &[],
            );
        });
        assert_eq!(v[0]["code"], Value::Null);
        assert_eq!(v[0]["unacked"], json!([3, 4]));
        assert_eq!(v[1]["code"], json!(1));
        assert_eq!(v[1]["reason"], json!("busy"));
    }

    #[test]
    fn plain_output_escapes_peer_bytes() {
        let mut o = PlainOutput { out: Vec::new() };
        o.message(7, &Body::from(&b"hi\x1b]0;owned\x07\nsecond"[..]));
        o.rejected(1, 1, "big\x1b[2J");
        let s = String::from_utf8(o.out).unwrap();
        assert!(!s.contains('\x1b'));
        assert!(s.contains("peer #7: hi\\x1b]0;owned\\x07\n    second"));
    }
}
