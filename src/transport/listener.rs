//! The server's side of both transports behind one interface: bind, accept
//! the next connection whose handshake is done, shut down.
//!
//! Each transport's acceptor runs handshakes in tasks of their own and
//! hands finished ones to one channel, so the server sees a single stream
//! of [`Handshaken`] connections whatever carries them; a listener on both
//! transports at once is two acceptors feeding the same channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::strangers::{self, StrangerLog};
use super::{Limits, Link, PeerInfo, Tasks, TransportKind, quic, tcp};
use crate::trust::identity::{Fingerprint, Identity};

/// How long a client has to complete its handshake (TLS over TCP and QUIC
/// alike): a stalled handshake gives its place in the budget back then.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Finished handshakes waiting for the server to decide about them.
const ACCEPT_QUEUE: usize = 16;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Quic(#[from] quic::QuicSetupError),
    #[error(transparent)]
    Tcp(#[from] tcp::TcpSetupError),
    #[error("cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
    /// A later transport could not have the port the first one picked.
    #[error(transparent)]
    Taken(Box<BindError>),
}

/// A connection whose handshake is done but which is not yet in a chat: the
/// server decides whether to admit it ([`start`](Self::start)) or turn it
/// away ([`refuse`](Self::refuse)).
pub enum Handshaken {
    Quic(quic::Handshaken),
    /// Boxed: it holds its TLS stream inline.
    Tcp(Box<tcp::Handshaken>),
}

impl BindError {
    /// Whether the address was in use (rather than, say, not available on
    /// this machine).
    pub fn addr_in_use(&self) -> bool {
        let io = match self {
            BindError::Quic(quic::QuicSetupError::Bind { source, .. }) => source,
            BindError::Tcp(tcp::TcpSetupError::Bind { source, .. }) => source,
            BindError::Taken(inner) => return inner.addr_in_use(),
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::AddrInUse
    }
}

impl Handshaken {
    pub fn peer(&self) -> &PeerInfo {
        match self {
            Handshaken::Quic(h) => h.peer(),
            Handshaken::Tcp(h) => h.peer(),
        }
    }

    /// Admits the peer: the chat/1 connection starts.
    pub async fn start(self, limits: Limits) -> Link {
        match self {
            Handshaken::Quic(h) => Link::Quic(h.start(limits).await),
            Handshaken::Tcp(h) => Link::Tcp(Box::new(h.start(limits))),
        }
    }

    /// Turns the peer away with a close code and reason phrase.
    pub async fn refuse(self, code: u64, reason: &str) {
        match self {
            Handshaken::Quic(h) => h.refuse(code, reason),
            Handshaken::Tcp(h) => h.refuse(code, reason).await,
        }
    }
}

/// One transport's listening socket.
enum Endpoint {
    Quic(quic::Listener),
    Tcp(tcp::Listener),
}

/// A server's listening sockets and the handshakes they finished.
pub struct Listener {
    endpoints: Vec<Endpoint>,
    addr: SocketAddr,
    transports: Vec<TransportKind>,
    fingerprint: Fingerprint,
    incoming: mpsc::Receiver<Handshaken>,
    /// Kept so that the acceptors stop when the listener goes.
    _acceptors: Tasks,
}

/// Times a listener on several transports tries another port when it was
/// given port 0 and the port the first transport got is taken on another.
const PORT_TRIES: usize = 16;

impl Listener {
    /// Listens on `addr` over each of `transports` (the same port for all:
    /// with port 0, the first transport picks it and the others follow).
    pub async fn bind(
        transports: &[TransportKind],
        addr: SocketAddr,
        identity: &Identity,
        limits: &Limits,
    ) -> Result<Listener, BindError> {
        let mut tries = if addr.port() == 0 { PORT_TRIES } else { 1 };
        loop {
            tries -= 1;
            match Self::bind_once(transports, addr, identity, limits).await {
                Err(BindError::Taken(e)) if tries > 0 => {
                    tracing::debug!("{e}; trying another port");
                }
                Err(BindError::Taken(e)) => return Err(*e),
                other => return other,
            }
        }
    }

    async fn bind_once(
        transports: &[TransportKind],
        addr: SocketAddr,
        identity: &Identity,
        limits: &Limits,
    ) -> Result<Listener, BindError> {
        let (tx, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let mut endpoints = Vec::new();
        // Aborted on the way out if a later transport cannot bind, so that
        // no socket of this attempt stays bound.
        let mut acceptors = Tasks(Vec::new());
        let log = Arc::new(StrangerLog::default());
        acceptors.0.push(spawn_log_flusher(log.clone()));
        let mut at = addr;
        for (i, &transport) in transports.iter().enumerate() {
            let bound: Result<Endpoint, BindError> = match transport {
                TransportKind::Quic => {
                    quic::Listener::bind(at, identity, limits, HANDSHAKE_TIMEOUT)
                        .map(Endpoint::Quic)
                        .map_err(Into::into)
                }
                TransportKind::Tcp => tcp::Listener::bind(at, identity, HANDSHAKE_TIMEOUT)
                    .await
                    .map(Endpoint::Tcp)
                    .map_err(Into::into),
            };
            let bound = match bound {
                Ok(b) => b,
                // The port the first transport picked may be taken on this
                // one: worth another try with another port.
                Err(e) if i > 0 && addr.port() == 0 => return Err(BindError::Taken(Box::new(e))),
                Err(e) => return Err(e),
            };
            let local = match &bound {
                Endpoint::Quic(l) => l.local_addr(),
                Endpoint::Tcp(l) => l.local_addr(),
            }
            .map_err(BindError::LocalAddr)?;
            if i == 0 {
                at = local;
            }
            acceptors.0.push(match &bound {
                Endpoint::Quic(l) => l.spawn_acceptor(tx.clone(), log.clone()),
                Endpoint::Tcp(l) => l.spawn_acceptor(tx.clone(), log.clone()),
            });
            endpoints.push(bound);
        }
        Ok(Listener {
            endpoints,
            addr: at,
            transports: transports.to_vec(),
            fingerprint: identity.fingerprint(),
            incoming,
            _acceptors: acceptors,
        })
    }

    /// The address it listens on (with the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The transports it listens on, QUIC first.
    pub fn transports(&self) -> &[TransportKind] {
        &self.transports
    }

    /// The fingerprint of the identity it presents.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The next connection whose handshake is done; `None` once the
    /// acceptors have stopped.
    pub async fn accept(&mut self) -> Option<Handshaken> {
        self.incoming.recv().await
    }

    /// Stops accepting, closes every QUIC connection with GOING_AWAY and
    /// gives the CONNECTION_CLOSE frames a moment to leave.
    pub async fn shutdown(self) {
        drop(self._acceptors);
        for endpoint in &self.endpoints {
            if let Endpoint::Quic(l) = endpoint {
                l.shutdown().await;
            }
        }
    }
}

/// Writes the summary of warnings about strangers held back in a window,
/// also when the flood has stopped and nothing else would trigger it.
fn spawn_log_flusher(log: Arc<StrangerLog>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(strangers::WINDOW / 2);
        loop {
            tick.tick().await;
            log.flush();
        }
    })
}
