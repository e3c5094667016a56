//! Starting `chat` servers on loopback and checking that they listen: on
//! one transport (`--transport T`), or, without `--transport`, on both at
//! once on one port (the default, auto).

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::homes::is_fingerprint;
use crate::peer::{Launch, Peer};
use crate::process::ChatProcess;
use crate::temp::{TempDir, next_id};
use crate::{TIMEOUT, TransportKind};

/// Arguments of a server started on loopback with an ephemeral port.
pub fn server_args(t: TransportKind, bind: &str, home: &TempDir, mode_flag: bool) -> Vec<String> {
    server_args_in(t, bind, home.path(), 0, mode_flag)
}

/// Arguments of a server with its home at `home`, listening on `port`
/// (0 picks a free one).
pub fn server_args_in(
    t: TransportKind,
    bind: &str,
    home: &Path,
    port: u16,
    mode_flag: bool,
) -> Vec<String> {
    args(Some(t), bind, home, port, mode_flag)
}

/// Server arguments; without a transport, the default (auto).
fn args(
    t: Option<TransportKind>,
    bind: &str,
    home: &Path,
    port: u16,
    mode_flag: bool,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if mode_flag {
        a.extend(["--mode".to_string(), "server".to_string()]);
    }
    if let Some(t) = t {
        a.extend(["--transport".to_string(), t.name().to_string()]);
    }
    let port = port.to_string();
    let home = home.to_str().expect("home path is not UTF-8");
    a.extend(
        ["--bind", bind, "--port", &port, "--home", home, "--json"]
            .iter()
            .map(|s| s.to_string()),
    );
    a
}

/// `chat --mode server --transport T --bind 127.0.0.1 --port 0 --home <fresh> --json <extra>`,
/// waiting for `listening`. Returns (server, addr, fingerprint).
pub fn start_server(t: TransportKind, extra: &[&str]) -> (Peer, String, String) {
    start_server_with(t, "127.0.0.1", extra, &[], true)
}

/// Like [`start_server`] with a chosen bind address, extra environment, and
/// optionally without the `--mode` flag (for the `MODE` env fallback).
pub fn start_server_with(
    t: TransportKind,
    bind: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
    mode_flag: bool,
) -> (Peer, String, String) {
    let home = TempDir::new("server-home");
    let mut launch = Launch::new(format!("server/{}#{}", t.name(), next_id()), &[])
        .args(&server_args(t, bind, &home, mode_flag))
        .args(extra)
        .home(home);
    for (k, v) in envs {
        launch = launch.env(k, v);
    }
    let mut server = launch.spawn();
    let (addr, fp) = await_listening(&mut server, t);
    (server, addr, fp)
}

/// Spawn `chat --mode server --transport T --bind 127.0.0.1 --port PORT
/// --home HOME --json <extra>` without waiting for anything (for servers
/// expected to fail at start-up). `home` stays the caller's.
pub fn spawn_server_in(t: TransportKind, home: &Path, port: u16, extra: &[&str]) -> Peer {
    Launch::new(format!("server/{}#{}", t.name(), next_id()), &[])
        .args(&server_args_in(t, "127.0.0.1", home, port, true))
        .args(extra)
        .spawn()
}

/// A server whose home is `home` (kept by the caller, so the identity in
/// it outlives the process), on `port` (0 for a free one); waits for
/// `listening`. Returns (server, addr, fingerprint).
///
/// With a fixed port the start is retried for a while if the server exits
/// before listening (the port may still be held by a server just stopped).
pub fn start_server_in(
    t: TransportKind,
    home: &Path,
    port: u16,
    extra: &[&str],
) -> (Peer, String, String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut server = spawn_server_in(t, home, port, extra);
        if let Some(ev) = server.try_wait_event("listening", TIMEOUT) {
            let (addr, fp) = check_listening(&mut server, t, &ev);
            if port != 0 && port_of(&addr) != port {
                server.fail(&format!("server should listen on port {port}: {ev}"));
            }
            return (server, addr, fp);
        }
        if port == 0 || Instant::now() >= deadline {
            server.fail("server did not start listening");
        }
        // Exited at start-up (port still in use?): try again shortly.
        let _ = server.wait_exit(TIMEOUT);
        thread::sleep(Duration::from_millis(250));
    }
}

