//! Server mode: admit one client at a time, turn others away as busy, and
//! wait for the next client when a chat ends.
//!
//! [`run`] is the whole server as a library function, in the shape of
//! mini-redis's: a bound [`Listener`], a [`Config`], the user's I/O and a
//! shutdown signal. The binary, the tests and the benchmark all run it.
//!
//! Handshakes run in their own tasks (inside the listener); a doorman task
//! decides, for each finished handshake, whether the peer is admitted or
//! refused, so a refusal never waits on the open chat and the open chat
//! never waits on a refusal. On chat/2 a connection becomes a client only
//! with its HELLO (docs/protocol.md §12.3): each waits for it in a task of
//! its own, and one that goes away before it (a client's race loser) is
//! never reported; BUSY is decided when HELLO arrives. A chat/1 connection
//! counts as a HELLO at the end of its handshake.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::protocol::codec::{TOKEN_LEN, Token, Version};
use crate::protocol::{Frame, close_code};
use crate::session::{Role, Session};
use crate::transport::{
    Event, Handshaken, Limits, Link, Listener, PeerInfo, Transport, TransportKind,
    agreed_idle_timeout, millis,
};
use crate::trust::allow::{AllowList, Verdict};
use crate::trust::identity::Identity;
use crate::ui::input::UserInput;
use crate::ui::output::{Output, Shown};
use crate::ui::render::sanitize_line;
use crate::ui::{Quit, UserIo};

/// How long a chat/2 connection has to send HELLO (docs/protocol.md §12.3).
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// chat/2 connections waiting for their HELLO at once (each holds a
/// connection and a task for up to [`HELLO_DEADLINE`]). A new one beyond
/// it pushes out the one that has waited longest: a stranger who opens
/// silent connections without end only ever holds up his own.
const MAX_AWAITING_HELLO: usize = 64;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    pub allow: AllowList,
}

/// Runs the server until `shutdown` (Ctrl-C, `/quit`): one chat at a time,
/// other clients turned away while it is open.
pub async fn run(listener: Listener, config: Config, mut io: UserIo, mut shutdown: Quit) {
    io.out.show_now(Shown::Listening {
        transports: listener.transports().to_vec(),
        addr: listener.local_addr(),
        fingerprint: listener.fingerprint(),
    });
    let busy = Arc::new(AtomicBool::new(false));
    let (admit_tx, mut admitted) = mpsc::channel::<Admitted>(1);
    let (stop, stopped) = oneshot::channel();
    let doorman = tokio::spawn(doorman(
        listener,
        Doorman {
            admit: admit_tx,
            busy: busy.clone(),
            allow: config.allow.clone(),
            out: io.out.clone(),
            limits: config.limits.clone(),
        },
        stopped,
    ));
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            Some(client) = admitted.recv() => {
                let quit = serve(client, &mut io, &mut shutdown).await;
                if quit || shutdown.is_triggered() {
                    // Still busy: no one is admitted to a server going away.
                    break;
                }
                busy.store(false, Ordering::Release);
                io.out.info("waiting for a client…");
            }
            input = io.input.recv(), if io.input_open => match input {
                Some(UserInput::Message(_)) => io.out.error("no one is connected; message not sent"),
                Some(UserInput::Invalid(why)) => io.out.error(why),
                Some(UserInput::Stats) => io.out.info("no chat is open"),
                Some(UserInput::End) | None => io.input_open = false,
            },
        }
    }
    let _ = stop.send(());
    if let Ok(listener) = doorman.await {
        listener.shutdown().await;
    }
    io.out.notice("server stopped");
    io.out.finish();
}

/// A client the doorman admitted (and showed as `connected`): its
/// connection is started, and on chat/2 WELCOME is on its way.
struct Admitted {
    link: Link,
    peer: PeerInfo,
    /// The idle timeout agreed with it.
    idle_timeout: Duration,
}

