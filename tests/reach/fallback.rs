//! A default client on loopback: TCP after QUIC's head start when only TCP
//! answers, both at once once it remembers that, and a race loser the
//! server never shows.

use super::*;

/// A default client reaching a `--transport tcp` server: `connecting` over
/// QUIC, then TCP; `connected` over TCP with a fallback reason, well within
/// the 10 s QUIC timeout. It remembers, in `reach`, that QUIC went
/// unanswered, and the next run from the same home tries both at once and
/// says so. The server shows each client exactly once, and nothing of the
/// QUIC attempts.
#[test]
fn default_client_falls_back_to_tcp_and_then_tries_both_at_once() {
    let (mut server, addr, fp) = start_server(TransportKind::Tcp, &[]);
    let home = client_home();
    let host = format!("127.0.0.1:{}", port_of(&addr));
    let spawn = || {
        ClientBuilder::auto(&host)
            .home(home.path())
            .fingerprint(&fp)
            .spawn()
    };

    let started = Instant::now();
    let mut first = spawn();
    let (ev, took) = connected_after(&mut first, started);
    measured(
        "default client to a TCP-only server, connected over TCP",
        took,
    );
    let why = check_client_connected(&mut first, &ev, TransportKind::Tcp, &fp, Some("QUIC"));
    eprintln!("fallback: {why:?}");
    assert_eq!(
        connecting_transports(&mut first, &addr),
        ["quic", "tcp"],
        "one `connecting` per attempt, QUIC first"
    );
    assert!(
        took < FALLBACK_BOUND,
        "connected after {took:?}: the fallback should not wait for QUIC's 10 s timeout"
    );
    server_connected_over(&mut server, TransportKind::Tcp);
    exchange(&mut first, &mut server, 0, "over the fallback");
    exchange(&mut server, &mut first, 0, "heard you");
    finish_client(&mut server, &mut first);

    let lines = reach_lines(home.path());
    let line = lines
        .iter()
        .find(|l| l.host == host)
        .unwrap_or_else(|| panic!("`reach` should have a line for {host}: {lines:?}"));
    assert_eq!(line.local, "127.0.0.1", "{line:?}");
    assert!(
        line.together_until > unix_now() && line.backoff > 0,
        "QUIC went unanswered: TCP should start together with QUIC for a while: {line:?}"
    );

    let started = Instant::now();
    let mut second = spawn();
    let (ev, took) = connected_after(&mut second, started);
    measured("the same client again, both tried at once", took);
    check_client_connected(
        &mut second,
        &ev,
        TransportKind::Tcp,
        &fp,
        Some("both were tried at once"),
    );
    assert_eq!(connecting_transports(&mut second, &addr), ["quic", "tcp"]);
    assert!(took < FALLBACK_BOUND, "connected after {took:?}");
    server_connected_over(&mut server, TransportKind::Tcp);
    exchange(&mut second, &mut server, 0, "straight away");
    finish_client(&mut server, &mut second);
    assert_clients_shown(&mut server, 2);
}

/// Clients that start QUIC and TCP at once (their home says QUIC went
/// unanswered lately) to a default server, which answers both: each client
/// chats over the attempt that won, and the server shows exactly one
/// `connected` per client, no `refused`, and one `disconnected` per client:
/// the connection that lost the race was never a client.
#[test]
fn the_connection_that_loses_the_race_is_never_shown() {
    // A server that logs the connections that went before HELLO.
    let server_home = TempDir::new("server-home");
    let mut server = Launch::new("server/auto-debug", &[])
        .args(&default_server_args("127.0.0.1", server_home.path(), 0))
        .env("RUST_LOG", "chat=debug")
        .spawn();
    let ev = server.wait_event("listening", TIMEOUT);
    let (addr, fp) = check_listening_auto(&mut server, &ev);
    let host = format!("127.0.0.1:{}", port_of(&addr));
    let rounds = 6;
    let mut losers_seen = 0;
    for i in 0..rounds {
        let home = client_home();
        std::fs::write(
            home.path().join("reach"),
            format!("{host} 127.0.0.1 1000 {} 300\n", unix_now() + 3600),
        )
        .expect("write reach");
        let launch = ClientBuilder::auto(&host)
            .home(home.path())
            .fingerprint(&fp)
            .command_args(home.path());
        let mut client = Launch::new(format!("client/auto-together#{i}"), &[])
            .args(&launch)
            .env("RUST_LOG", "chat=debug")
            .spawn();
        let ev = client.wait_event("connected", TIMEOUT);
        let won = match ev["transport"].as_str() {
            Some("quic") => TransportKind::Quic,
            Some("tcp") => TransportKind::Tcp,
            _ => client.fail(&format!("connected.transport: {ev}")),
        };
        let fallback = (won == TransportKind::Tcp).then_some("both were tried at once");
        check_client_connected(&mut client, &ev, won, &fp, fallback);
        assert_eq!(connecting_transports(&mut client, &addr), ["quic", "tcp"]);
        server_connected_over(&mut server, won);
        exchange(
            &mut client,
            &mut server,
            0,
            &format!("round {i} over {won}"),
        );
        finish_client(&mut server, &mut client);
        if client
            .stderr_text()
            .contains("closing the connection that lost the race")
        {
            losers_seen += 1;
        }
        eprintln!("round {i}: {won} won");
    }
    // Let a loser's close reach the server before counting.
    server.settle(Duration::from_millis(500));
    let unseen = server
        .stderr_text()
        .matches("closed before HELLO: not a client")
        .count();
    let _ = writeln!(
        std::io::stderr(),
        "MEASURED: race losers: {losers_seen} of {rounds} finished their handshake at the \
         client, {unseen} reached the server (and were not shown)"
    );
    assert_clients_shown(&mut server, rounds);
    let ended = count(&mut server, "disconnected");
    if ended != rounds {
        server.fail(&format!(
            "one `disconnected` per client, none for race losers: {ended} for {rounds} clients"
        ));
    }
}
