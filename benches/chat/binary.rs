//! Cases that drive the real `chat` binary end to end: a server process and a
//! client process on loopback (for resume, in two network namespaces joined
//! by a veth pair, from the test support's [`NetPair`]), both with `--json`, the client fed
//! `{"text": …}` lines on stdin, acknowledgements read as `ack` events (with
//! the `rtt_us` the client computed) from its stdout. This is what a user or
//! a script gets, including JSON parsing, stdout writes and the stdin
//! thread.
//!
//! Memory is read from `/proc/PID/status` (`VmRSS`, and `VmHWM`, the peak
//! resident set), CPU time from `/proc/PID/task/*/schedstat`.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;

use crate::util::{TempDir, process_cpu_ns, status_mib};
use chat::TransportKind;
use support::netns::NetPair;

/// How long to wait for an ordinary event (start-up, connection, one ack).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for an event at the end of a long transfer.
const LONG_TIMEOUT: Duration = Duration::from_secs(300);

/// How the bench reads a process's stdout.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Every line as soon as it is written: for latency, where the bench
    /// waits for each event before writing the next message.
    Prompt,
    /// In batches, pausing [`COALESCE`] between reads: for throughput.
    /// `chat` flushes every event line on its own, so a prompt reader wakes
    /// up about three times per message (sent, ack, message), which on a
    /// 2-vCPU machine takes CPU from the processes being measured. Event
    /// times are then late by at most the pause.
    Coalesced,
}

/// The pause between reads of a [`Reading::Coalesced`] stdout.
const COALESCE: Duration = Duration::from_micros(500);

/// How far into a frequent event's line its numbers are looked for.
const HEAD_LIMIT: usize = 256;

/// The binary under test and a home directory shared by its processes
/// (server identity in `home/server`, client identity in `home/client`).
pub struct Bin {
    path: PathBuf,
    home: TempDir,
    max_message_size: u64,
}

/// One line of a process's stdout, read as little as the bench needs: on a
/// 2-vCPU machine the harness's CPU time is taken from the processes it
/// measures, and a `serde_json::Value` per line (several allocations, freed
/// on another thread) cost more per message than some of the chat's own
/// work. The frequent events (`sent`, `ack`, `message`, one or two per
/// message) are scanned for the numbers the bench uses; the rare ones are
/// parsed whole.
struct Event {
    /// When the bench read it.
    at: Instant,
    name: &'static str,
    /// `rtt_us` of an `ack`.
    rtt_us: Option<u64>,
    /// `bytes` of a `message`.
    bytes: Option<u64>,
    /// The whole line, for the rare events.
    json: Option<Value>,
}

