//! Both floods at once on a server listening on both transports (the
//! default): 2,000 silent TCP sockets and 10,000 QUIC Initials a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use super::flood::{capture_initials, send_flood};
use super::tcp::{Stall, attack, runtime};
use super::*;

/// A client over `--transport auto`; returns how long it took to report
/// `connected`, and over what.
fn auto_client_gets_in(server: &mut Peer, addr: &str, fp: &str) -> (Duration, String) {
    let started = Instant::now();
    let mut client = ClientBuilder::auto(addr).fingerprint(fp).spawn();
    let Some(ev) = client.try_wait_event("connected", GET_IN_WITHIN) else {
        client.fail(&format!(
            "a legitimate client should get in within {GET_IN_WITHIN:?} during the floods"
        ));
    };
    let took = started.elapsed();
    server.wait_event("connected", TIMEOUT);
    finish_client(server, &mut client);
    (took, ev["transport"].as_str().unwrap_or("?").to_string())
}

#[test]
fn tcp_and_quic_floods_at_once_do_not_lock_out() {
    let _one = one_attack_at_a_time();
    let initials = capture_initials(2000);
    let (mut server, addr, fp) = start_default_server(SERVER_ARGS);
    let before = rss_kib(server.pid());
    let rt = runtime();
    let (stop, opened) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    attack(
        &rt,
        sock(&addr),
        2000,
        64,
        Stall::Silent,
        stop.clone(),
        opened.clone(),
    );
    let to = sock(&addr);
    let flood =
        thread::spawn(move || send_flood(&initials, to, 256, 10_000, Duration::from_secs(6)));
    thread::sleep(Duration::from_secs(2));
    let got_in = [
        auto_client_gets_in(&mut server, &addr, &fp),
        auto_client_gets_in(&mut server, &addr, &fp),
    ];
    let during = rss_kib(server.pid());
    let sent = flood.join().expect("flood thread");
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(1));
    eprintln!(
        "MEASURED both floods ({} TCP connections, {sent} QUIC Initials): client got in after {} over {}, {} over {}; RSS {before} KiB before, {during} KiB during",
        opened.load(Ordering::Relaxed),
        ms(got_in[0].0),
        got_in[0].1,
        ms(got_in[1].0),
        got_in[1].1
    );
}
