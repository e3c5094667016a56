//! Where TCP connections come from: the server's listening socket and its
//! TLS handshakes (each in a task of its own, under a deadline and within
//! the [budget](crate::transport::budget) of handshakes in progress), the
//! client's connect, and the socket options both use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::{debug, warn};

use super::{LINGER, TcpTransport};
use crate::transport::handshakes::Budget;
use crate::transport::strangers::{Event, StrangerLog};
use crate::transport::{
    Limits, PeerInfo, Side, Transport, TransportKind, handshake, listener, socket,
};
use crate::trust::identity::Identity;
use crate::trust::tls;
use crate::ui::render::sanitize_line;

/// TLS handshakes allowed in progress at once: each holds a descriptor and
/// a few KiB, so a flood cannot use up the process's descriptors. When full,
/// the oldest is cut short (docs/protocol.md §14).
pub const MAX_HANDSHAKES: usize = 1024;

/// TLS handshakes one source (IPv4 address, IPv6 /64) may have in progress.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;

/// Unsent bytes the kernel may hold for us (`TCP_NOTSENT_LOWAT`). Without a
/// limit it takes megabytes of a large message, and an ack or a small
/// message written after them waits until they are on the wire; with it,
/// the rest stays in the writer, where control frames go first.
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// A listening TCP socket with its TLS configuration.
pub struct Listener {
    tcp: Arc<TcpListener>,
    tls: TlsAcceptor,
    handshake_timeout: Duration,
}

/// Errors setting up the TCP transport.
#[derive(Debug, thiserror::Error)]
pub enum TcpSetupError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot bind TCP {addr} ({families})", families = socket::families(*addr))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Listener {
    pub async fn bind(
        addr: SocketAddr,
        identity: &Identity,
        handshake_timeout: Duration,
    ) -> Result<Self, TcpSetupError> {
        let config = tls::server_config(identity)?;
        let tcp = socket::tcp_listener(addr)
            .and_then(TcpListener::from_std)
            .map_err(|source| TcpSetupError::Bind { addr, source })?;
        Ok(Listener {
            tcp: Arc::new(tcp),
            tls: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections forever; each TLS handshake runs in its own task
    /// under a deadline and within the budget, so a client that connects and
    /// stalls blocks no one: when the budget is full the oldest handshake
    /// is cut short, never the newcomer turned away.
    pub fn spawn_acceptor(
        &self,
        tx: mpsc::Sender<listener::Handshaken>,
        log: Arc<StrangerLog>,
    ) -> JoinHandle<()> {
        let (tcp, tls, timeout) = (self.tcp.clone(), self.tls.clone(), self.handshake_timeout);
        let budget = Budget::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE);
        tokio::spawn(async move {
            loop {
                let (socket, from) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        warn!("accept failed: {}", sanitize_line(&e.to_string()));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (mut slot, _) = budget.admit(from.ip());
                let (tls, tx, log) = (tls.clone(), tx.clone(), log.clone());
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        r = tokio::time::timeout(timeout, handshake(tls, socket, from)) => r,
                        () = slot.evicted() => {
                            log.record(Event::TcpEvicted, from, "TLS handshake cut short: too many in progress, this one the oldest");
                            return;
                        }
                    };
                    // Its place in the budget is free once the handshake is
                    // over, whatever the server then does with it.
                    drop(slot);
                    match outcome {
                        Ok(Ok(conn)) => {
                            let _ = tx.send(listener::Handshaken::Tcp(Box::new(conn))).await;
                        }
                        Ok(Err(e)) => log.record(
                            Event::TcpFailed,
                            from,
                            &format!("TLS handshake failed: {e}"),
                        ),
                        Err(_) => log.record(Event::TcpTimedOut, from, "TLS handshake timed out"),
                    }
                });
            }
        })
    }
}

async fn handshake(
    tls: TlsAcceptor,
    socket: TcpStream,
    from: SocketAddr,
) -> Result<Handshaken, std::io::Error> {
    tune(&socket)?;
    let stream = tls.accept(socket).await?;
    let session = stream.get_ref().1;
    // Dropped before any frame is sent (docs/protocol.md §7).
    let version = handshake::check_alpn(session.alpn_protocol()).map_err(std::io::Error::other)?;
    let peer = handshake::peer_info(
        from,
        session.peer_certificates(),
        TransportKind::Tcp,
        version,
    );
    Ok(Handshaken {
        stream: TlsStream::Server(stream),
        peer,
    })
}

/// Socket options for a chat: no Nagle delay, and little unsent data in the
/// kernel (see [`NOTSENT_LOWAT`]).
fn tune(socket: &TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    // An old kernel without the option still chats; acks may just wait
    // longer behind a large message.
    if let Err(e) = set_notsent_lowat(socket, NOTSENT_LOWAT) {
        debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_notsent_lowat(socket: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is an open socket for the whole call (borrowed
    // from `socket`), and the option value is a c_int that lives on this
    // stack frame, passed with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the option is left alone: acks may wait longer behind a large
/// message, nothing more.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_notsent_lowat(_: &TcpStream, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// A TLS connection whose handshake is done, not yet admitted to a chat.
pub struct Handshaken {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Handshaken {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Admits the peer: chat/1 starts on this connection.
    pub fn start(self, limits: Limits) -> TcpTransport {
        TcpTransport::start(self.stream, limits, &self.peer, Side::Server)
    }

    /// Turns the peer away with a close code and reason phrase.
    pub async fn refuse(self, code: u64, reason: &str) {
        // Refusing is closing a chat that never began; the normal close path
        // sends CLOSE, close_notify, and lingers.
        let limits = Limits {
            max_message_size: 0,
            idle_timeout: LINGER * 2,
        };
        let mut transport = TcpTransport::start(self.stream, limits, &self.peer, Side::Server);
        transport.close(code, reason).await;
        transport.finish().await;
    }
}

/// Connects to `addr` as a client.
pub async fn connect(
    addr: SocketAddr,
    client_tls: rustls::ClientConfig,
    limits: &Limits,
) -> Result<(TcpTransport, PeerInfo), std::io::Error> {
    let socket = TcpStream::connect(addr).await?;
    tune(&socket)?;
    let name = rustls_pki_types::ServerName::try_from("chat")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let stream = TlsConnector::from(Arc::new(client_tls))
        .connect(name, socket)
        .await?;
    let session = stream.get_ref().1;
    let version = handshake::check_alpn(session.alpn_protocol()).map_err(std::io::Error::other)?;
    let peer = handshake::peer_info(
        addr,
        session.peer_certificates(),
        TransportKind::Tcp,
        version,
    );
    Ok((
        TcpTransport::start(
            TlsStream::Client(stream),
            limits.clone(),
            &peer,
            Side::Client,
        ),
        peer,
    ))
}