impl Event {
    fn parse(at: Instant, line: &[u8]) -> Event {
        let line = line.trim_ascii_end();
        let name = line
            .strip_prefix(br#"{"event":""#)
            .and_then(|rest| rest.split(|&b| b == b'"').next())
            .and_then(|name| {
                EVENTS
                    .iter()
                    .find(|known| known.as_bytes() == name)
                    .copied()
            })
            .unwrap_or("unknown");
        // `chat` writes a message's fields in order (event, id, bytes, then
        // the body), so its numbers are near the start of the line; the
        // body, up to 64 MiB, is never looked at.
        let head = &line[..line.len().min(HEAD_LIMIT)];
        match name {
            "sent" => Event::new(at, name, None),
            "ack" => Event {
                rtt_us: number_after(head, br#""rtt_us":"#),
                ..Event::new(at, name, None)
            },
            "message" => Event {
                bytes: number_after(head, br#""bytes":"#),
                ..Event::new(at, name, None)
            },
            _ => Event::new(at, name, serde_json::from_slice(line).ok()),
        }
    }

    fn new(at: Instant, name: &'static str, json: Option<Value>) -> Event {
        Event {
            at,
            name,
            rtt_us: None,
            bytes: None,
            json,
        }
    }

    /// A field of a rarely seen event (null when absent).
    fn field(&self, key: &str) -> &Value {
        self.json.as_ref().map_or(&Value::Null, |j| &j[key])
    }
}

/// The events of `chat --json` (README.md, `--json`).
const EVENTS: &[&str] = &[
    "listening",
    "connecting",
    "connected",
    "refused",
    "sent",
    "ack",
    "rejected",
    "message",
    "disconnected",
    "suspended",
    "reconnecting",
    "resumed",
    "error",
];

/// The unsigned integer that follows `key` in `line`.
fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// A running `chat` process. Killed (and reaped) when dropped.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Vec<Event>>,
    /// Events received but not yet consumed.
    ready: VecDeque<Event>,
    stderr: PathBuf,
}

impl Bin {
    pub fn new(path: PathBuf, max_message_size: u64) -> Result<Bin> {
        ensure!(path.exists(), "no binary at {}", path.display());
        Ok(Bin {
            path,
            home: TempDir::new("bin")?,
            max_message_size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn spawn(&self, label: &str, args: &[String], stdin: Stdio, reading: Reading) -> Result<Proc> {
        let stderr = self.home.path().join(format!("{label}.stderr"));
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?);
        // The environment fallbacks of the CLI must not leak in.
        for k in ["MODE", "IP_ADDR", "CHAT_HOME"] {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.path.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let pause = match reading {
            Reading::Prompt => None,
            Reading::Coalesced => {
                // Room for what `chat` writes while the reader pauses, so that
                // it never blocks on a full pipe (the default is 64 KiB).
                #[cfg(target_os = "linux")]
                {
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid open descriptor; F_SETPIPE_SZ only
                    // resizes its buffer (failure leaves it as it was).
                    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
                }
                Some(COALESCE)
            }
        };
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{label}-stdout"))
            .spawn(move || read_events(stdout, tx, pause))?;
        Ok(Proc {
            label: label.to_string(),
            stdin: child.stdin.take(),
            child,
            events,
            ready: VecDeque::new(),
            stderr,
        })
    }

    /// [`Bin::spawn`] inside the network namespace `netns`
    /// (`/run/netns/NAME`): a short-lived thread joins it (`setns(2)`, what
    /// `ip netns exec` does) and spawns the process from there, so the
    /// child lives in the namespace while the bench's threads never move.
    fn spawn_in(
        &self,
        netns: &str,
        label: &str,
        args: &[String],
        stdin: Stdio,
        reading: Reading,
    ) -> Result<Proc> {
        let path = format!("/run/netns/{netns}");
        let handle = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns only reads the descriptor, which
                    // `handle` keeps open for the duration of the call.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    ensure!(
                        rc == 0,
                        "setns({path}) failed: {}",
                        std::io::Error::last_os_error()
                    );
                    self.spawn(label, args, stdin, reading)
                })
                .join()
                .map_err(|_| anyhow!("the thread starting {label} in {netns} panicked"))?
        })
    }

    /// `chat --mode server --json` on 127.0.0.1, any free port. Returns it
    /// with its address and fingerprint (from its `listening` event).
    fn server(&self, kind: TransportKind, reading: Reading) -> Result<(Proc, SocketAddr, String)> {
        self.server_with(Choice::Only(kind), reading)
    }

    /// [`Bin::server`] with any `--transport` (`auto`: QUIC and TCP on one
    /// port).
    fn server_with(&self, choice: Choice, reading: Reading) -> Result<(Proc, SocketAddr, String)> {
        let args = self.server_args(choice, "127.0.0.1");
        let mut server = self.spawn("server", &args, Stdio::piped(), reading)?;
        let (addr, fingerprint) = listening(&mut server)?;
        Ok((server, addr, fingerprint))
    }

    /// The arguments of a server on `bind`, any free port.
    fn server_args(&self, choice: Choice, bind: &str) -> Vec<String> {
        strings(&[
            "--mode",
            "server",
            "--transport",
            choice.name(),
            "--bind",
            bind,
            "--port",
            "0",
            "--json",
            "--max-message-size",
            &self.max_message_size.to_string(),
            "--home",
            &self.home_str(),
        ])
    }

    /// `chat --mode client --json` pinned to the server's fingerprint.
    fn client(
        &self,
        kind: TransportKind,
        addr: SocketAddr,
        fingerprint: &str,
        stdin: Stdio,
        reading: Reading,
    ) -> Result<Proc> {
        let home = self.home_str();
        self.client_with(Choice::Only(kind), addr, fingerprint, &home, stdin, reading)
    }

