//! The cases that need a network of their own (two namespaces, see the
//! support crate's `netns.rs`): a cut link, a client that changes its
//! address, a window that runs out.

use std::time::{Duration, Instant};

use support::netns::{NetPair, Side};
use support::*;

use crate::check::*;

/// The idle timeout of both sides, and its flag.
const IDLE: Duration = Duration::from_secs(2);
const IDLE_ARGS: [&str; 2] = ["--idle-timeout", "2"];

/// The time left until `deadline` (at least 1 ms).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// A server in A (idle timeout 2 s, resume window `window`) and a client in
/// B (idle timeout 2 s), connected. Returns (server, client, addr,
/// fingerprint).
fn start(net: &NetPair, t: TransportKind, window: Duration) -> (Peer, Peer, String, String) {
    let window = window.as_secs().to_string();
    let mut server_args = IDLE_ARGS.to_vec();
    server_args.extend(["--resume-window", &window]);
    let (mut server, addr, fp) = net.start_server(t, &server_args);
    let mut client = net.start_client(t, &addr, &fp, &IDLE_ARGS);
    await_connected(&mut server, &mut client, t, &fp);
    (server, client, addr, fp)
}

/// One message each way, waited through (delivered and confirmed).
fn round(up: &mut Dir, down: &mut Dir, server: &mut Peer, client: &mut Peer) {
    up.say(client);
    down.say(server);
    up.wait_through(client, server, TIMEOUT);
    down.wait_through(server, client, TIMEOUT);
}

/// Server in A, client in B, idle timeout 2 s, window 30 s; twice over:
/// after a message each way the link is cut (everything dropped both
/// ways). Both sides type two messages at once (sent into the dead
/// connection), and two more once each has noticed the loss (the server
/// `suspended`, the client `reconnecting`). The link is restored: both
/// report `resumed` over the same transport, each listing exactly those
/// first two as `resent`, none `confirmed` (nothing crossed the cut) and
/// the other two as `held`; ids go on counting. A message each way after
/// the second resume, then the client's input ends: both end normally,
/// and over everything each printed, every message was shown exactly once
/// with its bytes and confirmed exactly once.
pub fn link_cut_past_the_idle_timeout_resumes_exactly_once(t: TransportKind) {
    let test = format!(
        "{}::link_cut_past_the_idle_timeout_resumes_exactly_once",
        t.name()
    );
    let Some(net) = NetPair::new_or_skip(&test) else {
        return;
    };
    let window = Duration::from_secs(30);
    let (mut server, mut client, addr, _) = start(&net, t, window);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    for cut in 1..=2 {
        round(&mut up, &mut down, &mut server, &mut client);

        net.cut();
        let cut_at = Instant::now();
        let sent_c = up.say_n(&mut client, 2);
        let sent_s = down.say_n(&mut server, 2);
        let deadline = cut_at + IDLE + MARGIN;
        let s = server.wait_event("suspended", left(deadline));
        check_suspended(&mut server, &s, window);
        let server_noticed = cut_at.elapsed();
        client.wait_event("reconnecting", left(deadline));
        let client_noticed = cut_at.elapsed();
        // Typed while there is no connection: held, sent after the resume.
        let held_c = up.say_n(&mut client, 2);
        let held_s = down.say_n(&mut server, 2);
        if server_noticed < IDLE.mul_f32(0.5) {
            server.fail(&format!(
                "the loss was reported {server_noticed:?} after the cut, before the idle \
                 timeout ({IDLE:?}) could run out"
            ));
        }
        let dropped = net.dropped();
        if dropped == 0 {
            server.fail("the cut dropped no packet");
        }

        net.restore();
        let restored_at = Instant::now();
        // A reconnect attempt under way when the link comes back may need
        // its handshake's retransmissions (1 s, 2 s, …) as well as the
        // pause.
        let cr = client.wait_event("resumed", TIMEOUT);
        let sr = server.wait_event("resumed", TIMEOUT);
        eprintln!(
            "{test}: cut {cut}: loss noticed by the server after {server_noticed:?}, by the \
             client after {client_noticed:?}; resumed {:?} after the link was restored \
             ({dropped} packets dropped)",
            restored_at.elapsed()
        );
        check_resumed(&mut client, &cr, t, Some(&sent_c), Some(&[]), Some(&held_c));
        if cr["peer"].as_str() != Some(addr.as_str()) {
            client.fail(&format!("resumed.peer should be the server's {addr}: {cr}"));
        }
        check_resumed(&mut server, &sr, t, Some(&sent_s), Some(&[]), Some(&held_s));
        up.wait_through(&mut client, &mut server, TIMEOUT);
        down.wait_through(&mut server, &mut client, TIMEOUT);
    }
    round(&mut up, &mut down, &mut server, &mut client);

    finish_normally(&mut server, &mut client);
    up.check_exactly_once(&mut client, &mut server);
    down.check_exactly_once(&mut server, &mut client);
    if check_reconnecting(&mut client) < 2 {
        client.fail("the client should have reported `reconnecting` after each cut");
    }
    for p in [&mut client, &mut server] {
        let n = p.events_named("resumed").len();
        if n != 2 || p.events_named("connected").len() != 1 {
            p.fail(&format!(
                "one `connected` and two `resumed` expected; {n} resumed"
            ));
        }
        p.assert_only_json_events();
    }
}

