//! The chat at a terminal, end to end: the real `chat` binary runs on a
//! pseudo-terminal whose output feeds a terminal emulator (vt100, 30 rows ×
//! 120 columns), so the tests assert on what the screen shows — rows, the
//! input line, the cursor, the window title — while the raw bytes are kept
//! to check that nothing the peer sent reaches the terminal as a control
//! sequence. The other end is usually a `--json` process (so arbitrary bytes
//! can be sent), once a second terminal.

mod at_terminal;

use std::time::Duration;

use at_terminal::*;
use support::pty::{PtyOptions, PtyPeer, TermEvents};
use support::*;

both_transports!(
    partial_line_survives_an_incoming_message,
    hostile_message_is_shown_escaped_and_cannot_touch_the_terminal,
    hostile_message_in_colour_is_shown_escaped_too,
    input_line_survives_a_flood_of_messages,
    sent_message_is_confirmed_with_its_round_trip_time,
    ctrl_d_on_empty_line_ends_client_and_restores_the_terminal,
    while_leaving_lines_are_refused_and_ctrl_c_leaves_at_once,
    blank_lines_send_nothing,
    stats_count_this_chat,
    server_without_client_says_message_not_sent,
    bracketed_paste_is_sent_as_one_message,
    double_slash_sends_a_slash_line_and_quit_leaves,
    both_ends_at_terminals_chat_and_leave,
);

/// The emulator behind these tests notices what the hostile-message tests
/// look for: a raw title sequence, a screen clear, a carriage return that
/// overwrites; and it answers cursor-position queries.
#[test]
fn emulator_sees_what_the_tests_look_for() {
    let size = |n| std::num::NonZeroU16::new(n).unwrap();
    let mut p = vt100::Parser::new_with_callbacks(size(5), size(20), 0, TermEvents::default());
    p.process(b"kept\r\n\x1b]0;pwned\x07safe\rEVIL\x1b[6n");
    assert_eq!(p.callbacks().titles, vec![b"pwned".to_vec()]);
    assert_eq!(p.callbacks().queries_answered, 1);
    assert_eq!(p.screen().contents(), "kept\nEVIL");
    p.process(b"\x1b[2J");
    assert_eq!(p.screen().contents(), "");
}

/// Between two lines the terminal stays in raw mode. (It used to go back to
/// cooked mode for a moment after each Enter, as the line editor left and
/// re-entered raw mode: keys typed then were echoed by the tty driver
/// outside the input line, and a Ctrl-D was taken as end-of-file and lost.)
/// The mode is sampled continuously while lines are submitted; then keys
/// typed in the same burst as an Enter must show once, on the input row,
/// and a Ctrl-D right after an Enter must still end the chat.
#[test]
fn keys_typed_between_two_lines_are_neither_lost_nor_echoed() {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(TransportKind::Tcp);
    let mut sent = 0;
    let mut samples = 0u32;
    for i in 0..20 {
        client.type_keys(&format!("mode probe {i}\r"));
        sent += 1;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(150) {
            samples += 1;
            if client.termios().c_lflag & libc::ICANON != 0 {
                client.fail(&format!(
                    "the terminal was in cooked mode {:?} after Enter (line {i})",
                    start.elapsed()
                ));
            }
        }
    }
    assert!(samples > 100, "only {samples} samples of the terminal mode");
    // Typed ahead in the same burst as Enter: shown once, on the input row.
    client.type_keys("the line before\rzqx");
    sent += 1;
    wait_input_line(&mut client, "zqx");
    std::thread::sleep(QUIET);
    let screen = client.screen();
    let rows = screen.rows.iter().filter(|r| r.contains("zqx")).count();
    if rows != 1 {
        client.fail(&format!(
            "keys typed just after Enter should appear once, on the input row; \
             `zqx` is on {rows} rows"
        ));
    }
    client.type_keys("\x15");
    wait_input_line(&mut client, "");
    // A Ctrl-D in the same burst as Enter still ends the chat, after the
    // line before it is sent and confirmed.
    client.type_keys("last line\r\x04");
    sent += 1;
    client.expect_exit_code(0, TIMEOUT);
    server.collect_events("message", sent, TIMEOUT);
}

