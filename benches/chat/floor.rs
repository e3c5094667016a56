//! The floor: bare ping-pong over the same kind of socket as each transport,
//! with the same I/O model as `chat` (tokio, one `current_thread` runtime per
//! side, each on its own thread), so that the ratio rtt / floor isolates what
//! chat/1, TLS and the session add.
//!
//! - UDP: one 32 B datagram each way (the floor for QUIC).
//! - TCP: 32 B each way on a `TCP_NODELAY` connection (the floor for TLS
//!   over TCP).
//!
//! Each round trip is timed by the client from just before its send to just
//! after its receive.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::util::{CpuClock, spawn_runtime, thread_id};

/// What a ping-pong measured.
pub struct PingPong {
    pub rtts: Vec<Duration>,
    /// CPU time of both threads (client and echo) over the timed round
    /// trips.
    pub cpu: Option<Duration>,
}

/// Longest a single echo may take before the case is declared broken (a lost
/// datagram on loopback would otherwise hang it).
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Round-trip times of `n` UDP ping-pongs of `size` bytes after `warmup`.
pub fn udp(size: usize, warmup: usize, n: usize) -> Result<PingPong> {
    let (ready_tx, ready) = std::sync::mpsc::channel::<(SocketAddr, i64)>();
    let echo = spawn_runtime("floor-udp-echo", move || async move {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        ready_tx.send((sock.local_addr()?, thread_id()))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (len, from) = sock.recv_from(&mut buf).await?;
            // An empty datagram is the client's "done".
            if len == 0 {
                return Ok(());
            }
            sock.send_to(&buf[..len], from).await?;
        }
    })?;
    let (addr, echo_tid) = ready
        .recv_timeout(Duration::from_secs(10))
        .context("UDP echo did not start")?;
    let client = spawn_runtime("floor-udp-client", move || async move {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        sock.connect(addr).await?;
        let msg = vec![b'x'; size];
        let mut buf = vec![0u8; 64 * 1024];
        let mut rtts = Vec::with_capacity(n);
        let mut cpu = CpuClock::new(echo_tid);
        for i in 0..warmup + n {
            if i == warmup {
                cpu.start();
            }
            let t0 = Instant::now();
            sock.send(&msg).await?;
            let got = tokio::time::timeout(ECHO_TIMEOUT, sock.recv(&mut buf))
                .await
                .context("UDP echo lost")??;
            let rtt = t0.elapsed();
            ensure!(got == size, "UDP echo returned {got} bytes, not {size}");
            if i >= warmup {
                rtts.push(rtt);
            }
        }
        let cpu = cpu.stop();
        sock.send(&[]).await?;
        Ok(PingPong { rtts, cpu })
    })?;
    let rtts = client.wait(CASE_TIMEOUT)?;
    echo.wait(Duration::from_secs(5))?;
    Ok(rtts)
}

/// Round-trip times of `n` TCP ping-pongs of `size` bytes after `warmup`.
pub fn tcp(size: usize, warmup: usize, n: usize) -> Result<PingPong> {
    let (ready_tx, ready) = std::sync::mpsc::channel::<(SocketAddr, i64)>();
    let echo = spawn_runtime("floor-tcp-echo", move || async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        ready_tx.send((listener.local_addr()?, thread_id()))?;
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        echo_stream(sock, size).await
    })?;
    let (addr, echo_tid) = ready
        .recv_timeout(Duration::from_secs(10))
        .context("TCP echo did not start")?;
    let client = spawn_runtime("floor-tcp-client", move || async move {
        let mut sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        ping_stream(&mut sock, size, warmup, n, echo_tid).await
    })?;
    let rtts = client.wait(CASE_TIMEOUT)?;
    echo.wait(Duration::from_secs(5))?;
    Ok(rtts)
}

