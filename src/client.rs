//! Client mode: resolve the server, decide how to trust it (pinned
//! fingerprint, known host, or first contact), connect over the chosen
//! transport, and chat until either side leaves.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tracing::{debug, info, warn};

use crate::cli::ChatArgs;
use crate::protocol::close_code;
use crate::session::{Role, Session};
use crate::transport::{self, Limits, Link, PeerInfo, Transport};
use crate::trust::identity::{self, Fingerprint, Identity};
use crate::trust::known_hosts::{self, KnownHosts};
use crate::trust::tls::{self, FingerprintVerifier, ServerTrust};
use crate::ui::output::Shown;
use crate::ui::render::sanitize_line;
use crate::ui::{self, Quit};

/// How long one connection attempt (to one resolved address) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the decision to trust the server comes from.
#[derive(Debug, Clone)]
enum TrustSource {
    /// --fingerprint or --cert: never written to known_hosts.
    Pinned(Fingerprint),
    /// An entry of known_hosts.
    Known(known_hosts::Entry),
    /// Never seen: ask (or --accept-new) after the handshake, before chatting.
    FirstContact,
    /// --insecure.
    Unverified,
}

/// How long the output may go without taking anything before the client
/// exits without waiting for it (a stdout that nobody reads).
const OUTPUT_STALL: Duration = Duration::from_secs(2);

/// Runs the client until the chat ends or `quit` (Ctrl-C, /quit). Returns
/// the process exit status.
pub async fn run(args: &ChatArgs, limits: Limits, quit: Quit) -> Result<u8> {
    let home = identity::home_dir(args.home.as_deref());
    let me = identity(&home)?;
    let host = host_key(&args.addr, args.port)?;
    let known = KnownHosts::in_home(&home);
    let source = trust_source(args, &known, &host)?;
    let verifier = FingerprintVerifier::new(match &source {
        TrustSource::Pinned(fp) => ServerTrust::Pinned(*fp),
        TrustSource::Known(entry) => ServerTrust::Pinned(entry.fingerprint),
        TrustSource::FirstContact | TrustSource::Unverified => ServerTrust::AnyValidSignature,
    });
    let config = tls::client_config(verifier.clone(), Some(&me))?;
    let mut failures = Vec::new();
    let interactive = !args.json && crate::ui::terminal::is_interactive();
    for addr in resolve(&args.addr, args.port).await? {
        info!(%addr, transport = args.transport.name(), "connecting");
        if interactive {
            eprintln!(
                "connecting to {addr} over {}… (Ctrl-C to give up)",
                args.transport.name()
            );
        }
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            transport::connect(args.transport, addr, config.clone(), &limits),
        );
        let mut ctrl_c = quit.clone();
        let attempt = tokio::select! {
            attempt = attempt => attempt.unwrap_or_else(|_| Err(transport::ConnectError::TimedOut)),
            () = ctrl_c.wait() => {
                bail!("interrupted while connecting to {addr}")
            }
        };
        let chat = Chat {
            args,
            limits: &limits,
            host: &host,
            known: &known,
            source: &source,
            quit: quit.clone(),
        };
        match attempt {
            Ok((link, peer)) => return chat.run(link, peer).await,
            Err(e) => {
                if let Some(seen) = verifier.seen() {
                    mismatch(&source, &addr, seen, &known)?;
                }
                // Reported with the others if no address works.
                debug!(%addr, "cannot connect: {}", sanitize_line(&e.to_string()));
                failures.push(format!("{addr}: {}", sanitize_line(&e.to_string())));
            }
        }
    }
    bail!("cannot connect to {}: {}", args.addr, failures.join("; "))
}

/// Fails with a full explanation if `seen` is not the fingerprint we expected.
fn mismatch(
    source: &TrustSource,
    addr: &SocketAddr,
    seen: Fingerprint,
    known: &KnownHosts,
) -> Result<()> {
    match source {
        TrustSource::Pinned(want) if *want != seen => bail!(
            "the server at {addr} presented fingerprint {seen}, but {want} was pinned; \
             refusing to connect (if the server's certificate really changed, check the new \
             fingerprint with its owner)"
        ),
        TrustSource::Known(entry) if entry.fingerprint != seen => bail!(
            "THE SERVER'S IDENTITY HAS CHANGED. Someone may be intercepting this connection, \
             or the server got a new certificate.\n  \
             expected (known_hosts): {}\n  presented by {addr}:  {seen}\n  \
             the entry is {}:{}\n\
             If you have confirmed the new fingerprint with the server's owner, remove the old \
             entry with: chat forget {}",
            entry.fingerprint,
            known.path().display(),
            entry.line,
            entry.host,
        ),
        _ => Ok(()),
    }
}

