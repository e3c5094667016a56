//! Sessions: one client at a time, clients in turn, crashes, ends of chat.

use std::time::Duration;

use support::*;

both_transports!(
    second_client_gets_busy_and_first_chat_goes_on,
    server_serves_three_clients_in_turn,
    killed_client_is_detected_and_next_client_served,
    killed_server_reports_unacked_messages,
    client_end_of_input_waits_for_acks_then_exits_0,
    server_sigint_sends_going_away,
    silent_chat_outlives_the_idle_timeout,
);

/// A chat in which nobody types stays open well past the idle timeout
/// (keep-alives flow both ways), and then still carries messages.
fn silent_chat_outlives_the_idle_timeout(t: TransportKind) {
    let idle = ["--idle-timeout", "2"];
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &idle, &idle);
    server.settle(Duration::from_secs(5));
    client.settle(Duration::ZERO);
    for p in [&server, &client] {
        let gone = p.events_named("disconnected");
        assert!(
            gone.is_empty(),
            "[{}] a silent chat was closed: {gone:?}",
            p.label
        );
    }
    exchange(&mut client, &mut server, 0, "still here");
    exchange(&mut server, &mut client, 0, "so am I");
}

/// While a chat is open, a second client is closed with BUSY (code 1, a
/// reason) and exits 1; the first chat is not disturbed.
fn second_client_gets_busy_and_first_chat_goes_on(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        addr,
        fingerprint,
    } = start_chat(t, &[], &[]);
    exchange(&mut client, &mut server, 0, "before the intruder");

    let mut second = start_client(t, &addr, &fingerprint, &[]);
    // It MAY report `connected` first; nothing is asserted about that.
    let d = second.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(1) {
        second.fail(&format!(
            "second client should be refused with code 1 (BUSY): {d}"
        ));
    }
    if d["reason"].as_str().is_none_or(|r| r.trim().is_empty()) {
        second.fail(&format!(
            "BUSY disconnect should carry a non-empty reason: {d}"
        ));
    }
    second.expect_exit_code(1, TIMEOUT);
    second.assert_only_json_events();

    // The first chat goes on, both ways.
    exchange(&mut client, &mut server, 1, "still here");
    exchange(&mut server, &mut client, 0, "yes you are");
    client.poll();
    assert!(
        client.events_named("disconnected").is_empty(),
        "first client must not be disconnected: {:?}",
        client.events()
    );
}

/// Three clients one after another: each chats, closes its input and exits
/// 0; the server reports `disconnected` and accepts the next. Ids restart at
/// 0 on each connection.
fn server_serves_three_clients_in_turn(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    for i in 0..3 {
        let mut client = start_client(t, &addr, &fp, &[]);
        await_connected(&mut server, &mut client, t, &fp);
        exchange(
            &mut client,
            &mut server,
            0,
            &format!("hello from client {i}"),
        );
        exchange(&mut server, &mut client, 0, &format!("welcome, client {i}"));
        client.close_stdin();
        client.expect_exit_code(0, TIMEOUT);
        server.wait_event("disconnected", TIMEOUT);
    }
    assert_eq!(server.events_named("connected").len(), 3);
    assert!(
        server.try_exit_status().is_none(),
        "server must keep serving"
    );
    server.assert_only_json_events();
}

/// A client killed with SIGKILL: the server (idle timeout 2 s, holding a lost
/// chat for 1 s) reports the chat held (`suspended`), then, when no one
/// came back for it, `disconnected` (connection lost, no close code), then
/// serves a new client.
fn killed_client_is_detected_and_next_client_served(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        addr,
        fingerprint,
    } = start_chat(
        t,
        &["--idle-timeout", "2", "--resume-window", "1"],
        &["--idle-timeout", "2"],
    );
    exchange(&mut client, &mut server, 0, "about to die");

    client.kill();
    // idle timeout (2 s) + generous margin for a loaded CI machine.
    let s = server.wait_event("suspended", Duration::from_secs(2 + 25));
    if s["window_ms"] != 1000 {
        server.fail(&format!("the chat should be held for 1 s: {s}"));
    }
    let d = server.wait_event("disconnected", Duration::from_secs(1 + 25));
    if !d["code"].is_null() {
        server.fail(&format!(
            "a vanished client has sent no close code; expected code null: {d}"
        ));
    }
    drop(client);

    let mut next = start_client(t, &addr, &fingerprint, &["--idle-timeout", "2"]);
    await_connected(&mut server, &mut next, t, &fingerprint);
    exchange(&mut next, &mut server, 0, "the next one");
    exchange(&mut server, &mut next, 0, "served");
}