    /// [`Bin::client`] with any `--transport` (for `auto`, none is given,
    /// as a user would) and its own home.
    fn client_with(
        &self,
        choice: Choice,
        addr: SocketAddr,
        fingerprint: &str,
        home: &str,
        stdin: Stdio,
        reading: Reading,
    ) -> Result<Proc> {
        let mut args = client_args(choice, addr, fingerprint, home);
        // The client bounds what it sends by its own limit too.
        args.extend(strings(&[
            "--max-message-size",
            &self.max_message_size.to_string(),
        ]));
        self.spawn("client", &args, stdin, reading)
    }

    /// A server and a connected client (waits for both `connected` events).
    fn pair(&self, kind: TransportKind, reading: Reading) -> Result<(Proc, Proc)> {
        let (mut server, addr, fp) = self.server(kind, reading)?;
        let mut client = self.client(kind, addr, &fp, Stdio::piped(), reading)?;
        client.wait_event("connected", EVENT_TIMEOUT)?;
        server.wait_event("connected", EVENT_TIMEOUT)?;
        Ok((server, client))
    }

    fn home_str(&self) -> String {
        self.home.path().display().to_string()
    }
}

/// The address and fingerprint of a server's `listening` event.
fn listening(server: &mut Proc) -> Result<(SocketAddr, String)> {
    let listening = server.wait_event("listening", EVENT_TIMEOUT)?;
    let addr = listening
        .field("addr")
        .as_str()
        .and_then(|a| a.parse().ok())
        .context("listening event without an address")?;
    let fingerprint = listening
        .field("fingerprint")
        .as_str()
        .context("listening event without a fingerprint")?
        .to_string();
    Ok((addr, fingerprint))
}

/// The arguments of a client pinned to a server's fingerprint (for `auto`,
/// no `--transport`, as a user would).
fn client_args(choice: Choice, addr: SocketAddr, fingerprint: &str, home: &str) -> Vec<String> {
    let mut args = vec!["--mode", "client"];
    if let Choice::Only(kind) = choice {
        args.extend(["--transport", kind.name()]);
    }
    let addr = addr.to_string();
    args.extend([
        "--addr",
        &addr,
        "--fingerprint",
        fingerprint,
        "--json",
        "--home",
        home,
    ]);
    strings(&args)
}

/// What a process is given as `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Both: a server listens on QUIC and TCP, a client races them.
    Auto,
    Only(TransportKind),
}