/// When a client leaves on a loaded machine, its last status line
/// (`you left the chat`) is on the screen and nothing the
/// terminal answered is left behind. (It used to lose that line, as the
/// process gave the editor thread a fixed 50 ms to print it; and the editor,
/// started again for the next line, could ask the terminal for the cursor
/// position just before the process restored cooked mode and exited, so the
/// answer (`ESC [ 6 ; 1 R`) was echoed as `^[[6;1R` and left for the
/// shell.) Busy threads load the machine while clients leave.
#[test]
fn leaving_shows_the_last_lines_and_leaves_no_garbage() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Hogs(Arc<AtomicBool>);
    impl Drop for Hogs {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let hogs = Hogs(Arc::new(AtomicBool::new(false)));
    for _ in 0..12 {
        let stop = Arc::clone(&hogs.0);
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
    }
    std::thread::scope(|s| {
        for worker in 0..8 {
            s.spawn(move || {
                for round in 0..10 {
                    let t = if (worker + round) % 2 == 0 {
                        TransportKind::Quic
                    } else {
                        TransportKind::Tcp
                    };
                    let TerminalClient {
                        mut server,
                        mut client,
                        ..
                    } = terminal_client(t);
                    submit(&mut client, "bye");
                    wait_confirmation(&mut client, 0, "bye");
                    client.type_keys("\x04");
                    client.expect_exit_code(0, TIMEOUT);
                    server.wait_event("disconnected", TIMEOUT);
                    client.wait_output_closed(TIMEOUT);
                    let screen = client.screen();
                    if screen.find_row("you left the chat").is_none() {
                        client.fail("the client should say `you left the chat`");
                    }
                    if let Some(r) = screen.find_row("^[") {
                        client.fail(&format!(
                            "a terminal answer was echoed after the client left (row {r})"
                        ));
                    }
                }
            });
        }
    });
    drop(hogs);
}

/// 1. A message arriving while a line is half typed is printed above the
///    input row; the input row still shows the partial line with the cursor
///    after it, and finishing the line sends it whole.
fn partial_line_survives_an_incoming_message(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    client.type_keys("partial li");
    wait_input_line(&mut client, "partial li");

    server.send_text("incoming while you type");
    let screen = client.wait_row("peer: incoming while you type  #0", TIMEOUT);
    let screen = if screen.cursor_row() == format!("{PROMPT}partial li") {
        screen
    } else {
        // The editor may still be repainting the input row.
        wait_input_line(&mut client, "partial li")
    };
    let msg_row = screen
        .find_row("peer: incoming while you type  #0")
        .unwrap_or_else(|| client.fail("the message scrolled away or was overwritten"));
    if !has_clock(&screen.rows[msg_row]) {
        client.fail("the message row should start with a HH:MM:SS timestamp");
    }
    if msg_row >= usize::from(screen.cursor.0) {
        client.fail(&format!(
            "the message (row {msg_row}) should be above the input row (row {})",
            screen.cursor.0
        ));
    }
    if screen
        .rows
        .iter()
        .filter(|r| r.contains("partial li"))
        .count()
        != 1
    {
        client.fail("the partial line should be shown exactly once, on the input row");
    }

    client.type_keys("ne\r");
    assert_messages(&mut server, &["partial line"]);
    wait_clocked(&mut client, "you: partial line");
    wait_confirmation(&mut client, 0, "partial line");
    wait_input_line(&mut client, "");
}

/// 2. Escape sequences, carriage returns, bidi overrides, C1 controls and
///    invalid UTF-8 from the peer are shown as visible escapes: the window
///    title stays untouched, the screen is not cleared, nothing earlier is
///    overwritten, and none of those bytes reach the terminal raw.
fn hostile_message_is_shown_escaped_and_cannot_touch_the_terminal(t: TransportKind) {
    hostile_message(t, &terminal());
}

