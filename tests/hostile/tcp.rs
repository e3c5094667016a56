//! Hostile peers over TLS over TCP: garbage and stalls before and during
//! the handshake, then frames no honest chat/1 peer sends.

use super::*;

// ----- before and during the handshake --------------------------------------

/// Garbage instead of a ClientHello, on several connections at once, while a
/// chat is open: each connection is dropped (at the latest by the handshake
/// timeout), each is logged with its address, the chat goes on, and the
/// next client is served.
#[test]
fn random_bytes_instead_of_client_hello() {
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
fn wrong_or_missing_alpn_is_refused() {
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
fn slowloris_while_a_client_chats() {
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
fn many_idle_connections_at_once() {
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
fn hundreds_of_idle_connections_do_not_lock_out_a_client() {
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

// ----- after the handshake --------------------------------------------------

/// A hostile TCP peer is admitted (no chat is open), sends `setup` and gets
/// acks for `acked`, then sends `bad`: the server must answer CLOSE with
/// PROTOCOL_ERROR and a reason mentioning one of `any` — and nothing else
/// before it —, report the end with code 2, log the peer's address and what
/// was wrong, and then chat with a normal client.
fn protocol_error_case(setup: &[u8], acked: &[u64], bad: &[u8], any: &[&str]) {
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
fn frame_length_2_pow_62_minus_1() {
    let mut bad = vec![0x10];
    bad.extend([0xff; 8]);
    protocol_error_case(&[], &[], &bad, LENGTH_WORDS);
}

/// A frame of exactly 1 MiB is fine; a DATA header announcing 1 MiB + 1 is
/// refused at once (no payload follows it).
#[test]
fn frame_over_1_mib() {
    // END id 0 (1 byte) + 1 MiB - 1 bytes of data = a 1 MiB payload.
    let exactly = end(0, &vec![b'm'; (1 << 20) - 1]);
    let mut bad = vec![0x10];
    bad.extend(varint((1 << 20) + 1));
    protocol_error_case(&exactly, &[0], &bad, LENGTH_WORDS);
}

/// The length limit applies to frames of unknown type too: they are skipped
/// by length, but a length over 1 MiB is an error, not something to skip.
#[test]
fn unknown_frame_over_1_mib() {
    let mut bad = varint(0x3fff);
    bad.extend(varint((1 << 20) + 1));
    protocol_error_case(&[], &[], &bad, LENGTH_WORDS);
}

/// An ACK whose payload holds more than one varint, naming an id that was
/// never sent: the shape check comes first, so this is a protocol error.
#[test]
fn ack_with_trailing_bytes() {
    protocol_error_case(&[], &[], &[0x01, 0x02, 0x05, 0x00], &["ACK"]);
}

/// 64 messages in progress at once are allowed (and each is acked at its
/// END); 65 at once (DATA for 65 ids, no END) are a protocol error.
#[test]
fn more_than_64_messages_in_progress() {
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
    protocol_error_case(
        &setup,
        &(0..64).collect::<Vec<_>>(),
        &bad,
        &["64", "progress"],
    );
}

/// A second message with an id already received is a protocol error.
#[test]
fn duplicate_message_id() {
    let mut setup = end(0, b"first");
    setup.extend(end(1, b"second"));
    protocol_error_case(&setup, &[0, 1], &end(0, b"again"), DUPLICATE_WORDS);
}

/// DATA for an id that was already received whole is a duplicate too.
#[test]
fn data_for_an_already_received_id() {
    protocol_error_case(&end(3, b"x"), &[3], &data(3, b"y"), DUPLICATE_WORDS);
}

/// END for an id never seen is a complete one-frame message: acked and
/// shown (also empty, and with a large id), and the chat goes on.
#[test]
fn end_for_an_unknown_id_is_a_message() {
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
fn close_with_invalid_utf8_reason() {
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

/// Frames of unknown types (one-, two- and eight-byte type numbers, with
/// and without payload, between the DATA and END of a message) are skipped;
/// the messages around them are delivered and acked.
#[test]
fn unknown_frame_types_are_skipped() {
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
fn silent_peer_after_handshake_is_dropped_at_idle_timeout() {
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
fn hostile_peers_while_a_chat_is_open() {
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
fn too_many_gaps_in_message_ids() {
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

#[test]
fn protocol_error_logged_with_peer_at_default_level() {
    crate::protocol_error_logged_at_default_level(TransportKind::Tcp);
}

// ----- chat/2: a client only with its HELLO ------------------------------------

/// On chat/2 the client's first frame must be HELLO: an ACK, a message
/// (END, DATA) or a WELCOME before it is a protocol error. Each such
/// connection gets CLOSE with code 2 and a reason naming the frame and
/// HELLO, is logged, and is never shown as a client.
#[test]
fn chat2_frames_before_hello_are_protocol_errors() {
    let mut case = Hostile::tcp();
    let welcome = stray_welcome();
    let cases: [(&str, Vec<u8>); 4] = [
        ("ACK", frame(&Frame::Ack { id: 0 })),
        ("END", end(0, b"a message before HELLO")),
        ("DATA", data(0, b"half a message before HELLO")),
        ("WELCOME", welcome),
    ];
    for (what, bytes) in cases {
        eprintln!("case: {what} before HELLO");
        let mut h = case.tcp_peer_v2();
        case.block_on(h.send_lenient(&bytes));
        case.expect_unshown_protocol_error(h, &["HELLO", what]);
    }
    assert!(
        case.server_messages().is_empty(),
        "no message sent before HELLO may reach the server's user"
    );
    case.assert_server_still_serves();
}

/// A chat/2 peer that completes the handshake and then says nothing is
/// closed with PROTOCOL_ERROR once the 10 s the server waits for HELLO have
/// passed (not before), and is never shown as a client. Takes about 10 s.
#[test]
fn chat2_no_hello_is_closed_after_10_s() {
    no_hello_is_closed_after_10_s(&[]);
}

/// The same with an idle timeout longer than the wait for HELLO: the
/// deadline, not the idle timer, ends the connection.
#[test]
fn chat2_no_hello_is_closed_after_10_s_with_a_longer_idle_timeout() {
    no_hello_is_closed_after_10_s(&["--idle-timeout", "30"]);
}

fn no_hello_is_closed_after_10_s(server_args: &[&str]) {
    let mut case = Hostile::server(TransportKind::Tcp, server_args, &[]);
    let mut h = case.tcp_peer_v2();
    let since = Instant::now();
    let before = case.shown();
    let reason = case.block_on(h.expect_close(PROTOCOL_ERROR));
    let waited = since.elapsed();
    eprintln!("closed after {waited:?}: {reason:?}");
    assert!(
        waited >= Duration::from_secs(8),
        "the server may give up on HELLO only after 10 s, gave up after {waited:?}"
    );
    assert!(
        mentions_any(&reason, &["HELLO"]),
        "reason should say HELLO is missing: {reason:?}"
    );
    case.wait_log_line(&h.local, "protocol error", &["HELLO"]);
    case.assert_nothing_more_shown(before, "a silent chat/2 peer");
    drop(h);
    case.assert_server_still_serves();
}

/// A chat/2 peer may send PINGs and unknown frames before HELLO; on HELLO
/// the server's first frame is WELCOME (a fresh 16-byte token, not
/// resumed, the server's resume window and idle timeout), the peer is a
/// client from then on, and its messages are acknowledged and shown.
#[test]
fn chat2_hello_gets_welcome_and_the_chat_works() {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer_v2();
    let mut bytes = frame(&Frame::Ping);
    bytes.extend(raw_frame(0x21, b"not yet"));
    bytes.extend(hello(60_000, None));
    case.block_on(async {
        h.send(&bytes).await;
        h.expect_welcome().await.check(
            fixture::SERVER_IDLE_MS,
            fixture::SERVER_RESUME_WINDOW_MS,
            None,
        );
    });
    case.wait_connected_from(&h.local);
    case.block_on(async {
        h.send(&end(0, b"after WELCOME")).await;
        h.expect_ack(0).await;
    });
    case.expect_message(0, "after WELCOME");
    case.ends_politely(h);
    case.assert_server_still_serves();
}

/// A second HELLO is a protocol error that ends the chat. Here the first
/// HELLO carries a token the server does not know, with the RECEIVED that
/// must follow it: WELCOME starts a new chat with a token of its own, and
/// the second HELLO comes once the chat is under way.
#[test]
fn chat2_second_hello_is_a_protocol_error() {
    let mut case = Hostile::tcp();
    let mut h = case.tcp_peer_v2();
    let ours = [7u8; 16];
    let mut first = hello(60_000, Some(ours));
    first.extend(received(0, &[]));
    case.block_on(async {
        h.send(&first).await;
        h.expect_welcome().await.check(
            fixture::SERVER_IDLE_MS,
            fixture::SERVER_RESUME_WINDOW_MS,
            Some(ours),
        );
        h.send(&end(0, b"first")).await;
        h.expect_ack(0).await;
        h.send_lenient(&hello(60_000, None)).await;
    });
    case.wait_connected_from(&h.local);
    case.expect_protocol_error(h, &["HELLO"]);
    case.assert_server_still_serves();
}

/// A HELLO with a token asks to resume: only PARTIAL, PING and unknown
/// frames may come between it and its RECEIVED (PROTOCOL.md §9.6). A
/// message there (an END, or the DATA that starts one) is a protocol
/// error, before the peer was ever a client: it is closed with code 2 and
/// a reason naming the frame and RECEIVED, logged, never shown, and its
/// message never reaches the server's user.
#[test]
fn chat2_message_before_received_is_a_protocol_error() {
    let mut case = Hostile::tcp();
    let cases: [(&str, Vec<u8>); 2] = [
        ("END", end(0, b"a message before RECEIVED")),
        ("DATA", data(0, b"half a message before RECEIVED")),
    ];
    for (what, message) in cases {
        eprintln!("case: {what} between HELLO(token) and RECEIVED");
        let mut h = case.tcp_peer_v2();
        let mut bytes = hello(60_000, Some([9; 16]));
        bytes.extend(partial(0, 10));
        bytes.extend(frame(&Frame::Ping));
        bytes.extend(message);
        bytes.extend(received(0, &[]));
        case.block_on(h.send_lenient(&bytes));
        case.expect_unshown_protocol_error(h, &["RECEIVED", what]);
    }
    assert!(
        case.server_messages().is_empty(),
        "no message sent before RECEIVED may reach the server's user"
    );
    case.assert_server_still_serves();
}

/// A suspended chat (its client's connection lost: gone without CLOSE or
/// close_notify) is held for its own client only (PROTOCOL.md §9.4–§9.5):
/// a peer with another certificate gets BUSY for a HELLO with the chat's
/// real token, and so does one without a certificate for a HELLO without a
/// token. The chat's client then resumes it (WELCOME `resumed` = 1, and a
/// RECEIVED covering its acknowledged message 0); after a second loss, its
/// HELLO without a token replaces the held chat with a new one (a fresh
/// token, `resumed` = 0, ids from 0 again). (Over QUIC a peer cannot
/// vanish without a CONNECTION_CLOSE in less than the idle timeout, so this
/// case is TCP's.)
#[test]
fn chat2_suspended_chat_is_held_for_its_own_client() {
    let mut case = Hostile::tcp();
    let (ours, other) = (new_identity("client"), new_identity("other"));
    let (first, token) = crate::resume::open_chat(&mut case, Some(&ours), "before the loss");
    drop(first);
    let held = case.server.wait_event("suspended", TIMEOUT);
    eprintln!("{held}");

    let mut resume = hello(60_000, Some(token));
    resume.extend(received(0, &[]));
    let attempts: [(&str, Option<&chat::trust::identity::Identity>, Vec<u8>); 2] = [
        (
            "another certificate, the real token",
            Some(&other),
            resume.clone(),
        ),
        ("no certificate, no token", None, hello(60_000, None)),
    ];
    for (what, identity, bytes) in attempts {
        let mut h = case.peer_v2_as(identity);
        case.block_on(async {
            h.send_control(&bytes).await;
            h.expect_closed(BUSY).await;
        });
        let refused = case.server.wait_event("refused", TIMEOUT);
        assert_eq!(refused["peer"], h.local(), "{what}: {refused}");
        assert_eq!(refused["code"], BUSY, "{what}: {refused}");
    }

    let mut back = case.peer_v2_as(Some(&ours));
    let (welcome, (below, ids)) = case.block_on(async {
        back.send_control(&resume).await;
        (back.expect_welcome().await, back.expect_received().await)
    });
    welcome.check_resumed(
        fixture::SERVER_IDLE_MS,
        fixture::SERVER_RESUME_WINDOW_MS,
        token,
    );
    assert!(
        below > 0 || ids.contains(&0),
        "the server's RECEIVED({below}, {ids:?}) should cover message 0, which it acked"
    );
    case.server.wait_event("resumed", TIMEOUT);
    case.block_on(async {
        back.send_message(1, b"after the resume").await;
        back.expect_ack(1).await;
    });
    case.expect_message(1, "after the resume");

    drop(back);
    case.server.wait_event("suspended", TIMEOUT);
    let mut fresh = case.peer_v2_as(Some(&ours));
    let welcome = case.block_on(async {
        fresh.send_control(&hello(60_000, None)).await;
        fresh.expect_welcome().await
    });
    welcome.check(
        fixture::SERVER_IDLE_MS,
        fixture::SERVER_RESUME_WINDOW_MS,
        Some(token),
    );
    case.expect_server_disconnected(None, &[]);
    case.wait_connected_from(fresh.local());
    case.block_on(async {
        fresh.send_message(0, b"in the new chat").await;
        fresh.expect_ack(0).await;
    });
    case.expect_message(0, "in the new chat");
    case.ends_politely(fresh);
    case.assert_server_still_serves();
}

/// A chat/2 connection that ends before HELLO (as the loser of a client's
/// race does: close_notify alone, or simply gone) was never a client: the
/// server shows nothing and logs no protocol error for it.
#[test]
fn chat2_closed_before_hello_is_not_a_client() {
    let mut case = Hostile::tcp();
    let before = case.shown();
    let mut polite = case.tcp_peer_v2();
    case.block_on(async {
        polite.stream.shutdown().await.expect("close_notify");
        polite.expect_end().await;
    });
    let gone = case.tcp_peer_v2();
    let gone_local = gone.local.clone();
    drop(gone);
    case.assert_nothing_more_shown(before, "connections closed before HELLO");
    case.server.settle(Duration::from_millis(500));
    let err = case.server.stderr_text();
    for local in [&polite.local, &gone_local] {
        if err
            .lines()
            .any(|l| l.contains(local.as_str()) && mentions_any(l, &["protocol error"]))
        {
            case.server.fail(&format!(
                "a connection closed before HELLO ({local}) is no protocol error"
            ));
        }
    }
    case.assert_server_still_serves();
}

/// While a chat is open, a chat/2 peer is not turned away at its
/// handshake: BUSY is decided on its HELLO. Until then it is neither closed
/// nor reported; on HELLO it gets CLOSE(BUSY) (no WELCOME) and the server
/// reports it `refused`. The open chat goes on.
#[test]
fn chat2_busy_is_decided_on_hello() {
    let mut case = Hostile::with_open_chat(TransportKind::Tcp, "before");
    let mut h = case.tcp_peer_v2();
    case.block_on(async {
        match h.next(Duration::from_secs(1)).await {
            Got::Timeout => {}
            other => panic!("before HELLO the server should wait, not answer: {other:?}"),
        }
    });
    assert_eq!(case.shown(), [1, 0, 0], "nothing shown before HELLO");
    case.block_on(async {
        h.send(&hello(60_000, None)).await;
        h.expect_close(BUSY).await;
    });
    let local = h.local.clone();
    let refused = case.server.wait_event("refused", TIMEOUT);
    assert_eq!(refused["peer"], local.as_str(), "{refused}");
    assert_eq!(refused["transport"], "tcp", "{refused}");
    assert_eq!(refused["code"], BUSY, "{refused}");
    case.chat_goes_on("after the refusal", "reply");
    case.assert_server_still_serves();
}

/// More silent chat/2 connections (TLS done, no HELLO) than the server
/// lets wait for HELLO at once (64): a real client arriving meanwhile must
/// still get in and chat, as with idle sockets before the handshake
/// ([`hundreds_of_idle_connections_do_not_lock_out_a_client`];
/// protocol.md §14.13: "a stalled client never holds up other clients").
#[test]
fn chat2_silent_connections_do_not_lock_out_a_client() {
    let mut case = Hostile::tcp();
    let addr = case.addr.clone();
    let silent: Vec<HostileTcp> = case.block_on(async {
        let mut v = Vec::new();
        for _ in 0..80 {
            v.push(HostileTcp::connect_as(&addr, ALPN_V2).await);
        }
        v
    });
    case.client_joins("eighty silent connections", "do not keep us apart");
    drop(silent);
    case.client_leaves();
}
