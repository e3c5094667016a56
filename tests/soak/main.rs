//! Long runs: many messages both ways at once, and many clients in a row,
//! with the server's memory and file descriptors measured before and after
//! (from /proc). The CI variants are short; the full-size runs are ignored
//! tests: `cargo test --release --test soak -- --ignored`.

use std::collections::HashSet;
use std::time::Duration;

use support::*;

/// Message `i` of a run: mostly small, some empty, every 100th 64 KiB.
fn body(side: u8, i: usize) -> Vec<u8> {
    let len = match i % 100 {
        0 => 64 * 1024,
        n if n % 7 == 0 => 0,
        n => (n * 13) % 300,
    };
    (0..len).map(|j| (j as u8) ^ side ^ (i as u8)).collect()
}

/// Both sides send `n` messages at once; every one must be delivered and
/// acknowledged exactly once, and the server's memory afterwards must stay
/// within `growth_kib` of what it used after a warm-up.
fn both_ways(t: TransportKind, n: usize, growth_kib: u64) {
    let mut chat = start_chat(t, &["--idle-timeout", "60"], &["--idle-timeout", "60"]);
    // Warm up so that buffers and allocator pools exist before the baseline.
    for i in 0..20 {
        exchange(&mut chat.client, &mut chat.server, i, "warm-up");
    }
    let server_pid = chat.server.pid();
    let before = rss_kib(server_pid);
    for i in 0..n {
        chat.client.send_base64(&body(1, i));
        chat.server.send_base64(&body(2, i));
    }
    let timeout = Duration::from_secs(120 + n as u64 / 100);
    // The client's ids continue after its warm-up messages; the server's
    // start at 0.
    let warm = 20u64;
    let sides = [
        (&mut chat.client, warm, 0u64, 2u8),
        (&mut chat.server, 0u64, warm, 1u8),
    ];
    for (peer, own_first, peer_first, peer_side) in sides {
        let acks = peer.collect_events("ack", n, timeout);
        let ids: HashSet<u64> = acks.iter().filter_map(|a| a["id"].as_u64()).collect();
        let want: HashSet<u64> = (own_first..own_first + n as u64).collect();
        assert_eq!(ids, want, "every message acknowledged exactly once");
        let msgs = peer.collect_events("message", n, timeout);
        let mut seen = HashSet::new();
        for m in &msgs {
            let id = m["id"].as_u64().expect("id");
            assert!(seen.insert(id), "message {id} delivered twice");
            let i = (id - peer_first) as usize;
            assert_eq!(message_bytes(m), body(peer_side, i), "message {id} intact");
        }
    }
    let after = rss_kib(server_pid);
    eprintln!(
        "soak {}: {n} messages each way; server RSS {before} KiB before, {after} KiB after",
        t.name()
    );
    assert!(
        after <= before + growth_kib,
        "server RSS grew from {before} KiB to {after} KiB (bound: +{growth_kib} KiB)"
    );
    chat.client.close_stdin();
    chat.client.expect_exit_code(0, TIMEOUT);
    // Nothing arrives twice, late.
    chat.server.settle(Duration::from_millis(300));
    assert_eq!(chat.server.events_named("message").len(), n + 20);
    assert_eq!(chat.client.events_named("message").len(), n);
}

/// Clients in a row, each served and then one turned away as busy while it
/// is open: the server's descriptors and memory must not grow.
fn clients_in_a_row(t: TransportKind, rounds: usize) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let pid = server.pid();
    let round = |server: &mut Peer| {
        let mut client = start_client(t, &addr, &fp, &[]);
        client.wait_event("connected", TIMEOUT);
        server.wait_event("connected", TIMEOUT);
        let mut busy = start_client(t, &addr, &fp, &[]);
        let d = busy.wait_event("disconnected", TIMEOUT);
        assert_eq!(
            d["code"].as_u64(),
            Some(1),
            "second client is turned away: {d}"
        );
        busy.expect_exit_code(1, TIMEOUT);
        client.close_stdin();
        client.expect_exit_code(0, TIMEOUT);
        server.wait_event("disconnected", TIMEOUT);
    };
    for _ in 0..5 {
        round(&mut server);
    }
    // Give refusals' lingering closes time to finish before measuring.
    std::thread::sleep(Duration::from_millis(1500));
    let (fds, rss) = (fd_count(pid), rss_kib(pid));
    for _ in 0..rounds {
        round(&mut server);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (fds_after, rss_after) = (fd_count(pid), rss_kib(pid));
    eprintln!(
        "{} clients in a row ({}): fds {fds} → {fds_after}, RSS {rss} → {rss_after} KiB",
        rounds * 2,
        t.name()
    );
    assert!(
        fds_after <= fds,
        "file descriptors grew from {fds} to {fds_after}"
    );
    assert!(
        rss_after <= rss + 8 * 1024,
        "server RSS grew from {rss} KiB to {rss_after} KiB"
    );
}

fn soak_10k(t: TransportKind) {
    both_ways(t, 10_000, 64 * 1024);
}

fn clients_100(t: TransportKind) {
    clients_in_a_row(t, 50);
}

both_transports!(soak_10k, clients_100);

mod long {
    use super::*;

    #[test]
    #[ignore = "long soak: 100,000 messages each way"]
    fn soak_100k_quic() {
        both_ways(TransportKind::Quic, 100_000, 64 * 1024);
    }

    #[test]
    #[ignore = "long soak: 100,000 messages each way"]
    fn soak_100k_tcp() {
        both_ways(TransportKind::Tcp, 100_000, 64 * 1024);
    }

    #[test]
    #[ignore = "1,000 clients in a row"]
    fn clients_1000_quic() {
        clients_in_a_row(TransportKind::Quic, 500);
    }

    #[test]
    #[ignore = "1,000 clients in a row"]
    fn clients_1000_tcp() {
        clients_in_a_row(TransportKind::Tcp, 500);
    }
}
