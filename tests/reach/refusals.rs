//! Clients that do not get a chat: one not on the allow list, one asking
//! for QUIC where only TCP listens, one where nothing listens at all.

use super::*;

/// A server admitting only another identity; clients with their input
/// closed at once (default transport, QUIC, TCP): each reports
/// `disconnected` with UNAUTHORIZED (3), not a normal end of its own, and
/// exits 1, never `connected`; the server reports each as `refused` (3).
#[test]
fn unauthorized_with_no_input_is_reported_as_unauthorized() {
    let someone = TempDir::new("someone-else");
    let allowed = client_fingerprint(someone.path());
    let (mut server, addr, fp) = start_default_server(&["--allow", &allowed]);
    for via in [None, Some(TransportKind::Quic), Some(TransportKind::Tcp)] {
        let builder = match via {
            None => ClientBuilder::auto(&addr),
            Some(t) => ClientBuilder::new(t, &addr),
        };
        let mut client = builder.fingerprint(&fp).spawn();
        client.close_stdin();
        let d = expect_turned_away(&mut client, 3);
        eprintln!("{via:?}: {d}");
        let refused = server.wait_event("refused", TIMEOUT);
        if refused["code"].as_u64() != Some(3)
            || via.is_some_and(|t| refused["transport"].as_str() != Some(t.name()))
        {
            server.fail(&format!(
                "refused should say code 3 over {via:?}: {refused}"
            ));
        }
    }
    assert_eq!(count(&mut server, "connected"), 0);
}

/// `--transport quic` to a port where only TCP listens: no fallback (one
/// `connecting`, over QUIC), exit 1 after QUIC's timeout, and an error that
/// names UDP and what to try (`--transport auto` or `tcp`).
#[test]
fn quic_only_with_no_answer_names_udp_and_the_other_transports() {
    let (_server, addr, fp) = start_server(TransportKind::Tcp, &[]);
    let home = client_home();
    let started = Instant::now();
    let mut client = ClientBuilder::new(TransportKind::Quic, &addr)
        .home(home.path())
        .fingerprint(&fp)
        .spawn();
    client.expect_exit_code(1, Duration::from_secs(10) + TIMEOUT);
    measured("--transport quic with no answer, exit", started.elapsed());
    client.drain_stdout(TIMEOUT);
    assert_eq!(connecting_transports(&mut client, &addr), ["quic"]);
    if !client.events_named("connected").is_empty() {
        client.fail("nothing answered over QUIC: no `connected`");
    }
    let said = client.everything_said();
    for needle in ["UDP", "--transport auto", "--transport tcp"] {
        if !said.contains(needle) {
            client.fail(&format!("the error should mention {needle:?}"));
        }
    }
}

/// A default client to a port where nothing listens: TCP is refused at
/// once, so it gives up within about a second (not QUIC's 10 s), exit 1,
/// saying that nothing listens there.
#[test]
fn nothing_listening_fails_fast_and_says_so() {
    let port = {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        tcp.local_addr().expect("local address").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let home = client_home();
    let started = Instant::now();
    let mut client = ClientBuilder::auto(&addr)
        .home(home.path())
        .fingerprint(&format!("sha256:{}", "ab".repeat(32)))
        .spawn();
    client.expect_exit_code(1, TIMEOUT);
    let took = started.elapsed();
    measured("default client where nothing listens, exit", took);
    client.drain_stdout(TIMEOUT);
    let said = client.everything_said();
    if !said.contains("nothing listens") {
        client.fail("the error should say that nothing listens there");
    }
    assert!(
        took < FALLBACK_BOUND,
        "gave up after {took:?}: a refused TCP connection should end it within about a second"
    );
    assert_eq!(connecting_transports(&mut client, &addr), ["quic", "tcp"]);
}