/// The same with colours on (no NO_COLOR): the peer's text is coloured, and
/// still shown escaped.
fn hostile_message_in_colour_is_shown_escaped_too(t: TransportKind) {
    let client = hostile_message(t, &PtyOptions::default().size(ROWS, COLS));
    let row = client.screen().find_row("peer: after the storm").unwrap();
    let row = u16::try_from(row).unwrap();
    let (clock, text) = client.with_screen(|s| {
        let colour = |col| s.cell(row, col).map(|c| (c.fgcolor(), c.dim()));
        (colour(0), colour(9))
    });
    let plain = Some((vt100::Color::Default, false));
    if text == plain || clock == plain {
        let mut client = client;
        client.fail(&format!(
            "with colours on, the timestamp should be dim and the peer's text coloured: \
             timestamp {clock:?}, text {text:?}"
        ));
    }
}

/// Sends hostile bytes to a client on a terminal set up as `opts` says and
/// checks what it shows; returns the client.
fn hostile_message(t: TransportKind, opts: &PtyOptions) -> PtyPeer {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client_with(t, opts);
    server.send_text("before the storm");
    wait_clocked(&mut client, "peer: before the storm  #0");

    let hostile: &[u8] =
        b"\x1b]0;pwned\x07|\x1b[2J|safe\rEVIL|\xe2\x80\xaeright|\xc2\x9b31m|\xff|end";
    let shown = r"peer: \x1b]0;pwned\x07|\x1b[2J|safe\rEVIL|\u{202e}right|\u{9b}31m|\xff|end  #1";
    server.send_base64(hostile);
    // An unterminated OSC would swallow everything after it on a terminal
    // that received it raw.
    server.send_base64(b"\x1b]2;forever");
    server.send_text("after the storm");
    let storm_row = wait_clocked(&mut client, shown);
    wait_clocked(&mut client, r"peer: \x1b]2;forever  #2");
    let after_row = wait_clocked(&mut client, "peer: after the storm  #3");
    let screen = wait_input_line(&mut client, "");

    let before_row = screen
        .find_row("peer: before the storm  #0")
        .unwrap_or_else(|| client.fail("the line printed before the hostile message was cleared"));
    if !(before_row < storm_row && storm_row < after_row) {
        client.fail(&format!(
            "rows out of order: before {before_row}, hostile {storm_row}, after {after_row}"
        ));
    }
    if screen.rows.iter().any(|r| r.starts_with("EVIL")) {
        client.fail("a carriage return from the peer overwrote a row");
    }

    let (titles, icons, osc) = client.term_events(|e| {
        (
            e.titles.clone(),
            e.icon_names.clone(),
            e.other_osc.len() + e.clipboard.len(),
        )
    });
    if !titles.is_empty() || !icons.is_empty() || osc != 0 {
        client.fail(&format!(
            "the window title must stay untouched and no OSC reach the terminal: titles \
             {titles:?}, icon names {icons:?}, {osc} other OSC"
        ));
    }

    let raw = client.raw_output();
    for bad in [
        &b"\x1b]0;"[..],
        b"\x1b]2;",
        b"pwned\x07",
        b"\x1b[2J",
        b"safe\rEVIL",
        b"\xe2\x80\xae",
        b"\xc2\x9b",
        b"\xff",
    ] {
        if raw.windows(bad.len()).any(|w| w == bad) {
            client.fail(&format!(
                "the raw bytes {:?} from the peer reached the terminal",
                String::from_utf8_lossy(bad)
            ));
        }
    }
    client
}

