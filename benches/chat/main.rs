//! The benchmark suite of issue #6: how close the chat comes to what its
//! transports allow, against a floor measured in the same run.
//!
//! ```sh
//! cargo bench --bench chat                    # everything, both transports
//! cargo bench --bench chat -- --quick         # smoke run, reduced counts
//! cargo bench --bench chat -- --case rtt      # some cases (and the floor)
//! cargo bench --bench chat -- --case reach    # auto's connects (and connect)
//! cargo bench --bench chat -- --case resume   # a chat back after a cut (root)
//! cargo bench --bench chat -- --runs 3        # medians of 3 runs
//! cargo bench --bench chat -- --help          # all options
//! ```
//!
//! Cases, each for QUIC and for TLS over TCP:
//! - **floor**: bare UDP / TCP (`TCP_NODELAY`) ping-pong, 32 B, tokio on
//!   both sides, one `current_thread` runtime per side ([`floor`]); beside
//!   them, what the stack alone costs for the chat's pattern: the TCP row
//!   shows the same ping-pong over TLS, the UDP row a minimal chat/1-shaped
//!   quinn program; every ping-pong also reports CPU time per round trip;
//! - **rtt**: sequential 32 B messages, p50/p90/p99/max of the RTT the
//!   session reports, and its ratio to the floor; through the library
//!   ([`library`]) and through the real binary ([`binary`]);
//! - **rate**: pipelined 100 B messages, messages per second until the last
//!   ack and CPU time per message; library and binary;
//! - **bulk**: one 64 MiB message, MiB/s to its ack; through the binary also
//!   the receiving process's peak RSS;
//! - **hol**: 32 B messages, one per ms, while a 64 MiB message is in flight;
//! - **connect**: from starting to connect until the chat is open;
//! - **reach** (binary only, issue #12): the connect of a client with
//!   `--transport auto` (the default), which races QUIC and TCP: to a
//!   server on both (QUIC answers; against `connect bin quic`), and to a
//!   server on TCP only (QUIC gets no answer, as when UDP is blocked) with
//!   nothing remembered (TCP after QUIC's 250 ms head start; the excess over
//!   `connect bin tcp`) and remembered (TCP at once; against it again);
//!   each compared with pinned clients (`--transport quic|tcp`, as in
//!   connect) interleaved with it, which the load cannot tell apart;
//! - **resume** (binary only, issue #13): a chat/2 chat getting over a lost
//!   connection. Server (`--resume-window 30`) and client (pinned to the
//!   transport) in two network namespaces joined by a veth pair (the test
//!   support's `NetPair`), both `--idle-timeout 1`; 10 times the link is
//!   cut, and once the client reports `reconnecting` (and the server
//!   `suspended`) the bench waits a further 0–2 s, spread evenly over the
//!   cuts so the link comes back at different points of the client's
//!   attempts and pauses, restores it, and times its return to the client's
//!   `resumed` event (p50, p90, max); the part without a pause, from the
//!   first attempt begun after the return to `resumed`, beside it (n/a
//!   when no cut had one: a return during an attempt under way is picked
//!   up by the stacks' own retransmissions, QUIC's PTO and TCP's SYN, which
//!   Linux ≥ 6.7 resends every second four times; `in flight cuts` counts
//!   those); one message acked after each resume. Needs root, `ip` and
//!   `nft`, or the case cannot run (an error, as any case that cannot run);
//! - **idle**: RSS of a server process with no client.
//!
//! Output: a table (figures, ratios to the floor, the issue's targets with
//! ✓/✗), then one `BENCH {json}` line per case, after a `BENCH-META` line
//! describing the machine. Missed targets never fail the run; a case that
//! cannot run does (exit status 1), after everything else has run.
//!
//! The figures move with the machine's load: publish only medians of
//! several runs (`--runs 3` or more) taken on a quiet machine. Through the
//! binary the bench itself reads every event line; on a 2-vCPU machine its
//! CPU competes with the chat's, so the rate case reports it (`harness cpu`)
//! next to the client's and the server's.
//!
//! `cargo test --all-targets` builds this target and runs it without
//! `--bench`; it then does nothing. To run the built executable directly,
//! pass `--bench` yourself.

