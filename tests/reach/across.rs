//! One server, started without `--transport`, on QUIC and TCP at once: it
//! serves clients over either, one chat at a time across both.

use super::*;

/// A default server's `listening` says `auto` with both transports; it
/// serves a QUIC client and then a TCP client on the same port, and both
/// chat both ways.
#[test]
fn default_server_serves_quic_then_tcp_on_one_port() {
    let (mut server, addr, fp) = start_default_server(&[]);
    for t in [TransportKind::Quic, TransportKind::Tcp] {
        let mut client = start_client(t, &addr, &fp, &[]);
        await_connected(&mut server, &mut client, t, &fp);
        // Asked for one transport, the client tries that one alone, and
        // has nothing to explain.
        assert_eq!(connecting_transports(&mut client, &addr), [t.name()]);
        let ev = client.events_named("connected")[0].clone();
        check_client_connected(&mut client, &ev, t, &fp, None);
        // Ids count from 0 in each chat.
        exchange(&mut client, &mut server, 0, &format!("hello over {t}"));
        exchange(&mut server, &mut client, 0, &format!("{t} works"));
        finish_client(&mut server, &mut client);
        client.assert_only_json_events();
    }
    assert_clients_shown(&mut server, 2);
}

/// A client chatting over `first`; one over the other transport is turned
/// away as BUSY (close code 1, exit status 1, never `connected`) and the
/// server reports it `refused` over that transport; the open chat goes on.
fn busy_across_transports(first: TransportKind) {
    let second = other(first);
    let (mut server, addr, fp) = start_default_server(&[]);
    let mut chatting = start_client(first, &addr, &fp, &[]);
    await_connected(&mut server, &mut chatting, first, &fp);
    exchange(&mut chatting, &mut server, 0, "the chat is open");

    let mut late = start_client(second, &addr, &fp, &[]);
    let d = expect_turned_away(&mut late, 1);
    eprintln!("turned away: {d}");
    let late_fp = client_fingerprint(late.home().expect("client home"));
    let refused = server.wait_event("refused", TIMEOUT);
    if refused["transport"].as_str() != Some(second.name())
        || refused["code"].as_u64() != Some(1)
        || refused["fingerprint"].as_str() != Some(late_fp.as_str())
    {
        server.fail(&format!(
            "refused should name transport {second}, code 1 and the late client's \
             identity {late_fp}: {refused}"
        ));
    }

    exchange(&mut chatting, &mut server, 1, "still here");
    exchange(&mut server, &mut chatting, 0, "so am I");
    finish_client(&mut server, &mut chatting);
    server.poll();
    let shown = server.events_named("connected").len();
    if shown != 1 || server.events_named("refused").len() != 1 {
        server.fail("exactly one client connected and one refused");
    }
    if server.events_named("message").len() != 2 {
        server.fail("only the chatting client's two messages reach the server's user");
    }
}

#[test]
fn busy_over_quic_turns_a_tcp_client_away() {
    busy_across_transports(TransportKind::Quic);
}

#[test]
fn busy_over_tcp_turns_a_quic_client_away() {
    busy_across_transports(TransportKind::Tcp);
}
