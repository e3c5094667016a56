//! Hostile peers over QUIC: noise datagrams and wrong ALPN, then streams and
//! control frames no honest chat/1 peer sends.

use super::*;

/// Random UDP datagrams (raw noise, fake Initial packets, unknown versions,
/// short-header packets) at the server's port: the open chat goes on and the
/// next client is served.
#[test]
fn random_datagrams() {
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
fn wrong_or_missing_alpn_is_refused() {
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
fn second_control_stream() {
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
fn unknown_stream_type_is_stopped() {
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
fn stream_ending_inside_its_header_is_ignored() {
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
fn finished_control_stream() {
    let mut case = Hostile::quic();
    let mut h = case.quic_peer_chatting();
    h.control.as_mut().unwrap().finish().expect("finish");
    case.expect_protocol_error(h, &["control"]);
    case.assert_server_still_serves();
}

/// Resetting the control stream is a protocol error too.
#[test]
fn reset_control_stream() {
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
fn unknown_frames_on_the_control_stream_are_skipped() {
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
fn bad_frames_on_the_control_stream() {
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
fn duplicate_message_id() {
    let mut case = Hostile::quic();
    let h = case.quic_peer_chatting();
    case.block_on(h.send_message(0, b"again"));
    case.expect_protocol_error(h, DUPLICATE_WORDS);
    case.assert_server_still_serves();
}

/// Streams opened as fast as stream credit allows, for a few seconds, each a
/// tiny valid message: every one is delivered and acked, nothing fails.
#[test]
fn stream_flood_within_credit() {
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
fn no_control_stream_is_closed_after_10_s() {
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
fn hostile_peer_while_a_chat_is_open() {
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
fn close_with_invalid_utf8_reason() {
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

/// The same as [`crate::tcp::too_many_gaps_in_message_ids`] over QUIC: one stream
/// per message, ids 0, 2, 4, ….
#[test]
fn too_many_gaps_in_message_ids() {
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

#[test]
fn protocol_error_logged_with_peer_at_default_level() {
    crate::protocol_error_logged_at_default_level(TransportKind::Quic);
}
