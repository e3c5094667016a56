//! `[::]` takes IPv4 too on a machine whose default is IPv6-only
//! (`net.ipv6.bindv6only=1`), and a port held on IPv4 is an error naming
//! the families.

use std::process::Command;

use support::netns::{NetPair, Side};

use super::*;

fn ipv6_only_namespace(test: &str) -> Option<NetPair> {
    let pair = NetPair::new_or_skip(test)?;
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            pair.ns(Side::A),
            "sysctl",
            "-qw",
            "net.ipv6.bindv6only=1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::netns::skip(test, "cannot set net.ipv6.bindv6only in a namespace");
        return None;
    }
    Some(pair)
}

fn server_in(pair: &NetPair, bind: &str, port: u16, t: Option<TransportKind>) -> Peer {
    let home = TempDir::new("server-home");
    let mut args = default_server_args(bind, home.path(), port);
    if let Some(t) = t {
        args.extend(["--transport".to_string(), t.name().to_string()]);
    }
    pair.spawn(
        Side::A,
        Launch::new(format!("server@{bind}"), &[])
            .args(&args)
            .home(home),
    )
}

/// A server on `[::]` in a namespace with bindv6only=1 (on both transports,
/// the default) serves a client over IPv4 127.0.0.1, QUIC and TCP.
#[test]
fn ipv6_any_accepts_ipv4_where_the_default_is_ipv6_only() {
    let Some(pair) = ipv6_only_namespace("ipv6_any_accepts_ipv4_where_the_default_is_ipv6_only")
    else {
        return;
    };
    let mut server = server_in(&pair, "::", 0, None);
    let ev = server.wait_event("listening", TIMEOUT);
    let port = ev["addr"]
        .as_str()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or_else(|| server.fail(&format!("listening should carry the address: {ev}")));
    let fp = ev["fingerprint"].as_str().unwrap_or_default().to_string();
    let v4 = format!("127.0.0.1:{port}");
    for t in [TransportKind::Quic, TransportKind::Tcp] {
        let home = TempDir::new("client-home");
        let args = ClientBuilder::new(t, &v4)
            .fingerprint(&fp)
            .command_args(home.path());
        let mut client = pair.spawn(
            Side::A,
            Launch::new(format!("client/{}", t.name()), &[])
                .args(&args)
                .home(home),
        );
        let cev = client.wait_event("connected", TIMEOUT);
        assert_eq!(cev["transport"].as_str(), Some(t.name()), "{cev}");
        let sev = server.wait_event("connected", TIMEOUT);
        let peer = sev["peer"].as_str().unwrap_or_default();
        assert!(
            peer.starts_with("127.0.0.1:"),
            "the server should show the IPv4 peer plainly, not as ::ffff:…: {sev}"
        );
        finish_client(&mut server, &mut client);
    }
}

/// With the port held on IPv4 by another program (here another server on
/// 0.0.0.0), a server on `[::]` with that port does not start half
/// listening: it fails, naming both families.
#[test]
fn port_taken_on_ipv4_is_an_error_naming_it() {
    let Some(pair) = ipv6_only_namespace("port_taken_on_ipv4_is_an_error_naming_it") else {
        return;
    };
    for t in [TransportKind::Quic, TransportKind::Tcp] {
        let mut holder = server_in(&pair, "0.0.0.0", 0, Some(t));
        let ev = holder.wait_event("listening", TIMEOUT);
        let port = ev["addr"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.port())
            .unwrap_or_else(|| holder.fail(&format!("listening should carry the address: {ev}")));
        let mut second = server_in(&pair, "::", port, Some(t));
        let status = second.wait_exit(TIMEOUT);
        assert!(
            !status.success(),
            "a second server on [::]:{port} should fail"
        );
        let err = second.stderr_text();
        assert!(
            err.contains("IPv6 and IPv4") && err.contains(&port.to_string()),
            "the error should name the port and both families: {err}"
        );
    }
}
