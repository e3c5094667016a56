//! Trusting servers: first contact (refused without `--accept-new`, asked
//! at a terminal), the known-hosts list, changed keys and `chat forget`,
//! pins and `--insecure`.

use std::time::Duration;

use support::pty::PtyPeer;
use support::*;

both_transports!(
    first_contact_without_accept_new_is_refused,
    accept_new_records_and_next_connection_uses_the_record,
    known_hosts_key_is_the_normalised_addr,
    changed_key_is_refused_until_forgotten,
    insecure_connects_to_unknown_server_and_records_nothing,
    pins_take_precedence_and_are_never_recorded,
    interactive_first_contact_yes_connects_and_records,
    interactive_first_contact_no_refuses_and_records_nothing,
    concurrent_first_contacts_in_one_home_record_both,
    slow_answer_at_the_prompt_keeps_the_connection,
    busy_server_while_at_the_prompt_is_reported_as_busy,
);

/// The known-hosts key of a server listening on `addr`, reached through
/// `--addr 127.0.0.1:PORT`.
fn loopback_key(addr: &str) -> String {
    format!("127.0.0.1:{}", port_of(addr))
}

/// A fresh client home whose known_hosts says `host` has `fingerprint`.
fn home_knowing(host: &str, fingerprint: &str) -> TempDir {
    let home = TempDir::new("client-home");
    std::fs::write(
        known_hosts_path(home.path()),
        format!("# written by the test\n{host} {fingerprint}\n"),
    )
    .unwrap();
    home
}

/// Spawns `client`, waits until it and `server` report `connected` (the
/// client seeing the server's fingerprint `fp`), sends `text` as message 0
/// from the client, and lets the client leave cleanly; returns it.
fn chat_once(
    server: &mut Peer,
    client: ClientBuilder,
    t: TransportKind,
    fp: &str,
    text: &str,
) -> Peer {
    let mut client = client.spawn();
    await_connected(server, &mut client, t, fp);
    exchange(&mut client, server, 0, text);
    finish_client(server, &mut client);
    client
}

/// `chat forget HOST --home HOME`, run to its end.
fn forget(host: &str, home: &TempDir) -> (std::process::ExitStatus, Peer) {
    run_chat(
        "chat forget",
        &["forget", host, "--home", &home.path_str()],
        TIMEOUT,
    )
}

/// Assert the client never reported `connected`.
fn assert_never_connected(client: &mut Peer, why: &str) {
    client.poll();
    if !client.events_named("connected").is_empty() {
        client.fail(&format!("the client must not report `connected`: {why}"));
    }
}

/// First contact with stdin not a terminal and no `--accept-new`: exit 1,
/// the server's fingerprint and `--accept-new` named on stderr and in an
/// `error` event, no `connected`, nothing recorded. The client's own
/// identity is created in its home (key mode 0600).
fn first_contact_without_accept_new_is_refused(t: TransportKind) {
    let (_server, addr, fp) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    let mut client = ClientBuilder::new(t, &loopback_key(&addr))
        .home(home.path())
        .spawn();
    client.expect_exit_code(1, TIMEOUT);
    client.drain_stdout(TIMEOUT);

    let stderr = client.stderr_text();
    if !stderr.contains(&fp) || !stderr.contains("--accept-new") {
        client.fail(&format!(
            "stderr should name the server's fingerprint {fp} and mention --accept-new"
        ));
    }
    let errors: Vec<String> = client
        .events_named("error")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    if !errors
        .iter()
        .any(|m| m.contains(&fp) && m.contains("--accept-new"))
    {
        client.fail(&format!(
            "an `error` event should name the fingerprint {fp} and mention --accept-new"
        ));
    }
    assert_never_connected(&mut client, "the server is not trusted");
    client.assert_only_json_events();
    assert_known_hosts(home.path(), &[]);

    let (cert, key) = (
        home.path().join("client/cert.pem"),
        home.path().join("client/key.pem"),
    );
    assert!(cert.exists(), "client identity {} missing", cert.display());
    assert_eq!(
        file_mode(&key),
        0o600,
        "client key {} mode should be 0600",
        key.display()
    );
}

