//! Client mode: resolve the server, verify it by fingerprint, connect over
//! the chosen transport, chat until either side leaves.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use crate::cli::{ChatArgs, TransportKind};
use crate::identity::{self, Fingerprint};
use crate::session::{self, Role, UserIo};
use crate::tls::{self, FingerprintVerifier, ServerTrust};
use crate::transport::{Limits, PeerInfo, Transport, quic, tcp};

/// How long one connection attempt (to one resolved address) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the client. Returns the process exit status.
pub async fn run(args: &ChatArgs, limits: Limits, mut io: UserIo) -> Result<u8> {
    let trust = server_trust(args)?;
    let verifier = FingerprintVerifier::new(trust.clone());
    let config = tls::client_config(verifier.clone(), None)?;
    let addrs = resolve(&args.addr, args.port).await?;
    let mut failures = Vec::new();
    for addr in addrs {
        info!(%addr, transport = args.transport.name(), "connecting");
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, async {
            match args.transport {
                TransportKind::Quic => quic::connect(addr, config.clone(), &limits)
                    .await
                    .map(|(t, p)| Connected::Quic(t, p))
                    .map_err(|e| e.to_string()),
                TransportKind::Tcp => tcp::connect(addr, config.clone(), &limits)
                    .await
                    .map(|(t, p)| Connected::Tcp(t, p))
                    .map_err(|e| e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        match attempt {
            Ok(Connected::Quic(t, p)) => return chat(t, p, &limits, &mut io).await,
            Ok(Connected::Tcp(t, p)) => return chat(t, p, &limits, &mut io).await,
            Err(e) => {
                if let (ServerTrust::Pinned(want), Some(seen)) = (&trust, verifier.seen())
                    && *want != seen
                {
                    bail!(
                        "the server at {addr} presented fingerprint {seen}, but {want} was pinned; \
                         refusing to connect (if the server's certificate really changed, \
                         check the new fingerprint with its owner)"
                    );
                }
                warn!(%addr, "cannot connect: {e}");
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    bail!("cannot connect to {}: {}", args.addr, failures.join("; "))
}

enum Connected {
    Quic(quic::QuicTransport, PeerInfo),
    Tcp(tcp::TcpTransport, PeerInfo),
}

async fn chat<T: Transport>(
    mut transport: T,
    peer: PeerInfo,
    limits: &Limits,
    io: &mut UserIo,
) -> Result<u8> {
    io.out
        .connected(peer.transport, peer.addr, peer.fingerprint);
    let outcome = session::run(&mut transport, io, Role::Client, limits.idle_timeout).await;
    drop(transport);
    Ok(if outcome.disconnect.is_normal() { 0 } else { 1 })
}

/// Pinned fingerprint, pinned certificate file, or (only when asked for) no
/// verification at all.
fn server_trust(args: &ChatArgs) -> Result<ServerTrust> {
    if let Some(fp) = args.fingerprint {
        return Ok(ServerTrust::Pinned(fp));
    }
    if let Some(path) = &args.cert {
        let cert = identity::load_cert(path).context("cannot read --cert")?;
        return Ok(ServerTrust::Pinned(Fingerprint::of(&cert)));
    }
    if args.insecure {
        eprintln!(
            "WARNING: --insecure: the server's identity is NOT verified. Anyone between you \
             and the server can read and change this chat."
        );
        warn!("server verification disabled by --insecure");
        return Ok(ServerTrust::AnyValidSignature);
    }
    bail!(
        "cannot verify the server: pass --fingerprint sha256:… (the server prints its \
         fingerprint when it starts listening), or --cert with the server's certificate file, \
         or --insecure to skip verification"
    )
}

/// Resolves `HOST`, `HOST:PORT`, `IP`, `IPv4:PORT` or `[IPv6]:PORT` to every
/// address it names.
pub async fn resolve(addr: &str, default_port: u16) -> Result<Vec<SocketAddr>> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(vec![sa]);
    }
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, default_port)]);
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .with_context(|| format!("bad port in --addr {addr:?}"))?;
            (h, port)
        }
        _ => (addr, default_port),
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host:?}"))?
        .collect();
    if found.is_empty() {
        bail!("{host:?} resolves to no address");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_in_every_form_resolve() {
        let v4: SocketAddr = "127.0.0.1:7200".parse().unwrap();
        let v6: SocketAddr = "[::1]:7200".parse().unwrap();
        assert_eq!(resolve("127.0.0.1", 7200).await.unwrap(), vec![v4]);
        assert_eq!(resolve("127.0.0.1:7200", 1).await.unwrap(), vec![v4]);
        assert_eq!(resolve("[::1]:7200", 1).await.unwrap(), vec![v6]);
        assert_eq!(resolve("::1", 7200).await.unwrap(), vec![v6]);
        assert_eq!(resolve("[::1]", 7200).await.unwrap(), vec![v6]);
        let local = resolve("localhost:7200", 1).await.unwrap();
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7200)
        );
        assert!(resolve("localhost:notaport", 1).await.is_err());
    }
}
