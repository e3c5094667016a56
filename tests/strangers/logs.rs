//! What a flood of failed handshakes writes to the server's stderr: a
//! burst of warnings with plain addresses, then one summary line, and no
//! colour codes (stderr is a pipe here).

use std::io::Write;

use super::*;

/// 400 connections sending garbage instead of a ClientHello, to a server
/// on `[::]` reached over IPv4: at most the burst (50) is written one by
/// one, a summary says how many more failed, addresses are plain IPv4,
/// there is no escape character anywhere.
#[test]
fn failed_handshakes_are_summarised_in_plain_text() {
    let _one = one_attack_at_a_time();
    let (mut server, addr, _) = start_server_with(TransportKind::Tcp, "::", &[], &[], true);
    let port = sock(&addr).port();
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let mut garbage = vec![0u8; 64];
    garbage[0] = 0x00; // not a TLS record
    for i in 0..400 {
        let socket = std::net::TcpStream::connect(to);
        if let Ok(mut s) = socket {
            let _ = s.write_all(&garbage);
            drop(s);
        }
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(25);
    let summary = loop {
        let text = server.stderr_text();
        if let Some(line) = text.lines().find(|l| l.contains("in the last")) {
            break line.to_string();
        }
        if Instant::now() >= deadline {
            server.fail("a summary of the failed handshakes should be written within a window");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = server.stderr_text();
    let one_by_one = text
        .lines()
        .filter(|l| l.contains("handshake failed"))
        .count();
    eprintln!(
        "MEASURED logs: 400 failed handshakes wrote {} bytes of stderr, {one_by_one} lines one by one; summary: {summary}",
        text.len()
    );
    assert!(
        one_by_one <= 50,
        "at most the burst one by one, got {one_by_one}:\n{text}"
    );
    assert!(summary.contains("TLS handshakes failed"), "{summary}");
    assert!(
        !text.contains('\x1b'),
        "no colour codes into a pipe:\n{text}"
    );
    assert!(
        !text.contains("::ffff:"),
        "IPv4 peers shown plainly:\n{text}"
    );
    assert!(
        text.contains("127.0.0.1:"),
        "the peers' addresses are shown:\n{text}"
    );
}
