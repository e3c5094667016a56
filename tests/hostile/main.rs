//! Hostile input: hand-written peers send the real server what no honest
//! chat/1 peer would (garbage instead of TLS, wrong ALPN, oversized frames,
//! duplicate ids, stray control streams, floods, silence). In every case the
//! server must survive, say in its log who did what, close with
//! PROTOCOL_ERROR (code 2) and a reason where the protocol asks for it, leave
//! any open chat alone, and chat normally with the next client.
//!
//! Each test sets up a [`Hostile`] server (`fixture.rs`), lets hand-written
//! peers (`peer.rs`) at it, and ends with
//! [`Hostile::assert_server_still_serves`].

mod fixture;
mod peer;

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

// ===========================================================================
// TCP: before and during the TLS handshake
// ===========================================================================

/// Garbage instead of a ClientHello, on several connections at once, while a
/// chat is open: each connection is dropped (at the latest by the handshake
/// timeout), each is logged with its address, the chat goes on, and the
/// next client is served.
#[test]
fn tcp_random_bytes_instead_of_client_hello() {
    let mut case = Hostile::with_open_chat(TransportKind::Tcp, "before the garbage");

    let mut random = pseudo_random_bytes(4096, 7);
    random[0] = 0x00; // not a TLS content type
    let mut fake_hello = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c];
    fake_hello.extend(pseudo_random_bytes(0x3c, 8));
    let mut truncated_record = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    truncated_record.extend(pseudo_random_bytes(100, 9));
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("4 KiB of random bytes", random),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n".to_vec(),
        ),
        ("64 KiB of zeros", vec![0u8; 64 * 1024]),
        ("a ClientHello record full of garbage", fake_hello),
        (
            "a record header promising 16 KiB, then stalling",
            truncated_record,
        ),
    ];
    let addr = case.addr.clone();
    let peers: Vec<(&str, String)> = case.block_on(async {
        let mut tasks = Vec::new();
        for (what, bytes) in variants {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(sock(&addr)).await.expect("TCP connect");
                let local = s.local_addr().unwrap().to_string();
                let _ = s.write_all(&bytes).await;
                let closed = read_until_closed(&mut s, TIMEOUT).await;
                assert!(
                    closed.is_some(),
                    "{what} from {local}: the server should drop the connection"
                );
                (what, local)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("garbage task"));
        }
        out
    });
    for (what, local) in &peers {
        let line = case.wait_log_line(local, "handshake", &[]);
        eprintln!("{what}: {line}");
    }

    case.chat_goes_on("the chat goes on", "still here");
    case.assert_server_still_serves();
}

/// A TLS client offering another ALPN, or none, is refused: the handshake
/// fails, or the connection is dropped before any frame. The open chat is
/// not disturbed.
#[test]
fn tcp_wrong_or_missing_alpn_is_refused() {
    let mut case = Hostile::with_open_chat(TransportKind::Tcp, "before");

    for (what, alpn) in WRONG_ALPN {
        let local = case.block_on(async {
            let socket = TcpStream::connect(sock(&case.addr))
                .await
                .expect("TCP connect");
            let local = socket.local_addr().unwrap().to_string();
            let name = rustls::pki_types::ServerName::try_from("chat").unwrap();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_client(alpn)));
            match tokio::time::timeout(TIMEOUT, connector.connect(name, socket)).await {
                Err(_) => panic!("{what}: the TLS handshake neither failed nor finished"),
                Ok(Err(e)) => eprintln!("{what}: handshake failed as it may: {e}"),
                Ok(Ok(mut stream)) => {
                    // Allowed only if the server drops us before any frame.
                    match read_until_closed(&mut stream, TIMEOUT).await {
                        Some(bytes) => assert!(
                            bytes.is_empty(),
                            "{what}: the server sent {} bytes of application data: {:?}",
                            bytes.len(),
                            &bytes[..bytes.len().min(64)]
                        ),
                        None => panic!(
                            "{what}: handshake succeeded and the server kept the connection open"
                        ),
                    }
                    eprintln!("{what}: handshake finished, then the server dropped the connection");
                }
            }
            local
        });
        let line = case.wait_log_line(&local, "handshake", &["ALPN", "protocol"]);
        eprintln!("{what}: {line}");
    }
    case.assert_only_the_client_admitted();

    case.chat_goes_on("after", "reply");
    case.assert_server_still_serves();
}

