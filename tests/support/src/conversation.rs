//! One chat between a server and a client: both sides connected, messages
//! exchanged and acknowledged, the client leaving cleanly.

use std::net::SocketAddr;

use serde_json::Value;

use crate::client::start_client;
use crate::peer::Peer;
use crate::process::ChatProcess;
use crate::server::start_server;
use crate::{TIMEOUT, TransportKind};

/// A server and one connected client.
pub struct Chat {
    pub server: Peer,
    pub client: Peer,
    pub addr: String,
    pub fingerprint: String,
}

/// Start a server and a client and wait until both report `connected`.
pub fn start_chat(t: TransportKind, server_extra: &[&str], client_extra: &[&str]) -> Chat {
    let (mut server, addr, fingerprint) = start_server(t, server_extra);
    let mut client = start_client(t, &addr, &fingerprint, client_extra);
    await_connected(&mut server, &mut client, t, &fingerprint);
    Chat {
        server,
        client,
        addr,
        fingerprint,
    }
}

/// Wait for `connected` on both sides (checking the fields of each).
pub fn await_connected(server: &mut Peer, client: &mut Peer, t: TransportKind, server_fp: &str) {
    let cev = client.wait_event("connected", TIMEOUT);
    if cev["transport"].as_str() != Some(t.name()) {
        client.fail(&format!(
            "connected.transport should be {:?}: {cev}",
            t.name()
        ));
    }
    if cev["fingerprint"].as_str() != Some(server_fp) {
        client.fail(&format!(
            "client's connected.fingerprint should be the server's {server_fp}: {cev}"
        ));
    }
    if cev["peer"]
        .as_str()
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .is_none()
    {
        client.fail(&format!("connected.peer should be a socket address: {cev}"));
    }
    let sev = server.wait_event("connected", TIMEOUT);
    if sev["transport"].as_str() != Some(t.name()) {
        server.fail(&format!(
            "connected.transport should be {:?}: {sev}",
            t.name()
        ));
    }
    if sev["peer"]
        .as_str()
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .is_none()
    {
        server.fail(&format!("connected.peer should be a socket address: {sev}"));
    }
}

/// Wait for the client's `connected` and the server's, and check that the
/// client saw `server_fp` and the server saw `client_fp`; returns the
/// server's `connected` event.
pub fn await_connected_identities(
    server: &mut Peer,
    client: &mut Peer,
    t: TransportKind,
    server_fp: &str,
    client_fp: &str,
) -> Value {
    await_connected(server, client, t, server_fp);
    let sev = server
        .events_named("connected")
        .last()
        .map(|v| (*v).clone())
        .expect("server reported connected");
    if sev["fingerprint"].as_str() != Some(client_fp) {
        server.fail(&format!(
            "server's connected.fingerprint should be the client's identity {client_fp}: {sev}"
        ));
    }
    sev
}

/// `from` sends `text` as message `id`; checks `sent` and `ack` on `from`
/// and the `message` on `to`.
pub fn exchange(from: &mut Peer, to: &mut Peer, id: u64, text: &str) {
    from.send_text(text);
    let sent = from.wait_event_id("sent", id, TIMEOUT);
    if sent["bytes"].as_u64() != Some(text.len() as u64) {
        from.fail(&format!("sent.bytes should be {}: {sent}", text.len()));
    }
    let msg = to.wait_event_id("message", id, TIMEOUT);
    if msg["text"].as_str() != Some(text) || msg["bytes"].as_u64() != Some(text.len() as u64) {
        to.fail(&format!(
            "message {id} should carry text {text:?} ({} bytes): {msg}",
            text.len()
        ));
    }
    let ack = from.wait_event_id("ack", id, TIMEOUT);
    if ack["rtt_us"].as_u64().is_none() {
        from.fail(&format!(
            "ack.rtt_us should be a non-negative integer: {ack}"
        ));
    }
}

/// A client that has chatted: close its input and expect exit 0, and the
/// server's `disconnected`.
pub fn finish_client(server: &mut Peer, client: &mut Peer) {
    client.close_stdin();
    client.expect_exit_code(0, TIMEOUT);
    server.wait_event("disconnected", TIMEOUT);
}
