//! Messages and acknowledgements: content, sizes, ids, pipelining.

use std::collections::BTreeMap;

use support::*;

both_transports!(
    messages_both_directions,
    all_byte_values_and_utf8_detection,
    empty_message,
    large_message_8_mib,
    small_message_goes_while_a_large_one_is_in_flight,
    pipelined_1000_messages_each_way,
    malformed_stdin_line_yields_error_and_sends_nothing,
);

/// Server and client each send; each side sees `message` (id, bytes, text),
/// and the sender sees `sent` {id, bytes} and `ack` {id, rtt_us >= 0}.
/// Ids start at 0 per direction.
fn messages_both_directions(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);

    exchange(&mut client, &mut server, 0, "hello from client");
    exchange(&mut server, &mut client, 0, "hello from server");
    exchange(&mut client, &mut server, 1, "second from client ✓");
    exchange(&mut server, &mut client, 1, "second from server");

    for p in [&mut server, &mut client] {
        p.poll();
        for ack in p.events_named("ack") {
            assert!(
                ack["rtt_us"].is_u64(),
                "[{}] ack.rtt_us must be a non-negative integer: {ack}",
                p.label
            );
        }
        assert_eq!(p.ids_of("sent"), vec![0, 1], "[{}] sent ids", p.label);
        p.assert_only_json_events();
    }
}

/// One message holding all 256 byte values arrives unchanged (as `base64`,
/// since it is not UTF-8); invalid UTF-8 comes with `base64` and no `text`;
/// valid UTF-8 sent as base64 comes back as `text`; an escaped newline in a
/// text is part of one message.
fn all_byte_values_and_utf8_detection(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);

    let all: Vec<u8> = (0..=255u8).collect();
    client.send_base64(&all);
    let m = server.wait_event_id("message", 0, TIMEOUT);
    assert_eq!(m["bytes"].as_u64(), Some(256), "message.bytes: {m}");
    assert!(
        m.get("text").is_none(),
        "non-UTF-8 message must not carry `text`: {m}"
    );
    let got = b64_decode(
        m["base64"]
            .as_str()
            .expect("message.base64 for non-UTF-8 bytes"),
    );
    assert_eq!(got, all, "all 256 byte values must arrive unchanged");
    client.wait_event_id("ack", 0, TIMEOUT);

    // Invalid UTF-8 (lone continuation / 0xff), server -> client.
    let invalid = vec![b'a', 0xff, 0xfe, b'b', 0x80, 0x00, b'\n'];
    server.send_base64(&invalid);
    let m = client.wait_event_id("message", 0, TIMEOUT);
    assert!(
        m.get("text").is_none(),
        "invalid UTF-8 must not carry `text`: {m}"
    );
    assert_eq!(
        b64_decode(m["base64"].as_str().expect("base64 field")),
        invalid
    );
    assert_eq!(m["bytes"].as_u64(), Some(invalid.len() as u64));
    server.wait_event_id("ack", 0, TIMEOUT);

    // Valid UTF-8 given as base64 comes out as text.
    let utf8 = "héllo wörld ✓ 🚀";
    client.send_base64(utf8.as_bytes());
    let m = server.wait_event_id("message", 1, TIMEOUT);
    assert_eq!(
        m["text"].as_str(),
        Some(utf8),
        "valid UTF-8 must carry `text`: {m}"
    );
    assert_eq!(m["bytes"].as_u64(), Some(utf8.len() as u64));
    client.wait_event_id("ack", 1, TIMEOUT);

    // Control characters and an embedded newline: one message, intact.
    let tricky = "line one\nline two\r\n\u{1b}[31mred\u{1b}[0m\ttab\u{0}nul";
    client.send_text(tricky);
    let m = server.wait_event_id("message", 2, TIMEOUT);
    assert_eq!(m["text"].as_str(), Some(tricky), "{m}");
    client.wait_event_id("ack", 2, TIMEOUT);

    server.settle(std::time::Duration::from_millis(200));
    assert_eq!(
        server.events_named("message").len(),
        3,
        "the newline must not split the message"
    );
    server.assert_only_json_events();
    client.assert_only_json_events();
}

/// `{"text":""}` is a message of 0 bytes that arrives and is acked, both ways.
fn empty_message(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);

    client.send_text("");
    let s = client.wait_event_id("sent", 0, TIMEOUT);
    assert_eq!(s["bytes"].as_u64(), Some(0), "{s}");
    let m = server.wait_event_id("message", 0, TIMEOUT);
    assert_eq!(m["bytes"].as_u64(), Some(0), "{m}");
    assert!(message_bytes(&m).is_empty(), "{m}");
    client.wait_event_id("ack", 0, TIMEOUT);

    server.send_base64(&[]);
    let m = client.wait_event_id("message", 0, TIMEOUT);
    assert_eq!(m["bytes"].as_u64(), Some(0), "{m}");
    assert!(message_bytes(&m).is_empty(), "{m}");
    server.wait_event_id("ack", 0, TIMEOUT);

    // The chat goes on after empty messages.
    exchange(&mut client, &mut server, 1, "after empty");
}

