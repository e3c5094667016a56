//! chat/2 resumption from the wrong side (PROTOCOL.md §9.2–§9.6): a HELLO
//! with a token the server never gave, RECEIVED frames that are malformed
//! or come where no resume is, a resume with the chat's real token from
//! another client identity, and the chat's own client resuming on a second
//! connection while its first one is still open.
//!
//! Every case runs over both transports ([`support::both_transports!`]:
//! `resume::quic::…` and `resume::tcp::…`) with a [`HostileV2`] peer, which
//! presents a client certificate of its own or none. (The second HELLO,
//! after one with an unknown token, is `chat2_second_hello_is_a_protocol_error`
//! in `quic.rs` and `tcp.rs`; a message between HELLO and RECEIVED, which
//! reads differently on each transport, and a suspended chat, which only
//! a TCP peer can leave without a word in a test's time, are in `tcp.rs`.)

use super::*;
use chat::trust::identity::Identity;
use fixture::{SERVER_IDLE_MS, SERVER_RESUME_WINDOW_MS};

support::both_transports!(
    chat2_unknown_token_gets_a_new_chat,
    chat2_received_not_increasing_is_a_protocol_error,
    chat2_received_outside_a_resume_is_a_protocol_error,
    chat2_resume_from_another_identity_is_busy,
    chat2_resume_while_open_replaces_the_old_connection,
);

/// A token this server never gave.
const UNKNOWN_TOKEN: [u8; 16] = [0x5a; 16];

/// A new chat opened by a hostile chat/2 peer presenting `identity`: HELLO
/// without a token, WELCOME for a new chat, the server shows the peer
/// connected with that identity (or none); message 0, `first`, is acked and
/// reaches the server's user. Returns the peer and the chat's token.
pub(crate) fn open_chat(
    case: &mut Hostile,
    identity: Option<&Identity>,
    first: &str,
) -> (HostileV2, [u8; 16]) {
    let mut h = case.peer_v2_as(identity);
    let welcome = case.block_on(async {
        h.send_control(&hello(60_000, None)).await;
        h.expect_welcome().await
    });
    welcome.check(SERVER_IDLE_MS, SERVER_RESUME_WINDOW_MS, None);
    let connected = case.wait_connected_from(h.local());
    assert_eq!(
        connected["fingerprint"],
        shown_fingerprint(identity),
        "the server should see the peer's client certificate (or none): {connected}"
    );
    case.block_on(async {
        h.send_message(0, first.as_bytes()).await;
        h.expect_ack(0).await;
    });
    case.expect_message(0, first);
    (h, welcome.token)
}

