//! Server allow lists: `--allow` and `--allow-file` admit only listed
//! client identities; others are closed with UNAUTHORIZED (code 3), which
//! is decided before BUSY.

use std::io::Write;
use std::path::Path;

use support::*;

both_transports!(
    allow_flags_admit_listed_clients_and_refuse_others,
    allow_file_labels_and_unauthorized_before_busy,
    allow_file_is_reread_on_each_connection,
    missing_allow_file_is_a_startup_error,
);

/// A client home with its identity already made; returns (home, fingerprint).
fn client_home() -> (TempDir, String) {
    let home = TempDir::new("client-home");
    let fp = client_fingerprint(home.path());
    (home, fp)
}

/// A client in `home`, pinned to the server.
fn client_in(t: TransportKind, addr: &str, server_fp: &str, home: &Path) -> Peer {
    ClientBuilder::new(t, addr)
        .home(home)
        .fingerprint(server_fp)
        .spawn()
}

/// A client not on the list is closed with code 3 (UNAUTHORIZED) and a
/// reason naming its own fingerprint, exits 1; the server logs that
/// fingerprint on stderr.
fn expect_unauthorized(server: &mut Peer, client: &mut Peer, client_fp: &str) {
    // It MAY report `connected` first; nothing is asserted about that.
    let d = client.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(3) {
        client.fail(&format!(
            "a client not on the allow list should be closed with code 3 (UNAUTHORIZED): {d}"
        ));
    }
    if !d["reason"].as_str().unwrap_or_default().contains(client_fp) {
        client.fail(&format!(
            "the UNAUTHORIZED reason should name the client's identity {client_fp}: {d}"
        ));
    }
    client.expect_exit_code(1, TIMEOUT);
    client.assert_only_json_events();
    server.wait_stderr_contains(client_fp, TIMEOUT);
}

/// `--allow` (repeated): an unlisted client is refused (UNAUTHORIZED) while
/// the server is idle; each listed client chats in turn, and the server's
/// `connected` carries its fingerprint.
fn allow_flags_admit_listed_clients_and_refuse_others(t: TransportKind) {
    let (home_a, fp_a) = client_home();
    let (home_b, fp_b) = client_home();
    let (home_c, fp_c) = client_home();
    let (mut server, addr, fp) = start_server(t, &["--allow", &fp_a, "--allow", &fp_b]);

    let mut stranger = client_in(t, &addr, &fp, home_c.path());
    expect_unauthorized(&mut server, &mut stranger, &fp_c);

    for (home, client_fp, name) in [(&home_a, &fp_a, "a"), (&home_b, &fp_b, "b")] {
        let mut client = client_in(t, &addr, &fp, home.path());
        let sev = await_connected_identities(&mut server, &mut client, t, &fp, client_fp);
        if sev.get("label").is_some_and(|l| !l.is_null()) {
            server.fail(&format!("--allow gives no label: {sev}"));
        }
        exchange(
            &mut client,
            &mut server,
            0,
            &format!("listed client {name}"),
        );
        exchange(&mut server, &mut client, 0, &format!("welcome {name}"));
        finish_client(&mut server, &mut client);
    }
    server.assert_only_json_events();
    assert!(
        server.try_exit_status().is_none(),
        "server must keep serving"
    );
}

/// `--allow-file` with comments and a label: the listed client's
/// `connected` carries the label. While its chat is open, an unlisted
/// client gets UNAUTHORIZED (code 3), not BUSY, and the chat goes on.
fn allow_file_labels_and_unauthorized_before_busy(t: TransportKind) {
    let (home_a, fp_a) = client_home();
    let (home_c, fp_c) = client_home();
    let dir = TempDir::new("allow");
    let file = dir.path().join("allowed");
    std::fs::write(
        &file,
        format!("# who may chat\n\n{fp_a} alice laptop  # since today\n"),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();
    let (mut server, addr, fp) = start_server(t, &["--allow-file", file_s]);

    let mut alice = client_in(t, &addr, &fp, home_a.path());
    let sev = await_connected_identities(&mut server, &mut alice, t, &fp, &fp_a);
    if sev["label"].as_str() != Some("alice laptop") {
        server.fail(&format!(
            "connected.label should be the allow file's label \"alice laptop\": {sev}"
        ));
    }
    exchange(&mut alice, &mut server, 0, "before the stranger");

    let mut stranger = client_in(t, &addr, &fp, home_c.path());
    expect_unauthorized(&mut server, &mut stranger, &fp_c);

    exchange(&mut alice, &mut server, 1, "still here");
    exchange(&mut server, &mut alice, 0, "yes you are");
    alice.poll();
    assert!(
        alice.events_named("disconnected").is_empty(),
        "the listed client must not be disconnected: {:?}",
        alice.events()
    );
    finish_client(&mut server, &mut alice);
    server.assert_only_json_events();
}

/// The allow file is read again for each connection: a client refused at
/// first is admitted, with its label, once its line is appended, without a
/// restart.
fn allow_file_is_reread_on_each_connection(t: TransportKind) {
    let (_home_a, fp_a) = client_home();
    let (home_b, fp_b) = client_home();
    let dir = TempDir::new("allow");
    let file = dir.path().join("allowed");
    std::fs::write(&file, format!("{fp_a} alice\n")).unwrap();
    let file_s = file.to_str().unwrap();
    let (mut server, addr, fp) = start_server(t, &["--allow-file", file_s]);
    let server_pid = server.pid();

    let mut bob = client_in(t, &addr, &fp, home_b.path());
    expect_unauthorized(&mut server, &mut bob, &fp_b);

    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| writeln!(f, "{fp_b} bob"))
        .unwrap();

    let mut bob = client_in(t, &addr, &fp, home_b.path());
    let sev = await_connected_identities(&mut server, &mut bob, t, &fp, &fp_b);
    if sev["label"].as_str() != Some("bob") {
        server.fail(&format!("connected.label should be \"bob\": {sev}"));
    }
    exchange(&mut bob, &mut server, 0, "let in without a restart");
    finish_client(&mut server, &mut bob);
    assert_eq!(server.pid(), server_pid);
    assert!(
        server.try_exit_status().is_none(),
        "server must keep serving"
    );
}

/// `--allow-file` naming a missing file: the server exits 1 at start-up,
/// naming the file, and never listens.
fn missing_allow_file_is_a_startup_error(t: TransportKind) {
    let dir = TempDir::new("allow");
    let missing = dir.path().join("no-such-allow-file");
    let missing_s = missing.to_str().unwrap();
    let home = TempDir::new("server-home");
    let mut server = spawn_server_in(t, home.path(), 0, &["--allow-file", missing_s]);
    server.expect_exit_code(1, TIMEOUT);
    server.drain_stdout(TIMEOUT);
    if !server.events_named("listening").is_empty() {
        server.fail("a server with a missing allow file must not listen");
    }
    if !server.everything_said().contains(missing_s) {
        server.fail(&format!(
            "the error should name the missing file {missing_s}"
        ));
    }
}
