//! Hostile input: hand-written peers send the real server what no honest
//! chat/1 or chat/2 peer would (garbage instead of TLS, wrong ALPN, oversized
//! frames, duplicate ids, stray control streams, floods, silence, frames
//! before chat/2's HELLO or a second one, RECEIVED where no resume is, and
//! resumes with a wrong token or from another identity). In every case the
//! server must survive, say in its log who did what, close with
//! PROTOCOL_ERROR (code 2) and a reason where the protocol asks for it, leave
//! any open chat alone, and chat normally with the next client.
//!
//! Each test (`tcp.rs`, `quic.rs`, and `resume.rs` for both transports at
//! once; the chat/2 cases are named `chat2_…`)
//! sets up a [`Hostile`] server (`fixture.rs`), lets hand-written peers
//! (`peer.rs`) at it, and ends with [`Hostile::assert_server_still_serves`].
//! A chat/2 connection is a client only once it has said HELLO
//! (docs/protocol.md §12.3): one that breaks the rules before that is closed
//! with PROTOCOL_ERROR and logged, but never shown.

mod fixture;
mod memory;
mod peer;
mod quic;
mod resume;
mod tcp;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chat::protocol::codec::{Frame, VARINT_MAX};
use fixture::{Hostile, mentions_any};
use peer::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// Words one of which a reason about a frame's length mentions.
const LENGTH_WORDS: &[&str] = &["MiB", "length", "long", "large", "limit"];

/// Words one of which a reason about a duplicate message id mentions.
const DUPLICATE_WORDS: &[&str] = &["twice", "duplicate", "already"];

/// Words one of which a reason about too many gaps in ids mentions.
const GAP_WORDS: &[&str] = &["gap", "fragment", "range"];

/// ALPN offers other than chat/1: another protocol, and none at all.
const WRONG_ALPN: [(&str, &[&[u8]]); 2] = [("ALPN http/1.1", &[b"http/1.1"]), ("no ALPN", &[])];

/// A close reason that is invalid UTF-8 and carries terminal control
/// sequences (an OSC title change, a bell, an 8-bit CSI).
const HOSTILE_REASON: &[u8] = b"\xff\xfebye\x1b]0;pwned\x07\xc2\x9b2J\xc3";

/// After a peer closed with [`HOSTILE_REASON`]: the server reports a normal
/// end whose reason shows the invalid UTF-8 as U+FFFD, logs the peer's
/// address with it, and its stderr holds none of the reason's control
/// characters raw (the log formatter's own colour codes, `ESC [`, are fine).
fn assert_hostile_reason_shown_escaped(case: &mut Hostile, local: &str) {
    let d = case.expect_server_disconnected(Some(NO_ERROR), &["bye"]);
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains('\u{fffd}'),
        "invalid UTF-8 should be shown as U+FFFD: {d}"
    );
    let line = case.wait_log_line(local, "bye", &[]);
    eprintln!("{line}");
    let err = case.server.stderr_text();
    if err.contains('\u{7}') || err.contains("\u{1b}]") || err.contains('\u{9b}') {
        case.server
            .fail("a peer's control characters reached the log unescaped");
    }
}

/// At the log level a user gets by default (`warn`), the line reporting a
/// protocol error still names the peer's address and what it did wrong.
fn protocol_error_logged_at_default_level(t: TransportKind) {
    let mut case = Hostile::server(t, &[], &[("RUST_LOG", "warn")]);
    let (local, what) = match t {
        TransportKind::Tcp => {
            let mut h = case.tcp_peer();
            case.block_on(async {
                h.send_lenient(&[0x01, 0x02, 0x05, 0x00]).await;
                h.expect_close(PROTOCOL_ERROR).await;
            });
            (h.local.clone(), "ACK")
        }
        TransportKind::Quic => {
            let h = case.quic_peer();
            let _second = case.block_on(h.open_control());
            case.block_on(h.expect_closed(PROTOCOL_ERROR, TIMEOUT));
            (h.local.clone(), "control")
        }
    };
    let line = case.server_reports_protocol_error(&local, &[what]);
    eprintln!("{line}");
    case.assert_server_still_serves();
}