/// An 8 MiB message of pseudo-random bytes arrives intact and is acked, in
/// both directions.
fn large_message_8_mib(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);
    const LEN: usize = 8 * 1024 * 1024;

    let mut up = pseudo_random_bytes(LEN, 0x1234_5678);
    up[0] = 0xff; // certainly not UTF-8
    client.send_base64(&up);
    let m = server.wait_event_id("message", 0, LONG_TIMEOUT);
    assert_eq!(m["bytes"].as_u64(), Some(LEN as u64), "message.bytes");
    let got = message_bytes(&m);
    assert!(
        got == up,
        "8 MiB client->server message corrupted (len {} vs {})",
        got.len(),
        up.len()
    );
    let ack = client.wait_event_id("ack", 0, LONG_TIMEOUT);
    assert!(ack["rtt_us"].is_u64(), "{ack}");
    drop((m, got, up));

    let mut down = pseudo_random_bytes(LEN, 0x9abc_def0);
    down[0] = 0xfe;
    server.send_base64(&down);
    let m = client.wait_event_id("message", 0, LONG_TIMEOUT);
    assert_eq!(m["bytes"].as_u64(), Some(LEN as u64), "message.bytes");
    let got = message_bytes(&m);
    assert!(
        got == down,
        "8 MiB server->client message corrupted (len {} vs {})",
        got.len(),
        down.len()
    );
    server.wait_event_id("ack", 0, LONG_TIMEOUT);

    // A small message still works afterwards.
    exchange(&mut client, &mut server, 1, "small after large");
}

/// A message larger than the sender's bound on unconfirmed bytes (32 MiB)
/// does not hold up what is typed after it: the small message is sent,
/// received and acknowledged while the large one is still in flight.
fn small_message_goes_while_a_large_one_is_in_flight(t: TransportKind) {
    const LEN: usize = 48 * 1024 * 1024;
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(
        t,
        &["--max-message-size", "67108864"],
        &["--max-message-size", "67108864"],
    );
    client.send_text(&"x".repeat(LEN));
    client.send_text("small");
    let small_ack = client.wait_event_id("ack", 1, LONG_TIMEOUT);
    if !client.events_named("ack").iter().all(|a| a["id"] != 0) {
        client.fail(&format!(
            "the large message was acked before the small one: {small_ack}"
        ));
    }
    let small = server.wait_event_id("message", 1, TIMEOUT);
    assert_eq!(small["text"].as_str(), Some("small"), "{small}");
    let big = server.wait_event_id("message", 0, LONG_TIMEOUT);
    assert_eq!(big["bytes"].as_u64(), Some(LEN as u64), "message.bytes");
    client.wait_event_id("ack", 0, LONG_TIMEOUT);
}

fn check_all_received(p: &mut Peer, prefix: &str, n: u64, events: &[serde_json::Value]) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for m in events {
        let id = m["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("[{}] message without id: {m}", p.label));
        *seen.entry(id).or_default() += 1;
        let want = format!("{prefix} {id}");
        if m["text"].as_str() != Some(want.as_str()) {
            p.fail(&format!("message {id} should be {want:?}: {m}"));
        }
    }
    if let Some(problems) = id_problems(&seen, n) {
        p.fail(&format!("messages: {problems}"));
    }
}

fn check_acked_exactly_once(p: &mut Peer, n: u64) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for a in p.events_named("ack") {
        assert!(a["rtt_us"].is_u64(), "[{}] ack.rtt_us: {a}", p.label);
        *seen.entry(a["id"].as_u64().expect("ack.id")).or_default() += 1;
    }
    if let Some(problems) = id_problems(&seen, n) {
        p.fail(&format!("acks: {problems}"));
    }
    let sent = p.events_named("sent").len() as u64;
    if sent != n {
        p.fail(&format!("expected {n} `sent` events, got {sent}"));
    }
}

/// 1,000 messages written at once on each side (no waiting): every id is
/// acknowledged exactly once on each side and every message is received
/// exactly once with matching content (order not assumed).
fn pipelined_1000_messages_each_way(t: TransportKind) {
    const N: u64 = 1000;
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);

    // Queue everything on both sides before waiting for anything; the
    // writer threads feed both stdins concurrently.
    for i in 0..N {
        client.send_text(&format!("c2s {i}"));
        server.send_text(&format!("s2c {i}"));
    }

    let to_server = server.collect_events("message", N as usize, LONG_TIMEOUT);
    let to_client = client.collect_events("message", N as usize, LONG_TIMEOUT);
    check_all_received(&mut server, "c2s", N, &to_server);
    check_all_received(&mut client, "s2c", N, &to_client);
    client.collect_events("ack", N as usize, LONG_TIMEOUT);
    server.collect_events("ack", N as usize, LONG_TIMEOUT);

    // End the chat normally so that everything each side printed is in.
    client.close_stdin();
    client.expect_exit_code(0, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    server.wait_event("disconnected", TIMEOUT);

    check_acked_exactly_once(&mut client, N);
    check_acked_exactly_once(&mut server, N);
    // No message was delivered twice, even late.
    let late_c = client.events_named("message").len() as u64;
    let late_s = server.events_named("message").len() as u64;
    assert_eq!(late_c, N, "[{}] message events", client.label);
    assert_eq!(late_s, N, "[{}] message events", server.label);
    client.assert_only_json_events();
    server.assert_only_json_events();
}

/// A stdin line that is not `{"text":…}` / `{"base64":…}` yields an `error`
/// event, nothing is sent, and the program goes on.
fn malformed_stdin_line_yields_error_and_sends_nothing(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);

    client.send_line("this is not json");
    client.wait_event("error", TIMEOUT);
    client.send_line(r#"{"base64":"@@@ not base64 @@@"}"#);
    client.wait_event("error", TIMEOUT);

    // Nothing was sent for those lines: the next message gets id 0.
    exchange(&mut client, &mut server, 0, "valid after garbage");
    assert_eq!(
        client.events_named("sent").len(),
        1,
        "only the valid line was sent"
    );
    server.settle(std::time::Duration::from_millis(200));
    assert_eq!(
        server.events_named("message").len(),
        1,
        "server got only the valid message"
    );
    client.assert_only_json_events();
}
