//! The `--json` event stream (CLI.md): one JSON object per line on stdout,
//! one per event, and nothing else.

use std::fmt::Display;
use std::io::Write;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use super::output::{Shown, Sink};
use crate::protocol::{Body, MessageId};

/// One JSON object per line.
pub struct JsonSink<W> {
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

impl<W: Write + Send> JsonSink<W> {
    /// Writes one event line, left in the buffer until the next flush.
    fn queue(&mut self, v: &impl Serialize) {
        // stdout going away (a closed pipe) is not worth crashing over; the
        // chat itself decides when to end.
        let _ = serde_json::to_writer(&mut self.out, v)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
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
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl<W: Write + Send + 'static> Sink for JsonSink<W> {
    fn show(&mut self, shown: Shown) {
        match shown {
            Shown::Listening {
                transports,
                addr,
                fingerprint,
            } => {
                // One transport is named as such; both are `auto`, as the
                // flag that asks for them.
                let transport = match transports.as_slice() {
                    [one] => one.name(),
                    _ => "auto",
                };
                let names: Vec<&str> = transports.iter().map(|t| t.name()).collect();
                self.queue(&json!({"event": "listening", "transport": transport,
                    "transports": names, "addr": addr.to_string(),
                    "fingerprint": fingerprint.to_string()}));
            }
            Shown::Connecting { transport, addr } => self.queue(&json!({"event": "connecting",
                "transport": transport.name(), "addr": addr.to_string()})),
            Shown::Connected {
                transport,
                peer,
                fingerprint,
                label,
                fallback,
            } => {
                let mut v = json!({"event": "connected", "transport": transport.name(),
                    "peer": peer.to_string(), "fingerprint": fingerprint.map(|f| f.to_string())});
                if let Some(label) = label {
                    v["label"] = Value::from(label);
                }
                if let Some(why) = fallback {
                    v["fallback"] = Value::from(why);
                }
                self.queue(&v);
            }
            Shown::Refused {
                transport,
                peer,
                fingerprint,
                code,
            } => self.queue(&json!({"event": "refused", "transport": transport.name(),
                "peer": peer.to_string(), "fingerprint": fingerprint.map(|f| f.to_string()),
                "code": code})),
            Shown::Sent { id, body } => self.queue(&SentEvent {
                event: "sent",
                id,
                bytes: body.len(),
            }),
            Shown::Ack { id, rtt } => self.queue(&AckEvent {
                event: "ack",
                id,
                rtt_us: micros(rtt),
            }),
            Shown::Rejected { id, code, reason } => self.queue(&RejectedEvent {
                event: "rejected",
                id,
                code,
                reason: &reason,
            }),
            Shown::Message { id, body } => self.message(id, &body),
            Shown::Disconnected { why, unacked } => {
                self.queue(&json!({"event": "disconnected", "reason": why.describe(),
                    "code": why.code(), "unacked": unacked}));
            }
            Shown::Suspended { reason, window } => self.queue(&json!({"event": "suspended",
                "reason": reason, "window_ms": u64::try_from(window.as_millis()).unwrap_or(u64::MAX)})),
            Shown::Reconnecting { attempt, reason } => self.queue(&json!({"event": "reconnecting",
                "attempt": attempt, "reason": reason})),
            Shown::Resumed {
                transport,
                peer,
                resumption,
            } => self.queue(&json!({"event": "resumed", "transport": transport.name(),
                "peer": peer.to_string(), "resent": resumption.resent,
                "confirmed": resumption.confirmed, "held": resumption.held})),
            Shown::Error(message) => self.queue(&json!({"event": "error", "message": message})),
            Shown::Skipped { events, messages } => {
                self.queue(&json!({"event": "skipped", "events": events, "messages": messages}));
            }
            Shown::Info(_) | Shown::Notice(_) => {}
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::close_code;
    use crate::transport::Disconnect;

    fn json_lines(shown: Vec<Shown>) -> Vec<Value> {
        let mut o = JsonSink { out: Vec::new() };
        for s in shown {
            o.show(s);
        }
        String::from_utf8(o.out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn message_events_carry_text_or_base64() {
        let v = json_lines(vec![
            Shown::Message {
                id: 0,
                body: Body::from("hé".as_bytes()),
            },
            Shown::Message {
                id: 1,
                body: Body::from(&b"\xff\x00"[..]),
            },
        ]);
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
        let mut o = JsonSink { out: Vec::new() };
        o.show(Shown::Sent {
            id: 3,
            body: bytes::Bytes::from_static(b"abc"),
        });
        o.show(Shown::Ack {
            id: 3,
            rtt: Duration::from_micros(1500),
        });
        o.show(Shown::Rejected {
            id: 4,
            code: 1,
            reason: "too \"large\"".into(),
        });
        o.show(Shown::Message {
            id: 5,
            body: Body::from(&b"a\nb"[..]),
        });
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
        let v = json_lines(vec![
            Shown::Disconnected {
                why: Disconnect::Lost {
                    reason: "connection lost (idle timeout)".into(),
                },
                unacked: vec![3, 4],
            },
            Shown::Disconnected {
                why: Disconnect::Peer {
                    code: 1,
                    reason: "busy".into(),
                },
                unacked: vec![],
            },
        ]);
        assert_eq!(v[0]["code"], Value::Null);
        assert_eq!(v[0]["unacked"], json!([3, 4]));
        assert_eq!(v[1]["code"], json!(1));
        assert_eq!(v[1]["reason"], json!("busy"));
    }

    #[test]
    fn refused_names_peer_fingerprint_and_code() {
        let v = json_lines(vec![Shown::Refused {
            transport: crate::TransportKind::Tcp,
            peer: "127.0.0.1:5000".parse().unwrap(),
            fingerprint: None,
            code: close_code::BUSY,
        }]);
        assert_eq!(
            v[0],
            json!({"event": "refused", "transport": "tcp", "peer": "127.0.0.1:5000",
                "fingerprint": null, "code": 1})
        );
    }
}
