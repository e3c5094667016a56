//! Chats at a terminal for the `terminal` suite: the terminal the tests use,
//! a client or a server on it, and what to wait for on its screen (the
//! input row, timestamped rows, the confirmations of sent messages) and in
//! its mode (raw while reading, cooked after exit).

use std::time::Duration;

use support::pty::{PtyOptions, PtyPeer, Screen};
use support::*;

/// The size of the terminal the tests look at.
pub const ROWS: u16 = 30;
pub const COLS: u16 = 120;
/// The prompt of the input line.
pub const PROMPT: &str = "› ";
/// How long to watch for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(500);

/// A 30×120 terminal without colours.
pub fn terminal() -> PtyOptions {
    PtyOptions::default().size(ROWS, COLS).env("NO_COLOR", "1")
}

/// Waits until the cursor is on an input row showing exactly `› text`, right
/// after the text.
pub fn wait_input_line(p: &mut PtyPeer, text: &str) -> Screen {
    let want = format!("{PROMPT}{text}");
    let col = want.chars().count();
    p.wait_screen(
        &format!("the input row to show {want:?} with the cursor after it"),
        |s| s.cursor_row() == want.trim_end() && usize::from(s.cursor.1) == col,
        TIMEOUT,
    )
}

/// Types `line` and Enter, then waits until the editor shows it as sent
/// (`HH:MM:SS you: line`) and is reading the next line (an empty input row
/// below it).
pub fn submit(p: &mut PtyPeer, line: &str) {
    p.type_keys(&format!("{line}\r"));
    let sent = format!("you: {line}");
    p.wait_screen(
        &format!("{sent:?} on a row, then an empty input row below it"),
        |s| {
            s.find_row(&sent).is_some_and(|r| {
                r < usize::from(s.cursor.0)
                    && s.cursor_row() == PROMPT.trim_end()
                    && s.cursor.1 == 2
            })
        },
        TIMEOUT,
    );
}

/// Waits until the terminal has been given back in cooked mode (canonical
/// input and echo on) after the program exited.
pub fn assert_cooked_after_exit(p: &mut PtyPeer) {
    p.wait_output_closed(TIMEOUT);
    let t = p.termios();
    if t.c_lflag & libc::ICANON == 0 || t.c_lflag & libc::ECHO == 0 {
        p.fail(&format!(
            "after exit the terminal should be in cooked mode (ICANON and ECHO on); \
             c_lflag = {:#o}",
            t.c_lflag
        ));
    }
}

/// While the line editor reads, the terminal is in raw mode: this proves
/// that [`assert_cooked_after_exit`] can tell the difference.
pub fn assert_raw_while_reading(p: &mut PtyPeer) {
    let t = p.termios();
    if t.c_lflag & (libc::ICANON | libc::ECHO) != 0 {
        p.fail(&format!(
            "while the line editor reads, the terminal should be raw (no ICANON, no ECHO); \
             c_lflag = {:#o}",
            t.c_lflag
        ));
    }
}

/// Parses the round-trip time of a confirmation line `… ✓ 1.23 ms  #ID …`.
pub fn confirmation_ms(line: &str) -> Option<f64> {
    let rest = &line[line.find("✓ ")? + "✓ ".len()..];
    let (num, after) = rest.split_once(' ')?;
    if !after.starts_with("ms  #") {
        return None;
    }
    num.parse::<f64>()
        .ok()
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
}

/// Waits for the confirmation of message `id` (`✓ N ms  #id preview`) and
/// returns its round-trip time in milliseconds.
pub fn wait_confirmation(p: &mut PtyPeer, id: u64, preview: &str) -> f64 {
    let tag = format!(" ms  #{id} {preview}");
    let screen = p.wait_screen(
        &format!("the confirmation `✓ <number> ms  #{id} {preview}`"),
        |s| {
            s.lines
                .iter()
                .any(|(_, l)| l.contains(&tag) && confirmation_ms(l).is_some())
        },
        TIMEOUT,
    );
    let line = screen.find_line(&tag).unwrap_or_default().to_string();
    confirmation_ms(&line).unwrap_or_else(|| p.fail(&format!("unparsable confirmation {line:?}")))
}

/// Whether `line` starts with a `HH:MM:SS ` timestamp.
pub fn has_clock(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 9
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b' '
}

/// Waits for a timestamped row `HH:MM:SS <text>` and returns its row.
pub fn wait_clocked(p: &mut PtyPeer, text: &str) -> usize {
    let screen = p.wait_screen(
        &format!("a row `HH:MM:SS {text}`"),
        |s| {
            s.lines
                .iter()
                .any(|(_, l)| has_clock(l) && l[9..].starts_with(text))
        },
        TIMEOUT,
    );
    screen
        .lines
        .iter()
        .find(|(_, l)| has_clock(l) && l[9..].starts_with(text))
        .map(|(i, _)| *i)
        .unwrap()
}

/// The server's messages must be exactly these texts, in order (waits for
/// them, then watches a little longer for extra ones).
pub fn assert_messages(server: &mut Peer, want: &[&str]) {
    for (id, text) in want.iter().enumerate() {
        let msg = server.wait_event_id("message", id as u64, TIMEOUT);
        if msg["text"].as_str() != Some(text) {
            server.fail(&format!("message {id} should be {text:?}: {msg}"));
        }
    }
    server.settle(QUIET);
    let n = server.events_named("message").len();
    if n != want.len() {
        server.fail(&format!(
            "expected exactly {} messages {want:?}, got {n}",
            want.len()
        ));
    }
}

/// A `--json` server and a client on a terminal, connected, with the input
/// line ready.
pub struct TerminalClient {
    pub server: Peer,
    pub client: PtyPeer,
    /// The client's home, removed with it.
    _home: TempDir,
}

/// [`terminal_client_with`] a [`terminal`].
pub fn terminal_client(t: TransportKind) -> TerminalClient {
    terminal_client_with(t, &terminal())
}

/// A [`TerminalClient`] whose terminal is set up as `opts` says.
pub fn terminal_client_with(t: TransportKind, opts: &PtyOptions) -> TerminalClient {
    let (mut server, addr, fp) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    let args = ClientBuilder::new(t, &addr)
        .fingerprint(&fp)
        .plain()
        .command_args(home.path());
    let mut client = PtyPeer::spawn_with(format!("pty-client/{}", t.name()), &args, opts);
    wait_clocked(&mut client, "connected with ");
    server.wait_event("connected", TIMEOUT);
    wait_input_line(&mut client, "");
    TerminalClient {
        server,
        client,
        _home: home,
    }
}

/// A server on a terminal, listening, with the input line ready; returns it
/// with its address and fingerprint as it showed them.
pub fn terminal_server(t: TransportKind, home: &TempDir) -> (PtyPeer, String, String) {
    let args: Vec<String> = [
        "--mode",
        "server",
        "--transport",
        t.name(),
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--home",
        &home.path_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = PtyPeer::spawn_with(format!("pty-server/{}", t.name()), &args, &terminal());
    wait_clocked(&mut server, "waiting for a client");
    wait_input_line(&mut server, "");
    let text = server.screen_text();
    let addr = text
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    let fp = text
        .split("server fingerprint: ")
        .nth(1)
        .map(fingerprints_in)
        .and_then(|f| f.into_iter().next());
    match (addr, fp) {
        (Some(addr), Some(fp)) => (server, addr, fp),
        _ => server.fail("the server should show `listening on ADDR` and its fingerprint"),
    }
}