impl Choice {
    fn name(self) -> &'static str {
        match self {
            Choice::Auto => "auto",
            Choice::Only(kind) => kind.name(),
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// One `{"text": …}` input line of `size` ASCII bytes.
fn text_line(size: usize, fill: u8) -> Vec<u8> {
    let mut line = Vec::with_capacity(size + 12);
    line.extend_from_slice(br#"{"text":""#);
    line.resize(line.len() + size, fill);
    line.extend_from_slice(b"\"}\n");
    line
}

/// Reads stdout and passes on its lines as events, in batches: one channel
/// send (one wake-up of the waiting thread) per `read`, not per line, so
/// that on a small machine the harness takes as little CPU as possible from
/// the processes it measures. Every event of a batch is stamped with the
/// time its read returned.
fn read_events(mut stdout: impl Read, tx: Sender<Vec<Event>>, pause: Option<Duration>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    // Bytes of `pending` already searched for a newline: a 64 MiB line
    // arrives in many reads, and rescanning it each time would be quadratic.
    let mut scanned = 0;
    loop {
        let n = match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        pending.extend_from_slice(&chunk[..n]);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(i) = pending[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + i;
            events.push(Event::parse(at, &pending[start..end]));
            start = end + 1;
            scanned = start;
        }
        scanned = pending.len();
        pending.drain(..start);
        scanned -= start;
        if !events.is_empty() && tx.send(events).is_err() {
            return;
        }
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next event called `name`, skipping others; an `error`,
    /// `rejected` or `disconnected` event, or the process ending, is an
    /// error.
    fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Event> {
        self.wait_event_with(name, timeout, |_| {})
    }

    /// [`Proc::wait_event`], showing `skipped` each event it passes over.
    fn wait_event_with(
        &mut self,
        name: &str,
        timeout: Duration,
        mut skipped: impl FnMut(&Event),
    ) -> Result<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(ev) = self.ready.pop_front() {
                if ev.name == name {
                    return Ok(ev);
                }
                skipped(&ev);
                if matches!(ev.name, "error" | "disconnected" | "rejected") {
                    let what = ev.json.unwrap_or_default().to_string();
                    return Err(self.failure(&format!("unexpected event {what}")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(batch) => self.ready.extend(batch),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("no {name} event within {timeout:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(self.failure(&format!(
                        "stdout closed while waiting for {name} (exit {status:?})"
                    )));
                }
            }
        }
    }

    /// An error naming the process, with the tail of its stderr.
    fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!("{}: {what}; stderr: {}", self.label, tail(&self.stderr))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .map_err(|e| self.failure(&format!("cannot write to stdin: {e}")))
    }

    /// Closes stdin and waits for the process to exit on its own (a client
    /// at end of input waits for its acks, closes normally and exits 0).
    fn finish(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("did not exit within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `finish`, and an exit status other than 0 is an error.
    fn finish_ok(&mut self, timeout: Duration) -> Result<()> {
        let status = self.finish(timeout)?;
        if !status.success() {
            return Err(self.failure(&format!("exited with {status}")));
        }
        Ok(())
    }

    fn rss_mib(&self, field: &str) -> Result<f64> {
        status_mib(self.pid(), field)
            .with_context(|| format!("cannot read {field} of {}", self.label))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last few hundred bytes of a file, on one line.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(600)));
        let _ = f.read_to_string(&mut text);
    }
    let text = text.trim().replace('\n', " | ");
    if text.is_empty() {
        "(empty)".to_string()
    } else {
        text
    }
}

/// rtt through the binary: `n` sequential `{"text": …}` messages of `size`
/// bytes, each written once the previous `ack` event was read, after
/// `warmup` more. Returns the `rtt_us` values the client printed.
pub fn rtt(
    bin: &Bin,
    kind: TransportKind,
    size: usize,
    warmup: usize,
    n: usize,
) -> Result<Vec<Duration>> {
    let (_server, mut client) = bin.pair(kind, Reading::Prompt)?;
    let line = text_line(size, b'x');
    let mut rtts = Vec::with_capacity(n);
    for i in 0..warmup + n {
        client.write(&line)?;
        let ack = client.wait_event("ack", EVENT_TIMEOUT)?;
        if i >= warmup {
            rtts.push(rtt_of(&ack)?);
        }
    }
    client.finish_ok(EVENT_TIMEOUT)?;
    Ok(rtts)
}

fn rtt_of(ack: &Event) -> Result<Duration> {
    ack.rtt_us
        .map(Duration::from_micros)
        .context("ack event without rtt_us")
}

/// What the rate case measured through the binary.
pub struct Rate {
    pub messages: usize,
    pub elapsed: Duration,
    pub client_cpu: Option<Duration>,
    pub server_cpu: Option<Duration>,
    /// This bench process over the same window (writing stdin, reading
    /// and parsing events): on a 2-vCPU machine it competes with the chat.
    pub harness_cpu: Option<Duration>,
}

/// rate through the binary: `n` lines of `size`-byte messages written to the
/// client's stdin as fast as it reads them; timed from the first write to
/// reading the last `ack` event (read in batches: [`Reading::Coalesced`]).
/// CPU is each whole process (all threads) over the same window. `n / 10`
/// messages warm the pair up first.
pub fn rate(bin: &Bin, kind: TransportKind, size: usize, n: usize) -> Result<Rate> {
    let (server, mut client) = bin.pair(kind, Reading::Coalesced)?;
    let line = text_line(size, b'r');
    let warmup = n / 10;
    client.write(&line.repeat(warmup))?;
    for _ in 0..warmup {
        client.wait_event("ack", LONG_TIMEOUT)?;
    }
    let all = line.repeat(n);
    let me = std::process::id();
    let cpu0 = (
        process_cpu_ns(client.pid()),
        process_cpu_ns(server.pid()),
        process_cpu_ns(me),
    );
    let t0 = Instant::now();
    // The writes block while the client's stdin pipe is full; its stdout is
    // drained meanwhile by the reader thread, so nothing deadlocks.
    client.write(&all)?;
    let mut last = t0;
    for _ in 0..n {
        last = client.wait_event("ack", LONG_TIMEOUT)?.at;
    }
    let cpu1 = (
        process_cpu_ns(client.pid()),
        process_cpu_ns(server.pid()),
        process_cpu_ns(me),
    );
    client.finish_ok(EVENT_TIMEOUT)?;
    let delta = |a: Option<u64>, b: Option<u64>| Some(Duration::from_nanos(b?.checked_sub(a?)?));
    Ok(Rate {
        messages: n,
        elapsed: last - t0,
        client_cpu: delta(cpu0.0, cpu1.0),
        server_cpu: delta(cpu0.1, cpu1.1),
        harness_cpu: delta(cpu0.2, cpu1.2),
    })
}

/// What the bulk case measured through the binary.
pub struct Bulk {
    /// The client's `rtt_us`: from handing the message to the transport to
    /// its ack (excludes reading and parsing the input line).
    pub rtt: Duration,
    /// From the first byte written to the client's stdin to its `ack` event.
    pub wall: Duration,
    /// Peak resident set of the receiving (server) process, MiB.
    pub receiver_peak_mib: f64,
    /// Resident set of the server just before the transfer, MiB.
    pub receiver_before_mib: f64,
    /// Peak resident set of the sending (client) process, MiB.
    pub sender_peak_mib: f64,
}

/// bulk through the binary: one `{"text": …}` message of `size` bytes from
/// client to server.
pub fn bulk(bin: &Bin, kind: TransportKind, size: usize) -> Result<Bulk> {
    let (mut server, mut client) = bin.pair(kind, Reading::Prompt)?;
    let line = text_line(size, b'b');
    let receiver_before_mib = server.rss_mib("VmRSS")?;
    let t0 = Instant::now();
    client.write(&line)?;
    let ack = client.wait_event("ack", LONG_TIMEOUT)?;
    // The server printed the message before its ack could leave (the ack is
    // written by another task of the same single-threaded runtime), so its
    // peak is already reached; waiting for the event makes sure of it.
    let message = server.wait_event("message", LONG_TIMEOUT)?;
    ensure!(
        message.bytes == Some(size as u64),
        "the server got {:?} bytes",
        message.bytes
    );
    let result = Bulk {
        rtt: rtt_of(&ack)?,
        wall: ack.at - t0,
        receiver_peak_mib: server.rss_mib("VmHWM")?,
        receiver_before_mib,
        sender_peak_mib: client.rss_mib("VmHWM")?,
    };
    client.finish_ok(EVENT_TIMEOUT)?;
    Ok(result)
}

/// Memory of a server with no client.
pub struct Idle {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

/// idle: a server that has started listening and then sat for `settle`.
pub fn idle(bin: &Bin, kind: TransportKind, settle: Duration) -> Result<Idle> {
    let (server, _, _) = bin.server(kind, Reading::Prompt)?;
    std::thread::sleep(settle);
    Ok(Idle {
        rss_mib: server.rss_mib("VmRSS")?,
        peak_mib: server.rss_mib("VmHWM")?,
    })
}

/// connect through the binary: `n` client processes one after another
/// (stdin closed, so each leaves at once), each timed from spawning it to
/// reading its `connected` event. Includes process start-up and loading the
/// client identity; one unmeasured client runs first (it creates the
/// identity).
pub fn connect(bin: &Bin, kind: TransportKind, n: usize) -> Result<Vec<Duration>> {
    let (_server, addr, fp) = bin.server(kind, Reading::Prompt)?;
    let mut times = Vec::with_capacity(n);
    for i in 0..=n {
        let t0 = Instant::now();
        let mut client = bin.client(kind, addr, &fp, Stdio::null(), Reading::Prompt)?;
        let connected = client.wait_event("connected", EVENT_TIMEOUT)?;
        if i > 0 {
            times.push(connected.at - t0);
        }
        client.finish_ok(EVENT_TIMEOUT)?;
        // Let the server notice the close and free its single chat slot, so
        // the next client is admitted rather than turned away as BUSY.
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(times)
}

/// Where a client with `--transport auto` (the default) has to find its
/// way to the server: the `reach` case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Situation {
    /// The server listens on QUIC and TCP (`auto`): QUIC answers at once.
    QuicAnswers,
    /// The server listens on TCP only, so QUIC gets no answer (on loopback
    /// the ICMP port-unreachable is ignored, as if UDP were blocked), and
    /// the client remembers nothing: TCP starts after QUIC's head start.
    FirstTime,
    /// The same, with the client's `reach` file kept from a connect before:
    /// TCP starts together with QUIC.
    Remembered,
}

impl Situation {
    pub const ALL: [Situation; 3] = [
        Situation::QuicAnswers,
        Situation::FirstTime,
        Situation::Remembered,
    ];

