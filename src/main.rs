//! The `chat` binary: parses the command line, sets up logging and the
//! runtime, and turns errors into messages and exit statuses.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use chat::cli::{CertArgs, Cli, Command, Mode};
use chat::session::{Role, UserIo};
use chat::transport::Limits;
use chat::trust::identity;
use chat::trust::identity::Identity;
use chat::trust::known_hosts::KnownHosts;
use chat::ui::{output, terminal};
use chat::{client, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so they never mix with chat output on stdout.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(terminal::LogWriter::new)
        .init();

    let status = match &cli.command {
        Some(Command::Cert(args)) => report(cert(args), false),
        Some(Command::Id) => report(id(&cli), false),
        Some(Command::Forget { host }) => report(forget(&cli, host), false),
        None => {
            let Some(mode) = cli.chat.mode else {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "choose --mode server or --mode client (or the MODE variable), or a subcommand",
                    )
                    .exit();
            };
            // One thread: a chat is latency-bound, and cross-thread wake-ups
            // cost more than they bring (measured in the benchmarks).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(rt) => rt.block_on(chat(mode, &cli)),
                Err(e) => Err(e).context("cannot start the runtime"),
            };
            // The terminal first, so that an error is printed in cooked
            // mode below the transcript, not through the line editor.
            if !cli.chat.json && terminal::is_interactive() {
                terminal::finish();
            }
            report(result, cli.chat.json)
        }
    };
    ExitCode::from(status)
}

/// Prints an error (as an `error` event too in JSON mode) and picks the exit
/// status: 1 for runtime errors.
fn report(result: Result<u8>, json: bool) -> u8 {
    match result {
        Ok(status) => status,
        Err(e) => {
            // Error chains can quote the peer (a QUIC close reason during the
            // handshake, say): escape control characters before printing.
            let message = chat::ui::render::sanitize(format!("{e:#}").as_bytes());
            if json {
                output::stdout(true).error(&message);
            }
            eprintln!("chat: {message}");
            1
        }
    }
}

async fn chat(mode: Mode, cli: &Cli) -> Result<u8> {
    let args = &cli.chat;
    let limits = Limits {
        max_message_size: args.max_message_size,
        idle_timeout: args.idle_timeout,
    };
    let (interrupt_tx, interrupt) = watch::channel(false);
    // Registered now, before the terminal is up: at a terminal Ctrl-C and
    // /quit arrive as SIGINT, which must never find the default action.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    tokio::spawn(async move {
        if sigint.recv().await.is_some() {
            let _ = interrupt_tx.send(true);
        }
    });
    match mode {
        Mode::Server => {
            let io = UserIo::stdio(args.json, Role::Server, interrupt);
            server::run(args, limits, io).await
        }
        // The client may ask the user whether to trust the server before the
        // chat starts reading input, so it sets up its own I/O.
        Mode::Client => client::run(args, limits, interrupt).await,
    }
}

/// `chat id`: the fingerprints to hand to the other side.
fn id(cli: &Cli) -> Result<u8> {
    let home = identity::home_dir(cli.chat.home.as_deref());
    let server_dir = Identity::server_dir(&home);
    let show_client = cli.chat.mode != Some(Mode::Server);
    let show_server = cli.chat.mode == Some(Mode::Server)
        || (cli.chat.mode.is_none() && server_dir.join(identity::KEY_FILE).exists());
    if show_client {
        let id = client::identity(&home)?;
        println!("client {}", id.fingerprint());
    }
    if show_server {
        let id = server::home_identity(&home)?;
        println!("server {}", id.fingerprint());
    }
    Ok(0)
}

/// `chat forget HOST[:PORT]`: drop a server from the known hosts.
fn forget(cli: &Cli, host: &str) -> Result<u8> {
    let home = identity::home_dir(cli.chat.home.as_deref());
    let key = client::host_key(host, cli.chat.port)?;
    let known = KnownHosts::in_home(&home);
    let removed = known.forget(&key)?;
    if removed == 0 {
        eprintln!("{key} is not in {}", known.path().display());
        return Ok(1);
    }
    eprintln!("removed {key} from {}", known.path().display());
    Ok(0)
}

fn cert(args: &CertArgs) -> Result<u8> {
    let fp = identity::write_new(&args.out, &args.names, args.force)?;
    println!("{fp}");
    eprintln!(
        "wrote {} and {}",
        args.out.join(identity::CERT_FILE).display(),
        args.out.join(identity::KEY_FILE).display()
    );
    Ok(0)
}
