//! One running `chat` process with piped stdin, stdout and stderr: what it
//! was started with, every line it printed, and what it said on stderr, for
//! waits on its `--json` events and for failure messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::TIMEOUT;
use crate::bin::chat_bin;
use crate::process::{ChatProcess, Process, poll};
use crate::temp::TempDir;

/// Keep at most this much of a child's stderr (the tail) for diagnostics.
const STDERR_KEEP: usize = 256 * 1024;

/// One line of the child's stdout.
#[derive(Debug, Clone)]
pub struct Line {
    /// The line as written (without the newline).
    pub raw: String,
    /// The line parsed as JSON, if it is JSON.
    pub json: Option<Value>,
}

struct Recorded {
    line: Line,
    consumed: bool,
}

impl Recorded {
    fn event_name(&self) -> Option<&str> {
        self.line.json.as_ref()?.get("event")?.as_str()
    }
}

/// A running `chat` process with piped stdin/stdout/stderr.
///
/// * stdin is written by a writer thread, so `send_*` never blocks (a test
///   can queue thousands of lines on two peers "at once").
/// * stdout is read by a reader thread, each line parsed as JSON and sent
///   through a channel; every line is recorded in order in `history`.
/// * stderr is drained by a thread into a bounded buffer (its tail is shown
///   in failure messages).
///
/// The child is killed (SIGKILL) when the `Peer` is dropped.
pub struct Peer {
    pub label: String,
    process: Process,
    stdin_tx: Option<Sender<Vec<u8>>>,
    lines_rx: Receiver<Line>,
    stdout_closed: bool,
    history: Vec<Recorded>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Set by the stderr thread when it has read everything (EOF).
    stderr_closed: Arc<AtomicBool>,
    write_error: Arc<Mutex<Option<String>>>,
    home: Option<TempDir>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// How to launch a `chat` process.
pub struct Launch {
    pub label: String,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    /// A directory owned by the peer (removed when it is dropped).
    pub home: Option<TempDir>,
}

impl Launch {
    pub fn new(label: impl Into<String>, args: &[&str]) -> Launch {
        Launch {
            label: label.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            home: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Launch {
        self.args.push(a.into());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, a: &[S]) -> Launch {
        self.args.extend(a.iter().map(|s| s.as_ref().to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Launch {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    pub fn home(mut self, home: TempDir) -> Launch {
        self.home = Some(home);
        self
    }

    pub fn spawn(self) -> Peer {
        Peer::spawn(self)
    }
}

impl Peer {
    pub fn spawn(launch: Launch) -> Peer {
        let Launch {
            label,
            args,
            envs,
            home,
        } = launch;
        let mut cmd = Command::new(chat_bin());
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The environment fallbacks must not leak in from the outer
        // environment; tests that exercise them set them explicitly.
        for k in ["MODE", "IP_ADDR", "CHAT_HOME"] {
            cmd.env_remove(k);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "[{label}] cannot spawn {} {args:?}: {e}",
                chat_bin().display()
            )
        });

        // stdin writer thread
        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>();
        let write_error = Arc::new(Mutex::new(None));
        {
            let mut stdin = child.stdin.take().expect("stdin piped");
            let write_error = Arc::clone(&write_error);
            thread::spawn(move || {
                for chunk in stdin_rx {
                    if let Err(e) = stdin.write_all(&chunk).and_then(|_| stdin.flush()) {
                        *write_error.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                }
                // channel closed: dropping `stdin` closes the pipe (EOF)
            });
        }

        // stdout reader thread
        let (lines_tx, lines_rx) = mpsc::channel::<Line>();
        {
            let stdout = child.stdout.take().expect("stdout piped");
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if buf.last() == Some(&b'\n') {
                                buf.pop();
                            }
                            if buf.last() == Some(&b'\r') {
                                buf.pop();
                            }
                            let raw = String::from_utf8_lossy(&buf).into_owned();
                            let json = serde_json::from_str::<Value>(&raw).ok();
                            if lines_tx.send(Line { raw, json }).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }

        // stderr drain thread
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_closed = Arc::new(AtomicBool::new(false));
        {
            let mut err = child.stderr.take().expect("stderr piped");
            let stderr = Arc::clone(&stderr);
            let stderr_closed = Arc::clone(&stderr_closed);
            thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match err.read(&mut chunk) {
                        Ok(0) | Err(_) => {
                            stderr_closed.store(true, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => {
                            let mut s = stderr.lock().unwrap();
                            s.extend_from_slice(&chunk[..n]);
                            if s.len() > 2 * STDERR_KEEP {
                                let cut = s.len() - STDERR_KEEP;
                                s.drain(..cut);
                            }
                        }
                    }
                }
            });
        }

        Peer {
            label,
            process: Process::new(child),
            stdin_tx: Some(stdin_tx),
            lines_rx,
            stdout_closed: false,
            history: Vec::new(),
            stderr,
            stderr_closed,
            write_error,
            home,
            args,
            envs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn home(&self) -> Option<&Path> {
        self.home.as_ref().map(|h| h.path())
    }

    // ----- stdin ---------------------------------------------------------

    /// Queue one raw line (a newline is appended) for the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match &self.stdin_tx {
            Some(tx) => {
                if tx.send(bytes).is_err() {
                    let msg = format!(
                        "stdin writer has stopped (child gone?) while sending {}",
                        truncate(line, 120)
                    );
                    self.fail(&msg);
                }
            }
            None => panic!("[{}] send after close_stdin()", self.label),
        }
    }

    /// Send one message given as text: writes `{"text": ...}`.
    pub fn send_text(&mut self, text: &str) {
        let line = json!({ "text": text }).to_string();
        self.send_line(&line);
    }

    /// Send one message given as bytes: writes `{"base64": ...}`.
    pub fn send_base64(&mut self, bytes: &[u8]) {
        let line = json!({ "base64": B64.encode(bytes) }).to_string();
        self.send_line(&line);
    }

    /// Close the child's stdin (after everything queued so far is written).
    pub fn close_stdin(&mut self) {
        self.stdin_tx = None;
    }

    // ----- process control ------------------------------------------------

    /// Send a signal by name ("INT", "TERM", "STOP", "CONT", ...) using kill(1).
    pub fn signal(&mut self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -{sig}: {e}"));
        assert!(
            status.success(),
            "[{}] kill -{sig} {} failed: {status}",
            self.label,
            self.pid()
        );
    }

    /// Waits (bounded) until the process, sent SIGSTOP, is really stopped
    /// (state `T` in /proc), so that it cannot answer anything any more.
    pub fn wait_stopped(&mut self) {
        let stat = format!("/proc/{}/stat", self.pid());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            // `pid (comm) STATE ...`; comm may hold spaces or parentheses.
            let state = text
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            if state == Some("T") {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("process did not stop after SIGSTOP: {text:?}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    // ----- stdout events -------------------------------------------------

    fn record(&mut self, line: Line) -> usize {
        self.history.push(Recorded {
            line,
            consumed: false,
        });
        self.history.len() - 1
    }

    fn matches(rec: &Recorded, name: &str, pred: &dyn Fn(&Value) -> bool) -> bool {
        !rec.consumed && rec.event_name() == Some(name) && pred(rec.line.json.as_ref().unwrap())
    }

    /// Wait for the next not-yet-consumed event called `name`. Other events
    /// are skipped but recorded (they remain available to later waits and to
    /// [`Peer::events`]). Panics with the events seen and the stderr tail on
    /// timeout or if stdout closes first.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait_event_where(name, "", |_| true, timeout)
    }

    /// Like [`Peer::wait_event`], for the first event `name` satisfying `pred`
    /// (`what` describes the predicate in failure messages).
    pub fn wait_event_where(
        &mut self,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        match self.try_wait_event_where(name, what, pred, timeout) {
            Ok(v) => v,
            Err(msg) => self.fail(&msg),
        }
    }

    /// Like [`Peer::wait_event`], but returns `None` (instead of panicking)
    /// if stdout closes or the timeout passes first.
    pub fn try_wait_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        self.try_wait_event_where(name, "", |_| true, timeout).ok()
    }

    fn try_wait_event_where(
        &mut self,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        if let Some(i) = self
            .history
            .iter()
            .position(|r| Self::matches(r, name, &pred))
        {
            self.history[i].consumed = true;
            return Ok(self.history[i].line.json.clone().unwrap());
        }
        let deadline = Instant::now() + timeout;
        let describe = || {
            if what.is_empty() {
                format!("event `{name}`")
            } else {
                format!("event `{name}` ({what})")
            }
        };
        loop {
            if self.stdout_closed {
                return Err(format!(
                    "stdout closed (process exited?) before {}",
                    describe()
                ));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    let i = self.record(line);
                    if Self::matches(&self.history[i], name, &pred) {
                        self.history[i].consumed = true;
                        return Ok(self.history[i].line.json.clone().unwrap());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {}",
                        describe()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_closed = true,
            }
        }
    }

    /// Wait for the event `name` whose `id` field equals `id`.
    pub fn wait_event_id(&mut self, name: &str, id: u64, timeout: Duration) -> Value {
        self.wait_event_where(
            name,
            &format!("id = {id}"),
            |v| v["id"].as_u64() == Some(id),
            timeout,
        )
    }

    /// Wait until `n` (not yet consumed) events called `name` have been seen
    /// in total, within `timeout` overall; returns them in arrival order.
    pub fn collect_events(&mut self, name: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        for r in self.history.iter_mut() {
            if out.len() == n {
                break;
            }
            if !r.consumed && r.event_name() == Some(name) {
                r.consumed = true;
                out.push(r.line.json.clone().unwrap());
            }
        }
        while out.len() < n {
            if self.stdout_closed {
                let msg = format!(
                    "stdout closed (process exited?) after {} of {n} `{name}` events",
                    out.len()
                );
                self.fail(&msg);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    let i = self.record(line);
                    if self.history[i].event_name() == Some(name) {
                        self.history[i].consumed = true;
                        out.push(self.history[i].line.json.clone().unwrap());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let msg = format!(
                        "timed out after {timeout:?} with {} of {n} `{name}` events",
                        out.len()
                    );
                    self.fail(&msg);
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_closed = true,
            }
        }
        out
    }

    /// Record whatever stdout lines are already available, without waiting.
    pub fn poll(&mut self) {
        while let Ok(line) = self.lines_rx.try_recv() {
            self.record(line);
        }
    }

    /// Read stdout until it closes (the process exited); panics on timeout.
    pub fn drain_stdout(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stdout_closed {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    self.record(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let msg = format!("timed out after {timeout:?} waiting for stdout to close");
                    self.fail(&msg);
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_closed = true,
            }
        }
    }

    /// Collect stdout for `dur` (no failure if nothing arrives).
    pub fn settle(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while !self.stdout_closed {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match self.lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    self.record(line);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => self.stdout_closed = true,
            }
        }
    }

    /// All JSON events seen so far (consumed or not), in stdout order.
    pub fn events(&self) -> Vec<&Value> {
        self.history
            .iter()
            .filter_map(|r| r.line.json.as_ref())
            .collect()
    }

    /// All events called `name` seen so far, in stdout order.
    pub fn events_named(&self, name: &str) -> Vec<&Value> {
        self.history
            .iter()
            .filter(|r| r.event_name() == Some(name))
            .map(|r| r.line.json.as_ref().unwrap())
            .collect()
    }

    /// The ids of all events called `name` seen so far, in stdout order.
    pub fn ids_of(&self, name: &str) -> Vec<u64> {
        self.events_named(name)
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .collect()
    }

    /// Every stdout line seen so far, raw.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.history.iter().map(|r| r.line.raw.as_str()).collect()
    }

    /// The stdout lines seen so far that are not JSON objects with an
    /// `event` key (in `--json` mode there must be none).
    pub fn non_event_lines(&self) -> Vec<&str> {
        self.history
            .iter()
            .filter(|r| r.event_name().is_none())
            .map(|r| r.line.raw.as_str())
            .collect()
    }

    pub fn assert_only_json_events(&self) {
        let bad = self.non_event_lines();
        assert!(
            bad.is_empty(),
            "[{}] stdout in --json mode must carry only JSON event objects; got: {:?}",
            self.label,
            bad.iter().map(|l| truncate(l, 200)).collect::<Vec<_>>()
        );
    }

    /// The child's stderr so far. Once the child is known to have exited,
    /// waits (bounded) until its stderr has been read to the end, so that
    /// nothing it wrote just before exiting is missed.
    pub fn stderr_text(&self) -> String {
        if self.process.has_exited() {
            let deadline = Instant::now() + TIMEOUT;
            while !self.stderr_closed.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Wait until the child's stderr contains `needle` (logs may lag behind
    /// stdout events); panics with diagnostics on timeout.
    pub fn wait_stderr_contains(&mut self, needle: &str, timeout: Duration) {
        if poll(timeout, || {
            self.stderr_text().contains(needle).then_some(())
        })
        .is_none()
        {
            self.fail(&format!(
                "timed out after {timeout:?} waiting for stderr to mention {needle:?}"
            ));
        }
    }

    /// Everything the program told the user: stderr, plus the `message` of
    /// `error` events and the `reason` of `disconnected` events on stdout.
    pub fn everything_said(&mut self) -> String {
        self.poll();
        let mut said = self.stderr_text();
        for e in self.events_named("error") {
            said += "\n";
            said += e["message"].as_str().unwrap_or_default();
        }
        for e in self.events_named("disconnected") {
            said += "\n";
            said += e["reason"].as_str().unwrap_or_default();
        }
        said
    }
}

impl ChatProcess for Peer {
    fn label(&self) -> &str {
        &self.label
    }

    fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    fn diagnostics(&mut self) -> String {
        self.poll();
        let status = self.process.status_text();
        let mut s = format!(
            "[{}] pid {} ({status})\n  command: {}{} {}\n",
            self.label,
            self.process.pid(),
            self.envs
                .iter()
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>(),
            chat_bin().display(),
            self.args.join(" ")
        );
        if let Some(e) = self.write_error.lock().unwrap().as_ref() {
            s += &format!("  stdin write error: {e}\n");
        }
        let n = self.history.len();
        const SHOW: usize = 60;
        s += &format!(
            "  stdout lines seen: {n}{}\n",
            if self.stdout_closed { " (closed)" } else { "" }
        );
        if n > SHOW {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for r in &self.history[..n - SHOW] {
                let name = r.event_name().unwrap_or("<not an event>").to_string();
                match counts.iter_mut().find(|(k, _)| *k == name) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((name, 1)),
                }
            }
            s += &format!("  ... {} earlier lines: {counts:?}\n", n - SHOW);
        }
        for r in &self.history[n.saturating_sub(SHOW)..] {
            s += &format!(
                "  {} {}\n",
                if r.consumed { "*" } else { " " },
                truncate(&r.line.raw, 300)
            );
        }
        let err = self.stderr_text();
        let tail: String = tail_chars(&err, 4000);
        s += &format!(
            "  stderr tail ({} bytes total kept):\n{}\n",
            err.len(),
            indent(&tail)
        );
        s
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Close stdin first; the process is killed as it is dropped next.
        self.stdin_tx = None;
    }
}

/// Run `chat <args>` to completion (stdin closed at once); returns the peer
/// after exit with its stdout fully read.
pub fn run_chat(label: &str, args: &[&str], timeout: Duration) -> (ExitStatus, Peer) {
    let mut p = Launch::new(label, args).spawn();
    p.close_stdin();
    let st = p.wait_exit(timeout);
    p.drain_stdout(TIMEOUT);
    (st, p)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…(+{} bytes)", &s[..end], s.len() - end)
    }
}

fn tail_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