mod binary;
mod floor;
mod library;
mod report;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use binary::Situation;
use report::Row;
use util::latency_figures;

pub use chat::TransportKind;

/// How a case reaches the chat code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// In-process, through the library's transport and session code.
    Lib,
    /// The real binary, as server and client processes.
    Bin,
    /// No chat code at all: the floor.
    #[value(skip)]
    Bare,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Lib => "lib",
            Via::Bin => "bin",
            Via::Bare => "bare",
        }
    }
}

const CASES: &[&str] = &[
    "floor", "rtt", "rate", "bulk", "hol", "connect", "reach", "resume", "idle", "memory",
];

/// Benchmarks of the chat over QUIC and TLS over TCP (issue #6).
#[derive(Parser, Debug)]
#[command(name = "cargo bench --bench chat --")]
struct Opts {
    /// Smoke run: reduced counts, figures not comparable with full runs.
    #[arg(long)]
    quick: bool,
    /// Cases to run (repeatable or comma-separated): floor, rtt, rate, bulk,
    /// hol, connect, reach, resume (as root), idle, memory (= bulk through
    /// the binary + idle).
    /// Default: all. rtt brings the floor along, for its ratios, and reach
    /// the connect through the binary, to read next to it.
    #[arg(long = "case", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(CASES))]
    cases: Vec<String>,
    /// Same as --case (so `cargo bench --bench chat -- rtt` works).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(CASES))]
    filters: Vec<String>,
    /// Only these transports (default: both).
    #[arg(long, value_delimiter = ',')]
    transport: Vec<TransportKind>,
    /// Only through the library or only through the binary (default: both).
    #[arg(long)]
    via: Option<Via>,
    /// Repeat the whole selection this many times; the table shows medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The `chat` binary to drive (default: the one cargo built for this
    /// bench, `target/release/chat` under `cargo bench`).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Passed by `cargo bench`; without it (`cargo test --all-targets`)
    /// nothing runs. Give it when running the bench executable directly.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Counts and sizes of one run.
struct Plan {
    small: usize,
    rtt_warmup: usize,
    rtt_n: usize,
    rate_size: usize,
    rate_n: usize,
    bulk_size: usize,
    bulk_reps: usize,
    hol_n: usize,
    hol_gap: Duration,
    connect_warmup: usize,
    connect_n: usize,
    bin_connect_n: usize,
    resume_cuts: usize,
    /// The longest wait, after the client noticed a cut, before the link
    /// comes back (the longest reconnect pause).
    resume_spread: Duration,
    idle_settle: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        // The issue's counts; --quick cuts only the counts that cost time.
        // Sizes stay, so a quick run exercises exactly the same paths.
        let q = |full: usize, quick_n: usize| if quick { quick_n } else { full };
        Plan {
            small: 32,
            rtt_warmup: q(200, 20),
            rtt_n: q(2_000, 200),
            rate_size: 100,
            rate_n: q(20_000, 2_000),
            bulk_size: 64 << 20,
            bulk_reps: q(3, 1),
            hol_n: 50,
            hol_gap: Duration::from_millis(1),
            connect_warmup: q(2, 1),
            connect_n: q(20, 5),
            // Also the reach case's count of auto and of pinned clients,
            // whose p50s it compares: 20, not fewer.
            bin_connect_n: q(20, 5),
            resume_cuts: q(10, 3),
            resume_spread: Duration::from_secs(2),
            idle_settle: Duration::from_millis(q(1_000, 300) as u64),
        }
    }
}