    /// For scripts (the `BENCH` lines).
    pub fn name(self) -> &'static str {
        match self {
            Situation::QuicAnswers => "quic-answers",
            Situation::FirstTime => "udp-unanswered-first",
            Situation::Remembered => "udp-unanswered-remembered",
        }
    }

    /// For the table's transport column.
    pub fn label(self) -> &'static str {
        match self {
            Situation::QuicAnswers => "auto, quic answers",
            Situation::FirstTime => "auto, no udp answer, 1st",
            Situation::Remembered => "auto, no udp answer, again",
        }
    }

    /// The transport that should win the race.
    pub fn winner(self) -> TransportKind {
        match self {
            Situation::QuicAnswers => TransportKind::Quic,
            Situation::FirstTime | Situation::Remembered => TransportKind::Tcp,
        }
    }

    fn server(self) -> Choice {
        match self {
            Situation::QuicAnswers => Choice::Auto,
            Situation::FirstTime | Situation::Remembered => Choice::Only(TransportKind::Tcp),
        }
    }
}

/// What the reach case measured.
pub struct Reach {
    /// Spawning an auto client to reading its `connected` event.
    pub times: Vec<Duration>,
    /// The same for the pinned clients interleaved with them.
    pub pinned: Vec<Duration>,
    /// Between reading an auto client's QUIC and TCP `connecting` events,
    /// for the connects that started both.
    pub head_starts: Vec<Duration>,
    /// How many measured auto connects started a TCP attempt at all.
    pub tcp_started: usize,
}

