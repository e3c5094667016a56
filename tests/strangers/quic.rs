//! QUIC: a flood of Initials from addresses that never answer, and the
//! bytes one unanswered Initial draws back (amplification).

use std::net::UdpSocket;
use std::thread;

use super::flood::{capture_initials, send_flood};
use super::*;

/// Samples a process's RSS every 100 ms until told to stop; returns the
/// largest.
fn sample_peak(pid: u32, stop: std::sync::mpsc::Receiver<()>) -> u64 {
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib(pid));
        if stop.recv_timeout(Duration::from_millis(100)).is_ok() {
            return peak;
        }
    }
}

/// 10,000 Initials/s for 4 s from 256 sockets on 64 addresses that never
/// answer: a legitimate client gets in during the flood (twice), the
/// server's memory stays bounded and returns near idle afterwards.
#[test]
fn initial_flood_with_rss_before_during_after() {
    let _one = one_attack_at_a_time();
    let t = TransportKind::Quic;
    let initials = capture_initials(2000);
    let (mut server, addr, fp) = start_server(t, SERVER_ARGS);
    let pid = server.pid();
    // Idle, after one chat (so that what a chat allocates once is counted).
    legitimate_client_gets_in(&mut server, t, &addr, &fp);
    let before = rss_kib(pid);

    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let sampler = thread::spawn(move || sample_peak(pid, stop_rx));
    let to = sock(&addr);
    let flood_initials = initials.clone();
    let flood =
        thread::spawn(move || send_flood(&flood_initials, to, 256, 10_000, Duration::from_secs(4)));
    thread::sleep(Duration::from_millis(500));
    let during = [
        legitimate_client_gets_in(&mut server, t, &addr, &fp),
        legitimate_client_gets_in(&mut server, t, &addr, &fp),
    ];
    let sent = flood.join().expect("flood thread");
    let _ = stop_tx.send(());
    let peak = sampler.join().expect("sampler thread");
    // Handshakes begun before the flood's end are over by their deadline
    // (5 s); closed connections drain a few round trips more.
    thread::sleep(Duration::from_secs(7));
    let after = rss_kib(pid);
    let after_client = legitimate_client_gets_in(&mut server, t, &addr, &fp);
    eprintln!(
        "MEASURED quic flood {sent} Initials in 4 s from 256 sockets: RSS before {before} KiB, peak during {peak} KiB, after {after} KiB; legitimate client got in after {} and {} during the flood, {} after",
        ms(during[0]),
        ms(during[1]),
        ms(after_client)
    );
    assert!(
        peak < before + 64 * 1024,
        "the flood should cost the server little memory: {before} KiB before, peak {peak} KiB"
    );
    assert!(
        after < before + 16 * 1024,
        "memory should return near idle after the flood: {before} KiB before, {after} KiB after"
    );
}

/// Bytes sent back to one 1,200-byte Initial from a socket that never
/// answers, over the handshake deadline and a little more.
fn bytes_back(server: SocketAddr, initial: &[u8], source: IpAddr) -> usize {
    let s = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s.send_to(initial, server).expect("send");
    let until = Instant::now() + Duration::from_secs(8);
    let mut total = 0;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < until {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            total += n;
        }
    }
    total
}

/// RFC 9000 §8: before its address is validated, a peer may be sent at most
/// three times what it sent. Measured on an idle server and on one with
/// handshakes in progress (with a Retry threshold above 0 the first would
/// get a whole first flight: 3.12× measured).
#[test]
fn one_unanswered_initial_draws_at_most_three_times_back() {
    let _one = one_attack_at_a_time();
    let initials = capture_initials(40);
    let (_server, addr, _) = start_server(TransportKind::Quic, &[]);
    let to = sock(&addr);
    let idle = bytes_back(to, &initials[0], attacker_ip(0));
    // Past the threshold: enough unanswered handshakes in progress first.
    for (i, initial) in initials[1..30].iter().enumerate() {
        let s = UdpSocket::bind(SocketAddr::new(attacker_ip(i + 1), 0)).expect("bind");
        s.send_to(initial, to).expect("send");
    }
    thread::sleep(Duration::from_millis(300));
    let loaded = bytes_back(to, &initials[35], attacker_ip(40));
    let sent = initials[0].len();
    eprintln!(
        "MEASURED amplification: one {sent} B Initial drew {idle} B back on an idle server ({:.2}x), {loaded} B under load ({:.2}x)",
        idle as f64 / sent as f64,
        loaded as f64 / sent as f64
    );
    assert!(idle <= 3 * sent, "idle: {idle} B back for {sent} B");
    assert!(
        loaded <= 3 * sent,
        "under load: {loaded} B back for {sent} B"
    );
    assert!(
        loaded > 0,
        "under load the server should answer with a Retry"
    );
}