/// One chat with an admitted client. Returns whether the user asked to
/// leave.
async fn serve(client: Admitted, io: &mut UserIo, shutdown: &mut Quit) -> bool {
    let Admitted {
        mut link,
        peer,
        idle_timeout,
    } = client;
    let mut session = Session::new(Role::Server, idle_timeout);
    let outcome = session.run(&mut link, io, shutdown).await;
    // The last bytes of this connection (a CLOSE, the linger) finish in
    // the background while the next client is served.
    tokio::spawn(link.finish());
    info!(
        peer = %peer.addr,
        "client left: {}",
        sanitize_line(&outcome.disconnect.describe())
    );
    outcome.quit
}

/// What the doorman needs besides the listener.
struct Doorman {
    admit: mpsc::Sender<Admitted>,
    busy: Arc<AtomicBool>,
    allow: AllowList,
    /// Its own handle on the output, for the clients it turns away.
    out: Output,
    limits: Limits,
}

/// A chat/2 connection whose HELLO has come.
struct Greeted {
    link: Link,
    peer: PeerInfo,
    label: Option<String>,
    idle_timeout_ms: u64,
}

/// Decides about each handshaken peer until told to stop, then hands the
/// listener back: refused as UNAUTHORIZED when an allow list is set and it
/// is not on it (checked at the handshake, and before anything else, so an
/// outsider learns nothing about whether a chat is open), refused as BUSY
/// while a chat is open, admitted otherwise. Refusals run in their own
/// tasks: a slow peer cannot hold up the next decision.
async fn doorman(
    mut listener: Listener,
    mut d: Doorman,
    mut stop: oneshot::Receiver<()>,
) -> Listener {
    let (greeted_tx, mut greeted) = mpsc::channel(MAX_AWAITING_HELLO);
    // Connections waiting for HELLO, oldest first: each one's task ends
    // when told to (`()`: make room) or when its sender goes (the server
    // stops).
    let mut awaiting: std::collections::VecDeque<oneshot::Sender<()>> = Default::default();
    // Said once per wave, not once per connection: a flood must not flood
    // the log too.
    let mut saturated = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            conn = listener.accept() => {
                let Some(conn) = conn else { break };
                let Some((conn, label)) = d.check_allowed(conn) else { continue };
                if conn.peer().version == Version::V1 {
                    // A chat/1 connection is a client from its handshake on.
                    let peer = conn.peer().clone();
                    if d.is_busy(&peer) {
                        tokio::spawn(RefuseLater::Handshaken(conn).busy());
                        continue;
                    }
                    let link = conn.start(d.limits.clone()).await;
                    let idle_timeout = d.limits.idle_timeout;
                    if !d.admit(link, peer, label, idle_timeout).await {
                        break;
                    }
                    continue;
                }
                awaiting.retain(|task| !task.is_closed());
                if awaiting.len() >= MAX_AWAITING_HELLO
                    && let Some(oldest) = awaiting.pop_front()
                {
                    if !saturated {
                        warn!(
                            "{MAX_AWAITING_HELLO} connections wait for HELLO; dropping the \
                             longest-waiting ones to make room"
                        );
                        saturated = true;
                    }
                let _ = oldest.send(());
                } else if awaiting.len() < MAX_AWAITING_HELLO / 2 {
                    saturated = false;
                }
                let (limits, tx) = (d.limits.clone(), greeted_tx.clone());
                let (evict, evicted) = oneshot::channel();
                tokio::spawn(await_hello(conn, label, limits, tx, evicted));
                awaiting.push_back(evict);
            }
            Some(g) = greeted.recv() => {
                let Greeted { mut link, peer, label, idle_timeout_ms } = g;
                if d.is_busy(&peer) {
                    tokio::spawn(RefuseLater::Link(Box::new(link)).busy());
                    continue;
                }
                let idle_timeout = agreed_idle_timeout(d.limits.idle_timeout, idle_timeout_ms);
                link.set_idle_timeout(idle_timeout);
                link.send_control(Frame::Welcome {
                    token: new_token(),
                    // Chats are not held after a lost connection (yet).
                    resume_window_ms: 0,
                    resumed: false,
                    idle_timeout_ms: millis(d.limits.idle_timeout),
                });
                link.flush();
                if !d.admit(link, peer, label, idle_timeout).await {
                    break;
                }
            }
        }
    }
    // Connections still waiting for HELLO are told the server is going
    // away (their senders drop with `awaiting`); what the doorman could
    // not show yet is counted.
    drop(awaiting);
    d.out.finish();
    listener
}