/// A TCP connection that never sends a byte holds no one up: a real client
/// connects and chats meanwhile, and the server drops the silent one when
/// its handshake time is up.
#[test]
fn tcp_slowloris_while_a_client_chats() {
    let mut case = Hostile::tcp();
    let (mut idle, local) = case.block_on(async {
        let s = TcpStream::connect(sock(&case.addr))
            .await
            .expect("TCP connect");
        let local = s.local_addr().unwrap().to_string();
        (s, local)
    });

    case.client_joins("while someone hangs around", "answer");

    let closed = case.block_on(read_until_closed(&mut idle, TIMEOUT));
    assert!(
        closed.is_some(),
        "the server should drop a connection that never starts its handshake"
    );
    let line = case.wait_log_line(&local, "handshake", &[]);
    eprintln!("{line}");

    case.client_sends(1, "after it was dropped");
    case.assert_server_still_serves();
}

/// Many stalled connections at once (silent, or stuck in the middle of a
/// record): a real client still connects and chats, and every stalled one
/// is dropped and logged.
#[test]
fn tcp_many_idle_connections_at_once() {
    let mut case = Hostile::tcp();
    let mut partial_hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    partial_hello.extend(pseudo_random_bytes(10, 3));
    let mut idle: Vec<(TcpStream, String)> = case.block_on(async {
        let mut v = Vec::new();
        for i in 0..30 {
            let mut s = TcpStream::connect(sock(&case.addr))
                .await
                .expect("TCP connect");
            let local = s.local_addr().unwrap().to_string();
            match i % 3 {
                0 => {}
                1 => s.write_all(&[0x16, 0x03, 0x01]).await.expect("write"),
                _ => s.write_all(&partial_hello).await.expect("write"),
            }
            v.push((s, local));
        }
        v
    });

    case.client_joins("thirty stalled connections", "do not bother us");

    case.block_on(async {
        for (s, local) in idle.iter_mut() {
            assert!(
                read_until_closed(s, TIMEOUT).await.is_some(),
                "stalled connection {local} should be dropped by the server"
            );
        }
    });
    for (_, local) in &idle {
        case.wait_log_line(local, "handshake", &[]);
    }

    case.client_sends(1, "still chatting");
    case.assert_server_still_serves();
}

/// More stalled TCP connections than the server lets handshake at once
/// (300): a real client arriving meanwhile must still get in and chat. One
/// host holding a few hundred idle sockets must not lock everyone out
/// (protocol.md §11.13: "a stalled client never holds up other clients").
#[test]
fn tcp_hundreds_of_idle_connections_do_not_lock_out_a_client() {
    let mut case = Hostile::tcp();
    let idle: Vec<TcpStream> = case.block_on(async {
        let mut v = Vec::new();
        for _ in 0..300 {
            v.push(
                TcpStream::connect(sock(&case.addr))
                    .await
                    .expect("TCP connect"),
            );
        }
        v
    });
    // Let the server accept them all before the real client comes.
    std::thread::sleep(Duration::from_millis(500));
    case.client_joins("three hundred idle sockets", "do not keep us apart");
    drop(idle);
    case.client_leaves();
}

// ===========================================================================
// TCP: after the handshake
// ===========================================================================

/// A hostile TCP peer is admitted (no chat is open), sends `setup` and gets
/// acks for `acked`, then sends `bad`: the server must answer CLOSE with
/// PROTOCOL_ERROR and a reason mentioning one of `any` — and nothing else
/// before it —, report the end with code 2, log the peer's address and what
/// was wrong, and then chat with a normal client.
fn tcp_protocol_error_case(setup: &[u8], acked: &[u64], bad: &[u8], any: &[&str]) {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer();
    case.block_on(async {
        if !setup.is_empty() {
            h.send(setup).await;
            h.expect_acks(acked.iter().copied()).await;
        }
        h.send_lenient(bad).await;
    });
    case.expect_protocol_error(h, any);
    case.assert_server_still_serves();
}

