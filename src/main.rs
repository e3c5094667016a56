//! The `chat` binary: parses the command line, sets up logging and the
//! runtime, and turns errors into messages and exit statuses.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use chat::cli::{CertArgs, Cli, Command, Mode};
use chat::transport::Limits;
use chat::trust::allow::AllowList;
use chat::trust::identity;
use chat::trust::identity::Identity;
use chat::trust::known_hosts::KnownHosts;
use chat::ui::json::JsonSink;
use chat::ui::output::{Output, Shown};
use chat::ui::{self, Quit, terminal};
use chat::{client, server};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Logs go to stderr so they never mix with chat output on stdout. By
    // default quinn_udp's send errors are left out: while the network is
    // down (the moment a chat is being got back) every packet would log
    // one, and the chat says what is going on in its own words. Colour
    // only for a person at a terminal: escape codes in a log file are noise.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,quinn_udp=error")),
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
            if let Err(why) = usage_of_mode(&cli, &matches, mode) {
                Cli::command()
                    .error(clap::error::ErrorKind::ArgumentConflict, why)
                    .exit();
            }
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

/// A client's `--addr` that cannot be a server address is a usage error
/// (exit status 2), not a runtime failure; flags that only the other mode
/// uses, given on the command line, are said to be ignored rather than
/// ignored silently. (Not refused: scripts and tests hand both ends one set
/// of flags.)
fn usage_of_mode(
    cli: &Cli,
    matches: &clap::ArgMatches,
    mode: Mode,
) -> std::result::Result<(), String> {
    const SERVER_ONLY: &[&str] = &["bind", "key", "allow", "allow_file", "resume_window"];
    const CLIENT_ONLY: &[&str] = &[
        "addr",
        "fingerprint",
        "accept_new",
        "insecure",
        "no_reconnect",
    ];
    let (other, this) = match mode {
        Mode::Server => (CLIENT_ONLY, "server"),
        Mode::Client => (SERVER_ONLY, "client"),
    };
    for id in other {
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            let flag = format!("--{}", id.replace('_', "-"));
            eprintln!("warning: {flag} does nothing for a {this} (--mode {this}); ignored");
        }
    }
    if mode == Mode::Client {
        client::host_key(&cli.chat.addr, cli.chat.port).map_err(|e| format!("--addr: {e:#}"))?;
    }
    Ok(())
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
                json_error(&message);
            }
            eprintln!("chat: {message}");
            1
        }
    }
}

/// How long the output may go without taking anything before the program
/// exits without waiting for it (a stdout that nobody reads).
const OUTPUT_STALL: Duration = Duration::from_secs(2);

/// Writes an `error` event, through a thread of its own: a stdout that
/// nobody reads must not keep the process from exiting.
fn json_error(message: &str) {
    let (mut out, thread) = Output::spawn(|p| JsonSink {
        out: p.writer(std::io::stdout()),
    });
    out.show_now(Shown::Error(message.to_string()));
    thread.close(OUTPUT_STALL);
}

async fn chat(mode: Mode, cli: &Cli) -> Result<u8> {
    let args = &cli.chat;
    let limits = Limits {
        max_message_size: args.max_message_size,
        idle_timeout: args.idle_timeout,
    };
    let quit = Quit::new();
    // Registered now, before anything else: Ctrl-C from a shell (and a
    // SIGINT from anyone) must never find the default action, which would
    // skip the close and the terminal's restoration. At a terminal the line
    // editor hears Ctrl-C as a key and triggers `quit` itself.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let on_signal = quit.clone();
    tokio::spawn(async move {
        if sigint.recv().await.is_some() {
            on_signal.trigger();
        }
    });
    match mode {
        Mode::Server => serve(args, limits, quit).await,
        // The client may ask the user whether to trust the server before the
        // chat starts reading input, so it sets up its own I/O.
        Mode::Client => client::run(args, limits, quit).await,
    }
}

/// Server mode: bind, then run the server until Ctrl-C.
async fn serve(args: &chat::cli::ChatArgs, limits: Limits, quit: Quit) -> Result<u8> {
    let home = identity::home_dir(args.home.as_deref());
    let identity = server::identity(args.cert.as_deref(), args.key.as_deref(), &home)?;
    let allow = AllowList::new(args.allow.clone(), args.allow_file.clone());
    allow.validate()?;
    let listener = server::bind(
        &args.transport.kinds(),
        args.bind,
        args.port,
        &identity,
        &limits,
    )
    .await?;
    let (io, output) = ui::stdio(args.json, true, &quit, args.max_message_size);
    let config = server::Config {
        limits,
        allow,
        resume_window: args.resume_window,
    };
    server::run(listener, config, io, quit).await;
    if !output.close(OUTPUT_STALL) {
        tracing::warn!("standard output took nothing for {OUTPUT_STALL:?}; leaving without it");
    }
    Ok(0)
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