/// A connection to turn away, in whatever state it is.
enum RefuseLater {
    Handshaken(Handshaken),
    Link(Box<Link>),
}

impl RefuseLater {
    async fn busy(self) {
        self.refuse(close_code::BUSY, "the server is busy in another chat")
            .await;
    }

    async fn refuse(self, code: u64, reason: &str) {
        match self {
            RefuseLater::Handshaken(conn) => conn.refuse(code, reason).await,
            RefuseLater::Link(mut link) => {
                link.close(code, reason).await;
                link.finish().await;
            }
        }
    }
}

impl Doorman {
    /// The allow list's verdict: `None` (and the peer refused as
    /// UNAUTHORIZED) if it is not welcome, else its label.
    #[allow(clippy::type_complexity)]
    fn check_allowed(&mut self, conn: Handshaken) -> Option<(Handshaken, Option<String>)> {
        let peer = conn.peer().clone();
        match self.allow.check(peer.fingerprint) {
            Verdict::Open => Some((conn, None)),
            Verdict::Allowed { label } => Some((conn, label)),
            Verdict::Denied => {
                let who = who(&peer);
                warn!(peer = %peer.addr, identity = %who, "refusing a client not on the allow list");
                self.out.show_now(refused(&peer, close_code::UNAUTHORIZED));
                let reason = format!("not on the server's allow list; your identity is {who}");
                tokio::spawn(async move { conn.refuse(close_code::UNAUTHORIZED, &reason).await });
                None
            }
        }
    }

    /// Whether a chat is open (the caller turns the peer away as BUSY, and
    /// it is reported here); if not, the server is busy from now on (the
    /// caller admits the peer).
    fn is_busy(&mut self, peer: &PeerInfo) -> bool {
        if !self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        info!(peer = %peer.addr, identity = %who(peer), "refusing a client: busy in another chat");
        self.out.show_now(refused(peer, close_code::BUSY));
        true
    }

    /// Shows the client as connected and hands it to the server loop;
    /// false once that is gone. (Shown here, not by the loop, so that a
    /// client turned away right after it is shown after it.)
    async fn admit(
        &mut self,
        mut link: Link,
        peer: PeerInfo,
        label: Option<String>,
        idle_timeout: Duration,
    ) -> bool {
        link.admitted();
        info!(peer = %peer.addr, "client connected");
        self.out.show_now(Shown::Connected {
            transport: peer.transport,
            peer: peer.addr,
            fingerprint: peer.fingerprint,
            label,
            fallback: None,
        });
        let client = Admitted {
            link,
            peer,
            idle_timeout,
        };
        self.admit.send(client).await.is_ok()
    }
}