/// Server in A, client in B (idle timeout 2 s). After a message each way
/// the client's namespace gets a new address on its veth end and loses the
/// old one; both sides then type at once, and go on chatting.
///
/// QUIC: the chat goes on over the same connection (the server sees the
/// client's packets come from the new address; the connection migrates):
/// no `reconnecting`, `suspended` or `resumed` event, through rounds of
/// messages over more than three idle timeouts. TCP: a connection is bound
/// to its address, so the client reconnects from the new one and both
/// report `resumed` (the server from the new address). Either way, every
/// message is shown exactly once and confirmed exactly once.
pub fn client_address_change_keeps_the_chat(t: TransportKind) {
    let test = format!("{}::client_address_change_keeps_the_chat", t.name());
    let Some(net) = NetPair::new_or_skip(&test) else {
        return;
    };
    let (mut server, mut client, _, _) = start(&net, t, Duration::from_secs(30));
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    let (subnet, _) = net.addr_b.rsplit_once('.').expect("an IPv4 address");
    let new_addr = format!("{subnet}.3");
    // Counts (accepts) what reaches the server from the new address.
    net.set_rules(Side::A, &[&format!("ip saddr {new_addr} counter")]);
    let moved = net.move_address(Side::B, 3);
    assert_eq!(moved, new_addr);
    let moved_at = Instant::now();
    up.say_n(&mut client, 2);
    down.say_n(&mut server, 2);

    match t {
        TransportKind::Quic => {
            up.wait_through(&mut client, &mut server, TIMEOUT);
            down.wait_through(&mut server, &mut client, TIMEOUT);
            eprintln!(
                "{test}: first messages after the move through in {:?}",
                moved_at.elapsed()
            );
            // Rounds of messages for more than three idle timeouts: the
            // connection keeps working on its new path.
            while moved_at.elapsed() < IDLE * 3 + Duration::from_millis(500) {
                round(&mut up, &mut down, &mut server, &mut client);
                server.settle(Duration::from_millis(300));
            }
            for (p, names) in [
                (&mut client, ["reconnecting", "resumed", "disconnected"]),
                (&mut server, ["suspended", "resumed", "disconnected"]),
            ] {
                for name in names {
                    expect_none(p, name, "QUIC migrates the connection to the new address");
                }
            }
        }
        TransportKind::Tcp => {
            let c = client.wait_event("reconnecting", IDLE + MARGIN);
            eprintln!(
                "{test}: client reconnecting {:?} after the move: {c}",
                moved_at.elapsed()
            );
            let cr = client.wait_event("resumed", TIMEOUT);
            let sr = server.wait_event("resumed", TIMEOUT);
            check_resumed(&mut client, &cr, t, None, None, None);
            check_resumed(&mut server, &sr, t, None, None, None);
            if !sr["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{new_addr}:")))
            {
                server.fail(&format!(
                    "the chat should resume from the client's new address {new_addr}: {sr}"
                ));
            }
            eprintln!("{test}: resumed {:?} after the move", moved_at.elapsed());
            up.wait_through(&mut client, &mut server, TIMEOUT);
            down.wait_through(&mut server, &mut client, TIMEOUT);
            round(&mut up, &mut down, &mut server, &mut client);
        }
    }
    let from_new = net.counted(Side::A);
    if from_new == 0 {
        server.fail(&format!(
            "no packet reached the server from the new address {new_addr}"
        ));
    }

    finish_normally(&mut server, &mut client);
    up.check_exactly_once(&mut client, &mut server);
    down.check_exactly_once(&mut server, &mut client);
    check_reconnecting(&mut client);
    for p in [&mut client, &mut server] {
        if p.events_named("connected").len() != 1 {
            p.fail("one `connected` expected: the chat went on, no new one began");
        }
        p.assert_only_json_events();
    }
}