/// One client process's connect, timed as in [`connect`].
struct Connected {
    took: Duration,
    /// When its QUIC and TCP `connecting` events were read.
    quic_at: Option<Instant>,
    tcp_at: Option<Instant>,
}

/// Spawns a client (stdin closed), waits for its `connected` event, checks
/// that `winner` won (with a `fallback` reason if that is TCP and the
/// client could have used QUIC), and waits for it to leave.
fn connect_once(
    bin: &Bin,
    choice: Choice,
    (addr, fp): (SocketAddr, &str),
    home: &str,
    winner: TransportKind,
) -> Result<Connected> {
    let t0 = Instant::now();
    let mut client = bin.client_with(choice, addr, fp, home, Stdio::null(), Reading::Prompt)?;
    let (mut quic_at, mut tcp_at) = (None, None);
    let connected = client.wait_event_with("connected", EVENT_TIMEOUT, |ev| {
        if ev.name == "connecting" {
            match ev.field("transport").as_str() {
                Some("quic") => quic_at = quic_at.or(Some(ev.at)),
                Some("tcp") => tcp_at = tcp_at.or(Some(ev.at)),
                _ => {}
            }
        }
    })?;
    let took = connected.at - t0;
    let won = connected.field("transport").as_str().unwrap_or("?");
    let fallback = connected.field("fallback");
    ensure!(
        won == winner.name(),
        "--transport {}: won by {won}, not {winner} (fallback: {fallback})",
        choice.name()
    );
    ensure!(
        choice != Choice::Auto || winner == TransportKind::Quic || fallback.is_string(),
        "TCP won without a fallback reason"
    );
    client.finish_ok(EVENT_TIMEOUT)?;
    // As in `connect`: let the server free its chat slot.
    std::thread::sleep(Duration::from_millis(20));
    Ok(Connected {
        took,
        quic_at,
        tcp_at,
    })
}

