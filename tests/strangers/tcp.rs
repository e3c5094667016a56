//! TCP handshake lock-out: thousands of connections that never finish
//! their TLS handshake, each reopened as soon as the server closes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use super::*;

/// What each attacking socket does once connected.
#[derive(Clone, Copy, Debug)]
pub enum Stall {
    /// Sends nothing.
    Silent,
    /// Sends a ClientHello one byte a second (slow loris).
    Trickle,
}

/// The start of a TLS ClientHello record promising more than ever comes.
const PARTIAL_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// `sockets` connections to `server`, from `sources` attacker addresses,
/// each reopened as soon as it is closed, until `stop`. Counts connections
/// opened.
pub fn attack(
    rt: &tokio::runtime::Runtime,
    server: SocketAddr,
    sockets: usize,
    sources: usize,
    stall: Stall,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) {
    for i in 0..sockets {
        let (stop, opened) = (stop.clone(), opened.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(socket) = TcpSocket::new_v4() else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if socket
                    .bind(SocketAddr::new(attacker_ip(i % sources), 0))
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let Ok(mut s) = socket.connect(server).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 512];
                let mut sent = 0;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match stall {
                        Stall::Silent => {
                            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
                                .await
                            {
                                Ok(Ok(0)) | Ok(Err(_)) => break,
                                _ => {}
                            }
                        }
                        Stall::Trickle => {
                            let byte = PARTIAL_HELLO[sent % PARTIAL_HELLO.len()];
                            if s.write_all(&[byte]).await.is_err() {
                                break;
                            }
                            sent += 1;
                            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
                                .await
                            {
                                Ok(Ok(0)) | Ok(Err(_)) => break,
                                _ => {}
                            }
                        }
                    }
                }
            }
        });
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// 2,000 stalled sockets from `sources` addresses, reopened when closed;
/// a legitimate client connects three times during the attack. Prints the
/// figures.
fn lock_out_attempt(stall: Stall, sources: usize) {
    let t = TransportKind::Tcp;
    let (mut server, addr, fp) = start_server(t, SERVER_ARGS);
    let rt = runtime();
    let (stop, opened) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    attack(
        &rt,
        sock(&addr),
        2000,
        sources,
        stall,
        stop.clone(),
        opened.clone(),
    );
    // Let the attack fill the budget before the client comes.
    std::thread::sleep(Duration::from_secs(2));
    let (o0, t0) = (opened.load(Ordering::Relaxed), Instant::now());
    let mut times = Vec::new();
    let mut fds = Vec::new();
    for _ in 0..3 {
        fds.push(fd_count(server.pid()));
        times.push(legitimate_client_gets_in(&mut server, t, &addr, &fp));
    }
    let rate = (opened.load(Ordering::Relaxed) - o0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(1));
    eprintln!(
        "MEASURED tcp {stall:?} 2000 sockets from {sources} sources: legitimate client got in after {} (attack: {rate:.0} connections/s, server fds {fds:?})",
        times.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    // One source has a share of the budget only: its sockets cannot pin
    // more than that many descriptors.
    if sources == 1 {
        assert!(
            fds.iter().all(|&n| n < 200),
            "one source should hold at most its share of handshakes: fds {fds:?}"
        );
    }
}

/// 2,000 silent sockets from 64 addresses (the budget of 1,024 is full all
/// the time, the oldest cut short for each newcomer): a legitimate client
/// still gets in, every time.
#[test]
fn silent_sockets_from_many_sources_do_not_lock_out() {
    let _one = one_attack_at_a_time();
    lock_out_attempt(Stall::Silent, 64);
}

/// 2,000 slow-loris sockets (a ClientHello at 1 byte/s) from 64 addresses.
#[test]
fn slow_loris_from_many_sources_does_not_lock_out() {
    let _one = one_attack_at_a_time();
    lock_out_attempt(Stall::Trickle, 64);
}

/// 2,000 silent sockets from ONE address: it holds its share (32) and no
/// more, so it pins few descriptors and never fills the budget.
#[test]
fn silent_sockets_from_one_source_get_only_its_share() {
    let _one = one_attack_at_a_time();
    lock_out_attempt(Stall::Silent, 1);
}