/// `--accept-new` connects, chats and records `127.0.0.1:PORT FP`; a second
/// connection with no trust flag uses the record silently and chats; both
/// exit 0 at end of input. The server sees the client's own identity.
fn accept_new_records_and_next_connection_uses_the_record(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    let host = loopback_key(&addr);
    let client_fp = client_fingerprint(home.path());

    let mut first = ClientBuilder::new(t, &host)
        .home(home.path())
        .accept_new()
        .spawn();
    await_connected_identities(&mut server, &mut first, t, &fp, &client_fp);
    exchange(&mut first, &mut server, 0, "first contact");
    exchange(&mut server, &mut first, 0, "welcome");
    finish_client(&mut server, &mut first);
    first.assert_only_json_events();
    assert_known_hosts(home.path(), &[(&host, &fp)]);

    let mut second = ClientBuilder::new(t, &host).home(home.path()).spawn();
    await_connected_identities(&mut server, &mut second, t, &fp, &client_fp);
    exchange(&mut second, &mut server, 0, "known host");
    exchange(&mut server, &mut second, 0, "welcome back");
    finish_client(&mut server, &mut second);
    second.assert_only_json_events();
    assert_known_hosts(home.path(), &[(&host, &fp)]);
}

/// The known-hosts key is `--addr` normalised: host names in lower case
/// (`LocalHost:PORT` → `localhost:PORT`); the same name in another case
/// then finds the record.
fn known_hosts_key_is_the_normalised_addr(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let port = port_of(&addr);
    let home = TempDir::new("client-home");

    let mut first = ClientBuilder::new(t, &format!("LocalHost:{port}"))
        .home(home.path())
        .accept_new()
        .spawn();
    await_connected(&mut server, &mut first, t, &fp);
    finish_client(&mut server, &mut first);
    assert_known_hosts(home.path(), &[(&format!("localhost:{port}"), &fp)]);

    let second = ClientBuilder::new(t, &format!("localhost:{port}")).home(home.path());
    chat_once(&mut server, second, t, &fp, "by name");
    assert_known_hosts(home.path(), &[(&format!("localhost:{port}"), &fp)]);
}

