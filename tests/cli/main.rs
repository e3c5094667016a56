//! Command line: environment fallbacks, address forms, usage errors.

use support::*;

both_transports!(
    env_mode_server_without_mode_flag,
    env_mode_client_and_ip_addr_without_flags,
    addr_localhost_reaches_ipv4_server,
    addr_ipv6_loopback,
    usage_errors_exit_2,
);

/// `MODE=server` stands in for `--mode server`.
fn env_mode_server_without_mode_flag(t: TransportKind) {
    let (mut server, addr, fp) =
        start_server_with(t, "127.0.0.1", &[], &[("MODE", "server")], false);
    let mut client = start_client(t, &addr, &fp, &[]);
    await_connected(&mut server, &mut client, t, &fp);
    exchange(&mut client, &mut server, 0, "env server");
    exchange(&mut server, &mut client, 0, "env server answers");
}

/// `MODE=client IP_ADDR=127.0.0.1:PORT` stand in for `--mode client --addr …`.
fn env_mode_client_and_ip_addr_without_flags(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let ip_addr = format!("127.0.0.1:{}", port_of(&addr));
    let mut client = start_client_with(
        t,
        None,
        &fp,
        &[],
        &[("MODE", "client"), ("IP_ADDR", ip_addr.as_str())],
        false,
    );
    await_connected(&mut server, &mut client, t, &fp);
    exchange(&mut client, &mut server, 0, "env client");
    exchange(&mut server, &mut client, 0, "env client answered");
}

/// `--addr localhost:PORT` works against a server bound to 127.0.0.1 (all
/// resolved addresses are tried).
fn addr_localhost_reaches_ipv4_server(t: TransportKind) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let mut client = start_client(t, &format!("localhost:{}", port_of(&addr)), &fp, &[]);
    await_connected(&mut server, &mut client, t, &fp);
    exchange(&mut client, &mut server, 0, "via localhost");
}

/// `--addr [::1]:PORT` against a server started with `--bind ::1`.
fn addr_ipv6_loopback(t: TransportKind) {
    if let Err(why) = ipv6_loopback_available() {
        eprintln!(
            "SKIPPED addr_ipv6_loopback ({}): this machine has no IPv6 loopback: {why}",
            t.name()
        );
        println!(
            "SKIPPED addr_ipv6_loopback ({}): this machine has no IPv6 loopback: {why}",
            t.name()
        );
        return;
    }
    let (mut server, addr, fp) = start_server_with(t, "::1", &[], &[], true);
    assert!(
        addr.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.is_ipv6()),
        "server bound to ::1 should listen on an IPv6 address, got {addr}"
    );
    let mut client = start_client(t, &format!("[::1]:{}", port_of(&addr)), &fp, &[]);
    await_connected(&mut server, &mut client, t, &fp);
    exchange(&mut client, &mut server, 0, "over ipv6");
    exchange(&mut server, &mut client, 0, "ipv6 answer");
}

/// Usage errors exit with status 2: an unknown mode, and no mode at all
/// (no `--mode`, no `MODE`, no subcommand).
fn usage_errors_exit_2(t: TransportKind) {
    let (st, p) = run_chat(
        "chat --mode bogus",
        &["--mode", "bogus", "--transport", t.name()],
        TIMEOUT,
    );
    assert_eq!(
        st.code(),
        Some(2),
        "`chat --mode bogus` should exit 2, got {st}; stderr:\n{}",
        p.stderr_text()
    );

    let (st, p) = run_chat("chat (no mode)", &["--transport", t.name()], TIMEOUT);
    assert_eq!(
        st.code(),
        Some(2),
        "`chat` without a mode should exit 2, got {st}; stderr:\n{}",
        p.stderr_text()
    );

    let (st, p) = run_chat("chat (no args)", &[], TIMEOUT);
    assert_eq!(
        st.code(),
        Some(2),
        "`chat` with no arguments should exit 2, got {st}; stderr:\n{}",
        p.stderr_text()
    );

    // A server address that cannot be one is a usage error too, said
    // before anything is tried.
    let (st, p) = run_chat(
        "chat --addr 192.0.2.7:notaport",
        &[
            "--mode",
            "client",
            "--addr",
            "192.0.2.7:notaport",
            "--transport",
            t.name(),
        ],
        TIMEOUT,
    );
    assert_eq!(
        st.code(),
        Some(2),
        "a bad --addr should exit 2, got {st}; stderr:\n{}",
        p.stderr_text()
    );
    assert!(
        p.stderr_text().contains("bad port"),
        "the error should say what is wrong: {}",
        p.stderr_text()
    );
}

/// A flag only the other mode uses is said to be ignored, not ignored
/// silently (the client here has nowhere to connect to and fails at once).
#[test]
fn flags_of_the_other_mode_are_reported() {
    let home = TempDir::new("client-home");
    let (_, p) = run_chat(
        "chat --mode client --bind",
        &[
            "--mode",
            "client",
            "--bind",
            "0.0.0.0",
            "--addr",
            "127.0.0.1:1",
            "--fingerprint",
            &format!("sha256:{}", "0".repeat(64)),
            "--transport",
            "tcp",
            "--home",
            &home.path().display().to_string(),
        ],
        TIMEOUT,
    );
    assert!(
        p.stderr_text()
            .contains("--bind does nothing for a client (--mode client); ignored"),
        "stderr:\n{}",
        p.stderr_text()
    );
}
