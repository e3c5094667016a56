//! The cases that need no network of their own (127.0.0.1): a frozen
//! client, the same identity started afresh, a restarted server.

use std::time::{Duration, Instant};

use chat::protocol::close_code;
use support::*;

use crate::check::*;

/// The idle timeout of both sides, and its flag.
const IDLE: Duration = Duration::from_secs(2);
const IDLE_ARGS: [&str; 2] = ["--idle-timeout", "2"];
/// The server's resume window, and its flags (with the idle timeout).
const WINDOW: Duration = Duration::from_secs(30);
const SERVER_ARGS: [&str; 4] = ["--idle-timeout", "2", "--resume-window", "30"];

/// One message each way, waited through (delivered and confirmed).
fn round(up: &mut Dir, down: &mut Dir, server: &mut Peer, client: &mut Peer) {
    up.say(client);
    down.say(server);
    up.wait_through(client, server, TIMEOUT);
    down.wait_through(server, client, TIMEOUT);
}

/// Waits for `reconnecting` attempts 2..=`n` (the first was just seen)
/// and checks the time between each two: at least about the pause the
/// client takes before that attempt (100 ms, doubling up to 2 s), and not
/// much more (each attempt is refused at once).
fn check_pauses(client: &mut Peer, n: u64) {
    let mut last = Instant::now();
    for attempt in 2..=n {
        let pause = Duration::from_millis(100 * (1 << (attempt - 2))).min(Duration::from_secs(2));
        let ev = client.wait_event("reconnecting", pause + MARGIN);
        let gap = last.elapsed();
        last = Instant::now();
        if ev["attempt"].as_u64() != Some(attempt) {
            client.fail(&format!("expected reconnecting attempt {attempt}: {ev}"));
        }
        // Slack for when the test saw each event against when it was
        // printed, and for a loaded machine.
        if gap + Duration::from_millis(50) < pause.mul_f32(0.75)
            || gap > pause + Duration::from_secs(2)
        {
            client.fail(&format!(
                "attempt {attempt} came {gap:?} after the one before; the pause is {pause:?}"
            ));
        }
    }
}

/// The index, among `p`'s JSON events so far, of its last event `name`.
fn last_index(p: &mut Peer, name: &str) -> usize {
    p.poll();
    match p.events().iter().rposition(|e| e["event"] == name) {
        Some(i) => i,
        None => p.fail(&format!("expected a `{name}` event")),
    }
}