/// DATA whose length is 2^62-1 (`ff ff ff ff ff ff ff ff`): refused from the
/// header alone, without waiting for (or buffering) any payload.
#[test]
fn tcp_frame_length_2_pow_62_minus_1() {
    let mut bad = vec![0x10];
    bad.extend([0xff; 8]);
    tcp_protocol_error_case(&[], &[], &bad, LENGTH_WORDS);
}

/// A frame of exactly 1 MiB is fine; a DATA header announcing 1 MiB + 1 is
/// refused at once (no payload follows it).
#[test]
fn tcp_frame_over_1_mib() {
    // END id 0 (1 byte) + 1 MiB - 1 bytes of data = a 1 MiB payload.
    let exactly = end(0, &vec![b'm'; (1 << 20) - 1]);
    let mut bad = vec![0x10];
    bad.extend(varint((1 << 20) + 1));
    tcp_protocol_error_case(&exactly, &[0], &bad, LENGTH_WORDS);
}

/// The length limit applies to frames of unknown type too: they are skipped
/// by length, but a length over 1 MiB is an error, not something to skip.
#[test]
fn tcp_unknown_frame_over_1_mib() {
    let mut bad = varint(0x3fff);
    bad.extend(varint((1 << 20) + 1));
    tcp_protocol_error_case(&[], &[], &bad, LENGTH_WORDS);
}

/// An ACK whose payload holds more than one varint, naming an id that was
/// never sent: the shape check comes first, so this is a protocol error.
#[test]
fn tcp_ack_with_trailing_bytes() {
    tcp_protocol_error_case(&[], &[], &[0x01, 0x02, 0x05, 0x00], &["ACK"]);
}

/// 64 messages in progress at once are allowed (and each is acked at its
/// END); 65 at once (DATA for 65 ids, no END) are a protocol error.
#[test]
fn tcp_more_than_64_messages_in_progress() {
    let mut setup = Vec::new();
    for id in 0..64 {
        setup.extend(data(id, b"a"));
    }
    for id in 0..64 {
        setup.extend(end(id, b"b"));
    }
    let mut bad = Vec::new();
    for id in 100..165 {
        bad.extend(data(id, b"c"));
    }
    tcp_protocol_error_case(
        &setup,
        &(0..64).collect::<Vec<_>>(),
        &bad,
        &["64", "progress"],
    );
}

/// A second message with an id already received is a protocol error.
#[test]
fn tcp_duplicate_message_id() {
    let mut setup = end(0, b"first");
    setup.extend(end(1, b"second"));
    tcp_protocol_error_case(&setup, &[0, 1], &end(0, b"again"), DUPLICATE_WORDS);
}

/// DATA for an id that was already received whole is a duplicate too.
#[test]
fn tcp_data_for_an_already_received_id() {
    tcp_protocol_error_case(&end(3, b"x"), &[3], &data(3, b"y"), DUPLICATE_WORDS);
}