/// A different server (new certificate) on a recorded address: the client
/// exits 1 showing both fingerprints, the known_hosts path and line and
/// `chat forget`; `--accept-new` does not override it; `--insecure` still
/// connects (recording nothing). `chat forget` removes the entry (a second
/// forget exits 1), after which `--accept-new` records the new key.
fn changed_key_is_refused_until_forgotten(t: TransportKind) {
    let home = TempDir::new("client-home");
    let server_a_home = TempDir::new("server-a-home");
    let server_b_home = TempDir::new("server-b-home");

    let (mut server_a, addr_a, fp_a) = start_server_in(t, server_a_home.path(), 0, &[]);
    let port = port_of(&addr_a);
    let host = loopback_key(&addr_a);
    let mut client = ClientBuilder::new(t, &host)
        .home(home.path())
        .accept_new()
        .spawn();
    await_connected(&mut server_a, &mut client, t, &fp_a);
    finish_client(&mut server_a, &mut client);
    assert_known_hosts(home.path(), &[(&host, &fp_a)]);
    server_a.kill();

    let (mut server_b, _, fp_b) = start_server_in(t, server_b_home.path(), port, &[]);
    assert_ne!(
        fp_a, fp_b,
        "a new server home should mean a new certificate"
    );

    let entry_line = known_hosts(home.path())[0].line;
    let kh_path = known_hosts_path(home.path()).display().to_string();
    for (what, extra) in [
        ("no flag", &[][..]),
        ("--accept-new", &["--accept-new"][..]),
    ] {
        let mut changed = ClientBuilder::new(t, &host)
            .home(home.path())
            .args(extra)
            .spawn();
        changed.expect_exit_code(1, TIMEOUT);
        changed.drain_stdout(TIMEOUT);
        let stderr = changed.stderr_text();
        let mut missing = Vec::new();
        for needle in [&fp_a, &fp_b, &kh_path, &"chat forget".to_string()] {
            if !stderr.contains(needle.as_str()) {
                missing.push(needle.clone());
            }
        }
        let line_shown = stderr.contains(&format!("{kh_path}:{entry_line}"))
            || stderr.contains(&format!("line {entry_line}"));
        if !line_shown {
            missing.push(format!("line number {entry_line}"));
        }
        if !missing.is_empty() {
            changed.fail(&format!(
                "changed key ({what}): stderr should show both fingerprints, the known_hosts \
                 path and line, and `chat forget`; missing: {missing:?}"
            ));
        }
        assert_never_connected(&mut changed, "the server's key changed");
        changed.assert_only_json_events();
        assert_known_hosts(home.path(), &[(&host, &fp_a)]);
    }

    // --insecure connects to the changed server anyway, loudly, and
    // leaves the record alone.
    let insecure = ClientBuilder::new(t, &host).home(home.path()).insecure();
    let mut insecure = chat_once(&mut server_b, insecure, t, &fp_b, "unverified");
    if !insecure.stderr_text().to_lowercase().contains("insecure") {
        insecure.fail("--insecure should warn on stderr");
    }
    assert_known_hosts(home.path(), &[(&host, &fp_a)]);

    // chat forget HOST:PORT removes the entry; a second time it is unknown.
    let (st, p) = forget(&host, &home);
    assert_eq!(
        st.code(),
        Some(0),
        "`chat forget {host}` should exit 0, got {st}; stderr:\n{}",
        p.stderr_text()
    );
    assert_known_hosts(home.path(), &[]);
    let (st, p) = forget(&host, &home);
    assert_eq!(
        st.code(),
        Some(1),
        "`chat forget` of an unknown host should exit 1, got {st}; stderr:\n{}",
        p.stderr_text()
    );

    let renewed = ClientBuilder::new(t, &host).home(home.path()).accept_new();
    chat_once(&mut server_b, renewed, t, &fp_b, "new key accepted");
    assert_known_hosts(home.path(), &[(&host, &fp_b)]);
}

/// `--insecure` to a never-seen server: connects with a warning on stderr,
/// chats, exits 0, records nothing.
fn insecure_connects_to_unknown_server_and_records_nothing(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    let mut client = ClientBuilder::new(t, &loopback_key(&addr))
        .home(home.path())
        .insecure()
        .spawn();
    await_connected(&mut server, &mut client, t, &fp);
    exchange(&mut client, &mut server, 0, "no questions asked");
    exchange(&mut server, &mut client, 0, "none answered");
    finish_client(&mut server, &mut client);
    if !client.stderr_text().to_lowercase().contains("insecure") {
        client.fail("--insecure should print a warning mentioning it on stderr");
    }
    client.assert_only_json_events();
    assert_known_hosts(home.path(), &[]);
}

/// `--fingerprint` and `--cert` pins connect without recording anything,
/// and win over a known_hosts entry in both directions: a right pin
/// connects despite a wrong entry, a wrong pin is refused despite a right
/// entry.
fn pins_take_precedence_and_are_never_recorded(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let host = loopback_key(&addr);
    let cert = server
        .home()
        .expect("server home")
        .join("server/cert.pem")
        .to_str()
        .unwrap()
        .to_string();

    // Pins on an empty home: connect, record nothing.
    let home = TempDir::new("client-home");
    for pin in [["--fingerprint", fp.as_str()], ["--cert", cert.as_str()]] {
        let client = ClientBuilder::new(t, &host).home(home.path()).args(&pin);
        chat_once(
            &mut server,
            client,
            t,
            &fp,
            &format!("pinned by {}", pin[0]),
        );
        assert_known_hosts(home.path(), &[]);
    }

    // A wrong known_hosts entry: a right pin still connects and leaves the
    // entry alone; no pin follows the (wrong) entry and is refused.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let wrong_home = home_knowing(&host, &wrong);
    let mut pinned = ClientBuilder::new(t, &host)
        .home(wrong_home.path())
        .fingerprint(&fp)
        .spawn();
    await_connected(&mut server, &mut pinned, t, &fp);
    finish_client(&mut server, &mut pinned);
    assert_known_hosts(wrong_home.path(), &[(&host, &wrong)]);
    let mut unpinned = ClientBuilder::new(t, &host).home(wrong_home.path()).spawn();
    unpinned.expect_exit_code(1, TIMEOUT);
    assert_never_connected(&mut unpinned, "known_hosts holds another fingerprint");

    // A right known_hosts entry: a wrong pin is refused all the same.
    let right_home = home_knowing(&host, &fp);
    let mut wrong_pin = ClientBuilder::new(t, &host)
        .home(right_home.path())
        .fingerprint(&wrong)
        .spawn();
    wrong_pin.expect_exit_code(1, TIMEOUT);
    assert_never_connected(&mut wrong_pin, "the pin is wrong");
    if !wrong_pin
        .everything_said()
        .to_lowercase()
        .contains("fingerprint")
    {
        wrong_pin.fail("a refused pin should be explained (mention \"fingerprint\")");
    }
}