/// Idle timeout 2 s, window 30 s, loopback. After a message each way the
/// client is frozen (SIGSTOP). The server sends it one message, and the
/// client is given two on its stdin (it reads them once thawed). The
/// server reports `suspended` within the idle timeout (plus a margin),
/// then sends one more (held). A stranger (another identity) is turned
/// away BUSY meanwhile: the server reports `refused` (code BUSY, the
/// stranger's fingerprint), the stranger `disconnected` with code BUSY and
/// exits 1. Then SIGCONT: both report `resumed` (the server's held message
/// listed as held, its message sent to the frozen client resent or
/// confirmed), a message each way, and the client's input ends: every
/// message shown exactly once and confirmed exactly once.
pub fn frozen_client_resumes_and_a_stranger_is_turned_away(t: TransportKind) {
    let test = format!(
        "{}::frozen_client_resumes_and_a_stranger_is_turned_away",
        t.name()
    );
    let (mut server, addr, fp) = start_server(t, &SERVER_ARGS);
    let mut client = start_client(t, &addr, &fp, &IDLE_ARGS);
    await_connected(&mut server, &mut client, t, &fp);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    client.signal("STOP");
    client.wait_stopped();
    let frozen_at = Instant::now();
    down.say(&mut server);
    up.type_in(&mut client);
    up.type_in(&mut client);
    let s = server.wait_event("suspended", IDLE + MARGIN);
    check_suspended(&mut server, &s, WINDOW);
    let noticed = frozen_at.elapsed();
    down.say(&mut server);

    let mut stranger = start_client(t, &addr, &fp, &IDLE_ARGS);
    let refused = server.wait_event("refused", TIMEOUT);
    let stranger_fp = client_fingerprint(stranger.home().expect("client home"));
    if refused["code"].as_u64() != Some(close_code::BUSY)
        || refused["fingerprint"].as_str() != Some(stranger_fp.as_str())
    {
        server.fail(&format!(
            "the stranger {stranger_fp} should be refused with code {} (BUSY): {refused}",
            close_code::BUSY
        ));
    }
    let d = stranger.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(close_code::BUSY) {
        stranger.fail(&format!(
            "the stranger should be told BUSY (code {}): {d}",
            close_code::BUSY
        ));
    }
    stranger.expect_exit_code(1, TIMEOUT);
    expect_none(&mut stranger, "connected", "it was turned away");
    drop(stranger);
    expect_none(&mut server, "disconnected", "the chat is held");

    client.signal("CONT");
    let thawed_at = Instant::now();
    let cr = client.wait_event("resumed", TIMEOUT);
    let sr = server.wait_event("resumed", TIMEOUT);
    eprintln!(
        "{test}: server suspended the chat {noticed:?} after the freeze; resumed {:?} after \
         SIGCONT; client {cr}; server {sr}",
        thawed_at.elapsed()
    );
    check_resumed(&mut client, &cr, t, None, Some(&[]), None);
    if cr["peer"].as_str() != Some(addr.as_str()) {
        client.fail(&format!("resumed.peer should be the server's {addr}: {cr}"));
    }
    check_resumed(&mut server, &sr, t, None, None, Some(&[2]));
    // The message sent to the frozen client reached it or is sent again.
    let mut one: Vec<u64> = ids_in(&sr, "resent");
    one.extend(ids_in(&sr, "confirmed"));
    if one != [1] {
        server.fail(&format!(
            "message 1 (sent before the loss was noticed) should be resent or confirmed: {sr}"
        ));
    }
    // The client's two were read after it thawed: sent into the dead
    // connection (resent) or held; the server had neither.
    let mut two: Vec<u64> = ids_in(&cr, "resent");
    two.extend(ids_in(&cr, "held"));
    two.sort_unstable();
    if two != [1, 2] {
        client.fail(&format!(
            "messages 1 and 2 (typed while frozen) should be resent or held: {cr}"
        ));
    }
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

/// Idle timeout 2 s, window 30 s, loopback, a client home kept by the test.
/// After a message each way the client is killed (SIGKILL); the server
/// reports `suspended` and its user types a message (held, id 1). A new
/// client with the same home (the same identity) connects: the server
/// reports `disconnected` for the held chat, listing [1] as unconfirmed,
/// then `connected` with that identity; no `resumed` anywhere. The new
/// chat numbers from 0 and carries a message each way, exactly once.
pub fn same_identity_restarted_replaces_the_held_chat(t: TransportKind) {
    let test = format!(
        "{}::same_identity_restarted_replaces_the_held_chat",
        t.name()
    );
    let home = TempDir::new("client-home");
    let client_fp = client_fingerprint(home.path());
    let (mut server, addr, fp) = start_server(t, &SERVER_ARGS);
    let client_of = |home: &TempDir| {
        ClientBuilder::new(t, &addr)
            .home(home.path())
            .fingerprint(&fp)
            .args(&IDLE_ARGS)
            .spawn()
    };
    let mut client = client_of(&home);
    await_connected_identities(&mut server, &mut client, t, &fp, &client_fp);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    client.signal("KILL");
    client.kill();
    let killed_at = Instant::now();
    drop(client);
    let s = server.wait_event("suspended", IDLE + MARGIN);
    check_suspended(&mut server, &s, WINDOW);
    let noticed = killed_at.elapsed();
    let held = down.say(&mut server);

    let mut again = client_of(&home);
    let restarted_at = Instant::now();
    let d = server.wait_event("disconnected", TIMEOUT);
    if unacked_of(&mut server, &d) != [held] {
        server.fail(&format!(
            "the held chat should end with its unconfirmed message [{held}] listed: {d}"
        ));
    }
    let ended = last_index(&mut server, "disconnected");
    let sev = await_connected_identities(&mut server, &mut again, t, &fp, &client_fp);
    let since = last_index(&mut server, "connected");
    if since < ended {
        server.fail(&format!(
            "the held chat's `disconnected` should come before the new `connected` {sev}"
        ));
    }
    eprintln!(
        "{test}: suspended {noticed:?} after the kill; the new client connected {:?} after \
         its start",
        restarted_at.elapsed()
    );

    let (mut up2, mut down2) = (
        Dir::new(&format!("{test} new"), "c2s"),
        Dir::new(&format!("{test} new"), "s2c"),
    );
    round(&mut up2, &mut down2, &mut server, &mut again);
    round(&mut up2, &mut down2, &mut server, &mut again);
    finish_normally(&mut server, &mut again);
    up2.check_exactly_once_since(&mut again, 0, &mut server, since);
    down2.check_exactly_once_since(&mut server, since, &mut again, 0);
    for (p, names) in [
        (&mut again, ["resumed", "reconnecting"]),
        (&mut server, ["resumed", "refused"]),
    ] {
        for name in names {
            expect_none(p, name, "a new chat replaced the held one");
        }
        p.assert_only_json_events();
    }
}

/// A chat (server with a home of its own, so that it can be started again
/// as the same server) with a message each way, then the server killed
/// (SIGKILL): the home, the port, the server's address and fingerprint,
/// the client, and the record of its messages.
struct KilledServer {
    home: TempDir,
    port: u16,
    addr: String,
    fp: String,
    client: Peer,
    up: Dir,
}

fn chat_then_kill_the_server(t: TransportKind, test: &str) -> KilledServer {
    let home = TempDir::new("server-home");
    let (mut server, addr, fp) = start_server_in(t, home.path(), 0, &SERVER_ARGS);
    let port = port_of(&addr);
    let mut client = start_client(t, &addr, &fp, &IDLE_ARGS);
    await_connected(&mut server, &mut client, t, &fp);
    let (mut up, mut down) = (Dir::new(test, "c2s"), Dir::new(test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);
    server.signal("KILL");
    server.kill();
    KilledServer {
        home,
        port,
        addr,
        fp,
        client,
        up,
    }
}

/// Idle timeout 2 s, window 30 s, loopback, a server home kept by the
/// test. After a message each way the server is killed (SIGKILL) and the
/// client's user types a message (id 1). Once the client reports
/// `reconnecting`, a server is started again on the same port with the
/// same home (the same identity). The client reports `disconnected` (no
/// close code, a reason saying the server no longer holds the chat) with
/// [1] unconfirmed, then `connected` again, without exiting; the new chat
/// numbers from 0 and a message round-trips each way, exactly once.
pub fn restarted_server_gives_a_new_chat(t: TransportKind) {
    let test = format!("{}::restarted_server_gives_a_new_chat", t.name());
    let KilledServer {
        home,
        port,
        addr,
        fp,
        mut client,
        mut up,
    } = chat_then_kill_the_server(t, &test);
    let killed_at = Instant::now();
    let lost = up.say(&mut client);
    client.wait_event("reconnecting", IDLE + MARGIN);
    let noticed = killed_at.elapsed();
    if t == TransportKind::Tcp {
        // Each attempt is refused at once (nothing listens): the gaps
        // between attempts are the client's pauses, 100 ms doubling.
        check_pauses(&mut client, 4);
    }

    let (mut server, addr2, fp2) = start_server_in(t, home.path(), port, &SERVER_ARGS);
    let restarted_at = Instant::now();
    if (addr2.as_str(), fp2.as_str()) != (addr.as_str(), fp.as_str()) {
        server.fail(&format!(
            "the restarted server should listen on {addr} as {fp}: {addr2} {fp2}"
        ));
    }
    let d = client.wait_event("disconnected", TIMEOUT);
    expect_lost(&mut client, &d);
    if unacked_of(&mut client, &d) != [lost] {
        client.fail(&format!(
            "the old chat's unconfirmed message [{lost}] should be reported: {d}"
        ));
    }
    if !d["reason"]
        .as_str()
        .is_some_and(|r| r.contains("no longer holds"))
    {
        client.fail(&format!(
            "the reason should say the server no longer holds the chat: {d}"
        ));
    }
    let ended = last_index(&mut client, "disconnected");
    await_connected(&mut server, &mut client, t, &fp);
    let since = last_index(&mut client, "connected");
    if since < ended {
        client.fail("the old chat's `disconnected` should come before the new `connected`");
    }
    eprintln!(
        "{test}: client reconnecting {noticed:?} after the kill; new chat {:?} after the \
         restart",
        restarted_at.elapsed()
    );
    if client.try_exit_status().is_some() {
        client.fail("the client should go on in a new chat, not exit");
    }

    let (mut up2, mut down2) = (
        Dir::new(&format!("{test} new"), "c2s"),
        Dir::new(&format!("{test} new"), "s2c"),
    );
    round(&mut up2, &mut down2, &mut server, &mut client);
    finish_normally(&mut server, &mut client);
    up2.check_exactly_once_since(&mut client, since, &mut server, 0);
    down2.check_exactly_once_since(&mut server, 0, &mut client, since);
    check_reconnecting(&mut client);
    expect_none(&mut client, "resumed", "the restarted server holds no chat");
    expect_none(&mut server, "resumed", "it holds no chat to resume");
    for p in [&mut client, &mut server] {
        p.assert_only_json_events();
    }
}

/// Why a lost connection is not got back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NotResumed {
    /// The client runs with `--no-reconnect`.
    NoReconnect,
    /// The server runs with `--resume-window 0`.
    WindowZero,
}

/// Idle timeout 2 s, loopback; the client with `--no-reconnect` (the
/// server's window 2 s). The server is frozen (SIGSTOP) after a message
/// each way and the client types one more: past the idle timeout the
/// client reports `disconnected` (no close code, [1] unconfirmed) and
/// exits 1 without any `reconnecting`. Thawed, the server holds the chat
/// for its window (`suspended`), ends it (`disconnected`) and serves the
/// next client.
pub fn no_reconnect_client_gives_up_when_the_connection_is_lost(t: TransportKind) {
    lost_for_good(t, NotResumed::NoReconnect);
}

/// Like [`no_reconnect_client_gives_up_when_the_connection_is_lost`] with
/// a server started with `--resume-window 0` (and a client without
/// `--no-reconnect`): the client gives up at once, and the server ends the
/// chat as soon as it notices the loss, without `suspended`.
pub fn window_0_ends_the_chat_when_the_connection_is_lost(t: TransportKind) {
    lost_for_good(t, NotResumed::WindowZero);
}

fn lost_for_good(t: TransportKind, how: NotResumed) {
    let test = format!("{}::lost_for_good({how:?})", t.name());
    let window = match how {
        NotResumed::NoReconnect => Duration::from_secs(2),
        NotResumed::WindowZero => Duration::ZERO,
    };
    let window_s = window.as_secs().to_string();
    let mut server_args = IDLE_ARGS.to_vec();
    server_args.extend(["--resume-window", &window_s]);
    let mut client_args = IDLE_ARGS.to_vec();
    if how == NotResumed::NoReconnect {
        client_args.push("--no-reconnect");
    }
    let (mut server, addr, fp) = start_server(t, &server_args);
    let mut client = start_client(t, &addr, &fp, &client_args);
    await_connected(&mut server, &mut client, t, &fp);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    server.signal("STOP");
    server.wait_stopped();
    let frozen_at = Instant::now();
    let lost = up.say(&mut client);
    let d = client.wait_event("disconnected", IDLE + MARGIN);
    let gave_up = frozen_at.elapsed();
    expect_lost(&mut client, &d);
    if unacked_of(&mut client, &d) != [lost] {
        client.fail(&format!(
            "the message typed after the freeze [{lost}] should be unconfirmed: {d}"
        ));
    }
    client.expect_exit_code(1, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    expect_none(
        &mut client,
        "reconnecting",
        "it does not try to get the chat back",
    );

    server.signal("CONT");
    let thawed_at = Instant::now();
    if how == NotResumed::NoReconnect {
        let s = server.wait_event("suspended", IDLE + MARGIN);
        check_suspended(&mut server, &s, window);
    }
    let d = server.wait_event("disconnected", IDLE + window + MARGIN);
    expect_lost(&mut server, &d);
    if how == NotResumed::WindowZero {
        expect_none(&mut server, "suspended", "a window of 0 holds nothing");
    }
    eprintln!(
        "{test}: client gave up {gave_up:?} after the freeze; the server ended the chat {:?} \
         after the thaw: {d}",
        thawed_at.elapsed()
    );
    drop(client);

    let mut next = start_client(t, &addr, &fp, &IDLE_ARGS);
    await_connected(&mut server, &mut next, t, &fp);
    let since = last_index(&mut server, "connected");
    let (mut up2, mut down2) = (
        Dir::new(&format!("{test} next"), "c2s"),
        Dir::new(&format!("{test} next"), "s2c"),
    );
    round(&mut up2, &mut down2, &mut server, &mut next);
    finish_normally(&mut server, &mut next);
    up2.check_exactly_once_since(&mut next, 0, &mut server, since);
    down2.check_exactly_once_since(&mut server, since, &mut next, 0);
    expect_none(&mut server, "resumed", "nothing was resumed");
    server.assert_only_json_events();
}

/// Idle timeout 2 s, loopback. The server is killed with a message of the
/// client's unconfirmed; the client's input ends while it reconnects, and
/// the server is started again: the client reports the old chat's
/// unconfirmed message, opens the new chat, and — its input having ended,
/// nothing to confirm in the new chat — leaves it at once (exit 0, code 0
/// at the server), rather than keeping the server busy.
pub fn ended_input_leaves_the_chat_a_restarted_server_gives(t: TransportKind) {
    let test = format!(
        "{}::ended_input_leaves_the_chat_a_restarted_server_gives",
        t.name()
    );
    let KilledServer {
        home,
        port,
        addr: _,
        fp,
        mut client,
        mut up,
    } = chat_then_kill_the_server(t, &test);
    let lost = up.say(&mut client);
    client.wait_event("reconnecting", IDLE + MARGIN);
    client.close_stdin();

    let (mut server, _, _) = start_server_in(t, home.path(), port, &SERVER_ARGS);
    let d = client.wait_event("disconnected", TIMEOUT);
    if unacked_of(&mut client, &d) != [lost] {
        client.fail(&format!(
            "the old chat's unconfirmed message [{lost}] should be reported: {d}"
        ));
    }
    await_connected(&mut server, &mut client, t, &fp);
    client.expect_exit_code(0, TIMEOUT);
    let sd = server.wait_event("disconnected", TIMEOUT);
    if sd["code"].as_u64() != Some(close_code::NO_ERROR) {
        server.fail(&format!(
            "the client should leave the new chat normally: {sd}"
        ));
    }
    for p in [&mut client, &mut server] {
        p.assert_only_json_events();
    }
}

/// Idle timeout 2 s, loopback, the server's window 30 s. Everything is
/// confirmed when the server is killed; the client's input ends while it
/// reconnects: with nothing left to confirm it leaves at once (exit 0)
/// instead of trying for the rest of the window and exiting 1.
pub fn ended_input_with_nothing_unconfirmed_stops_reconnecting(t: TransportKind) {
    let test = format!(
        "{}::ended_input_with_nothing_unconfirmed_stops_reconnecting",
        t.name()
    );
    let home = TempDir::new("server-home");
    let (mut server, addr, fp) = start_server_in(t, home.path(), 0, &SERVER_ARGS);
    let mut client = start_client(t, &addr, &fp, &IDLE_ARGS);
    await_connected(&mut server, &mut client, t, &fp);
    let (mut up, mut down) = (Dir::new(&test, "c2s"), Dir::new(&test, "s2c"));
    round(&mut up, &mut down, &mut server, &mut client);

    server.signal("KILL");
    server.kill();
    drop(server);
    client.wait_event("reconnecting", IDLE + MARGIN);
    let ended_at = Instant::now();
    client.close_stdin();
    client.expect_exit_code(0, TIMEOUT);
    let d = client.wait_event("disconnected", TIMEOUT);
    if !unacked_of(&mut client, &d).is_empty() {
        client.fail(&format!("nothing was unconfirmed: {d}"));
    }
    if ended_at.elapsed() >= WINDOW {
        client.fail("the client should not try for the whole window");
    }
    client.assert_only_json_events();
}