/// reach: `n` client processes with `--transport auto` (the default),
/// timed as in [`connect`], each paired with a pinned client (`--transport`
/// the expected winner, as in [`connect`]) to the same server, in
/// alternating order, so that both sets see the same load; one unmeasured
/// pair first (it makes the identities and, for [`Situation::Remembered`],
/// leaves the memory the others use). Each set has a home of its own, so
/// that the pinned clients never touch the auto ones' memory and the two
/// differ only in `--transport`; for [`Situation::FirstTime`] the auto
/// home's `reach` file is deleted before each, so nothing is remembered but
/// the identity is not made again. Every connect must be won by
/// [`Situation::winner`].
pub fn reach(bin: &Bin, situation: Situation, n: usize) -> Result<Reach> {
    let (_server, addr, fp) = bin.server_with(situation.server(), Reading::Prompt)?;
    let server = (addr, fp.as_str());
    let winner = situation.winner();
    let home = TempDir::new("reach")?;
    let auto_home = home.path().display().to_string();
    let other = TempDir::new("reach-pinned")?;
    let pinned_home = other.path().display().to_string();
    // The client's memory of reaching servers (src/client/memory.rs).
    let memory = home.path().join("reach");
    let mut result = Reach {
        times: Vec::with_capacity(n),
        pinned: Vec::with_capacity(n),
        head_starts: Vec::new(),
        tcp_started: 0,
    };
    for i in 0..=n {
        if i == 0 || situation == Situation::FirstTime {
            match std::fs::remove_file(&memory) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).context("cannot remove the client's reach file");
                }
                _ => {}
            }
        }
        let pinned_first = i % 2 == 1;
        let pinned = |result: &mut Reach| -> Result<()> {
            let c = connect_once(bin, Choice::Only(winner), server, &pinned_home, winner)?;
            if i > 0 {
                result.pinned.push(c.took);
            }
            Ok(())
        };
        if pinned_first {
            pinned(&mut result)?;
        }
        let c = connect_once(bin, Choice::Auto, server, &auto_home, winner)?;
        if i > 0 {
            result.times.push(c.took);
            if let Some(tcp) = c.tcp_at {
                result.tcp_started += 1;
                if let Some(quic) = c.quic_at {
                    result.head_starts.push(tcp.saturating_duration_since(quic));
                }
            }
        }
        if !pinned_first {
            pinned(&mut result)?;
        }
    }
    Ok(result)
}

/// The idle timeout of both sides in the resume case (`--idle-timeout`, in
/// seconds): how long a cut goes unnoticed.
const RESUME_IDLE_S: &str = "1";
/// How long the server holds a lost chat (`--resume-window`, in seconds):
/// far longer than any cut of the case.
const RESUME_WINDOW_S: &str = "30";
/// How long a cut may take to be noticed (the idle timeout and then some).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the resume case measured, one figure per cut unless said.
pub struct Resume {
    /// From the link's return to the client's `resumed` event.
    pub times: Vec<Duration>,
    /// From the start (the `reconnecting` event) of the first attempt begun
    /// after the link's return to `resumed`, for the cuts that had one:
    /// the part no pause is in.
    pub new_attempt: Vec<Duration>,
    /// How many cuts were resumed by the attempt already under way when the
    /// link came back (by the stacks' own retransmissions).
    pub in_flight: usize,
    /// From the cut to the client's first `reconnecting` event.
    pub noticed: Vec<Duration>,
    /// `rtt_us` of the message sent after each resume.
    pub rtts: Vec<Duration>,
}

/// Runs a [`NetPair`] step, which panics when `nft` fails, as a `Result`.
fn link_step(what: &str, step: impl FnOnce()) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|e| {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow!("cannot {what} the link: {why}")
    })
}

/// Two network namespaces joined by a veth pair, or why there cannot be.
fn net_pair() -> Result<NetPair> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "cannot run: not running as root (network namespaces and nftables need root)"
    );
    NetPair::new().map_err(|reason| anyhow!("cannot run: {reason}"))
}