/// Arguments of a server started without `--transport` (the default,
/// auto: QUIC and TCP on one port), on `bind`, with its home at `home`,
/// on `port` (0 picks a free one).
pub fn default_server_args(bind: &str, home: &Path, port: u16) -> Vec<String> {
    args(None, bind, home, port, true)
}

/// `chat --mode server --bind 127.0.0.1 --port 0 --home <fresh> --json <extra>`
/// without `--transport`, so on QUIC and TCP at once (the default); waits
/// for `listening` and checks that it names both. Returns (server, addr,
/// fingerprint).
pub fn start_default_server(extra: &[&str]) -> (Peer, String, String) {
    let home = TempDir::new("server-home");
    let mut server = Launch::new(format!("server/auto#{}", next_id()), &[])
        .args(&default_server_args("127.0.0.1", home.path(), 0))
        .args(extra)
        .home(home)
        .spawn();
    let ev = server.wait_event("listening", TIMEOUT);
    let (addr, fp) = check_listening_auto(&mut server, &ev);
    (server, addr, fp)
}

/// Wait for a server's `listening` event and check its fields; returns
/// (addr, fingerprint).
pub fn await_listening(server: &mut Peer, t: TransportKind) -> (String, String) {
    let ev = server.wait_event("listening", TIMEOUT);
    check_listening(server, t, &ev)
}

/// Check the fields of a `listening` event of a server on transport `t`;
/// returns (addr, fingerprint).
pub fn check_listening(server: &mut Peer, t: TransportKind, ev: &Value) -> (String, String) {
    check_listening_as(server, t.name(), &[t.name()], ev)
}

/// Check the fields of a `listening` event of a server started without
/// `--transport`: `"transport": "auto"`, `"transports": ["quic", "tcp"]`;
/// returns (addr, fingerprint).
pub fn check_listening_auto(server: &mut Peer, ev: &Value) -> (String, String) {
    check_listening_as(server, "auto", &["quic", "tcp"], ev)
}

fn check_listening_as(
    server: &mut Peer,
    transport: &str,
    transports: &[&str],
    ev: &Value,
) -> (String, String) {
    let addr = ev["addr"].as_str().unwrap_or_default().to_string();
    let fp = ev["fingerprint"].as_str().unwrap_or_default().to_string();
    if ev["transport"].as_str() != Some(transport) {
        server.fail(&format!(
            "listening.transport should be {transport:?}: {ev}"
        ));
    }
    let listed: Option<Vec<&str>> = ev["transports"]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect());
    if listed.as_deref() != Some(transports) {
        server.fail(&format!(
            "listening.transports should be {transports:?}: {ev}"
        ));
    }
    match addr.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => {}
        _ => server.fail(&format!(
            "listening.addr should be a socket address with a real port: {ev}"
        )),
    }
    if !is_fingerprint(&fp) {
        server.fail(&format!(
            "listening.fingerprint should be sha256:<64 lowercase hex>: {ev}"
        ));
    }
    (addr, fp)
}

/// The port of an address like `127.0.0.1:41234` or `[::1]:41234`.
pub fn port_of(addr: &str) -> u16 {
    let (_, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in address {addr:?}"));
    port.parse()
        .unwrap_or_else(|e| panic!("bad port in address {addr:?}: {e}"))
}

/// Whether this machine can use IPv6 loopback (TCP and UDP on [::1]).
pub fn ipv6_loopback_available() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0").map_err(|e| format!("TCP bind [::1]:0 failed: {e}"))?;
    std::net::UdpSocket::bind("[::1]:0").map_err(|e| format!("UDP bind [::1]:0 failed: {e}"))?;
    Ok(())
}
