//! Plain lines for a person or a pipe, when stdin is not a terminal and
//! `--json` is off (`peer #0: text`, `✓ #0 0.31 ms`). Everything from the
//! peer is escaped.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::output::{Shown, Sink, transports_text};
use super::render::{sanitize_line, sanitize_pieces};
use crate::protocol::{Body, MessageId, close_code, reject_code};
use crate::session::Resumption;
use crate::transport::TransportKind;
use crate::trust::identity::Fingerprint;

/// Plain lines.
pub struct PlainSink<W> {
    pub out: W,
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

/// A client turned away, for people: who, and why.
pub fn turned_away(peer: SocketAddr, fingerprint: Option<Fingerprint>, code: u64) -> String {
    let who = fingerprint.map_or("no certificate".into(), |f| f.to_string());
    format!("turned away {peer} ({who}): {}", refusal(code))
}

/// Why a client was turned away, for people.
fn refusal(code: u64) -> &'static str {
    match code {
        close_code::BUSY => "busy",
        close_code::UNAUTHORIZED => "not on the allow list",
        _ => "refused",
    }
}

/// What could not be shown, for people.
pub fn skipped(events: u64, messages: u64) -> String {
    format!(
        "… {events} event(s) not shown, {messages} of them message(s) from the peer: \
         the output could not keep up"
    )
}

/// Where clients reach a server listening on `addr`, and the exact command
/// they run: the machine's addresses when it listens on all of them.
pub fn where_to_connect(
    transports: &[TransportKind],
    addr: SocketAddr,
    fingerprint: Fingerprint,
) -> Vec<String> {
    let ips = crate::interfaces::reachable_at(addr);
    let mut lines = Vec::new();
    if addr.ip().is_unspecified() && !ips.is_empty() {
        let all: Vec<String> = ips.iter().map(ToString::to_string).collect();
        lines.push(format!("reachable at: {}", all.join(", ")));
    }
    let host = ips.first().map_or(format!("HOST:{}", addr.port()), |ip| {
        crate::interfaces::host_port(*ip, addr.port())
    });
    let only = match transports {
        [one] => format!(" --transport {one}"),
        _ => String::new(),
    };
    lines.push(format!(
        "clients connect with: chat --mode client{only} --addr {host} --fingerprint {fingerprint}"
    ));
    lines
}

/// A chat held after its client's connection was lost, for people.
pub fn suspended(reason: &str, window: Duration) -> String {
    format!(
        "{} — holding the chat {} for the client to come back",
        sanitize_line(reason),
        format_window(window)
    )
}

/// An attempt to get a lost chat back, for people: the first says why the
/// connection ended, the later ones why the last attempt failed.
pub fn reconnecting(attempt: u32, reason: &str) -> String {
    let reason = sanitize_line(reason);
    if attempt == 1 {
        format!("{reason} — reconnecting…")
    } else {
        format!("still reconnecting (attempt {attempt})… last try: {reason}")
    }
}

/// A chat that went on over a new connection, for people.
pub fn resumed(transport: TransportKind, r: &Resumption) -> String {
    let mut s = format!(
        "resumed over {transport}: {} resent, {} confirmed on resume",
        r.resent.len(),
        r.confirmed.len()
    );
    if !r.held.is_empty() {
        s.push_str(&format!(", {} typed meanwhile sent", r.held.len()));
    }
    s
}

fn format_window(window: Duration) -> String {
    let secs = window.as_secs_f64();
    if secs >= 1.0 {
        format!("for {secs:.0} s")
    } else {
        format!("for {} ms", window.as_millis())
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

impl<W: Write + Send> PlainSink<W> {
    fn line(&mut self, s: &str) {
        // A closed stdout is not worth crashing over.
        let _ = writeln!(self.out, "{s}");
    }

    /// A message, rendered and written a window at a time: a large one is
    /// never joined, nor held as one string (let alone several).
    /// Continuation lines are indented under the header line.
    fn message(&mut self, id: MessageId, body: &Body) {
        let out = &mut self.out;
        let _ = write!(out, "peer #{id}: ");
        sanitize_pieces(body.pieces(), |text| {
            let mut lines = text.split('\n');
            if let Some(first) = lines.next() {
                let _ = out.write_all(first.as_bytes());
            }
            for line in lines {
                let _ = out.write_all(b"\n    ");
                let _ = out.write_all(line.as_bytes());
            }
        });
        let _ = writeln!(out);
    }
}

impl<W: Write + Send + 'static> Sink for PlainSink<W> {
    fn show(&mut self, shown: Shown) {
        match shown {
            Shown::Listening {
                transports,
                addr,
                fingerprint,
            } => {
                self.line(&format!(
                    "listening on {addr} ({})",
                    transports_text(&transports)
                ));
                self.line(&format!("server fingerprint: {fingerprint}"));
                for line in where_to_connect(&transports, addr, fingerprint) {
                    self.line(&line);
                }
                self.line("waiting for a client…");
            }
            // Shown at a terminal only (on stderr, before the chat starts).
            Shown::Connecting { .. } => {}
            Shown::Connected {
                transport,
                peer,
                fingerprint,
                label,
                fallback,
            } => {
                let who = peer_identity(fingerprint, label.as_deref())
                    .unwrap_or_else(|| "no identity".into());
                let why = fallback.map_or(String::new(), |w| format!(" ({w})"));
                self.line(&format!(
                    "connected to {peer} over {transport}{why} ({who})"
                ));
            }
            Shown::Refused {
                peer,
                fingerprint,
                code,
                ..
            } => self.line(&turned_away(peer, fingerprint, code)),
            // The user already sees what they typed; the ack line confirms it.
            Shown::Sent { .. } => {}
            Shown::Ack { id, rtt } => self.line(&format!("✓ #{id} {}", format_rtt(rtt))),
            Shown::Rejected { id, code, reason } => self.line(&format!(
                "✗ #{id} rejected: {} ({})",
                reject_kind(code),
                sanitize_line(&reason)
            )),
            Shown::Message { id, body } => self.message(id, &body),
            Shown::Disconnected { why, unacked } => {
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
            Shown::Suspended { reason, window } => self.line(&suspended(&reason, window)),
            Shown::Reconnecting { attempt, reason } => {
                self.line(&reconnecting(attempt, &reason));
            }
            Shown::Resumed {
                transport,
                resumption,
                ..
            } => {
                self.line(&resumed(transport, &resumption));
                for id in &resumption.confirmed {
                    self.line(&format!("✓ #{id} on resume"));
                }
            }
            Shown::Error(message) => self.line(&format!("error: {message}")),
            Shown::Info(message) => self.line(&message),
            Shown::Skipped { events, messages } => self.line(&skipped(events, messages)),
            // Plain output to a pipe keeps its lines as they were.
            Shown::Notice(_) => {}
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Body;

    #[test]
    fn plain_output_escapes_peer_bytes() {
        let mut o = PlainSink { out: Vec::new() };
        o.show(Shown::Message {
            id: 7,
            body: Body::from(&b"hi\x1b]0;owned\x07\nsecond"[..]),
        });
        o.show(Shown::Rejected {
            id: 1,
            code: 1,
            reason: "big\x1b[2J".into(),
        });
        let s = String::from_utf8(o.out).unwrap();
        assert!(!s.contains('\x1b'));
        assert!(s.contains("peer #7: hi\\x1b]0;owned\\x07\n    second"));
    }
}