/// Server in A (idle timeout 2 s, window 3 s), client in B. After a message
/// each way the link is cut for good. Each side types one message at once
/// (into the dead connection) and one more once it has noticed the loss.
/// The server reports `disconnected` (no close code) listing both of its
/// messages as unconfirmed no sooner than the window after `suspended`;
/// the client gives up likewise (`disconnected` with [1, 2], exit 1),
/// without any `resumed`. Once the link is back, the server serves the
/// next client (a new chat, ids from 0).
pub fn window_runs_out_while_the_link_is_cut(t: TransportKind) {
    let test = format!("{}::window_runs_out_while_the_link_is_cut", t.name());
    let Some(net) = NetPair::new_or_skip(&test) else {
        return;
    };
    let window = Duration::from_secs(3);
    let (mut server, mut client, addr, fp) = start(&net, t, window);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    net.cut();
    let cut_at = Instant::now();
    up.say(&mut client);
    down.say(&mut server);
    let deadline = cut_at + IDLE + MARGIN;
    let s = server.wait_event("suspended", left(deadline));
    let suspended_at = Instant::now();
    check_suspended(&mut server, &s, window);
    client.wait_event("reconnecting", left(deadline));
    let reconnecting_at = Instant::now();
    up.say(&mut client);
    down.say(&mut server);

    // Allowance for when the test saw the first event (it may have been
    // printed a little before) against when it saw the last.
    let slack = Duration::from_millis(500);
    let sd = server.wait_event("disconnected", window + MARGIN);
    let server_held = suspended_at.elapsed();
    let cd = client.wait_event("disconnected", window + MARGIN);
    let client_tried = reconnecting_at.elapsed();
    eprintln!(
        "{test}: server held the chat for {server_held:?}, client gave up after \
         {client_tried:?} (window {window:?})"
    );
    for (p, d, took) in [
        (&mut server, sd, server_held),
        (&mut client, cd, client_tried),
    ] {
        expect_lost(p, &d);
        if unacked_of(p, &d) != [1, 2] {
            p.fail(&format!(
                "unconfirmed should be exactly the two messages typed after the cut: {d}"
            ));
        }
        if took + slack < window {
            p.fail(&format!(
                "gave the chat up {took:?} after losing it, before the window ({window:?}) \
                 passed: {d}"
            ));
        }
    }
    client.expect_exit_code(1, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    check_reconnecting(&mut client);
    expect_none(&mut client, "resumed", "nothing can cross the cut");
    expect_none(&mut server, "resumed", "nothing can cross the cut");
    if server.try_exit_status().is_some() {
        server.fail("the server should keep running once the held chat ends");
    }
    drop(client);

    net.restore();
    let mut next = net.start_client(t, &addr, &fp, &IDLE_ARGS);
    await_connected(&mut server, &mut next, t, &fp);
    let (mut up2, mut down2) = (
        Dir::new(&format!("{test} next"), "c2s"),
        Dir::new(&format!("{test} next"), "s2c"),
    );
    round(&mut up2, &mut down2, &mut server, &mut next);
    let since = server
        .events()
        .iter()
        .rposition(|e| e["event"] == "connected")
        .expect("the server reported connected");
    finish_normally(&mut server, &mut next);
    up2.check_exactly_once_since(&mut next, 0, &mut server, since);
    down2.check_exactly_once_since(&mut server, since, &mut next, 0);
    server.assert_only_json_events();
}

/// Server in A, client in B, idle timeout 2 s, window 30 s. After a
/// message each way the cut is one-way: B drops everything it receives,
/// so the client's messages still reach the server but nothing comes back
/// (acknowledgements included). Both type two messages at once: the server
/// shows the client's two during the cut. Once each side has noticed the
/// loss (the client hears nothing; the server `suspended`), both type two
/// more. Restored: the client's `resumed` lists `confirmed` [1, 2] (the
/// server's RECEIVED covers them: their acks were lost), `resent` [] and
/// `held` [3, 4]; the server's lists `resent` [1, 2], `confirmed` [],
/// `held` [3, 4]. Exactly once both ways: no `ack` ever for the client's
/// 1 and 2, nothing shown twice.
pub fn acks_lost_in_a_one_way_cut_are_confirmed_on_resume(t: TransportKind) {
    let test = format!(
        "{}::acks_lost_in_a_one_way_cut_are_confirmed_on_resume",
        t.name()
    );
    let Some(net) = NetPair::new_or_skip(&test) else {
        return;
    };
    let window = Duration::from_secs(30);
    let (mut server, mut client, _, _) = start(&net, t, window);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    net.set_rules(Side::B, &["counter drop"]);
    let cut_at = Instant::now();
    up.say_n(&mut client, 2);
    down.say_n(&mut server, 2);
    // The client's messages get through the one-way cut.
    up.wait_delivered(&mut server, TIMEOUT);
    let deadline = cut_at + IDLE * 2 + MARGIN;
    client.wait_event("reconnecting", left(deadline));
    let client_noticed = cut_at.elapsed();
    let s = server.wait_event("suspended", left(deadline));
    check_suspended(&mut server, &s, window);
    let server_noticed = cut_at.elapsed();
    up.say_n(&mut client, 2);
    down.say_n(&mut server, 2);
    let dropped = net.dropped();
    if dropped == 0 {
        client.fail("the one-way cut dropped no packet");
    }

    net.restore();
    let restored_at = Instant::now();
    let cr = client.wait_event("resumed", TIMEOUT);
    let sr = server.wait_event("resumed", TIMEOUT);
    eprintln!(
        "{test}: the client noticed after {client_noticed:?}, the server after \
         {server_noticed:?}; resumed {:?} after the link was restored ({dropped} packets \
         dropped)",
        restored_at.elapsed()
    );
    check_resumed(&mut client, &cr, t, Some(&[]), Some(&[1, 2]), Some(&[3, 4]));
    check_resumed(&mut server, &sr, t, Some(&[1, 2]), Some(&[]), Some(&[3, 4]));
    up.wait_through(&mut client, &mut server, TIMEOUT);
    down.wait_through(&mut server, &mut client, TIMEOUT);
    round(&mut up, &mut down, &mut server, &mut client);

    finish_normally(&mut server, &mut client);
    up.check_exactly_once(&mut client, &mut server);
    down.check_exactly_once(&mut server, &mut client);
    check_reconnecting(&mut client);
    for p in [&mut client, &mut server] {
        if p.events_named("resumed").len() != 1 || p.events_named("connected").len() != 1 {
            p.fail("one `connected` and one `resumed` expected");
        }
        p.assert_only_json_events();
    }
}

/// Server in A, client in B, idle timeout 2 s, window 30 s. After a
/// message each way, only the chat's connection is cut, one way: B drops
/// what the server sends to the client's port of that connection, and A
/// drops the FIN or RST that would tell the server the client let it go
/// (TCP). The client's messages still reach the server. Both type two
/// messages; the server shows the client's. The client hears nothing,
/// gives the connection up after its idle timeout and reconnects at once
/// from a new port, which nothing blocks: it resumes the chat before the
/// server has noticed anything (no `suspended`; the server ends the old
/// connection with REPLACED). The client's `resumed` lists its two
/// messages as `confirmed` (their acks were lost), the server's lists its
/// two as `resent`. Exactly once both ways.
///
/// Over QUIC the chat is back within 700 ms of the client's first
/// reconnect attempt (a handshake on an unobstructed link).
pub fn resume_before_the_server_notices_the_loss(t: TransportKind) {
    let bound = (t == TransportKind::Quic).then_some(Duration::from_millis(700));
    resume_before_the_server_notices(t, bound);
}

/// [`resume_before_the_server_notices_the_loss`], and, with `max_stall`,
/// the client's `resumed` within that long of its `reconnecting`: the
/// server hands the chat over at once, whatever becomes of the old
/// connection.
pub fn resume_before_the_server_notices(t: TransportKind, max_stall: Option<Duration>) {
    let test = format!("{}::resume_before_the_server_notices_the_loss", t.name());
    let Some(net) = NetPair::new_or_skip(&test) else {
        return;
    };
    let window = Duration::from_secs(30);
    let (mut server, mut client, _, _) = start(&net, t, window);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    let peer = server.events_named("connected")[0]["peer"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let port = port_of(&peer);
    let proto = match t {
        TransportKind::Quic => "udp",
        TransportKind::Tcp => "tcp",
    };
    net.set_rules(Side::B, &[&format!("{proto} dport {port} counter drop")]);
    if t == TransportKind::Tcp {
        net.set_rules(
            Side::A,
            &[&format!(
                "tcp sport {port} tcp flags & (fin | rst) != 0 counter drop"
            )],
        );
    }
    let cut_at = Instant::now();
    up.say_n(&mut client, 2);
    down.say_n(&mut server, 2);
    up.wait_delivered(&mut server, TIMEOUT);
    client.wait_event("reconnecting", IDLE + MARGIN);
    let client_noticed = cut_at.elapsed();
    let cr = client.wait_event("resumed", TIMEOUT);
    let stall = cut_at.elapsed() - client_noticed;
    if let Some(max) = max_stall
        && stall > max
    {
        client.fail(&format!(
            "the chat was back {stall:?} after the client's first reconnect attempt, more than \
             {max:?} on an unobstructed link"
        ));
    }
    let sr = server.wait_event("resumed", TIMEOUT);
    eprintln!(
        "{test}: the client noticed after {client_noticed:?} and resumed after {:?} \
         (from port {port}: {} packets dropped); server {sr}",
        cut_at.elapsed(),
        net.dropped()
    );
    expect_none(
        &mut server,
        "suspended",
        "the client came back before the server noticed the loss",
    );
    check_resumed(&mut client, &cr, t, Some(&[]), Some(&[1, 2]), Some(&[]));
    check_resumed(&mut server, &sr, t, Some(&[1, 2]), Some(&[]), Some(&[]));
    if sr["peer"].as_str() == Some(peer.as_str()) {
        server.fail(&format!(
            "the chat should be resumed on a new connection (not from {peer}): {sr}"
        ));
    }
    up.wait_through(&mut client, &mut server, TIMEOUT);
    down.wait_through(&mut server, &mut client, TIMEOUT);
    net.restore();
    round(&mut up, &mut down, &mut server, &mut client);

    finish_normally(&mut server, &mut client);
    up.check_exactly_once(&mut client, &mut server);
    down.check_exactly_once(&mut server, &mut client);
    check_reconnecting(&mut client);
    for p in [&mut client, &mut server] {
        if p.events_named("resumed").len() != 1 || p.events_named("connected").len() != 1 {
            p.fail("one `connected` and one `resumed` expected");
        }
        p.assert_only_json_events();
    }
}

/// Server in A, client in B, idle timeout 2 s, window 30 s. After a
/// message each way the link is cut; the client types two messages (into
/// the dead connection) and, once it is reconnecting, a third, and its
/// input ends. The link is restored: the client resumes (`resent` [1, 2],
/// `held` [3]), waits for its acknowledgements, closes the chat and exits
/// 0; the server shows each message once and reports `disconnected` with
/// code 0 and nothing unconfirmed.
pub fn input_ends_while_disconnected(t: TransportKind) {
    let test = format!("{}::input_ends_while_disconnected", t.name());
    let Some(net) = NetPair::new_or_skip(&test) else {
        return;
    };
    let (mut server, mut client, _, _) = start(&net, t, Duration::from_secs(30));
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    net.cut();
    let cut_at = Instant::now();
    up.say_n(&mut client, 2);
    client.wait_event("reconnecting", IDLE + MARGIN);
    up.say(&mut client);
    client.close_stdin();
    server.wait_event("suspended", left(cut_at + IDLE + MARGIN));
    net.restore();

    let cr = client.wait_event("resumed", TIMEOUT);
    let sr = server.wait_event("resumed", TIMEOUT);
    check_resumed(&mut client, &cr, t, Some(&[1, 2]), Some(&[]), Some(&[3]));
    check_resumed(&mut server, &sr, t, Some(&[]), Some(&[]), Some(&[]));
    up.wait_delivered(&mut server, TIMEOUT);
    client.expect_exit_code(0, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    let sd = server.wait_event("disconnected", TIMEOUT);
    let cd = client.wait_event("disconnected", TIMEOUT);
    for (p, d) in [(&mut server, sd), (&mut client, cd)] {
        if d["code"].as_u64() != Some(0) || !unacked_of(p, &d).is_empty() {
            p.fail(&format!(
                "the chat should end normally (code 0) with nothing unconfirmed: {d}"
            ));
        }
    }
    server.settle(Duration::from_millis(200));
    up.check_exactly_once(&mut client, &mut server);
    down.check_exactly_once(&mut server, &mut client);
    for p in [&mut client, &mut server] {
        p.assert_only_json_events();
    }
}