/// Hundreds of messages arriving while a line is half typed: each is shown
/// once, in order, above the input row, which keeps the partial line; the
/// line then goes out whole.
fn input_line_survives_a_flood_of_messages(t: TransportKind) {
    const N: usize = 300;
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    client.type_keys("still here");
    wait_input_line(&mut client, "still here");
    for i in 0..N {
        server.send_text(&format!("flood {i}"));
    }
    let last = format!("peer: flood {}  #{}", N - 1, N - 1);
    client.wait_row(&last, LONG_TIMEOUT);
    let screen = wait_input_line(&mut client, "still here");

    // The bottom of the screen: the latest messages in order, then the
    // input row.
    let input = usize::from(screen.cursor.0);
    let shown = ROWS as usize - 2;
    if input != ROWS as usize - 1 {
        client.fail("after a flood the input row should be the last row");
    }
    for (k, row) in screen.rows[input - shown..input].iter().enumerate() {
        let i = N - shown + k;
        if !has_clock(row) || row[9..] != format!("peer: flood {i}  #{i}") {
            client.fail(&format!(
                "row {} should show message {i}: {row:?}",
                input - shown + k
            ));
        }
    }
    // Everything that was printed: each message exactly once, in order.
    let text = client.screen_text();
    let mut at = 0;
    for i in 0..N {
        let needle = format!("peer: flood {i}  #{i}\n");
        match text[at..].find(&needle) {
            Some(k) => at += k + needle.len(),
            None => client.fail(&format!("message {i} was not printed once, in order")),
        }
        if text[at..].contains(&needle) {
            client.fail(&format!("message {i} was printed twice"));
        }
    }

    client.type_keys("\r");
    assert_messages(&mut server, &["still here"]);
    wait_confirmation(&mut client, 0, "still here");
}

/// 3. A sent message is echoed as `you: …` and confirmed with its round-trip
///    time, `✓ <number> ms  #0 <preview>`.
fn sent_message_is_confirmed_with_its_round_trip_time(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    client.type_keys("hello there\r");
    assert_messages(&mut server, &["hello there"]);
    let you_row = wait_clocked(&mut client, "you: hello there");
    let ms = wait_confirmation(&mut client, 0, "hello there");
    let screen = client.screen();
    let ack_row = screen.find_row(" ms  #0 hello there").unwrap();
    if ack_row <= you_row {
        client.fail(&format!(
            "the confirmation (row {ack_row}) should come after the sent line (row {you_row})"
        ));
    }
    if !has_clock(&screen.rows[ack_row]) || !screen.rows[ack_row][9..].starts_with("✓ ") {
        client.fail("the confirmation row should read `HH:MM:SS ✓ …`");
    }
    if ms > TIMEOUT.as_secs_f64() * 1000.0 {
        client.fail(&format!("implausible round-trip time {ms} ms"));
    }
}

/// 4. Ctrl-D on an empty line ends the client's input: it waits for its last
///    message to be confirmed, leaves normally (exit 0, the server sees
///    `disconnected` with code 0), and gives the terminal back in cooked
///    mode.
fn ctrl_d_on_empty_line_ends_client_and_restores_the_terminal(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    assert_raw_while_reading(&mut client);
    submit(&mut client, "last words");
    client.type_keys("\x04");
    client.expect_exit_code(0, TIMEOUT);
    assert_messages(&mut server, &["last words"]);
    let ev = server.wait_event("disconnected", TIMEOUT);
    if ev["code"].as_u64() != Some(0) {
        server.fail(&format!("disconnected.code should be 0 (NO_ERROR): {ev}"));
    }
    assert_cooked_after_exit(&mut client);
    let screen = client.screen();
    if screen.find_row(" ms  #0 last words").is_none() {
        client.fail("the last message should have been confirmed before the client left");
    }
    if screen.find_row("you left the chat").is_none() {
        client.fail("the client should say `you left the chat`");
    }
    // The input row Ctrl-D was typed on is not left behind as a bare prompt.
    if let Some(r) = screen
        .rows
        .iter()
        .position(|r| r.trim_end() == PROMPT.trim_end())
    {
        client.fail(&format!(
            "a bare prompt row was left on the screen (row {r})"
        ));
    }
    let raw = client.raw_output();
    let on = raw.windows(8).rposition(|w| w == b"\x1b[?2004h");
    let off = raw.windows(8).rposition(|w| w == b"\x1b[?2004l");
    if on.is_some() && off <= on {
        client.fail("bracketed paste should be turned off again on exit");
    }
}