/// The server dies while the client has sent messages it cannot ack: the
/// client (idle timeout 2 s, `--no-reconnect`) reports `disconnected`
/// listing those ids in `unacked`, and exits 1.
///
/// To make "sent but not acked" deterministic the server is first frozen
/// with SIGSTOP (so it cannot ack), the client sends two messages, then the
/// server is killed with SIGKILL.
fn killed_server_reports_unacked_messages(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &["--idle-timeout", "2", "--no-reconnect"]);
    exchange(&mut client, &mut server, 0, "acked before the crash");

    server.signal("STOP");
    client.send_text("lost one");
    client.send_text("lost two");
    client.wait_event_id("sent", 1, TIMEOUT);
    client.wait_event_id("sent", 2, TIMEOUT);
    std::thread::sleep(Duration::from_millis(200));
    server.kill();

    let d = client.wait_event("disconnected", Duration::from_secs(2 + 25));
    let unacked: Vec<u64> = d["unacked"]
        .as_array()
        .unwrap_or_else(|| client.fail(&format!("disconnected.unacked should be a list: {d}")))
        .iter()
        .map(|v| v.as_u64().expect("unacked ids are integers"))
        .collect();
    if !(unacked.contains(&1) && unacked.contains(&2)) || unacked.contains(&0) {
        client.fail(&format!(
            "unacked should list 1 and 2 (and not the acked 0): {d}"
        ));
    }
    client.expect_exit_code(1, TIMEOUT);
    // Nothing dropped silently: no ack for 1 or 2 either.
    client.drain_stdout(TIMEOUT);
    for a in client.events_named("ack") {
        assert_eq!(
            a["id"].as_u64(),
            Some(0),
            "unexpected ack after the server died: {a}"
        );
    }
    client.assert_only_json_events();
}

/// The client sends 3 messages and closes stdin: it waits for the acks,
/// prints them before `disconnected`, and exits 0; the server reports
/// `disconnected` with code 0 (NO_ERROR).
fn client_end_of_input_waits_for_acks_then_exits_0(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);

    for i in 0..3 {
        client.send_text(&format!("message {i} then goodbye"));
    }
    client.close_stdin();
    client.expect_exit_code(0, TIMEOUT);
    client.drain_stdout(TIMEOUT);

    let events: Vec<serde_json::Value> = client.events().into_iter().cloned().collect();
    let pos = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().position(pred);
    let disc = pos(&|e| e["event"] == "disconnected")
        .unwrap_or_else(|| client.fail("client printed no `disconnected` event"));
    for id in 0..3u64 {
        match pos(&|e| e["event"] == "ack" && e["id"].as_u64() == Some(id)) {
            Some(p) if p < disc => {}
            Some(_) => client.fail(&format!("ack {id} came after `disconnected`")),
            None => client.fail(&format!("no ack for message {id} before exit")),
        }
    }
    let d = &events[disc];
    if d["unacked"].as_array().is_none_or(|u| !u.is_empty()) {
        client.fail(&format!(
            "all messages were acked, so unacked should be []: {d}"
        ));
    }

    let msgs = server.collect_events("message", 3, TIMEOUT);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(
            m["text"].as_str(),
            Some(format!("message {i} then goodbye").as_str()),
            "{m}"
        );
    }
    let sd = server.wait_event("disconnected", TIMEOUT);
    if sd["code"].as_u64() != Some(0) {
        server.fail(&format!(
            "client ended normally: server's disconnected.code should be 0: {sd}"
        ));
    }
    assert!(
        server.try_exit_status().is_none(),
        "server must keep serving"
    );
    client.assert_only_json_events();
}

/// SIGINT (Ctrl-C) to the server: it exits 0 and the client is told
/// GOING_AWAY (code 4).
fn server_sigint_sends_going_away(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &[]);
    exchange(&mut client, &mut server, 0, "hi");
    exchange(&mut server, &mut client, 0, "bye soon");

    server.signal("INT");
    server.expect_exit_code(0, TIMEOUT);
    let d = client.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(4) {
        client.fail(&format!("client should be told GOING_AWAY (code 4): {d}"));
    }
    // The client's exit status for GOING_AWAY is not specified; it must exit.
    client.wait_exit(TIMEOUT);
}