fn trust_source(args: &ChatArgs, known: &KnownHosts, host: &str) -> Result<TrustSource> {
    if let Some(fp) = args.fingerprint {
        return Ok(TrustSource::Pinned(fp));
    }
    if let Some(path) = &args.cert {
        let cert = identity::load_cert(path).context("cannot read --cert")?;
        return Ok(TrustSource::Pinned(Fingerprint::of(&cert)));
    }
    if args.insecure {
        eprintln!(
            "WARNING: --insecure: the server's identity is NOT verified. Anyone between you \
             and the server can read and change this chat."
        );
        warn!("server verification disabled by --insecure");
        return Ok(TrustSource::Unverified);
    }
    match known.lookup(host)? {
        Some(entry) => Ok(TrustSource::Known(entry)),
        None => Ok(TrustSource::FirstContact),
    }
}

/// Everything needed once a connection is up.
struct Chat<'a> {
    args: &'a ChatArgs,
    limits: &'a Limits,
    host: &'a str,
    known: &'a KnownHosts,
    source: &'a TrustSource,
    quit: Quit,
}

impl Chat<'_> {
    async fn run(mut self, mut transport: Link, peer: PeerInfo) -> Result<u8> {
        if let TrustSource::FirstContact = self.source
            && let Err(e) = tokio::select! {
                verdict = self.first_contact(&peer) => verdict,
                never = transport.hold() => match never {},
            }
        {
            transport
                .close(close_code::NO_ERROR, "server not trusted")
                .await;
            transport.finish().await;
            return Err(e);
        }
        let (mut io, output) = ui::stdio(self.args.json, false, &self.quit);
        io.out.show_now(Shown::Connected {
            transport: peer.transport,
            peer: peer.addr,
            fingerprint: peer.fingerprint,
            label: None,
        });
        let mut session = Session::new(Role::Client, self.limits.idle_timeout);
        let outcome = session.run(&mut transport, &mut io, &mut self.quit).await;
        transport.finish().await;
        io.out.finish();
        if !output.close(OUTPUT_STALL) {
            warn!("standard output took nothing for {OUTPUT_STALL:?}; leaving without it");
        }
        Ok(if outcome.disconnect.is_normal() { 0 } else { 1 })
    }

    /// A server never seen before: ask at a terminal, accept with
    /// --accept-new, refuse otherwise. Trusted servers are recorded.
    async fn first_contact(&self, peer: &PeerInfo) -> Result<()> {
        let Some(fp) = peer.fingerprint else {
            bail!("the server presented no certificate");
        };
        let interactive = !self.args.json && std::io::stdin().is_terminal();
        let accepted = if self.args.accept_new {
            true
        } else if interactive {
            eprintln!(
                "The server {} ({}) is not known yet.\nIts fingerprint is {fp}\n\
                 Compare it with the one the server printed when it started.",
                self.host, peer.addr
            );
            ask("Trust this server? [y/N] ").await?
        } else {
            bail!(
                "the server {} ({}) is not known yet; its fingerprint is {fp}. \
                 Compare it with the one the server printed, then run again with --accept-new \
                 to trust and remember it, or with --fingerprint {fp} to trust it this once",
                self.host,
                peer.addr
            );
        };
        if !accepted {
            bail!("server not trusted");
        }
        self.known.record(self.host, fp)?;
        eprintln!(
            "Recorded {} {fp} in {}",
            self.host,
            self.known.path().display()
        );
        Ok(())
    }
}

/// Asks a yes/no question on the terminal. The blocking read runs off the
/// runtime's thread so the connection keeps its keep-alives going meanwhile.
async fn ask(question: &str) -> Result<bool> {
    eprint!("{question}");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("prompt failed")?
    .context("cannot read the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The client's own identity, created in its home on first use.
pub fn identity(home: &Path) -> Result<Identity> {
    let dir = Identity::client_dir(home);
    Identity::load_or_create(&dir, &["chat-client".to_string()]).with_context(|| {
        format!(
            "cannot load or create the client identity in {}",
            dir.display()
        )
    })
}

/// Splits `HOST`, `HOST:PORT`, `IP`, `IPv4:PORT`, `[IPv6]` or `[IPv6]:PORT`.
fn split_host_port(addr: &str, default_port: u16) -> Result<(String, u16)> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .with_context(|| format!("bad port in {addr:?}"))?;
            Ok((h.to_string(), port))
        }
        _ => Ok((addr.to_string(), default_port)),
    }
}

/// The name a server is known by in known_hosts: `host:port`, with IPv6
/// addresses in brackets and host names in lower case.
pub fn host_key(addr: &str, default_port: u16) -> Result<String> {
    let (host, port) = split_host_port(addr, default_port)?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{}:{port}", host.to_ascii_lowercase())
    })
}

/// Resolves an address in any of the forms above to every address it names.
pub async fn resolve(addr: &str, default_port: u16) -> Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(addr, default_port)?;
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
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

    #[test]
    fn host_keys_are_normalised() {
        assert_eq!(host_key("LocalHost", 7200).unwrap(), "localhost:7200");
        assert_eq!(host_key("localhost:7201", 7200).unwrap(), "localhost:7201");
        assert_eq!(host_key("::1", 7200).unwrap(), "[::1]:7200");
        assert_eq!(host_key("[::1]:9", 7200).unwrap(), "[::1]:9");
        assert_eq!(host_key("10.0.0.1", 7200).unwrap(), "10.0.0.1:7200");
    }
}
