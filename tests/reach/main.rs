//! Reaching the server (docs/protocol.md §12, §13; README "Reaching the
//! server"): a server started without `--transport` listens on QUIC and TCP
//! on one port and holds one chat across both; a client started without it
//! races QUIC and then TCP, says which won and why, remembers that QUIC went
//! unanswered, and explains what to try when nothing answers; chat/2 makes a
//! connection a client only with its HELLO, which the client sends once it
//! trusts the server.
//!
//! - `across`: one default server, clients over QUIC and TCP in turn, and
//!   BUSY from one transport to the other;
//! - `fallback`: a default client falling back to TCP on loopback, what it
//!   remembers, and race losers the server never shows;
//! - `blocked_udp`: UDP dropped or rejected between two network namespaces
//!   (needs root, `ip` and `nft`; prints `SKIPPED: …` without them, or fails
//!   with `CHAT_NETFAULTS_REQUIRED=1`);
//! - `refusals`: UNAUTHORIZED with no input, and the errors that say what
//!   to try;
//! - `slow_trust`: a trust question answered after the server stopped
//!   waiting for HELLO.
//!
//! Times that matter (how long a fallback took) are printed as `MEASURED:`
//! lines on stderr, past the test harness's capture.
//!
//! Run just these: `cargo test --test reach`.

mod across;
mod blocked_udp;
mod fallback;
mod refusals;
mod slow_trust;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

/// Connecting over the fallback must take well under the client's 10 s
/// QUIC timeout: a bound that tells "about a second" from "10 s" on a
/// loaded 2-core machine running a debug build.
const FALLBACK_BOUND: Duration = Duration::from_secs(5);

/// The other transport.
fn other(t: TransportKind) -> TransportKind {
    match t {
        TransportKind::Quic => TransportKind::Tcp,
        TransportKind::Tcp => TransportKind::Quic,
    }
}

/// Prints a measurement where `cargo test` shows it (libtest captures
/// `eprintln!`, not the stderr handle itself).
fn measured(what: &str, took: Duration) {
    let _ = writeln!(std::io::stderr(), "MEASURED: {what}: {took:.2?}");
}

/// Seconds since the epoch, now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Waits for the client's `connected`; returns it and how long after
/// `since` it came.
fn connected_after(client: &mut Peer, since: Instant) -> (Value, Duration) {
    let ev = client.wait_event("connected", TIMEOUT);
    (ev, since.elapsed())
}

/// The transports of the client's `connecting` events so far, in order;
/// each must name `addr`.
fn connecting_transports(client: &mut Peer, addr: &str) -> Vec<String> {
    client.poll();
    let events: Vec<Value> = client
        .events_named("connecting")
        .into_iter()
        .cloned()
        .collect();
    for ev in &events {
        if ev["addr"].as_str() != Some(addr) {
            client.fail(&format!("connecting.addr should be {addr}: {ev}"));
        }
    }
    events
        .iter()
        .map(|e| e["transport"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// The client reported `connected` over `t` with the server's fingerprint,
/// and a `fallback` reason exactly when `fallback` (which the reason must
/// then contain). Returns the reason.
fn check_client_connected(
    client: &mut Peer,
    ev: &Value,
    t: TransportKind,
    fp: &str,
    fallback: Option<&str>,
) -> Option<String> {
    if ev["transport"].as_str() != Some(t.name()) || ev["fingerprint"].as_str() != Some(fp) {
        client.fail(&format!(
            "connected should be over {} with the server's fingerprint {fp}: {ev}",
            t.name()
        ));
    }
    let reason = ev["fallback"].as_str().map(str::to_string);
    match (fallback, &reason) {
        (None, None) => {}
        (Some(want), Some(got)) if got.contains(want) => {}
        (None, Some(_)) => client.fail(&format!("connected should carry no fallback: {ev}")),
        (Some(want), _) => client.fail(&format!(
            "connected.fallback should say why TCP ({want:?}): {ev}"
        )),
    }
    reason
}

/// The server's `connected` for the next client: over `t`.
fn server_connected_over(server: &mut Peer, t: TransportKind) -> Value {
    let ev = server.wait_event("connected", TIMEOUT);
    if ev["transport"].as_str() != Some(t.name()) {
        server.fail(&format!(
            "the server's connected should be over {}: {ev}",
            t.name()
        ));
    }
    ev
}

/// A client turned away before its chat began: a `disconnected` event with
/// close code `code`, exit status 1, and never `connected`.
fn expect_turned_away(client: &mut Peer, code: u64) -> Value {
    let d = client.wait_event("disconnected", TIMEOUT);
    if d["code"].as_u64() != Some(code) {
        client.fail(&format!("disconnected.code should be {code}: {d}"));
    }
    client.expect_exit_code(1, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    if !client.events_named("connected").is_empty() {
        client.fail("a client turned away must never report `connected`");
    }
    d
}

/// How many events called `name` `p` has printed so far.
fn count(p: &mut Peer, name: &str) -> usize {
    p.poll();
    p.events_named(name).len()
}

/// The server printed exactly `n` `connected` events and no `refused`.
fn assert_clients_shown(server: &mut Peer, n: usize) {
    let (connected, refused) = (count(server, "connected"), count(server, "refused"));
    if connected != n || refused != 0 {
        server.fail(&format!(
            "the server should have shown exactly {n} client(s) and refused none; \
             it shows {connected} connected and {refused} refused"
        ));
    }
}

/// One line of a client's `reach` file: `HOST:PORT LOCAL-IP RTT-µs
/// TOGETHER-UNTIL BACKOFF-s`.
#[derive(Debug)]
struct ReachLine {
    host: String,
    local: String,
    together_until: u64,
    backoff: u64,
}

/// The lines of `home`'s `reach` file (none if there is no file); each must
/// have the five fields.
fn reach_lines(home: &Path) -> Vec<ReachLine> {
    let path = home.join("reach");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| -> u64 {
                f.get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("reach line field {i} is not a number: {l:?}"))
            };
            assert_eq!(
                f.len(),
                5,
                "reach lines are `HOST:PORT LOCAL-IP RTT-µs UNTIL BACKOFF`: {l:?}"
            );
            num(2);
            ReachLine {
                host: f[0].to_string(),
                local: f[1].to_string(),
                together_until: num(3),
                backoff: num(4),
            }
        })
        .collect()
}

/// A fresh client home whose identity already exists (so that a measured
/// connect does not include making one).
fn client_home() -> TempDir {
    let home = TempDir::new("client-home");
    client_fingerprint(home.path());
    home
}
