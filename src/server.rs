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
//! never waits on a refusal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::protocol::close_code;
use crate::session::{Role, Session};
use crate::transport::{Handshaken, Limits, Listener, Transport, TransportKind};
use crate::trust::allow::{AllowList, Verdict};
use crate::trust::identity::Identity;
use crate::ui::input::UserInput;
use crate::ui::output::{Output, Shown};
use crate::ui::render::sanitize_line;
use crate::ui::{Quit, UserIo};

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
        transport: listener.transport(),
        addr: listener.local_addr(),
        fingerprint: listener.fingerprint(),
    });
    let busy = Arc::new(AtomicBool::new(false));
    let (admit_tx, mut admitted) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel();
    let doorman = tokio::spawn(doorman(
        listener,
        Doorman {
            admit: admit_tx,
            busy: busy.clone(),
            allow: config.allow.clone(),
            out: io.out.clone(),
        },
        stopped,
    ));
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            Some((conn, label)) = admitted.recv() => {
                let quit = serve(conn, label, &config.limits, &mut io, &mut shutdown).await;
                busy.store(false, Ordering::Release);
                if quit || shutdown.is_triggered() {
                    break;
                }
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

/// One chat with an admitted client. Returns whether the user asked to
/// leave.
async fn serve(
    conn: Handshaken,
    label: Option<String>,
    limits: &Limits,
    io: &mut UserIo,
    shutdown: &mut Quit,
) -> bool {
    let peer = conn.peer().clone();
    info!(peer = %peer.addr, "client connected");
    io.out.show_now(Shown::Connected {
        transport: peer.transport,
        peer: peer.addr,
        fingerprint: peer.fingerprint,
        label,
    });
    let mut link = conn.start(limits.clone()).await;
    let mut session = Session::new(Role::Server, limits.idle_timeout);
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
    admit: mpsc::Sender<(Handshaken, Option<String>)>,
    busy: Arc<AtomicBool>,
    allow: AllowList,
    /// Its own handle on the output, for the clients it turns away.
    out: Output,
}

/// Decides about each handshaken peer until told to stop, then hands the
/// listener back: refused as UNAUTHORIZED when an allow list is set and it
/// is not on it (checked first, so an outsider learns nothing about whether
/// a chat is open), refused as BUSY while a chat is open, admitted
/// otherwise. Refusals run in their own tasks: a slow peer cannot hold up
/// the next decision.
async fn doorman(
    mut listener: Listener,
    mut d: Doorman,
    mut stop: oneshot::Receiver<()>,
) -> Listener {
    loop {
        let conn = tokio::select! {
            _ = &mut stop => return listener,
            conn = listener.accept() => match conn {
                Some(conn) => conn,
                None => return listener,
            },
        };
        let peer = conn.peer().clone();
        let who = peer
            .fingerprint
            .map_or("no certificate".to_string(), |f| f.to_string());
        let refused = |code| Shown::Refused {
            transport: peer.transport,
            peer: peer.addr,
            fingerprint: peer.fingerprint,
            code,
        };
        let label = match d.allow.check(peer.fingerprint) {
            Verdict::Open => None,
            Verdict::Allowed { label } => label,
            Verdict::Denied => {
                warn!(peer = %peer.addr, identity = %who, "refusing a client not on the allow list");
                d.out.show_now(refused(close_code::UNAUTHORIZED));
                let reason = format!("not on the server's allow list; your identity is {who}");
                tokio::spawn(async move { conn.refuse(close_code::UNAUTHORIZED, &reason).await });
                continue;
            }
        };
        if d.busy.swap(true, Ordering::AcqRel) {
            info!(peer = %peer.addr, identity = %who, "refusing a client: busy in another chat");
            d.out.show_now(refused(close_code::BUSY));
            tokio::spawn(conn.refuse(close_code::BUSY, "the server is busy in another chat"));
        } else if d.admit.send((conn, label)).await.is_err() {
            return listener;
        }
    }
}

/// Binds a listener for `transport` on `bind` (or, without one, on all
/// IPv6 interfaces, which on most systems accept IPv4 too, with IPv4-only as
/// the fallback for machines without IPv6).
pub async fn bind(
    transport: TransportKind,
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
    let mut last = None;
    for addr in candidates {
        match Listener::bind(transport, addr, identity, limits).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                info!("{e}");
                last = Some(e);
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no address to listen on"), Into::into))
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