/// The echo side of a stream ping-pong, until the client closes its end.
async fn echo_stream<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, size: usize) -> Result<()> {
    let mut buf = vec![0u8; size];
    loop {
        match sock.read_exact(&mut buf).await {
            Ok(_) => {
                sock.write_all(&buf).await?;
                // (TLS: out of rustls' buffer. TCP: nothing to do.)
                sock.flush().await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The client side of a stream ping-pong: `warmup + n` round trips of
/// `size` bytes, the last `n` timed, with the CPU time of both sides.
async fn ping_stream<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    size: usize,
    warmup: usize,
    n: usize,
    echo_tid: i64,
) -> Result<PingPong> {
    let msg = vec![b'x'; size];
    let mut buf = vec![0u8; size];
    let mut rtts = Vec::with_capacity(n);
    let mut cpu = CpuClock::new(echo_tid);
    for i in 0..warmup + n {
        if i == warmup {
            cpu.start();
        }
        let t0 = Instant::now();
        sock.write_all(&msg).await?;
        sock.flush().await?;
        tokio::time::timeout(ECHO_TIMEOUT, sock.read_exact(&mut buf))
            .await
            .context("the echo stalled")??;
        if i >= warmup {
            rtts.push(t0.elapsed());
        }
    }
    Ok(PingPong {
        rtts,
        cpu: cpu.stop(),
    })
}

/// Round-trip times of `n` TLS 1.3 ping-pongs of `size` bytes after
/// `warmup`: TCP as in [`tcp`], with the chat's own TLS configurations
/// (`chat::trust::tls`) through tokio-rustls, one task per side. Not a floor the
/// targets use, but what TLS alone adds to it.
pub fn tls(
    identity: chat::trust::identity::Identity,
    client: rustls::ClientConfig,
    size: usize,
    warmup: usize,
    n: usize,
) -> Result<PingPong> {
    let server = std::sync::Arc::new(chat::trust::tls::server_config(&identity)?);
    let (ready_tx, ready) = std::sync::mpsc::channel::<(SocketAddr, i64)>();
    let echo = spawn_runtime("floor-tls-echo", move || async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        ready_tx.send((listener.local_addr()?, thread_id()))?;
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        let sock = tokio_rustls::TlsAcceptor::from(server).accept(sock).await?;
        echo_stream(sock, size).await
    })?;
    let (addr, echo_tid) = ready
        .recv_timeout(Duration::from_secs(10))
        .context("TLS echo did not start")?;
    let client = spawn_runtime("floor-tls-client", move || async move {
        let sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("chat")?;
        let mut sock = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
            .connect(name, sock)
            .await?;
        let pingpong = ping_stream(&mut sock, size, warmup, n, echo_tid).await?;
        sock.shutdown().await?;
        Ok(pingpong)
    })?;
    let rtts = client.wait(CASE_TIMEOUT)?;
    echo.wait(Duration::from_secs(5))?;
    Ok(rtts)
}

/// Round-trip times of `n` minimal chat/1-shaped exchanges over quinn after
/// `warmup`: per message the client opens a unidirectional stream, writes
/// `size` bytes and finishes it; the server reads it to its end and writes
/// a 2-byte "ack" on one long-lived stream of its own. Quinn's default
/// transport settings and the chat's TLS configurations, one task per side.
/// Not a floor the targets use: what quinn itself costs for the pattern the
/// chat uses, with none of the chat's code.
pub fn quinn(
    identity: chat::trust::identity::Identity,
    client: rustls::ClientConfig,
    size: usize,
    warmup: usize,
    n: usize,
) -> Result<PingPong> {
    use std::sync::Arc;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
        chat::trust::tls::server_config(&identity)?,
    )?;
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let (ready_tx, ready) = std::sync::mpsc::channel::<(SocketAddr, i64)>();
    let echo = spawn_runtime("floor-quinn-echo", move || async move {
        let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
        ready_tx.send((endpoint.local_addr()?, thread_id()))?;
        let conn = endpoint.accept().await.context("no connection")?.await?;
        let mut acks = conn.open_uni().await?;
        loop {
            let mut stream = match conn.accept_uni().await {
                Ok(s) => s,
                // The client closing the connection is its "done".
                Err(quinn::ConnectionError::ApplicationClosed(_)) => break,
                Err(e) => return Err(e.into()),
            };
            let body = stream.read_to_end(64 * 1024).await?;
            ensure!(body.len() == size, "got {} bytes, not {size}", body.len());
            acks.write_all(b"ok").await?;
        }
        endpoint.wait_idle().await;
        Ok(())
    })?;
    let (addr, echo_tid) = ready
        .recv_timeout(Duration::from_secs(10))
        .context("quinn echo did not start")?;
    let client = spawn_runtime("floor-quinn-client", move || async move {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client)?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint.connect(addr, "chat")?.await?;
        let msg = vec![b'x'; size];
        let mut ack = [0u8; 2];
        let mut acks = None;
        let mut rtts = Vec::with_capacity(n);
        let mut cpu = CpuClock::new(echo_tid);
        for i in 0..warmup + n {
            if i == warmup {
                cpu.start();
            }
            let t0 = Instant::now();
            let mut stream = conn.open_uni().await?;
            stream.write_all(&msg).await?;
            stream.finish()?;
            // The server's stream appears with its first ack.
            let acks = match &mut acks {
                Some(a) => a,
                None => acks.insert(conn.accept_uni().await?),
            };
            tokio::time::timeout(ECHO_TIMEOUT, acks.read_exact(&mut ack))
                .await
                .context("quinn echo stalled")??;
            if i >= warmup {
                rtts.push(t0.elapsed());
            }
        }
        let cpu = cpu.stop();
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok(PingPong { rtts, cpu })
    })?;
    let pingpong = client.wait(CASE_TIMEOUT)?;
    echo.wait(Duration::from_secs(5))?;
    Ok(pingpong)
}