/// Generous: the prompt comes after a full handshake on a loaded machine.
const PROMPT_TIMEOUT: Duration = TIMEOUT;

/// The plain-mode client on a pty for a fresh home, first contact.
fn interactive_client(t: TransportKind, addr: &str, home: &TempDir) -> PtyPeer {
    interactive_client_with(t, addr, home, &[])
}

/// The same, with more arguments.
fn interactive_client_with(
    t: TransportKind,
    addr: &str,
    home: &TempDir,
    extra: &[&str],
) -> PtyPeer {
    let args = ClientBuilder::new(t, &loopback_key(addr))
        .plain()
        .args(extra)
        .command_args(home.path());
    PtyPeer::spawn(format!("pty-client/{}", t.name()), &args)
}

/// The plain-mode client on a pty for a fresh `home`, at its first contact
/// with the server at `addr`: waits for the trust question, which must show
/// the server's fingerprint `fp`.
fn client_at_the_trust_question(t: TransportKind, addr: &str, fp: &str, home: &TempDir) -> PtyPeer {
    let mut client = interactive_client(t, addr, home);
    client.wait_for("Trust this server? [y/N]", PROMPT_TIMEOUT);
    if !client.screen_text().contains(fp) {
        client.fail(&format!(
            "the prompt should show the server's fingerprint {fp}"
        ));
    }
    client
}

/// At a terminal, first contact shows the fingerprint and asks
/// `Trust this server? [y/N]`; `y` connects (`connected with …`), records
/// the server, and the chat works; Ctrl-D ends it with exit 0.
fn interactive_first_contact_yes_connects_and_records(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    let mut client = client_at_the_trust_question(t, &addr, &fp, &home);
    assert_known_hosts(home.path(), &[]);
    client.type_keys("y\r");
    // At a terminal the line editor runs: status lines carry a timestamp.
    client.wait_for(" connected with ", TIMEOUT);
    server.wait_event("connected", TIMEOUT);
    assert_known_hosts(home.path(), &[(&loopback_key(&addr), &fp)]);

    client.type_keys("typed at a terminal\r");
    let msg = server.wait_event_id("message", 0, TIMEOUT);
    if msg["text"].as_str() != Some("typed at a terminal") {
        server.fail(&format!("expected the typed line as message 0: {msg}"));
    }
    client.type_keys("\x04");
    client.expect_exit_code(0, TIMEOUT);
    server.wait_event("disconnected", TIMEOUT);
}