/// END for an id never seen is a complete one-frame message: acked and
/// shown (also empty, and with a large id), and the chat goes on.
#[test]
fn tcp_end_for_an_unknown_id_is_a_message() {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer();
    case.block_on(async {
        h.send(&end(7, b"seven")).await;
        h.expect_ack(7).await;
        h.send(&end(3, b"")).await;
        h.expect_ack(3).await;
        h.send(&end(1_000_000, b"big id")).await;
        h.expect_ack(1_000_000).await;
        h.send(&end(VARINT_MAX, b"largest id")).await;
        h.expect_ack(VARINT_MAX).await;
    });
    case.expect_message(7, "seven");
    let m = case.server.wait_event_id("message", 3, TIMEOUT);
    assert_eq!(m["bytes"], 0, "{m}");
    case.expect_message(1_000_000, "big id");
    case.expect_message(VARINT_MAX, "largest id");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// A CLOSE whose reason is not valid UTF-8 is a normal close: the server
/// shows the reason with replacement characters, reports code 0, does not
/// answer with a CLOSE of its own, and serves the next client. Terminal
/// control sequences in the reason never reach its log raw.
#[test]
fn tcp_close_with_invalid_utf8_reason() {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer();
    case.block_on(async {
        h.send(&end(0, b"last words")).await;
        h.expect_ack(0).await;
        h.send(&frame(&Frame::Close {
            code: NO_ERROR,
            reason: Bytes::from_static(HOSTILE_REASON),
        }))
        .await;
        // The receiver of a CLOSE sends close_notify and closes: no CLOSE back.
        h.expect_end().await;
    });
    assert_hostile_reason_shown_escaped(&mut case, &h.local);
    drop(h);
    case.assert_server_still_serves();
}

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

/// Frames of unknown types (one-, two- and eight-byte type numbers, with
/// and without payload, between the DATA and END of a message) are skipped;
/// the messages around them are delivered and acked.
#[test]
fn tcp_unknown_frame_types_are_skipped() {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer();
    let mut bytes = raw_frame(0x21, b"hello");
    bytes.extend(raw_frame(0x3f, b""));
    bytes.extend(raw_frame(0x1234, &[0xab; 300]));
    bytes.extend(raw_frame(0x3fff_ffff_ffff_ffff, b"eight-byte type"));
    bytes.extend(raw_frame(0x20, b"a PING with a payload"));
    bytes.extend(end(0, b"after unknown frames"));
    bytes.extend(data(1, b"split "));
    bytes.extend(raw_frame(0x22, &[0x01, 0x01, 0x00])); // looks like an ACK inside
    bytes.extend(end(1, b"message"));
    case.block_on(async {
        h.send(&bytes).await;
        h.expect_acks([0, 1]).await;
    });
    case.expect_message(0, "after unknown frames");
    case.expect_message(1, "split message");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// A peer that completes the handshake and then says nothing is dropped at
/// the idle timeout (no CLOSE: it is presumed gone), and the next client is
/// served.
#[test]
fn tcp_silent_peer_after_handshake_is_dropped_at_idle_timeout() {
    let mut case = Hostile::server(TransportKind::Tcp, &["--idle-timeout", "3"], &[]);
    let mut h = case.tcp_peer();
    case.block_on(async {
        loop {
            match h.next(Duration::from_secs(60)).await {
                Got::Frame(Frame::Ping) => {}
                Got::Eof | Got::Error(_) => break,
                other => panic!("a silent peer should get only PINGs, then the end: {other:?}"),
            }
        }
    });
    case.expect_server_disconnected(None, &["idle"]);
    case.wait_log_line(&h.local, "idle", &[]);
    drop(h);
    case.assert_server_still_serves();
}

/// While a chat is open, a hostile peer that completes the handshake and at
/// once sends garbage — or a message — is turned away (BUSY, or
/// PROTOCOL_ERROR for the garbage); its message is never delivered, and the
/// open chat is not disturbed.
#[test]
fn tcp_hostile_peers_while_a_chat_is_open() {
    let mut case = Hostile::with_open_chat(TransportKind::Tcp, "before");

    let mut garbage = vec![0x10];
    garbage.extend([0xff; 8]);
    let attempts: [(&str, Vec<u8>, &[u64]); 3] = [
        ("a huge frame", garbage, &[BUSY, PROTOCOL_ERROR]),
        ("a message", end(0, b"sneaky"), &[BUSY]),
        ("an empty message", end(0, b""), &[BUSY]),
    ];
    for (what, bytes, codes) in attempts {
        case.block_on(async {
            let mut h = HostileTcp::connect(&case.addr).await;
            h.send_lenient(&bytes).await;
            loop {
                match h.next(TIMEOUT).await {
                    Got::Frame(Frame::Close { code, reason }) => {
                        assert!(
                            codes.contains(&code),
                            "{what}: CLOSE code should be one of {codes:?}, got {code} ({:?})",
                            String::from_utf8_lossy(&reason)
                        );
                        break;
                    }
                    Got::Frame(Frame::Ping | Frame::Reject { .. }) => {}
                    other => panic!("{what}: expected a CLOSE, got {other:?}"),
                }
            }
        });
    }

    case.chat_goes_on("after the intruders", "reply");
    assert_eq!(
        case.server_messages(),
        ["before", "after the intruders"],
        "only the real client's messages may reach the server's user"
    );
    case.assert_server_still_serves();
}

/// Ids that leave a gap after every message (0, 2, 4, …): the receiver
/// tracks about 4,096 gaps and then calls it a protocol error (protocol.md
/// §11.3), so its memory stays bounded. Honest gaps well below that are
/// fine: the first 4,000 such messages are all delivered.
#[test]
fn tcp_too_many_gaps_in_message_ids() {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer();
    let mut bytes = Vec::new();
    for i in 0..4200u64 {
        bytes.extend(end(2 * i, b""));
    }
    let (acks, reason) = case.block_on(async {
        h.send_lenient(&bytes).await;
        let mut acks = 0;
        loop {
            match h.next(TIMEOUT).await {
                Got::Frame(Frame::Ack { .. }) => acks += 1,
                Got::Frame(Frame::Ping) => {}
                Got::Frame(Frame::Close { code, reason }) => {
                    assert_eq!(
                        code,
                        PROTOCOL_ERROR,
                        "{:?}",
                        String::from_utf8_lossy(&reason)
                    );
                    break (acks, String::from_utf8_lossy(&reason).into_owned());
                }
                other => panic!("expected ACKs then CLOSE(2), got {other:?} after {acks} acks"),
            }
        }
    });
    eprintln!("{acks} acks, then CLOSE: {reason:?}");
    // Honest gaps are fine: the first 4,000 messages are delivered.
    case.server.collect_events("message", 4000, LONG_TIMEOUT);
    assert!(mentions_any(&reason, GAP_WORDS), "reason: {reason:?}");
    case.server_reports_protocol_error(&h.local, GAP_WORDS);
    drop(h);
    case.assert_server_still_serves();
}

// ===========================================================================
// QUIC
// ===========================================================================

/// Random UDP datagrams (raw noise, fake Initial packets, unknown versions,
/// short-header packets) at the server's port: the open chat goes on and the
/// next client is served.
#[test]
fn quic_random_datagrams() {
    let mut case = Hostile::with_open_chat(TransportKind::Quic, "before the noise");

    case.block_on(async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let target = sock(&case.addr);
        let mut seed = 1u64;
        let mut next = |len: usize| {
            seed += 1;
            pseudo_random_bytes(len, seed)
        };
        for round in 0..100u64 {
            let mut batch: Vec<Vec<u8>> = Vec::new();
            // Noise of any size.
            let size = 1 + (round as usize * 151) % 1500;
            batch.push(next(size));
            // A long-header Initial of QUIC v1 with garbage inside.
            let mut initial = vec![0xc3, 0, 0, 0, 1, 8];
            initial.extend(next(8));
            initial.push(8);
            initial.extend(next(8));
            initial.extend([0x00, 0x44, 0xd0]);
            initial.extend(next(1200 - initial.len()));
            batch.push(initial);
            // An unknown version (the server may answer Version Negotiation).
            let mut unknown = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
            unknown.extend(next(8));
            unknown.push(0);
            unknown.extend(next(1200 - unknown.len()));
            batch.push(unknown);
            // Handshake and Retry packet types with garbage.
            let mut hs = vec![0xe0 | (round as u8 & 0x1f), 0, 0, 0, 1, 4];
            hs.extend(next(200));
            batch.push(hs);
            // A short-header packet.
            let mut short = vec![0x40 | (round as u8 & 0x3f)];
            short.extend(next(20 + (round as usize * 37) % 1200));
            batch.push(short);
            for d in batch {
                let _ = udp.send_to(&d, target).await;
            }
            if round % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    case.chat_goes_on("after the noise", "still fine");
    case.assert_server_still_serves();
}

/// A QUIC client offering another ALPN, or none, never gets into a chat;
/// the open chat is not disturbed.
#[test]
fn quic_wrong_or_missing_alpn_is_refused() {
    let mut case = Hostile::with_open_chat(TransportKind::Quic, "before");
    for (what, alpn) in WRONG_ALPN {
        let local = case.block_on(async {
            let endpoint = quic_endpoint();
            let local = endpoint.local_addr().unwrap().to_string();
            match quic_connect(&endpoint, &case.addr, alpn).await {
                Err(e) => eprintln!("{what}: refused during the handshake: {e}"),
                Ok(conn) => {
                    let err = tokio::time::timeout(TIMEOUT, conn.closed())
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{what}: handshake succeeded and the connection stayed open")
                        });
                    eprintln!("{what}: handshake finished, then closed: {err}");
                    if let quinn::ConnectionError::ApplicationClosed(c) = &err {
                        assert_eq!(c.error_code.into_inner(), PROTOCOL_ERROR, "{what}: {err}");
                    }
                }
            }
            endpoint.close(quinn::VarInt::from_u32(0), b"");
            local
        });
        let line = case.wait_log_line(&local, "handshake", &[]);
        eprintln!("{what}: {line}");
    }
    case.chat_goes_on("after", "reply");
    case.assert_only_the_client_admitted();
    case.assert_server_still_serves();
}

/// A second control stream is a protocol error.
#[test]
fn quic_second_control_stream() {
    let mut case = Hostile::quic();
    let h = case.quic_peer_chatting();
    let _second = case.block_on(h.open_control());
    case.expect_protocol_error(h, &["control"]);
    case.assert_server_still_serves();
}

/// A stream of unknown type (0x21, and one with an eight-byte type) gets
/// STOP_SENDING with code 0x02; the connection lives on and later messages
/// are acked.
#[test]
fn quic_unknown_stream_type_is_stopped() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    case.block_on(async {
        for ty in [0x21u64, 0x3fff_ffff_ffff_ffff] {
            let mut first = varint(ty);
            first.extend_from_slice(b"what is this?");
            // Not finished: the server must stop it, not read it to the end.
            let s = h.open_uni_with(&first).await;
            let stopped = tokio::time::timeout(TIMEOUT, s.stopped())
                .await
                .unwrap_or_else(|_| panic!("stream type {ty:#x}: no STOP_SENDING in time"));
            assert_eq!(
                stopped.map(|c| c.map(|c| c.into_inner())),
                Ok(Some(2)),
                "stream type {ty:#x} should be stopped with code 2"
            );
        }
        h.send_message(1, b"after unknown streams").await;
        h.expect_ack(1).await;
        h.assert_open();
    });
    case.expect_message(1, "after unknown streams");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// Streams that end inside their header (nothing, half a type, a type and no
/// id, half an id) are ignored: no message, no error, later messages acked.
#[test]
fn quic_stream_ending_inside_its_header_is_ignored() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    case.block_on(async {
        for head in [&[][..], &[0x40], &[0x01], &[0x01, 0x80, 0x00]] {
            let mut s = h.open_uni_with(head).await;
            s.finish().expect("finish");
            // Wait until the server has received all of it (FIN included).
            let r = tokio::time::timeout(TIMEOUT, s.stopped()).await;
            assert!(r.is_ok(), "stream {head:02x?} was never fully received");
        }
        h.send_message(1, b"after broken headers").await;
        h.expect_ack(1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.send_message(2, b"and another").await;
        h.expect_ack(2).await;
        h.assert_open();
    });
    case.server.wait_event_id("message", 2, TIMEOUT);
    case.server.poll();
    let ids = case.server.ids_of("message");
    assert_eq!(ids.len(), 3, "only the three real messages: {ids:?}");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// Finishing the control stream (FIN) while the connection lives is a
/// protocol error.
#[test]
fn quic_finished_control_stream() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    h.control.as_mut().unwrap().finish().expect("finish");
    case.expect_protocol_error(h, &["control"]);
    case.assert_server_still_serves();
}

/// Resetting the control stream is a protocol error too.
#[test]
fn quic_reset_control_stream() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    h.control
        .as_mut()
        .unwrap()
        .reset(quinn::VarInt::from_u32(7))
        .expect("reset");
    case.expect_protocol_error(h, &["control"]);
    case.assert_server_still_serves();
}

/// Unknown frame types on the control stream (also one split across
/// writes), a PING, and ACK/REJECT for ids never sent are all skipped; later
/// messages are acked.
#[test]
fn quic_unknown_frames_on_the_control_stream_are_skipped() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    case.block_on(async {
        let mut bytes = raw_frame(0x21, b"hello");
        bytes.extend(raw_frame(0x1234, &[0x11; 500]));
        bytes.extend(raw_frame(0x3fff_ffff_ffff_ffff, b""));
        bytes.extend(raw_frame(0x20, b""));
        bytes.extend(frame(&Frame::Ack { id: 42 }));
        bytes.extend(frame(&Frame::Reject {
            id: 43,
            code: 2,
            reason: Bytes::from_static(b"\xffnot sent"),
        }));
        h.control_write(&bytes).await;
        h.send_message(1, b"after unknown frames").await;
        h.expect_ack(1).await;

        let split = raw_frame(0x2f, &[0x22; 2000]);
        h.control_write(&split[..700]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.send_message(2, b"while a frame is half written").await;
        h.expect_ack(2).await;
        h.control_write(&split[700..]).await;
        h.send_message(3, b"after it").await;
        h.expect_ack(3).await;
        h.assert_open();
    });
    case.expect_message(1, "after unknown frames");
    case.expect_message(2, "while a frame is half written");
    case.expect_message(3, "after it");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// Frames that are errors on a control stream: DATA, END, CLOSE, lengths
/// over 1 MiB, an ACK with trailing bytes, a REJECT too short for its
/// varints. Each closes its connection with PROTOCOL_ERROR; the server then
/// serves the next one.
#[test]
fn quic_bad_frames_on_the_control_stream() {
    let mut case = Hostile::quic();
    let mut huge = vec![0x21];
    huge.extend([0xff; 8]);
    let mut over = vec![0x01];
    over.extend(varint((1 << 20) + 1));
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("DATA", data(0, b"x"), &["DATA"]),
        ("END", end(0, b"x"), &["END"]),
        (
            "CLOSE",
            frame(&Frame::Close {
                code: 0,
                reason: Bytes::from_static(b"bye"),
            }),
            &["CLOSE"],
        ),
        ("length 2^62-1", huge, LENGTH_WORDS),
        ("ACK header over 1 MiB", over, LENGTH_WORDS),
        (
            "ACK with trailing bytes",
            vec![0x01, 0x02, 0x05, 0x00],
            &["ACK"],
        ),
        ("REJECT without code", raw_frame(0x02, &[0x05]), &["REJECT"]),
    ];
    for (what, bytes, any) in cases {
        eprintln!("case: {what}");
        let mut h = case.quic_peer();
        case.block_on(h.control_write(&bytes));
        case.expect_protocol_error(h, any);
    }
    case.assert_server_still_serves();
}

/// A second message with an id already received is a protocol error.
#[test]
fn quic_duplicate_message_id() {
    let mut case = Hostile::quic();
    let h = case.quic_peer_chatting();
    case.block_on(h.send_message(0, b"again"));
    case.expect_protocol_error(h, DUPLICATE_WORDS);
    case.assert_server_still_serves();
}

/// Streams opened as fast as stream credit allows, for a few seconds, each a
/// tiny valid message: every one is delivered and acked, nothing fails.
#[test]
fn quic_stream_flood_within_credit() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    let n = case.block_on(async {
        let start = Instant::now();
        let mut id = 1u64;
        while start.elapsed() < Duration::from_secs(3) && id < 50_000 {
            h.send_message(id, b"x").await;
            id += 1;
        }
        id
    });
    eprintln!("opened {} message streams in 3 s", n - 1);
    case.block_on(async {
        h.expect_acks(1..n, LONG_TIMEOUT).await;
        h.assert_open();
    });
    let got = case
        .server
        .collect_events("message", (n - 1) as usize, LONG_TIMEOUT);
    assert_eq!(got.len() as u64, n - 1);
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// A peer that never opens its control stream is closed with PROTOCOL_ERROR
/// once the 10 s deadline has passed (not before), and the next client is
/// served. Takes about 10 s.
#[test]
fn quic_no_control_stream_is_closed_after_10_s() {
    let mut case = Hostile::quic();
    let h = case.block_on(HostileQuic::connect(&case.addr));
    let since = Instant::now();
    case.wait_connected_from(&h.local);
    let reason = case.block_on(h.expect_closed(PROTOCOL_ERROR, Duration::from_secs(10) + TIMEOUT));
    let waited = since.elapsed();
    eprintln!("closed after {waited:?}: {reason:?}");
    assert!(
        waited >= Duration::from_secs(8),
        "the server may close only after its 10 s deadline, closed after {waited:?}"
    );
    assert!(
        mentions_any(&reason, &["control"]),
        "close reason should mention the control stream: {reason:?}"
    );
    case.server_reports_protocol_error(&h.local, &["control"]);
    drop(h);
    case.assert_server_still_serves();
}

/// While a chat is open, a hostile QUIC peer that sends a message and a
/// second control stream is turned away (BUSY or PROTOCOL_ERROR); its
/// message never reaches the server's user and the chat goes on.
#[test]
fn quic_hostile_peer_while_a_chat_is_open() {
    let mut case = Hostile::with_open_chat(TransportKind::Quic, "before");
    case.block_on(async {
        let endpoint = quic_endpoint();
        let conn = match quic_connect(&endpoint, &case.addr, &[ALPN]).await {
            Ok(c) => c,
            Err(e) => panic!("a busy server should still complete the handshake: {e}"),
        };
        // Best effort: the server may close before these go out. The
        // control streams are kept (dropping would finish them).
        let mut keep = Vec::new();
        for first in [&[0x00][..], b"\x01\x00sneaky", &[0x00]] {
            if let Ok(mut s) = conn.open_uni().await {
                let _ = s.write_all(first).await;
                if first[0] == 0x01 {
                    let _ = s.finish();
                }
                keep.push(s);
            }
        }
        let err = tokio::time::timeout(TIMEOUT, conn.closed())
            .await
            .expect("the busy server should close the intruder");
        match &err {
            quinn::ConnectionError::ApplicationClosed(c) => assert!(
                [BUSY, PROTOCOL_ERROR].contains(&c.error_code.into_inner()),
                "expected BUSY or PROTOCOL_ERROR: {err}"
            ),
            other => panic!("expected an application close: {other}"),
        }
        endpoint.close(quinn::VarInt::from_u32(0), b"");
    });
    case.chat_goes_on("after the intruder", "reply");
    assert_eq!(case.server_messages(), ["before", "after the intruder"]);
    case.assert_server_still_serves();
}

/// A QUIC close from the peer with a reason that is invalid UTF-8 and full
/// of terminal controls: a normal end (code 0), shown with replacement
/// characters, never raw in the log.
#[test]
fn quic_close_with_invalid_utf8_reason() {
    let mut case = Hostile::quic();
    let h = case.quic_peer_chatting();
    let local = h.local.clone();
    case.block_on(async {
        h.conn.close(quinn::VarInt::from_u32(0), HOSTILE_REASON);
        let _ = tokio::time::timeout(Duration::from_secs(3), h.endpoint.wait_idle()).await;
    });
    assert_hostile_reason_shown_escaped(&mut case, &local);
    drop(h);
    case.assert_server_still_serves();
}

/// The same as [`tcp_too_many_gaps_in_message_ids`] over QUIC: one stream
/// per message, ids 0, 2, 4, ….
#[test]
fn quic_too_many_gaps_in_message_ids() {
    let mut case = Hostile::quic();
    let h = case.quic_peer_chatting();
    // Message 0 is taken; gaps start at 2.
    let sent = case.block_on(async {
        let mut sent = Vec::new();
        for i in 1..4200u64 {
            let Ok(Ok(mut s)) = tokio::time::timeout(TIMEOUT, h.conn.open_uni()).await else {
                break;
            };
            let mut head = varint(1);
            head.extend(varint(2 * i));
            if s.write_all(&head).await.is_err() || s.finish().is_err() {
                break;
            }
            sent.push(2 * i);
        }
        sent
    });
    eprintln!("sent {} messages before the connection ended", sent.len());
    // Honest gaps are fine: the first 4,000 messages are delivered. (Their
    // acks may be cut off by the close, so the server's side is checked.)
    case.server.collect_events("message", 4000, LONG_TIMEOUT);
    let reason = case.block_on(h.expect_closed(PROTOCOL_ERROR, LONG_TIMEOUT));
    assert!(mentions_any(&reason, GAP_WORDS), "reason: {reason:?}");
    case.server_reports_protocol_error(&h.local, GAP_WORDS);
    drop(h);
    case.assert_server_still_serves();
}

// ===========================================================================
// Both transports
// ===========================================================================

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

#[test]
fn tcp_protocol_error_logged_with_peer_at_default_level() {
    protocol_error_logged_at_default_level(TransportKind::Tcp);
}

#[test]
fn quic_protocol_error_logged_with_peer_at_default_level() {
    protocol_error_logged_at_default_level(TransportKind::Quic);
}