/// After Ctrl-D the client waits for its confirmations (the server is
/// stopped, so none come) and says so; a line typed meanwhile is reported as
/// not sent, and Ctrl-C leaves at once, listing the unconfirmed message.
fn while_leaving_lines_are_refused_and_ctrl_c_leaves_at_once(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    submit(&mut client, "first");
    wait_confirmation(&mut client, 0, "first");
    let stopped = Stopped::new(server.pid());
    submit(&mut client, "unheard");
    client.type_keys("\x04");
    client.wait_row("leaving once 1 sent message(s) are confirmed", TIMEOUT);
    submit(&mut client, "too late");
    client.wait_row("not sent: input has ended", TIMEOUT);
    client.type_keys("\x03");
    client.expect_exit_code(0, TIMEOUT);
    drop(stopped);
    let screen = client.screen();
    if screen.find_row("? not confirmed  #1 unheard").is_none() {
        client.fail("the unconfirmed message should be listed when leaving");
    }
    if screen.find_row("#2").is_some() {
        client.fail("a line typed while leaving must not be sent");
    }
    assert_cooked_after_exit(&mut client);
    // The server, resumed, sees the chat end (whether "unheard" reached it
    // before the close depends on the transport).
    server.wait_event("disconnected", TIMEOUT);
}

/// Enter on an empty or blank line sends nothing and leaves no row behind.
fn blank_lines_send_nothing(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    client.type_keys("\r");
    client.type_keys("   \r");
    submit(&mut client, "real");
    wait_confirmation(&mut client, 0, "real");
    assert_messages(&mut server, &["real"]);
    let screen = client.screen();
    let sent_rows = screen.rows.iter().filter(|r| r.contains("you:")).count();
    if sent_rows != 1 {
        client.fail(&format!(
            "only the real line should show as sent; {sent_rows} rows do"
        ));
    }
}

/// SIGSTOPs a process until dropped (then SIGCONT).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

/// 5. `/stats` counts this chat: 3 sent, 2 received, 3 confirmed, with
///    round-trip statistics; the command itself is not sent.
fn stats_count_this_chat(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    for (id, text) in ["one", "two", "three"].iter().enumerate() {
        submit(&mut client, text);
        wait_confirmation(&mut client, id as u64, text);
    }
    server.send_text("first reply");
    server.send_text("second reply");
    wait_clocked(&mut client, "peer: first reply  #0");
    wait_clocked(&mut client, "peer: second reply  #1");
    wait_input_line(&mut client, "");

    client.type_keys("/stats\r");
    let row = wait_clocked(
        &mut client,
        "this chat: 3 sent, 2 received, 3 confirmed; round trip min ",
    );
    let screen = client.screen();
    let line = screen
        .lines
        .iter()
        .find(|(i, _)| *i == row)
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    for word in [" min ", " p50 ", " p99 ", " max "] {
        if !line.contains(word) || !line.ends_with(" ms") {
            client.fail(&format!(
                "the /stats line should give min, p50, p99, max: {line:?}"
            ));
        }
    }
    assert_messages(&mut server, &["one", "two", "three"]);
}

/// 6. A server on a terminal with no client: a typed line is not sent and
///    the screen says so; a client that connects later gets nothing.
fn server_without_client_says_message_not_sent(t: TransportKind) {
    let home = TempDir::new("server-home");
    let (mut server, addr, fp) = terminal_server(t, &home);
    server.type_keys("anyone there?\r");
    wait_clocked(&mut server, "no one is connected; message not sent");
    server.type_keys("/stats\r");
    wait_clocked(&mut server, "no chat is open");
    wait_input_line(&mut server, "");

    let mut client = start_client(t, &addr, &fp, &[]);
    client.wait_event("connected", TIMEOUT);
    wait_clocked(&mut server, "connected with ");
    client.settle(QUIET);
    if !client.events_named("message").is_empty() {
        client.fail("a line typed while no one was connected must never be sent");
    }
    wait_input_line(&mut server, "");
    assert_raw_while_reading(&mut server);
    server.type_keys("/quit\r");
    server.expect_exit_code(0, TIMEOUT);
    let ev = client.wait_event("disconnected", TIMEOUT);
    if ev["code"].as_u64().is_none() {
        client.fail(&format!("disconnected.code should be set: {ev}"));
    }
    assert_cooked_after_exit(&mut server);
}

