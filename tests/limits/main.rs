//! Limits: messages over the receiver's --max-message-size are rejected,
//! over the sender's refused before they are sent;
//! messages together larger than the receive budget (64 MiB) still arrive.

use support::*;

both_transports!(
    too_large_message_rejected_both_directions,
    messages_beyond_the_receive_budget_still_arrive
);

fn expect_rejected(p: &mut Peer, id: u64) {
    let r = p.wait_event_id("rejected", id, TIMEOUT);
    if r["code"].as_u64() != Some(1) {
        p.fail(&format!("rejected.code should be 1 (TOO_LARGE): {r}"));
    }
    if !r["reason"].is_string() {
        p.fail(&format!("rejected.reason should be a string: {r}"));
    }
}

/// The receiver accepts at most 1000 bytes and the sender 2000 (it sends
/// no more than its own limit either). 1500 and 1001 bytes are rejected by
/// the receiver with TOO_LARGE (code 1); exactly 1000 bytes and small
/// messages are still delivered and acked — the chat goes on. 5000 bytes
/// are refused by the sender itself, with an error, and never sent.
fn too_large_message_rejected_both_directions(t: TransportKind) {
    // client -> server
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(
        t,
        &["--max-message-size", "1000"],
        &["--max-message-size", "2000"],
    );
    client.send_base64(&pseudo_random_bytes(1500, 1));
    expect_rejected(&mut client, 0);
    exchange(&mut client, &mut server, 1, "small after too large");
    client.send_text(&"x".repeat(1001));
    expect_rejected(&mut client, 2);
    let exact = "y".repeat(1000);
    exchange(&mut client, &mut server, 3, &exact);
    client.send_text(&"w".repeat(5000));
    let e = client.wait_event("error", TIMEOUT);
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("2000")),
        "the error should name the sender's limit: {e}"
    );
    exchange(&mut client, &mut server, 4, "the refused one took no id");
    assert_rejected_never_delivered(&mut client, &mut server, &[0, 2]);

    // server -> client
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(
        t,
        &["--max-message-size", "2000"],
        &["--max-message-size", "1000"],
    );
    server.send_text(&"z".repeat(1500));
    expect_rejected(&mut server, 0);
    exchange(&mut server, &mut client, 1, "chat goes on");
    assert_rejected_never_delivered(&mut server, &mut client, &[0]);
}

/// No ack for a `rejected` message, and the receiver never delivered it.
fn assert_rejected_never_delivered(sender: &mut Peer, receiver: &mut Peer, rejected: &[u64]) {
    sender.poll();
    for a in sender.events_named("ack") {
        let id = a["id"].as_u64().unwrap();
        assert!(
            !rejected.contains(&id),
            "[{}] rejected message {id} was acked: {a}",
            sender.label
        );
    }
    receiver.poll();
    let got = receiver.ids_of("message");
    assert!(
        rejected.iter().all(|id| !got.contains(id)),
        "[{}] delivered a too-large message: {got:?}",
        receiver.label
    );
}

/// Three 33 MiB messages at once are more than the receive budget holds
/// besides the largest (66 MiB > 64 MiB): over TCP the sender starts the
/// third only when one has arrived, over QUIC the receiver leaves one
/// stream unread until then. All three arrive, and a short one after them.
fn messages_beyond_the_receive_budget_still_arrive(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(
        t,
        &["--max-message-size", "100000000"],
        &["--max-message-size", "100000000"],
    );
    const SIZE: usize = 33 << 20;
    for fill in ["a", "b", "c"] {
        client.send_text(&fill.repeat(SIZE));
    }
    exchange(&mut client, &mut server, 3, "after the large ones");
    // Acked: received whole. (A test reading 33 MiB lines falls behind the
    // server's output, which may skip some: those shown must be intact.)
    for id in 0..3 {
        client.wait_event_id("ack", id, TIMEOUT);
    }
    server.poll();
    for m in server.events_named("message") {
        let bytes = message_bytes(m);
        let fill = match m["id"].as_u64() {
            Some(0) => b'a',
            Some(1) => b'b',
            Some(2) => b'c',
            _ => continue,
        };
        assert!(
            bytes.len() == SIZE && bytes.iter().all(|&b| b == fill),
            "message {} arrived with {} bytes, or altered",
            m["id"],
            bytes.len()
        );
    }
}