/// What one run needs beyond the plan.
struct Env {
    plan: Plan,
    lib: library::Setup,
    bin: binary::Bin,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    if !opts.bench {
        // `cargo test --all-targets` runs bench targets without `--bench`:
        // a full run (optimised or not) has no place in a test run.
        println!("chat benchmarks: not run (no --bench); use `cargo bench --bench chat`");
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selection `--runs` times and prints the report. Ok(false) if a
/// case could not run.
fn run(opts: &Opts) -> Result<bool> {
    let plan = Plan::new(opts.quick);
    // Room for the bulk message and then some.
    let max_message_size = (plan.bulk_size as u64) * 2;
    let bin_path = opts
        .bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_chat")));
    let env = Env {
        lib: library::Setup::new(max_message_size)?,
        bin: binary::Bin::new(bin_path, max_message_size)?,
        plan,
    };
    let units = selection(opts);
    let meta = meta(opts, &env);
    print_meta(&meta);

    let mut runs: Vec<Vec<Row>> = Vec::new();
    for run in 1..=opts.runs {
        let mut rows = Vec::new();
        for &(case, via, kind, situation) in &units {
            eprintln!(
                "bench: run {run}/{}: {case} {} {}",
                opts.runs,
                via.name(),
                situation.map_or(kind.name(), |s| s.label())
            );
            let what = describe(case, via, kind, situation, &env.plan);
            let (figures, error) = match measure(case, via, kind, situation, &env) {
                Ok(f) => (f, None),
                Err(e) => {
                    eprintln!("bench:   failed: {e:#}");
                    (Vec::new(), Some(format!("{e:#}")))
                }
            };
            rows.push(Row {
                case,
                via,
                kind,
                situation,
                what,
                figures,
                error,
            });
        }
        report::add_floor_ratios(&mut rows);
        runs.push(rows);
    }

    let merged = report::merge(&runs);
    println!();
    print!("{}", report::table(&merged, opts.runs as usize));
    if opts.quick {
        println!("(--quick: reduced counts; a smoke run, not a measurement)");
    }
    println!();
    println!("What each row measured:");
    for m in &merged {
        println!(
            "  {} {} {}: {}",
            m.case,
            m.via.name(),
            m.situation.map_or(m.kind.name(), |s| s.label()),
            m.what
        );
    }
    println!();
    println!("load average at the end: {}", loadavg());
    println!();
    for m in &merged {
        println!("BENCH {}", report::json_line(m, opts.quick));
    }
    Ok(merged.iter().all(|m| m.errors.is_empty()))
}

/// One thing to measure: a case, how it reaches the chat, the transport
/// (for reach, the one that should win) and reach's situation.
type Unit = (&'static str, Via, TransportKind, Option<Situation>);

/// The units to run, in order. Cases are interleaved by transport so that
/// the two transports, and each rtt and its floor, are measured close
/// together in time.
fn selection(opts: &Opts) -> Vec<Unit> {
    let mut wanted: Vec<&str> = opts
        .cases
        .iter()
        .chain(&opts.filters)
        .map(String::as_str)
        .collect();
    let all = wanted.is_empty();
    if wanted.contains(&"rtt") {
        wanted.push("floor");
    }
    let picked = |case: &str, via: Via| {
        all || wanted.contains(&case)
            || (wanted.contains(&"memory") && via == Via::Bin && matches!(case, "bulk" | "idle"))
            || (wanted.contains(&"reach") && via == Via::Bin && case == "connect")
    };
    let via_ok = |via: Via| via == Via::Bare || opts.via.is_none_or(|v| v == via);
    let kinds: Vec<TransportKind> = if opts.transport.is_empty() {
        vec![TransportKind::Quic, TransportKind::Tcp]
    } else {
        opts.transport.clone()
    };
    let order: [(&'static str, Via); 13] = [
        ("floor", Via::Bare),
        ("rtt", Via::Lib),
        ("rtt", Via::Bin),
        ("rate", Via::Lib),
        ("rate", Via::Bin),
        ("bulk", Via::Lib),
        ("bulk", Via::Bin),
        ("hol", Via::Lib),
        ("connect", Via::Lib),
        ("connect", Via::Bin),
        ("reach", Via::Bin),
        ("resume", Via::Bin),
        ("idle", Via::Bin),
    ];
    let mut units = Vec::new();
    for (case, via) in order {
        if !(picked(case, via) && via_ok(via)) {
            continue;
        }
        if case == "reach" {
            // By the transport that should win, so --transport picks them.
            for s in Situation::ALL {
                if kinds.contains(&s.winner()) {
                    units.push((case, via, s.winner(), Some(s)));
                }
            }
        } else {
            for &kind in &kinds {
                units.push((case, via, kind, None));
            }
        }
    }
    units
}

/// Exactly what a case measures, with this run's counts.
fn describe(
    case: &str,
    via: Via,
    kind: TransportKind,
    situation: Option<Situation>,
    p: &Plan,
) -> String {
    let t = kind.name();
    let socket = match kind {
        TransportKind::Quic => "UDP",
        TransportKind::Tcp => "TCP (TCP_NODELAY)",
    };
    let mib = p.bulk_size >> 20;
    match (case, via) {
        ("floor", _) => format!(
            "bare {socket} ping-pong on loopback, {} B each way, {} round trips after {} warm-up; \
             tokio, one current_thread runtime per side on its own thread; timed by the client{}",
            p.small,
            p.rtt_n,
            p.rtt_warmup,
            match kind {
                TransportKind::Quic => {
                    "; quinn = a minimal quinn program shaped like chat/1 (a new uni stream per \
                     32 B message, a 2 B answer on one stream back, quinn defaults): what quinn \
                     alone costs, not a floor"
                }
                TransportKind::Tcp => {
                    "; tls = the same over TLS 1.3 with the chat's TLS configuration \
                     (tokio-rustls, one task per side): what TLS alone adds, not a floor"
                }
            }
        ),
        ("rtt", Via::Lib) => format!(
            "{} sequential {} B messages (after {} warm-up) through transport::connect and \
             Session (client), server::run (server), each on its own thread and current_thread \
             runtime; \
             RTT as the session reports it (input taken -> ACK processed); ratios against this \
             run's floor",
            p.rtt_n, p.small, p.rtt_warmup
        ),
        ("rtt", _) => format!(
            "{} sequential {} B {{\"text\"}} lines (after {} warm-up) to `chat --mode client \
             --json --transport {t}`, each written after the previous ack event; rtt_us of the \
             ack events; ratios against this run's floor",
            p.rtt_n, p.small, p.rtt_warmup
        ),
        ("rate", Via::Lib) => format!(
            "{} pipelined {} B messages (after {} warm-up) through the library: messages/s from \
             the first hand-over to the session until the last ack; CPU per message of the client \
             and server runtime threads over that window (cpu = both)",
            p.rate_n,
            p.rate_size,
            p.rate_n / 10
        ),
        ("rate", _) => format!(
            "{} {} B {{\"text\"}} lines (after {} warm-up) written at once to the client \
             process's stdin: messages/s from the first write until the last ack event is read; \
             CPU per message of each whole process (cpu = both; harness = this bench process, \
             which shares the machine)",
            p.rate_n,
            p.rate_size,
            p.rate_n / 10
        ),
        ("bulk", Via::Lib) => format!(
            "{} x one {mib} MiB message through the library, MiB/s from hand-over to its ack \
             (median of the repetitions)",
            p.bulk_reps
        ),
        ("bulk", _) => format!(
            "one {mib} MiB {{\"text\"}} line through the binary: MiB/s from the client's rtt_us; \
             wall = first byte written to stdin until the ack event; peak RSS (VmHWM) of the \
             receiving server process and the sending client process; server RSS before"
        ),
        ("hol", _) => format!(
            "a {mib} MiB message, then {} messages of {} B one every {} ms while it is in flight, \
             through the library: their ack RTT; acked before big = how many were acked while \
             the big one was still in flight (fewer than all means it finished too soon)",
            p.hol_n,
            p.small,
            p.hol_gap.as_millis()
        ),
        ("connect", Via::Lib) => format!(
            "{} connections (after {} warm-up), each timed from calling transport::connect \
             ({t}) until the chat is open (handshake done, then chat/2's HELLO answered by \
             WELCOME), then closed before the next",
            p.connect_n, p.connect_warmup
        ),
        ("connect", _) => format!(
            "{} client processes (after 1 warm-up), each timed from spawning `chat --mode client` \
             until its connected event is read (includes process start and identity loading)",
            p.bin_connect_n
        ),
        ("reach", _) => {
            let timed = format!(
                "{n} client processes with no --transport (auto), after 1 warm-up, timed as in \
                 connect bin, with a home of their own (identity made by the warm-up); \
                 interleaved with them (alternating order, same server) {n} clients as in \
                 connect bin, pinned to the transport that should win, with another home of \
                 their own: connect p50 = theirs; p50/connect, excess = auto's p50 against it",
                n = p.bin_connect_n
            );
            match situation {
                Some(Situation::QuicAnswers) => format!(
                    "{timed}; server --transport auto (QUIC and TCP on one port); QUIC must win; \
                     tcp started = connects that also started a TCP attempt"
                ),
                Some(Situation::FirstTime) => format!(
                    "{timed}; server --transport tcp, so QUIC gets no answer (quinn ignores the \
                     ICMP port-unreachable: as if UDP were blocked); the client's reach file \
                     deleted before each (nothing remembered); TCP must win, with a fallback \
                     reason; head start = median time from its QUIC to its TCP connecting event \
                     (target for excess: the 250 ms head start + 20 ms)"
                ),
                _ => format!(
                    "{timed}; server --transport tcp as above, the client's reach file kept (the \
                     warm-up fell back, so TCP starts with QUIC); TCP must win; head start as \
                     above; excess = what the QUIC attempt started alongside costs (target: \
                     no head start, 20 ms of slack)"
                ),
            }
        }
        ("resume", _) => format!(
            "`chat --mode server --transport {t} --resume-window 30` and a client pinned to it, \
             in two network namespaces joined by a veth pair, both --idle-timeout 1; {n} cuts \
             (every packet dropped both ways) in one chat: after the client's first \
             reconnecting event (and the server's suspended), a further wait of {w} s \
             x i/{d} for cut i (0..{n}), then the link restored; timed from the restore \
             (both namespaces' drop rules flushed) to the client's resumed event; new attempt \
             = from the reconnecting event of the first attempt begun after the restore to \
             resumed, for the cuts that had one (no pause in it; n/a if none); in flight cuts = resumed by \
             the attempt already under way at the restore; noticed = cut to the first \
             reconnecting; rtt after = rtt_us of the one message acked after each resume; \
             target p50 = 2 s (the longest reconnect pause) + 5 ms (one handshake with \
             HELLO/WELCOME: the connect target) + 1 ms (one RTT; ~0.1 ms on veth), new attempt \
             p50 = 5 ms + 1 ms",
            n = p.resume_cuts,
            w = p.resume_spread.as_secs_f64(),
            d = p.resume_cuts.saturating_sub(1).max(1),
        ),
        ("idle", _) => format!(
            "RSS (VmRSS) of `chat --mode server --json` with no client, {} ms after its \
             listening event; peak = VmHWM",
            p.idle_settle.as_millis()
        ),
        _ => String::new(),
    }
}

type Figures = Vec<(&'static str, f64)>;

/// Latency figures of a ping-pong, and the CPU time both sides spent per
/// round trip (less disturbed by the machine's load than the latency, so it
/// shows where the time goes).
fn pingpong_figures(p: &floor::PingPong) -> Figures {
    let mut f = latency_figures(&p.rtts);
    let per_rt = p
        .cpu
        .map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / p.rtts.len() as f64);
    f.push(("cpu_per_rt_us", per_rt));
    f
}

/// Runs one case once.
fn measure(
    case: &str,
    via: Via,
    kind: TransportKind,
    situation: Option<Situation>,
    env: &Env,
) -> Result<Figures> {
    let p = &env.plan;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let per_msg = |cpu: Option<Duration>, n: usize| cpu.map_or(f64::NAN, |c| us(c) / n as f64);
    // Figures both rate cases report: rate and CPU per message.
    let rate_figures = |n: usize, elapsed: Duration, client: Option<Duration>, server| {
        let (c, s) = (per_msg(client, n), per_msg(server, n));
        vec![
            ("msgs_per_s", n as f64 / elapsed.as_secs_f64()),
            ("cpu_per_msg_us", c + s),
            ("client_cpu_per_msg_us", c),
            ("server_cpu_per_msg_us", s),
        ]
    };
    Ok(match (case, via) {
        ("floor", _) => {
            let floor = match kind {
                TransportKind::Quic => floor::udp(p.small, p.rtt_warmup, p.rtt_n)?,
                TransportKind::Tcp => floor::tcp(p.small, p.rtt_warmup, p.rtt_n)?,
            };
            let mut f = pingpong_figures(&floor);
            // Beside the floor, what the stack alone costs for the chat's
            // pattern (not a floor: no target uses it).
            let (identity, client) = library::tls_parts(&env.lib)?;
            let (stack, names) = match kind {
                TransportKind::Quic => (
                    floor::quinn(identity, client, p.small, p.rtt_warmup, p.rtt_n)?,
                    ["quinn_p50_us", "quinn_p99_us", "quinn_cpu_per_rt_us"],
                ),
                TransportKind::Tcp => (
                    floor::tls(identity, client, p.small, p.rtt_warmup, p.rtt_n)?,
                    ["tls_p50_us", "tls_p99_us", "tls_cpu_per_rt_us"],
                ),
            };
            let stack = pingpong_figures(&stack);
            let get = |name| {
                stack
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(f64::NAN, |f| f.1)
            };
            for (name, of) in names.into_iter().zip(["p50_us", "p99_us", "cpu_per_rt_us"]) {
                f.push((name, get(of)));
            }
            f
        }
        ("rtt", Via::Lib) => pingpong_figures(&library::rtt(
            kind,
            &env.lib,
            p.small,
            p.rtt_warmup,
            p.rtt_n,
        )?),
        ("rtt", _) => latency_figures(&binary::rtt(
            &env.bin,
            kind,
            p.small,
            p.rtt_warmup,
            p.rtt_n,
        )?),
        ("rate", Via::Lib) => {
            let r = library::rate(kind, &env.lib, p.rate_size, p.rate_n)?;
            rate_figures(r.messages, r.elapsed, r.client_cpu, r.server_cpu)
        }
        ("rate", _) => {
            let r = binary::rate(&env.bin, kind, p.rate_size, p.rate_n)?;
            let mut figures = rate_figures(r.messages, r.elapsed, r.client_cpu, r.server_cpu);
            figures.push(("harness_cpu_per_msg_us", per_msg(r.harness_cpu, r.messages)));
            figures
        }
        ("bulk", Via::Lib) => {
            let times = library::bulk(kind, &env.lib, p.bulk_size, p.bulk_reps)?;
            let mib = p.bulk_size as f64 / (1 << 20) as f64;
            let speeds: Vec<f64> = times.iter().map(|t| mib / t.as_secs_f64()).collect();
            let secs: Vec<f64> = times.iter().map(|t| us(*t)).collect();
            vec![
                ("mib_per_s", util::median(&speeds)),
                ("ack_us", util::median(&secs)),
            ]
        }
        ("bulk", _) => {
            let b = binary::bulk(&env.bin, kind, p.bulk_size)?;
            let mib = p.bulk_size as f64 / (1 << 20) as f64;
            vec![
                ("mib_per_s", mib / b.rtt.as_secs_f64()),
                ("wall_us", us(b.wall)),
                ("recv_peak_rss_mib", b.receiver_peak_mib),
                ("recv_before_rss_mib", b.receiver_before_mib),
                ("send_peak_rss_mib", b.sender_peak_mib),
            ]
        }
        ("hol", _) => {
            let h = library::hol(kind, &env.lib, p.bulk_size, p.small, p.hol_n, p.hol_gap)?;
            let mut f = latency_figures(&h.small);
            f.push(("acked_before_big", h.during as f64));
            f.push(("big_us", us(h.big)));
            f
        }
        ("connect", Via::Lib) => latency_figures(&library::connect(
            kind,
            &env.lib,
            p.connect_warmup,
            p.connect_n,
        )?),
        ("connect", _) => latency_figures(&binary::connect(&env.bin, kind, p.bin_connect_n)?),
        ("reach", _) => {
            let situation = situation.context("reach without a situation")?;
            let r = binary::reach(&env.bin, situation, p.bin_connect_n)?;
            let mut f = latency_figures(&r.times);
            if situation == Situation::QuicAnswers {
                f.push(("tcp_started", r.tcp_started as f64));
            } else {
                let heads: Vec<f64> = r.head_starts.iter().map(|d| us(*d)).collect();
                f.push(("head_start_us", util::median(&heads)));
            }
            // Against the pinned clients interleaved with these.
            let p50 = |d: &[Duration]| latency_figures(d)[0].1;
            let (auto, pinned) = (p50(&r.times), p50(&r.pinned));
            f.push(("connect_p50_us", pinned));
            // A ratio to a connect about 50 times shorter says nothing.
            if situation != Situation::FirstTime {
                f.push(("p50_x_connect", auto / pinned));
            }
            f.push(("excess_us", auto - pinned));
            f
        }
        ("resume", _) => {
            let r = binary::resume(&env.bin, kind, p.resume_cuts, p.resume_spread)?;
            let mut times: Vec<f64> = r.times.iter().map(|d| us(*d)).collect();
            times.sort_by(f64::total_cmp);
            let mut new: Vec<f64> = r.new_attempt.iter().map(|d| us(*d)).collect();
            new.sort_by(f64::total_cmp);
            let median =
                |d: &[Duration]| util::median(&d.iter().map(|d| us(*d)).collect::<Vec<_>>());
            vec![
                ("p50_us", util::quantile(&times, 0.50)),
                ("p90_us", util::quantile(&times, 0.90)),
                ("max_us", times.last().copied().unwrap_or(f64::NAN)),
                ("samples", times.len() as f64),
                ("new_attempt_p50_us", util::quantile(&new, 0.50)),
                (
                    "new_attempt_max_us",
                    new.last().copied().unwrap_or(f64::NAN),
                ),
                ("in_flight_cuts", r.in_flight as f64),
                ("noticed_p50_us", median(&r.noticed)),
                ("rtt_after_p50_us", median(&r.rtts)),
            ]
        }
        ("idle", _) => {
            let i = binary::idle(&env.bin, kind, p.idle_settle)?;
            vec![("rss_mib", i.rss_mib), ("peak_rss_mib", i.peak_mib)]
        }
        _ => anyhow::bail!("unknown case {case}"),
    })
}

/// The machine, the date and the command, for the report and the README.
fn meta(opts: &Opts, env: &Env) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kib: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    });
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = if args.is_empty() {
        "cargo bench --bench chat".to_string()
    } else {
        format!("cargo bench --bench chat -- {}", args.join(" "))
    };
    serde_json::json!({
        "date": chrono::Local::now().to_rfc3339(),
        "command": command,
        "nproc": nproc,
        "cpu": model,
        "mem_mib": mem_mib,
        "kernel": kernel,
        "load_avg": loadavg(),
        "git": git_describe(),
        "bench_profile": if cfg!(debug_assertions) { "debug" } else { "optimized" },
        "binary": env.bin.path().display().to_string(),
        "quick": opts.quick,
        "runs": opts.runs,
    })
}

fn print_meta(meta: &serde_json::Value) {
    let s = |k: &str| meta[k].as_str().unwrap_or("").to_string();
    println!("chat benchmarks ({})", s("command"));
    println!("date:    {}", s("date"));
    println!(
        "machine: {} x {} ({} MiB), Linux {}",
        meta["nproc"],
        s("cpu"),
        meta["mem_mib"],
        s("kernel")
    );
    println!("load:    {} (1, 5, 15 min) at the start", s("load_avg"));
    println!("code:    {}; binary {}", s("git"), s("binary"));
    if cfg!(debug_assertions) {
        println!("WARNING: this bench was built without optimisations; run it with `cargo bench`");
    }
    println!("BENCH-META {meta}");
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The commit measured, marked `-dirty` when the work tree has changes.
fn git_describe() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{rev}{}", if dirty { "-dirty" } else { "" })
        }
        None => "unknown".to_string(),
    }
}