/// A user who takes longer than the idle timeout to answer the trust
/// question still gets the chat: the connection is kept alive meanwhile.
fn slow_answer_at_the_prompt_keeps_the_connection(t: TransportKind) {
    let idle = ["--idle-timeout", "2"];
    let (mut server, addr, _) = start_server(t, &idle);
    let home = TempDir::new("client-home");
    let mut client = interactive_client_with(t, &addr, &home, &idle);
    client.wait_for("Trust this server? [y/N]", PROMPT_TIMEOUT);
    server.settle(Duration::from_secs(5));
    let gone = server.events_named("disconnected");
    assert!(
        gone.is_empty(),
        "the server dropped a client waiting at the prompt: {gone:?}"
    );
    client.type_keys("y\r");
    client.wait_for(" connected with ", TIMEOUT);
    client.type_keys("after a slow answer\r");
    let msg = server.wait_event_id("message", 0, TIMEOUT);
    assert_eq!(msg["text"].as_str(), Some("after a slow answer"), "{msg}");
    client.type_keys("\x04");
    client.expect_exit_code(0, TIMEOUT);
}

/// A server that turns the client away (BUSY) while the user is still
/// reading the trust question: answering afterwards reports BUSY, not a
/// broken connection, although the client's keep-alives meanwhile found the
/// socket closed.
fn busy_server_while_at_the_prompt_is_reported_as_busy(t: TransportKind) {
    let idle = ["--idle-timeout", "2"];
    let Chat {
        server: _server,
        client: _first,
        addr,
        ..
    } = start_chat(t, &[], &[]);
    let home = TempDir::new("client-home");
    let mut client = interactive_client_with(t, &addr, &home, &idle);
    client.wait_for("Trust this server? [y/N]", PROMPT_TIMEOUT);
    // The server's linger (1 s) ends, then a few keep-alives (every 0.7 s)
    // hit the closed socket.
    std::thread::sleep(Duration::from_secs(4));
    client.type_keys("y\r");
    client.expect_exit_code(1, TIMEOUT);
    let said = client.screen_text();
    assert!(
        said.contains("the server is busy") && !said.contains("Broken pipe"),
        "the client should report that the server is busy:\n{said}"
    );
}

/// At a terminal, answering `n` exits 1 without connecting or recording.
fn interactive_first_contact_no_refuses_and_records_nothing(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    let mut client = client_at_the_trust_question(t, &addr, &fp, &home);
    client.type_keys("n\r");
    client.expect_exit_code(1, TIMEOUT);
    if client
        .screen_lines()
        .iter()
        .any(|l| l.contains("connected to") || l.contains("connected with"))
    {
        client.fail("a refused server must not be reported as connected");
    }
    assert_known_hosts(home.path(), &[]);
    // The server may have seen the refusing client connect (the question
    // comes after the handshake); it goes on serving the next one.
    server.settle(Duration::from_millis(300));
    if !server.events_named("connected").is_empty() {
        server.wait_event("disconnected", TIMEOUT);
    }
    let mut next = start_client(t, &addr, &fp, &[]);
    next.wait_event("connected", TIMEOUT);
    exchange(&mut next, &mut server, 0, "after a refusal");
}

/// Two clients sharing a home, both `--accept-new`, to two servers at the
/// same time: known_hosts ends up with both entries.
fn concurrent_first_contacts_in_one_home_record_both(t: TransportKind) {
    let (mut server_1, addr_1, fp_1) = start_server(t, &[]);
    let (mut server_2, addr_2, fp_2) = start_server(t, &[]);
    let home = TempDir::new("client-home");
    // The shared client identity exists beforehand: this is about the
    // known-hosts file.
    let client_fp = client_fingerprint(home.path());

    let mut client_1 = ClientBuilder::new(t, &loopback_key(&addr_1))
        .home(home.path())
        .accept_new()
        .spawn();
    let mut client_2 = ClientBuilder::new(t, &loopback_key(&addr_2))
        .home(home.path())
        .accept_new()
        .spawn();
    await_connected_identities(&mut server_1, &mut client_1, t, &fp_1, &client_fp);
    await_connected_identities(&mut server_2, &mut client_2, t, &fp_2, &client_fp);
    finish_client(&mut server_1, &mut client_1);
    finish_client(&mut server_2, &mut client_2);
    assert_known_hosts(
        home.path(),
        &[
            (&loopback_key(&addr_1), &fp_1),
            (&loopback_key(&addr_2), &fp_2),
        ],
    );
}