/// resume: a server (`--resume-window 30`) in one network namespace and a
/// client pinned to `kind` in another (both `--idle-timeout 1`), joined by
/// a veth pair ([`NetPair`]). `cuts` times: the link is cut (every packet
/// dropped both ways); once the client reports `reconnecting` (it noticed)
/// and the server `suspended`, the bench waits until `spread * i / (cuts -
/// 1)` after that first `reconnecting` event (cut `i`), so the link comes
/// back at points spread evenly over the client's cycle of attempts and
/// pauses; the link is restored, and timed from then to the client's
/// `resumed` event. Then the server's `resumed`, and one message that must
/// be acked and shown by the server.
pub fn resume(bin: &Bin, kind: TransportKind, cuts: usize, spread: Duration) -> Result<Resume> {
    let net = net_pair()?;
    let idle = ["--idle-timeout", RESUME_IDLE_S];
    let mut args = bin.server_args(Choice::Only(kind), &net.addr_a);
    args.extend(strings(&idle));
    args.extend(strings(&["--resume-window", RESUME_WINDOW_S]));
    let mut server = bin.spawn_in(&net.ns_a, "server", &args, Stdio::piped(), Reading::Prompt)?;
    let (addr, fp) = listening(&mut server)?;
    let mut args = client_args(Choice::Only(kind), addr, &fp, &bin.home_str());
    args.extend(strings(&idle));
    let mut client = bin.spawn_in(&net.ns_b, "client", &args, Stdio::piped(), Reading::Prompt)?;
    client.wait_event("connected", EVENT_TIMEOUT)?;
    server.wait_event("connected", EVENT_TIMEOUT)?;
    let line = text_line(32, b'z');
    // The chat works before the first cut.
    client.write(&line)?;
    client.wait_event("ack", EVENT_TIMEOUT)?;
    server.wait_event("message", EVENT_TIMEOUT)?;

    let mut result = Resume {
        times: Vec::with_capacity(cuts),
        new_attempt: Vec::new(),
        in_flight: 0,
        noticed: Vec::with_capacity(cuts),
        rtts: Vec::with_capacity(cuts),
    };
    for i in 0..cuts {
        let wait = if cuts > 1 {
            spread.mul_f64(i as f64 / (cuts - 1) as f64)
        } else {
            Duration::ZERO
        };
        link_step("cut", || net.cut())?;
        let cut_at = Instant::now();
        let first = client.wait_event("reconnecting", NOTICE_TIMEOUT)?;
        ensure!(
            first.field("attempt").as_u64() == Some(1),
            "cut {i}: the first reconnecting event is not attempt 1: {}",
            first.json.unwrap_or_default()
        );
        result.noticed.push(first.at - cut_at);
        server.wait_event("suspended", NOTICE_TIMEOUT)?;
        std::thread::sleep((first.at + wait).saturating_duration_since(Instant::now()));
        link_step("restore", || net.restore())?;
        let restored = Instant::now();
        // Every attempt's start, the first included (already read).
        let mut attempts: Vec<(u64, Instant)> = vec![(1, first.at)];
        let resumed = client.wait_event_with("resumed", EVENT_TIMEOUT, |ev| {
            if ev.name == "reconnecting" {
                let n = ev.field("attempt").as_u64().unwrap_or(0);
                attempts.push((n, ev.at));
            }
        })?;
        let took = resumed.at - restored;
        let over = resumed.field("transport").as_str().unwrap_or("?");
        ensure!(
            over == kind.name(),
            "cut {i}: resumed over {over}, not {kind}"
        );
        let &(won, won_at) = attempts.last().context("no attempt")?;
        let new = attempts.iter().find(|(_, at)| *at > restored);
        if let Some(&(_, at)) = new {
            result.new_attempt.push(resumed.at - at);
        }
        if won_at <= restored {
            result.in_flight += 1;
        }
        eprintln!(
            "bench:   cut {i}: noticed after {:?}; restored {:?} after attempt 1 began; \
             resumed {took:?} later by attempt {won} (begun {})",
            first.at - cut_at,
            restored - first.at,
            if won_at <= restored {
                "before the restore".to_string()
            } else {
                format!("{:?} after it", won_at - restored)
            }
        );
        result.times.push(took);
        server.wait_event("resumed", EVENT_TIMEOUT)?;
        // The chat really works again.
        client.write(&line)?;
        result
            .rtts
            .push(rtt_of(&client.wait_event("ack", EVENT_TIMEOUT)?)?);
        server.wait_event("message", EVENT_TIMEOUT)?;
    }
    client.finish_ok(EVENT_TIMEOUT)?;
    Ok(result)
}
