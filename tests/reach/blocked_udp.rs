//! UDP blocked on the way to the server: a default server in one network
//! namespace, default clients in another, and an nftables rule on the
//! server's side that drops UDP to the chat port silently, or rejects it
//! with ICMP port-unreachable. The client must chat over TCP, connected
//! well within QUIC's 10 s timeout.

use support::netns::{NetPair, Side};

use super::*;

/// What happens to UDP sent to the server's port.
#[derive(Clone, Copy, Debug)]
enum Block {
    /// Dropped, as by a firewall that says nothing.
    Drop,
    /// Refused with ICMP port-unreachable.
    Reject,
}

fn udp_blocked(how: Block, test: &str) {
    let Some(net) = NetPair::new_or_skip(test) else {
        return;
    };
    let (mut server, addr, fp) = net.start_default_server(&[]);
    let port = port_of(&addr);

    // Before the rule: the same set-up chats over QUIC, so what follows
    // is the rule's doing.
    let mut before = net.start_default_client(&addr, &fp, &[]);
    let ev = before.wait_event("connected", TIMEOUT);
    check_client_connected(&mut before, &ev, TransportKind::Quic, &fp, None);
    server_connected_over(&mut server, TransportKind::Quic);
    exchange(&mut before, &mut server, 0, "over QUIC while UDP passes");
    finish_client(&mut server, &mut before);

    let rule = match how {
        Block::Drop => format!("udp dport {port} counter drop"),
        Block::Reject => {
            format!("udp dport {port} counter reject with icmpx type port-unreachable")
        }
    };
    net.set_rules(Side::A, &[&rule]);

    let started = Instant::now();
    let mut client = net.start_default_client(&addr, &fp, &[]);
    let (ev, took) = connected_after(&mut client, started);
    measured(&format!("{test}: connected over TCP"), took);
    let why = check_client_connected(&mut client, &ev, TransportKind::Tcp, &fp, Some("QUIC"));
    eprintln!("{test}: fallback {why:?}");
    assert_eq!(connecting_transports(&mut client, &addr), ["quic", "tcp"]);
    assert!(
        took < FALLBACK_BOUND,
        "{test}: connected after {took:?}; the fallback should not wait for QUIC's 10 s timeout"
    );
    server_connected_over(&mut server, TransportKind::Tcp);
    exchange(&mut client, &mut server, 0, "over TCP, UDP being blocked");
    exchange(&mut server, &mut client, 0, "heard over TCP");
    finish_client(&mut server, &mut client);
    let hit = net.dropped();
    assert!(
        hit > 0,
        "{test}: the rule should have met the client's QUIC packets:\n{}",
        net.ruleset(Side::A)
    );
    eprintln!("{test}: {hit} UDP packets blocked");
    assert_clients_shown(&mut server, 2);
}

#[test]
fn udp_dropped_silently_chats_over_tcp() {
    udp_blocked(Block::Drop, "udp_dropped_silently_chats_over_tcp");
}

#[test]
fn udp_rejected_with_port_unreachable_chats_over_tcp() {
    udp_blocked(
        Block::Reject,
        "udp_rejected_with_port_unreachable_chats_over_tcp",
    );
}