/// A HELLO with a token the server never gave, followed by what a resume
/// sends before its RECEIVED (a PING, a PARTIAL, an unknown frame) and a
/// RECEIVED listing ids, is answered as a new chat (PROTOCOL.md §9.5):
/// WELCOME with a fresh token (not the one sent) and `resumed` = 0. The
/// PARTIAL and RECEIVED are skipped: no RECEIVED comes back, the peer is
/// shown as a client, and its messages, numbered from 0, are acked and
/// shown.
fn chat2_unknown_token_gets_a_new_chat(t: TransportKind) {
    let mut case = Hostile::server(t, &[], &[]);
    let mut h = case.peer_v2_as(None);
    let mut opening = hello(60_000, Some(UNKNOWN_TOKEN));
    opening.extend(frame(&Frame::Ping));
    opening.extend(partial(4, 100));
    opening.extend(raw_frame(0x21, b"not yet"));
    opening.extend(received(3, &[5, 9]));
    let welcome = case.block_on(async {
        h.send_control(&opening).await;
        h.expect_welcome().await
    });
    welcome.check(SERVER_IDLE_MS, SERVER_RESUME_WINDOW_MS, Some(UNKNOWN_TOKEN));
    case.wait_connected_from(h.local());
    // The acks must be what follows WELCOME: a RECEIVED (or anything but
    // PINGs and unknown frames) before them fails `expect_ack`.
    case.block_on(async {
        h.send_message(0, b"in a new chat").await;
        h.expect_ack(0).await;
        h.send_message(1, b"and it goes on").await;
        h.expect_ack(1).await;
    });
    case.expect_message(0, "in a new chat");
    case.expect_message(1, "and it goes on");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// The ids a RECEIVED lists must be above its `below` and strictly
/// increasing (PROTOCOL.md §9.6); anything else, or a truncated id, is a
/// malformed frame. After a HELLO with an unknown token, each such RECEIVED
/// is closed with PROTOCOL_ERROR and a reason naming RECEIVED, logged, and
/// never shown as a client. The same with the open chat's real token, from
/// its own client identity: refused alike, and the chat goes on undisturbed
/// (no REPLACED, its next message acked).
fn chat2_received_not_increasing_is_a_protocol_error(t: TransportKind) {
    let mut case = Hostile::server(t, &[], &[]);
    let payload = |values: &[u64]| values.iter().flat_map(|&v| varint(v)).collect::<Vec<u8>>();
    let bad: [(&str, Vec<u8>); 5] = [
        ("an id listed twice", payload(&[0, 3, 3])),
        ("decreasing ids", payload(&[0, 4, 2])),
        ("an id equal to below", payload(&[5, 5])),
        ("an id under below", payload(&[5, 2])),
        ("a truncated id", vec![0x00, 0x40]),
    ];
    for (what, payload) in &bad {
        eprintln!("case: RECEIVED with {what}, after HELLO with an unknown token");
        let mut h = case.peer_v2_as(None);
        let mut bytes = hello(60_000, Some(UNKNOWN_TOKEN));
        bytes.extend(raw_frame(0x05, payload));
        case.block_on(h.send_control(&bytes));
        case.expect_unshown_protocol_error(h, &["RECEIVED"]);
    }

    let (mut chat, token) = open_chat(&mut case, None, "before the bad resume");
    eprintln!("case: RECEIVED with decreasing ids, after HELLO with the real token");
    let mut h = case.peer_v2_as(None);
    let mut bytes = hello(60_000, Some(token));
    bytes.extend(raw_frame(0x05, &bad[1].1));
    case.block_on(h.send_control(&bytes));
    case.expect_unshown_protocol_error(h, &["RECEIVED"]);
    case.block_on(async {
        chat.assert_open().await;
        chat.send_message(1, b"after the bad resume").await;
        chat.expect_ack(1).await;
    });
    case.expect_message(1, "after the bad resume");
    case.ends_politely(chat);
    case.assert_server_still_serves();
}

/// RECEIVED and PARTIAL belong to a resume only (PROTOCOL.md §9.6). After
/// an ordinary HELLO (no token), a RECEIVED right after WELCOME, a RECEIVED
/// once messages flow, and a PARTIAL then each end the chat with
/// PROTOCOL_ERROR and a reason naming the frame; the server reports the end
/// (code 2) and logs it, and serves the next client.
fn chat2_received_outside_a_resume_is_a_protocol_error(t: TransportKind) {
    let mut case = Hostile::server(t, &[], &[]);
    let cases: [(&str, bool, Vec<u8>, &str); 3] = [
        (
            "RECEIVED right after WELCOME",
            false,
            received(0, &[]),
            "RECEIVED",
        ),
        (
            "RECEIVED during the chat",
            true,
            received(1, &[]),
            "RECEIVED",
        ),
        ("PARTIAL during the chat", true, partial(0, 5), "PARTIAL"),
    ];
    for (what, chatting, bytes, name) in cases {
        eprintln!("case: {what}");
        let mut h = case.peer_v2_as(None);
        let welcome = case.block_on(async {
            h.send_control(&hello(60_000, None)).await;
            h.expect_welcome().await
        });
        welcome.check(SERVER_IDLE_MS, SERVER_RESUME_WINDOW_MS, None);
        case.wait_connected_from(h.local());
        if chatting {
            case.block_on(async {
                h.send_message(0, b"first").await;
                h.expect_ack(0).await;
            });
            case.expect_message(0, "first");
        }
        case.block_on(h.send_control(&bytes));
        case.expect_protocol_error(h, &[name]);
    }
    case.assert_server_still_serves();
}

/// Only the chat's own client may resume it (PROTOCOL.md §9.5): the new
/// connection must present the same client certificate as the chat's first
/// one, or none if that one had none. A peer with another certificate, or
/// none, or one where the chat's client had none, that sends HELLO with
/// the chat's real token (and its RECEIVED) while the chat is open is
/// handled as a HELLO without a token: closed with BUSY (no WELCOME) and
/// shown as refused, with its own identity. The chat is not disturbed: its
/// connection stays open and its next message is acked and shown.
fn chat2_resume_from_another_identity_is_busy(t: TransportKind) {
    let mut case = Hostile::server(t, &[], &[]);
    let (a, b) = (new_identity("client-a"), new_identity("client-b"));
    let pairs: [(&str, Option<&Identity>, Option<&Identity>); 3] = [
        ("another certificate", Some(&a), Some(&b)),
        ("no certificate", Some(&a), None),
        ("a certificate, the chat's client none", None, Some(&b)),
    ];
    for (what, ours, theirs) in pairs {
        eprintln!("case: the real token from {what}");
        let (mut chat, token) = open_chat(&mut case, ours, "before the impostor");
        let mut impostor = case.peer_v2_as(theirs);
        let mut bytes = hello(60_000, Some(token));
        bytes.extend(received(0, &[]));
        let reason = case.block_on(async {
            impostor.send_control(&bytes).await;
            impostor.expect_closed(BUSY).await
        });
        eprintln!("{what}: closed with BUSY, {reason:?}");
        let refused = case.server.wait_event("refused", TIMEOUT);
        assert_eq!(refused["peer"], impostor.local(), "{refused}");
        assert_eq!(refused["code"], BUSY, "{refused}");
        assert_eq!(
            refused["fingerprint"],
            shown_fingerprint(theirs),
            "{refused}"
        );
        case.block_on(async {
            chat.assert_open().await;
            chat.send_message(1, b"after the impostor").await;
            chat.expect_ack(1).await;
        });
        case.expect_message(1, "after the impostor");
        case.ends_politely(chat);
        drop(impostor);
    }
    assert_eq!(
        case.shown(),
        [3, 3, 3],
        "(connected, refused, disconnected): three chats, three impostors refused"
    );
    case.assert_server_still_serves();
}

/// The chat's own client resumes it on a second connection while the first
/// is still open (the server has not noticed it lost, PROTOCOL.md §9.5):
/// the first connection is closed with REPLACED; the second gets WELCOME
/// with the chat's token and `resumed` = 1, then the server's RECEIVED,
/// which covers the message sent and acknowledged on the first connection.
/// The chat goes on over the second connection: the next message, numbered
/// in the chat, is acked, the server's user sees each message exactly once
/// and no end of the chat in between. Once with a client certificate, once
/// without one.
fn chat2_resume_while_open_replaces_the_old_connection(t: TransportKind) {
    let mut case = Hostile::server(t, &[], &[]);
    let ours = new_identity("client");
    let mut texts: Vec<String> = Vec::new();
    for identity in [Some(&ours), None] {
        let who = if identity.is_some() {
            "with a client certificate"
        } else {
            "without a client certificate"
        };
        eprintln!("case: resume {who}");
        let (mut first, token) = open_chat(&mut case, identity, "on the first connection");
        let shown = case.shown();
        let mut second = case.peer_v2_as(identity);
        let mut bytes = hello(60_000, Some(token));
        bytes.extend(received(0, &[]));
        let (welcome, (below, ids), reason) = case.block_on(async {
            second.send_control(&bytes).await;
            let welcome = second.expect_welcome().await;
            let got = second.expect_received().await;
            let reason = first.expect_closed(REPLACED).await;
            (welcome, got, reason)
        });
        eprintln!("{who}: RECEIVED({below}, {ids:?}); first connection: REPLACED, {reason:?}");
        welcome.check_resumed(SERVER_IDLE_MS, SERVER_RESUME_WINDOW_MS, token);
        assert!(
            below > 0 || ids.contains(&0),
            "{who}: the server's RECEIVED({below}, {ids:?}) should cover message 0, which it acked"
        );
        let local = second.local().to_string();
        let resumed = case.server.wait_event_where(
            "resumed",
            &format!("peer = {local}"),
            |v| v["peer"].as_str() == Some(local.as_str()),
            TIMEOUT,
        );
        eprintln!("{who}: {resumed}");
        case.block_on(async {
            second.send_message(1, b"on the second connection").await;
            second.expect_ack(1).await;
        });
        case.expect_message(1, "on the second connection");
        assert_eq!(
            case.shown(),
            shown,
            "{who}: a resume is no new client, and the chat did not end"
        );
        texts.extend(["on the first connection", "on the second connection"].map(String::from));
        assert_eq!(
            case.server_messages(),
            texts,
            "{who}: each message is shown once"
        );
        case.ends_politely(second);
        drop(first);
    }
    case.assert_server_still_serves();
}
