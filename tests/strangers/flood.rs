//! Real QUIC Initials for a flood: quinn clients connect to a UDP socket of
//! ours that never answers, and we keep the first datagram of each (a
//! 1,200-byte Initial with a ClientHello and a fresh connection ID). Sent
//! again from other sockets, they are what a spoofing attacker sends: the
//! server cannot tell.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::Arc;

use chat::trust::tls::{FingerprintVerifier, ServerTrust, client_config};

use super::*;

/// Whether a datagram starts with a QUIC v1 Initial packet.
fn is_initial(d: &[u8]) -> bool {
    d.len() >= 1200 && d[0] & 0xf0 == 0xc0 && d[1..5] == [0, 0, 0, 1]
}

/// The destination connection ID of a long-header packet.
fn dcid(d: &[u8]) -> &[u8] {
    let len = d[5] as usize;
    &d[6..(6 + len).min(d.len())]
}

/// `n` distinct client Initials offering ALPN chat/2.
pub fn capture_initials(n: usize) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let collector = UdpSocket::bind("127.0.0.1:0").expect("bind collector");
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let to = collector.local_addr().expect("collector address");
    let mut tls = client_config(
        FingerprintVerifier::new(ServerTrust::AnyValidSignature),
        None,
    )
    .expect("client TLS configuration");
    tls.alpn_protocols = vec![b"chat/2".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        let _guard = rt.enter();
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
        let batch = (n - out.len()).min(500);
        let pending: Vec<_> = (0..batch)
            .filter_map(|_| endpoint.connect_with(config.clone(), to, "chat").ok())
            .collect();
        // Drive the endpoint so that the Initials leave.
        rt.block_on(tokio::time::sleep(Duration::from_millis(200)));
        let mut buf = vec![0u8; 2048];
        let mut got = 0;
        while got < batch {
            let Ok(len) = collector.recv(&mut buf) else {
                break;
            };
            let d = &buf[..len];
            if is_initial(d) && seen.insert(dcid(d).to_vec()) {
                out.push(d.to_vec());
                got += 1;
            }
        }
        drop(pending);
        endpoint.close(0u32.into(), b"");
        drop(endpoint);
    }
    out
}

/// Sends `initials` to `server` round robin from `sockets` sockets bound to
/// the attackers' addresses, at about `rate` datagrams a second, for
/// `duration`; never reads what comes back. Returns datagrams sent.
pub fn send_flood(
    initials: &[Vec<u8>],
    server: SocketAddr,
    sockets: usize,
    rate: u64,
    duration: Duration,
) -> u64 {
    let senders: Vec<UdpSocket> = (0..sockets)
        .map(|i| {
            let s = UdpSocket::bind(SocketAddr::new(attacker_ip(i), 0)).expect("bind attacker");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        // Paced in slices of 10 ms.
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 + rate / 100;
        while sent < due {
            let i = sent as usize;
            let _ = senders[i % senders.len()].send_to(&initials[i % initials.len()], server);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sent
}