/// Waits for a chat/2 connection's HELLO and passes it on. A connection
/// that closes first was never a client (a client's race loser, say) and
/// is not reported; one that sends nothing is closed after
/// [`HELLO_DEADLINE`] with PROTOCOL_ERROR.
async fn await_hello(
    conn: Handshaken,
    label: Option<String>,
    limits: Limits,
    greeted: mpsc::Sender<Greeted>,
    mut evicted: oneshot::Receiver<()>,
) {
    let peer = conn.peer().clone();
    // Until HELLO the deadline for it decides, not the idle timer (the
    // transports see to that): a peer silent from the start is told why it
    // is dropped.
    let mut link = conn.start(limits).await;
    let event = tokio::select! {
        event = tokio::time::timeout(HELLO_DEADLINE, link.next_event()) => event,
        why = &mut evicted => {
            let (code, reason) = match why {
                Ok(()) => (close_code::BUSY, "too many connections are waiting to say HELLO; try again"),
                Err(_) => (close_code::GOING_AWAY, "the server is shutting down"),
            };
            debug!(peer = %peer.addr, "closing a connection waiting for HELLO: {reason}");
            link.close(code, reason).await;
            link.finish().await;
            return;
        }
    };
    match event {
        Ok(Event::Hello {
            idle_timeout_ms, ..
        }) => {
            let g = Greeted {
                link,
                peer,
                label,
                idle_timeout_ms,
            };
            if let Err(mpsc::error::SendError(g)) = greeted.send(g).await {
                g.link.finish().await;
            }
        }
        Ok(Event::Closed(why)) => {
            debug!(peer = %peer.addr, "connection closed before HELLO: not a client ({})", sanitize_line(&why.describe()));
            link.finish().await;
        }
        // The transport lets nothing else come first (see `Opening`).
        Ok(_) => {
            link.close(close_code::PROTOCOL_ERROR, "HELLO must come first")
                .await;
            link.finish().await;
        }
        Err(_) => {
            warn!(peer = %peer.addr, "protocol error: no HELLO within {} s", HELLO_DEADLINE.as_secs());
            let reason = format!("no HELLO within {} s", HELLO_DEADLINE.as_secs());
            link.close(close_code::PROTOCOL_ERROR, &reason).await;
            link.finish().await;
        }
    }
}

/// The peer's identity, for log lines.
fn who(peer: &PeerInfo) -> String {
    peer.fingerprint
        .map_or("no certificate".to_string(), |f| f.to_string())
}

fn refused(peer: &PeerInfo, code: u64) -> Shown {
    Shown::Refused {
        transport: peer.transport,
        peer: peer.addr,
        fingerprint: peer.fingerprint,
        code,
    }
}

/// A fresh session token: 16 bytes from the TLS stack's secure random
/// generator (docs/protocol.md §12.2).
fn new_token() -> Token {
    let mut t = [0u8; TOKEN_LEN];
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(&mut t).is_err() {
        // Without resumption (this version) the token names nothing a
        // stranger could take over; a failing generator is still worth a
        // line in the log.
        warn!("the secure random generator failed; the chat's token is not random");
    }
    Token(t)
}

/// Binds a listener for `transports` on `bind` (or, without one, on all
/// IPv6 interfaces, which on most systems accept IPv4 too, with IPv4-only as
/// the fallback for machines without IPv6).
pub async fn bind(
    transports: &[TransportKind],
    bind: Option<IpAddr>,
    port: u16,
    identity: &Identity,
    limits: &Limits,
) -> Result<Listener> {
    let candidates = match bind {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ],
    };
    let mut first = None;
    for addr in candidates {
        match Listener::bind(transports, addr, identity, limits).await {
            Ok(l) => return Ok(l),
            // The port is taken: IPv4 alone would not change that, and the
            // error says which transport found it taken.
            Err(e) if e.addr_in_use() => return Err(e.into()),
            Err(e) => {
                info!("{e}");
                first.get_or_insert(e);
            }
        }
    }
    Err(first.map_or_else(|| anyhow::anyhow!("no address to listen on"), Into::into))
}

/// The identity from `--cert`/`--key`, or the one in the home directory
/// (created on first start).
pub fn identity(cert: Option<&Path>, key: Option<&Path>, home: &Path) -> Result<Identity> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Identity::load_private(cert, key).context("cannot load --cert/--key")
        }
        (Some(_), None) => anyhow::bail!("--cert needs --key"),
        _ => home_identity(home),
    }
}

/// The server identity kept in `home`, created on first use.
pub fn home_identity(home: &Path) -> Result<Identity> {
    let dir = Identity::server_dir(home);
    Identity::load_or_create(&dir, &[hostname()]).with_context(|| {
        format!(
            "cannot load or create the server identity in {}",
            dir.display()
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string(Path::new("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "chat".to_string())
}