/// 7. A bracketed paste with a newline, then Enter, is one message.
fn bracketed_paste_is_sent_as_one_message(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    client.wait_screen(
        "bracketed paste to be turned on",
        |s| s.bracketed_paste,
        TIMEOUT,
    );
    client.type_keys("\x1b[200~line one\nline two\x1b[201~");
    client.wait_row("line two", TIMEOUT);
    client.type_keys("\r");
    assert_messages(&mut server, &["line one\nline two"]);
    wait_confirmation(&mut client, 0, r"line one\nline two");
    wait_input_line(&mut client, "");
}

/// 8. `//slash` sends `/slash`; an unknown command is explained and not
///    sent; `/quit` leaves normally (exit 0, the server sees code 0).
fn double_slash_sends_a_slash_line_and_quit_leaves(t: TransportKind) {
    let TerminalClient {
        mut server,
        mut client,
        ..
    } = terminal_client(t);
    client.type_keys("//slash\r");
    wait_confirmation(&mut client, 0, "/slash");
    // Command feedback comes from the line editor itself, without a
    // timestamp.
    client.type_keys("/nope\r");
    client.wait_row("unknown command /nope", TIMEOUT);
    client.type_keys("/help\r");
    client.wait_row("/quit    leave the chat", TIMEOUT);
    wait_input_line(&mut client, "");
    assert_messages(&mut server, &["/slash"]);

    client.type_keys("/quit\r");
    client.expect_exit_code(0, TIMEOUT);
    let ev = server.wait_event("disconnected", TIMEOUT);
    if ev["code"].as_u64() != Some(0) {
        server.fail(&format!("disconnected.code should be 0 (NO_ERROR): {ev}"));
    }
    assert_cooked_after_exit(&mut client);
}

/// Both ends on terminals: a message typed at the server arrives above the
/// client's half-typed line, the client's line arrives whole, both are
/// confirmed; Ctrl-C leaves the client (exit 0), the server shows the peer
/// leaving and waits for the next client; `/quit` ends the server (exit 0).
/// Both terminals are left in cooked mode.
fn both_ends_at_terminals_chat_and_leave(t: TransportKind) {
    let server_home = TempDir::new("server-home");
    let client_home = TempDir::new("client-home");
    let (mut server, addr, fp) = terminal_server(t, &server_home);
    let args = ClientBuilder::new(t, &addr)
        .fingerprint(&fp)
        .plain()
        .command_args(client_home.path());
    let mut client = PtyPeer::spawn_with(format!("pty-client/{}", t.name()), &args, &terminal());
    wait_clocked(&mut client, "connected with ");
    wait_clocked(&mut server, "connected with ");
    wait_input_line(&mut client, "");
    wait_input_line(&mut server, "");

    client.type_keys("partial li");
    wait_input_line(&mut client, "partial li");
    server.type_keys("hello from the server\r");
    wait_clocked(&mut server, "you: hello from the server");
    wait_confirmation(&mut server, 0, "hello from the server");
    client.wait_row("peer: hello from the server  #0", TIMEOUT);
    let screen = wait_input_line(&mut client, "partial li");
    let msg_row = screen.find_row("peer: hello from the server  #0").unwrap();
    if msg_row >= usize::from(screen.cursor.0) {
        client.fail("the server's message should be above the input row");
    }

    client.type_keys("ne\r");
    wait_clocked(&mut server, "peer: partial line  #0");
    wait_confirmation(&mut client, 0, "partial line");
    wait_input_line(&mut client, "");

    client.type_keys("\x03");
    client.expect_exit_code(0, TIMEOUT);
    wait_clocked(&mut server, "peer left: ");
    wait_clocked(&mut server, "waiting for a client");
    assert_cooked_after_exit(&mut client);

    wait_input_line(&mut server, "");
    server.type_keys("/quit\r");
    server.expect_exit_code(0, TIMEOUT);
    assert_cooked_after_exit(&mut server);
}
