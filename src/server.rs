//! Server mode: listen, admit one client at a time, turn others away as
//! busy, and wait for the next client when a chat ends.
//!
//! Handshakes run in their own tasks (inside each transport's acceptor); a
//! doorman task decides, for each finished handshake, whether the peer is
//! admitted or refused, so a refusal never waits on the open chat and the
//! open chat never waits on a refusal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::trust::allow::{AllowList, Verdict};
use crate::ui::render::sanitize_line;

use crate::cli::ChatArgs;
use crate::protocol::close_code;
use crate::session::{self, Role, UserIo};
use crate::transport::TransportKind;
use crate::transport::{Handshaken, Limits, Transport, quic, tcp};
use crate::trust::identity::{self, Identity};
use crate::ui::input::UserInput;

/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the server until Ctrl-C. Returns the process exit status.
pub async fn run(args: &ChatArgs, limits: Limits, mut io: UserIo) -> Result<u8> {
    let identity = server_identity(args)?;
    let allow = AllowList::new(args.allow.clone(), args.allow_file.clone());
    allow.validate()?;
    let fingerprint = identity.fingerprint();
    let transport = args.transport.name();
    match args.transport {
        TransportKind::Quic => {
            let listener = bind_any(args, |addr| {
                quic::Listener::bind(addr, &identity, &limits, HANDSHAKE_TIMEOUT)
                    .map_err(anyhow::Error::from)
            })
            .await?;
            let addr = listener
                .local_addr()
                .context("cannot read the bound address")?;
            io.out.listening(transport, addr, fingerprint);
            let (tx, rx) = mpsc::channel(16);
            let acceptor = listener.spawn_acceptor(tx);
            serve(rx, &mut io, limits, allow.clone()).await;
            acceptor.abort();
            listener.shutdown().await;
        }
        TransportKind::Tcp => {
            let mut bound = None;
            for addr in bind_candidates(args) {
                match tcp::Listener::bind(addr, &identity, HANDSHAKE_TIMEOUT).await {
                    Ok(l) => {
                        bound = Some(l);
                        break;
                    }
                    Err(e) if args.bind.is_none() && addr.is_ipv6() => {
                        info!("{e}; trying IPv4 only");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let listener = bound.context("no address to listen on")?;
            let addr = listener
                .local_addr()
                .context("cannot read the bound address")?;
            io.out.listening(transport, addr, fingerprint);
            let (tx, rx) = mpsc::channel(16);
            let acceptor = listener.spawn_acceptor(tx);
            serve(rx, &mut io, limits, allow.clone()).await;
            acceptor.abort();
        }
    }
    Ok(0)
}

/// The identity from --cert/--key, or the one in the home directory
/// (created on first start).
fn server_identity(args: &ChatArgs) -> Result<Identity> {
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            Identity::load_private(cert, key).context("cannot load --cert/--key")
        }
        (Some(_), None) => anyhow::bail!("--cert needs --key"),
        _ => home_identity(&identity::home_dir(args.home.as_deref())),
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

/// --bind, or all IPv6 interfaces (which on most systems accept IPv4 too)
/// with IPv4-only as the fallback for machines without IPv6.
fn bind_candidates(args: &ChatArgs) -> Vec<SocketAddr> {
    match args.bind {
        Some(ip) => vec![SocketAddr::new(ip, args.port)],
        None => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), args.port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), args.port),
        ],
    }
}

async fn bind_any<L>(args: &ChatArgs, bind: impl Fn(SocketAddr) -> Result<L>) -> Result<L> {
    let mut last = None;
    for addr in bind_candidates(args) {
        match bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => {
                info!("{e:#}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no address to listen on")))
}

/// Serves clients one at a time until the user interrupts.
async fn serve<H: Handshaken>(
    handshakes: mpsc::Receiver<H>,
    io: &mut UserIo,
    limits: Limits,
    allow: AllowList,
) {
    let busy = Arc::new(AtomicBool::new(false));
    let (admit_tx, mut admitted) = mpsc::channel::<(H, Option<String>)>(1);
    let doorman = tokio::spawn(doorman(handshakes, admit_tx, busy.clone(), allow));
    loop {
        tokio::select! {
            biased;
            () = session::interrupted(&mut io.interrupt) => break,
            Some((conn, label)) = admitted.recv() => {
                let peer = conn.peer().clone();
                info!(peer = %peer.addr, "client connected");
                io.out.connected(peer.transport.name(), peer.addr, peer.fingerprint, label.as_deref());
                let mut transport = conn.start(limits.clone()).await;
                let outcome = session::run(&mut transport, io, Role::Server, limits.idle_timeout).await;
                // The last bytes of this connection (a CLOSE, the linger)
                // finish in the background while the next client is served.
                tokio::spawn(transport.finish());
                info!(
                    peer = %peer.addr,
                    "client left: {}",
                    sanitize_line(&outcome.disconnect.describe())
                );
                busy.store(false, Ordering::Release);
                if io.is_interrupted() || outcome.quit {
                    break;
                }
                io.out.info("waiting for a client…");
            }
            input = io.input.recv(), if io.input_open => match input {
                Some(UserInput::Message(_)) => io.out.error("no one is connected; message not sent"),
                Some(UserInput::Invalid(why)) => io.out.error(&why),
                Some(UserInput::Stats) => io.out.info("no chat is open"),
                Some(UserInput::Quit) => break,
                Some(UserInput::End) | None => io.input_open = false,
            },
        }
    }
    doorman.abort();
    io.out.notice("server stopped");
}

/// Decides about each handshaken peer: refused as UNAUTHORIZED when an allow
/// list is set and it is not on it (checked first, so an outsider learns
/// nothing about whether a chat is open), refused as BUSY while a chat is
/// open, admitted otherwise. Refusals run in their own tasks: a slow peer
/// cannot hold up the next decision.
async fn doorman<H: Handshaken>(
    mut handshakes: mpsc::Receiver<H>,
    admit: mpsc::Sender<(H, Option<String>)>,
    busy: Arc<AtomicBool>,
    allow: AllowList,
) {
    while let Some(conn) = handshakes.recv().await {
        let peer = conn.peer().clone();
        let who = peer
            .fingerprint
            .map_or("no certificate".to_string(), |f| f.to_string());
        let label = match allow.check(peer.fingerprint) {
            Verdict::Open => None,
            Verdict::Allowed { label } => label,
            Verdict::Denied => {
                warn!(peer = %peer.addr, identity = %who, "refusing a client not on the allow list");
                crate::ui::terminal::notice(&format!(
                    "turned away {} ({who}): not on the allow list",
                    peer.addr
                ));
                let reason = format!("not on the server's allow list; your identity is {who}");
                tokio::spawn(async move { conn.refuse(close_code::UNAUTHORIZED, &reason).await });
                continue;
            }
        };
        if busy.swap(true, Ordering::AcqRel) {
            info!(peer = %peer.addr, identity = %who, "refusing a client: busy in another chat");
            crate::ui::terminal::notice(&format!("turned away {} ({who}): busy", peer.addr));
            tokio::spawn(conn.refuse(close_code::BUSY, "the server is busy in another chat"));
        } else if admit.send((conn, label)).await.is_err() {
            return;
        }
    }
}
