//! What the user sees never holds up the chat: a server whose stdout nobody
//! reads keeps acknowledging, turns a second client away promptly and still
//! stops on Ctrl-C; and every client turned away is an event (`refused`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

both_transports!(
    server_whose_stdout_is_never_read_keeps_serving,
    busy_client_gives_a_refused_event,
    unauthorized_client_gives_a_refused_event,
);

/// A server process whose stdout is a pipe that, after the `listening`
/// line, nobody reads. Killed on drop.
struct Unread {
    child: Child,
    /// Held open, never read again: the pipe fills and the server's writes
    /// block.
    _stdout: BufReader<std::process::ChildStdout>,
    addr: String,
    fingerprint: String,
    _home: TempDir,
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unread_server(t: TransportKind) -> Unread {
    let home = TempDir::new("unread-server");
    let mut child = Command::new(chat_bin())
        .args(server_args(t, "127.0.0.1", &home, true))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the server");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("no listening line");
    let ev: serde_json::Value = serde_json::from_str(&line).expect("listening is JSON");
    assert_eq!(ev["event"], "listening", "{line}");
    Unread {
        child,
        _stdout: stdout,
        addr: ev["addr"].as_str().expect("addr").to_string(),
        fingerprint: ev["fingerprint"].as_str().expect("fingerprint").to_string(),
        _home: home,
    }
}

/// Far more output than a pipe holds (64 KiB): without an output of its
/// own, the server would stop at its first blocked write.
const FLOOD: usize = 3000;

fn server_whose_stdout_is_never_read_keeps_serving(t: TransportKind) {
    let mut server = unread_server(t);
    let mut client = start_client(t, &server.addr, &server.fingerprint, &[]);
    client.wait_event("connected", TIMEOUT);

    // The chat keeps acknowledging while the server's stdout is full.
    let text = "x".repeat(300);
    for _ in 0..FLOOD {
        client.send_text(&text);
    }
    let acks = client.collect_events("ack", FLOOD, LONG_TIMEOUT);
    assert_eq!(acks.len(), FLOOD);

    // A second client is turned away as busy, promptly: its handshake is
    // not stuck behind the server's output.
    let mut second = start_client(t, &server.addr, &server.fingerprint, &[]);
    let d = second.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(1) {
        second.fail(&format!("the second client should get BUSY (1): {d}"));
    }
    second.expect_exit_code(1, TIMEOUT);

    // Still acknowledging afterwards.
    client.send_text("after the second client");
    client.wait_event_id("ack", FLOOD as u64, TIMEOUT);

    // Ctrl-C still stops it, and the client is told the server went away.
    let pid = server.child.id().to_string();
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            sent.elapsed() < TIMEOUT,
            "the server did not stop within {TIMEOUT:?} of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exited.code(), Some(0), "server exit status");
    eprintln!(
        "[{}] server with unread stdout stopped {:?} after SIGINT",
        t.name(),
        sent.elapsed()
    );
    let d = client.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(4) {
        client.fail(&format!("the client should be told GOING_AWAY (4): {d}"));
    }
}

/// Checks a `refused` event: the client's address, its fingerprint, the
/// code.
fn check_refused(server: &mut Peer, refused: &Peer, code: u64) {
    let ev = server.wait_event("refused", TIMEOUT);
    let want_fp = client_fingerprint(refused.home().expect("client home"));
    if ev["code"].as_u64() != Some(code)
        || ev["fingerprint"].as_str() != Some(want_fp.as_str())
        || ev["peer"]
            .as_str()
            .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
            .is_none()
    {
        server.fail(&format!(
            "refused should carry code {code}, the peer's address and fingerprint {want_fp}: {ev}"
        ));
    }
}

fn busy_client_gives_a_refused_event(t: TransportKind) {
    let Chat {
        mut server,
        mut client,
        addr,
        fingerprint,
    } = start_chat(t, &[], &[]);
    let mut second = start_client(t, &addr, &fingerprint, &[]);
    second.wait_event("disconnected", TIMEOUT);
    check_refused(&mut server, &second, 1);
    exchange(&mut client, &mut server, 0, "still chatting");
    server.assert_only_json_events();
}

fn unauthorized_client_gives_a_refused_event(t: TransportKind) {
    // An allow list that names someone else.
    let other = format!("sha256:{}", "ab".repeat(32));
    let (mut server, addr, fingerprint) = start_server(t, &["--allow", &other]);
    let mut client = start_client(t, &addr, &fingerprint, &[]);
    let d = client.wait_event("disconnected", TIMEOUT);
    assert_eq!(d["code"].as_u64(), Some(3), "{d}");
    check_refused(&mut server, &client, 3);
    assert!(
        server.events_named("connected").is_empty(),
        "a refused client is not connected"
    );
    server.assert_only_json_events();
}
