//! The command line (CLI.md): flags, environment fallbacks and defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::transport::TransportKind;
use crate::trust::identity::Fingerprint;

/// Default port for both transports.
pub const DEFAULT_PORT: u16 = 7200;

#[derive(Debug, Parser)]
#[command(
    name = "chat",
    version,
    about = "One-on-one terminal chat over QUIC, with TLS over TCP as the fallback",
    after_help = "Examples:\n  chat --mode server\n  chat --mode client --addr 192.0.2.7 --fingerprint sha256:…\n  chat cert --out certs --name chat.example.org"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub chat: ChatArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a self-signed certificate and key, and print its fingerprint.
    Cert(CertArgs),
    /// Print this client's identity fingerprint (and the server's, in a
    /// server home or with --mode server), to send to a server's owner.
    Id,
    /// Remove a server from the known hosts, e.g. after its key changed.
    Forget {
        /// The server as it was given to --addr: HOST or HOST:PORT.
        #[arg(value_name = "HOST[:PORT]")]
        host: String,
    },
}

#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory to write cert.pem and key.pem into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Host name for the certificate's subject alternative names (repeatable).
    #[arg(long = "name", value_name = "HOSTNAME")]
    pub names: Vec<String>,
    /// Replace an existing key.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Server,
    Client,
}

/// `--transport`: which transports to use (CLI.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportChoice {
    /// Server: QUIC and TCP on the same port at once; client: QUIC first,
    /// TCP too if QUIC does not answer quickly (docs/protocol.md §13).
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

impl TransportChoice {
    /// The transports it allows, QUIC first.
    pub fn kinds(self) -> Vec<TransportKind> {
        match self {
            TransportChoice::Auto => vec![TransportKind::Quic, TransportKind::Tcp],
            TransportChoice::Quic => vec![TransportKind::Quic],
            TransportChoice::Tcp => vec![TransportKind::Tcp],
        }
    }
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Run as the server (waits for one client) or the client.
    #[arg(long, env = "MODE", value_enum, ignore_case = true, global = true)]
    pub mode: Option<Mode>,

    /// QUIC, TLS over TCP for networks that block UDP, or both (server:
    /// listen on both; client: QUIC first, falling back to TCP by itself).
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto, ignore_case = true)]
    pub transport: TransportChoice,

    /// Client: server to connect to, HOST or HOST:PORT or [IPv6]:PORT.
    #[arg(
        long,
        env = "IP_ADDR",
        default_value = "127.0.0.1",
        value_name = "HOST[:PORT]"
    )]
    pub addr: String,

    /// Server: address to listen on [default: all interfaces, IPv6 and IPv4].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,

    /// Server: port to listen on (0 picks a free one); client: port used when
    /// --addr has none.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Where certificates and state are kept [default: the platform's config
    /// directory, e.g. ~/.config/chat].
    #[arg(long, env = "CHAT_HOME", value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,

    /// Server: certificate to present (PEM). Client: the server's certificate,
    /// to pin it.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Server: private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Client: trust only a server with this certificate fingerprint.
    #[arg(long, value_name = "sha256:HEX")]
    pub fingerprint: Option<Fingerprint>,

    /// Client: trust a server seen for the first time without asking, and
    /// remember it (for scripts; an interactive client asks instead).
    #[arg(long)]
    pub accept_new: bool,

    /// Server: admit only clients with this identity fingerprint
    /// (repeatable; combines with --allow-file).
    #[arg(long = "allow", value_name = "sha256:HEX")]
    pub allow: Vec<Fingerprint>,

    /// Server: admit only clients listed in this file (one fingerprint per
    /// line, optional label after it, # comments); re-read on each connection.
    #[arg(long, value_name = "FILE")]
    pub allow_file: Option<PathBuf>,

    /// Client: do not verify the server at all (anyone on the path can read
    /// and change the chat).
    #[arg(long, conflicts_with_all = ["fingerprint", "cert"])]
    pub insecure: bool,

    /// Largest message this side accepts, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_message_size: u64,

    /// How long a silent peer is tolerated, in seconds.
    #[arg(long, default_value = "10", value_parser = parse_seconds, value_name = "SECONDS")]
    pub idle_timeout: Duration,

    /// Server: how long a chat whose connection was lost is held for its
    /// client to come back, in seconds (0: a lost connection ends the chat).
    #[arg(long, default_value = "30", value_parser = parse_window, value_name = "SECONDS")]
    pub resume_window: Duration,

    /// Client: end the chat when the connection is lost, instead of
    /// reconnecting and resuming it.
    #[arg(long)]
    pub no_reconnect: bool,

    /// Machine-readable mode: JSON events on stdout, JSON messages on stdin.
    #[arg(long)]
    pub json: bool,
}

fn parse_window(s: &str) -> Result<Duration, String> {
    if s.parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_seconds(s)
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err("must be between 0.1 and 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_accept_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
        assert_eq!(parse_window("0"), Ok(Duration::ZERO));
        assert_eq!(parse_window("30"), Ok(Duration::from_secs(30)));
    }
}
