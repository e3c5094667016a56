//! How the client decides whether to trust the server: a pinned
//! fingerprint (`--fingerprint`, `--cert`), the known hosts, or a first
//! contact that the user confirms (or `--accept-new`); and the errors that
//! say, in full, why a server was not trusted.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tracing::warn;

use crate::cli::ChatArgs;
use crate::transport::PeerInfo;
use crate::trust::identity::{self, Fingerprint};
use crate::trust::known_hosts::{self, KnownHosts};
use crate::trust::tls::{FingerprintVerifier, ServerTrust};

/// Where the decision to trust the server comes from.
#[derive(Debug, Clone)]
pub(super) enum TrustSource {
    /// --fingerprint or --cert: never written to known_hosts.
    Pinned(Fingerprint),
    /// An entry of known_hosts.
    Known(known_hosts::Entry),
    /// Never seen: ask (or --accept-new) after the handshake, before chatting.
    FirstContact,
    /// --insecure.
    Unverified,
}

/// The client's trust in one server.
pub(super) struct Trust {
    pub source: TrustSource,
    /// The server as known_hosts names it (`host:port`).
    pub host: String,
    pub known: KnownHosts,
    pub verifier: Arc<FingerprintVerifier>,
}

impl Trust {
    pub fn decide(args: &ChatArgs, home: &Path, host: String) -> Result<Trust> {
        let known = KnownHosts::in_home(home);
        let source = trust_source(args, &known, &host)?;
        let verifier = FingerprintVerifier::new(match &source {
            TrustSource::Pinned(fp) => ServerTrust::Pinned(*fp),
            TrustSource::Known(entry) => ServerTrust::Pinned(entry.fingerprint),
            TrustSource::FirstContact | TrustSource::Unverified => ServerTrust::AnyValidSignature,
        });
        Ok(Trust {
            source,
            host,
            known,
            verifier,
        })
    }

    /// Fails with a full explanation if a handshake with `addr` failed
    /// because the server is not the one expected.
    pub fn check_seen(&self, addr: &SocketAddr) -> Result<()> {
        match self.verifier.seen() {
            Some(seen) => mismatch(&self.source, addr, seen, &self.known),
            None => Ok(()),
        }
    }

    /// The server for people: its name, and the address it was reached at
    /// when that says more (`example.org:7200 (192.0.2.7:7200)`).
    fn named(&self, peer: &PeerInfo) -> String {
        let addr = peer.addr.to_string();
        if addr == self.host {
            addr
        } else {
            format!("{} ({addr})", self.host)
        }
    }

    /// A server never seen before: ask at a terminal, accept with
    /// --accept-new, refuse otherwise. Trusted servers are recorded.
    pub async fn first_contact(&self, peer: &PeerInfo, json: bool, accept_new: bool) -> Result<()> {
        let Some(fp) = peer.fingerprint else {
            bail!("the server presented no certificate");
        };
        let interactive = !json && std::io::stdin().is_terminal();
        let accepted = if accept_new {
            true
        } else if interactive {
            eprintln!(
                "The server {} is not known yet.\nIts fingerprint is {fp}\n\
                 Compare it with the one the server printed when it started.",
                self.named(peer)
            );
            ask("Trust this server? [y/N] ").await?
        } else {
            bail!(
                "the server {} is not known yet; its fingerprint is {fp}. \
                 Compare it with the one the server printed, then run again with --accept-new \
                 to trust and remember it, or with --fingerprint {fp} to trust it this once",
                self.named(peer)
            );
        };
        if !accepted {
            bail!("server not trusted");
        }
        self.known.record(&self.host, fp)?;
        eprintln!(
            "Recorded {} {fp} in {}",
            &self.host,
            self.known.path().display()
        );
        Ok(())
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

/// Fails with a full explanation if `seen` is not the fingerprint we expected.
pub(super) fn mismatch(
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
