//! Shared helpers for the integration tests: spawn the real `chat` binary
//! (server and client as separate processes), talk to it through its
//! `--json` stdin/stdout contract, and wait for events with generous timeouts.
//!
//! Every test is run for both transports through [`both_transports!`].

pub mod pty;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// Default timeout for one expected event. CI is a loaded 2-core machine
/// running a debug build, so this is deliberately generous.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for bulk work (thousands of messages, multi-MiB messages).
pub const LONG_TIMEOUT: Duration = Duration::from_secs(120);

/// Keep at most this much of a child's stderr (the tail) for diagnostics.
const STDERR_KEEP: usize = 256 * 1024;

/// The transport a test runs over: the program's own type, so that its
/// names on the command line and in events are the program's too.
pub use chat::TransportKind;

/// Generates one `#[test]` per transport for each listed function
/// `fn name(t: TransportKind)`: `quic::name` and `tcp::name`.
#[macro_export]
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        mod quic {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::TransportKind::Quic)
                }
            )*
        }
        mod tcp {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::TransportKind::Tcp)
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------
// Temporary directories (std only)
// ---------------------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), n, nanos)
}

/// A fresh directory under the system temp dir, removed on drop — except
/// when the test is panicking, so its contents can be inspected.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("chat-test-{tag}-{}", unique_suffix()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path
            .to_str()
            .expect("temp path is not UTF-8")
            .to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "(test failed: keeping {} for inspection)",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Peer: one running `chat` process
// ---------------------------------------------------------------------------

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
    child: Child,
    stdin_tx: Option<Sender<Vec<u8>>>,
    lines_rx: Receiver<Line>,
    stdout_closed: bool,
    history: Vec<Recorded>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Set by the stderr thread when it has read everything (EOF).
    stderr_closed: Arc<AtomicBool>,
    write_error: Arc<Mutex<Option<String>>>,
    exit: Option<ExitStatus>,
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

/// The `chat` binary under test.
///
/// `CARGO_BIN_EXE_chat` is set at compile time only for the `chat`
/// package's own test targets, not for this crate, so the binary is found
/// as `assert_cmd` finds it: a run-time `CARGO_BIN_EXE_chat` if there is
/// one, else `chat` in the profile directory the running test lives under
/// (`target/<profile>/deps/<test>-<hash>` -> `target/<profile>/chat`).
/// Cargo builds the package's binaries before its integration tests.
pub fn chat_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_chat") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        let mut dir = exe
            .parent()
            .expect("the test binary lives in a directory")
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join(format!("chat{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "no chat binary at {} (set CARGO_BIN_EXE_chat to its path)",
            bin.display()
        );
        bin
    })
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
            child,
            stdin_tx: Some(stdin_tx),
            lines_rx,
            stdout_closed: false,
            history: Vec::new(),
            stderr,
            stderr_closed,
            write_error,
            exit: None,
            home,
            args,
            envs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// SIGKILL the child and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.exit = Some(st);
        }
    }

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

    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.exit = Some(st);
        }
        self.exit
    }

    /// Wait for the child to exit; panics (with diagnostics) on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit_status() {
                return st;
            }
            if Instant::now() >= deadline {
                let msg = format!("timed out after {timeout:?} waiting for the process to exit");
                self.fail(&msg);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for exit and assert the exit code.
    pub fn expect_exit_code(&mut self, code: i32, timeout: Duration) {
        let st = self.wait_exit(timeout);
        if st.code() != Some(code) {
            let msg = format!("expected exit status {code}, got {st}");
            self.fail(&msg);
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
        if self.exit.is_some() {
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
        let deadline = Instant::now() + timeout;
        while !self.stderr_text().contains(needle) {
            if Instant::now() >= deadline {
                let msg =
                    format!("timed out after {timeout:?} waiting for stderr to mention {needle:?}");
                self.fail(&msg);
            }
            thread::sleep(Duration::from_millis(20));
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

    // ----- diagnostics ---------------------------------------------------

    pub fn diagnostics(&mut self) -> String {
        self.poll();
        let status = match self.try_exit_status() {
            Some(st) => format!("exited: {st}"),
            None => "still running".to_string(),
        };
        let mut s = format!(
            "[{}] pid {} ({status})\n  command: {}{} {}\n",
            self.label,
            self.child.id(),
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

    /// Panic with `msg` and this peer's diagnostics.
    pub fn fail(&mut self, msg: &str) -> ! {
        let d = self.diagnostics();
        panic!("[{}] {msg}\n{d}", self.label);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin_tx = None;
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
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

// ---------------------------------------------------------------------------
// Starting servers and clients
// ---------------------------------------------------------------------------

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_fingerprint(s: &str) -> bool {
    match s.strip_prefix("sha256:") {
        Some(hex) => {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

/// The port of an address like `127.0.0.1:41234` or `[::1]:41234`.
pub fn port_of(addr: &str) -> u16 {
    let (_, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in address {addr:?}"));
    port.parse()
        .unwrap_or_else(|e| panic!("bad port in address {addr:?}: {e}"))
}

/// Arguments of a server started on loopback with an ephemeral port.
pub fn server_args(t: TransportKind, bind: &str, home: &TempDir, mode_flag: bool) -> Vec<String> {
    server_args_in(t, bind, home.path(), 0, mode_flag)
}

/// Arguments of a server with its home at `home`, listening on `port`
/// (0 picks a free one).
pub fn server_args_in(
    t: TransportKind,
    bind: &str,
    home: &Path,
    port: u16,
    mode_flag: bool,
) -> Vec<String> {
    let mut a = Vec::new();
    if mode_flag {
        a.extend(["--mode".to_string(), "server".to_string()]);
    }
    a.extend(
        [
            "--transport",
            t.name(),
            "--bind",
            bind,
            "--port",
            &port.to_string(),
            "--home",
            home.to_str().expect("home path is not UTF-8"),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a
}

/// Wait for a server's `listening` event and check its fields; returns
/// (addr, fingerprint).
pub fn await_listening(server: &mut Peer, t: TransportKind) -> (String, String) {
    let ev = server.wait_event("listening", TIMEOUT);
    check_listening(server, t, &ev)
}

/// Check the fields of a `listening` event; returns (addr, fingerprint).
pub fn check_listening(server: &mut Peer, t: TransportKind, ev: &Value) -> (String, String) {
    let transport = ev["transport"].as_str().unwrap_or_default().to_string();
    let addr = ev["addr"].as_str().unwrap_or_default().to_string();
    let fp = ev["fingerprint"].as_str().unwrap_or_default().to_string();
    if transport != t.name() {
        server.fail(&format!(
            "listening.transport should be {:?}: {ev}",
            t.name()
        ));
    }
    match addr.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => {}
        _ => server.fail(&format!(
            "listening.addr should be a socket address with a real port: {ev}"
        )),
    }
    if !is_fingerprint(&fp) {
        server.fail(&format!(
            "listening.fingerprint should be sha256:<64 lowercase hex>: {ev}"
        ));
    }
    (addr, fp)
}

/// `chat --mode server --transport T --bind 127.0.0.1 --port 0 --home <fresh> --json <extra>`,
/// waiting for `listening`. Returns (server, addr, fingerprint).
pub fn start_server(t: TransportKind, extra: &[&str]) -> (Peer, String, String) {
    start_server_with(t, "127.0.0.1", extra, &[], true)
}

/// Like [`start_server`] with a chosen bind address, extra environment, and
/// optionally without the `--mode` flag (for the `MODE` env fallback).
pub fn start_server_with(
    t: TransportKind,
    bind: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
    mode_flag: bool,
) -> (Peer, String, String) {
    let home = TempDir::new("server-home");
    let mut launch = Launch::new(format!("server/{}#{}", t.name(), next_id()), &[])
        .args(&server_args(t, bind, &home, mode_flag))
        .args(extra)
        .home(home);
    for (k, v) in envs {
        launch = launch.env(k, v);
    }
    let mut server = launch.spawn();
    let (addr, fp) = await_listening(&mut server, t);
    (server, addr, fp)
}

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// `chat --mode client --transport T --addr ADDR --fingerprint FP --home <fresh> --json <extra>`.
/// Does not wait for anything.
pub fn start_client(t: TransportKind, addr: &str, fingerprint: &str, extra: &[&str]) -> Peer {
    start_client_with(t, Some(addr), fingerprint, extra, &[], true)
}

/// Like [`start_client`]; `addr: None` omits `--addr`, `mode_flag: false`
/// omits `--mode` (for the env fallbacks).
pub fn start_client_with(
    t: TransportKind,
    addr: Option<&str>,
    fingerprint: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
    mode_flag: bool,
) -> Peer {
    let home = TempDir::new("client-home");
    let mut args: Vec<String> = Vec::new();
    if mode_flag {
        args.extend(["--mode".into(), "client".into()]);
    }
    args.extend(["--transport".into(), t.name().into()]);
    if let Some(a) = addr {
        args.extend(["--addr".into(), a.into()]);
    }
    args.extend([
        "--fingerprint".into(),
        fingerprint.into(),
        "--home".into(),
        home.path_str(),
        "--json".into(),
    ]);
    let mut launch = Launch::new(format!("client/{}#{}", t.name(), next_id()), &[])
        .args(&args)
        .args(extra)
        .home(home);
    for (k, v) in envs {
        launch = launch.env(k, v);
    }
    launch.spawn()
}

/// Wait for `connected` on both sides (checking the fields of each).
pub fn await_connected(server: &mut Peer, client: &mut Peer, t: TransportKind, server_fp: &str) {
    let cev = client.wait_event("connected", TIMEOUT);
    if cev["transport"].as_str() != Some(t.name()) {
        client.fail(&format!(
            "connected.transport should be {:?}: {cev}",
            t.name()
        ));
    }
    if cev["fingerprint"].as_str() != Some(server_fp) {
        client.fail(&format!(
            "client's connected.fingerprint should be the server's {server_fp}: {cev}"
        ));
    }
    if cev["peer"]
        .as_str()
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .is_none()
    {
        client.fail(&format!("connected.peer should be a socket address: {cev}"));
    }
    let sev = server.wait_event("connected", TIMEOUT);
    if sev["transport"].as_str() != Some(t.name()) {
        server.fail(&format!(
            "connected.transport should be {:?}: {sev}",
            t.name()
        ));
    }
    if sev["peer"]
        .as_str()
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .is_none()
    {
        server.fail(&format!("connected.peer should be a socket address: {sev}"));
    }
}

/// A server and one connected client.
pub struct Chat {
    pub server: Peer,
    pub client: Peer,
    pub addr: String,
    pub fingerprint: String,
}

/// Start a server and a client and wait until both report `connected`.
pub fn start_chat(t: TransportKind, server_extra: &[&str], client_extra: &[&str]) -> Chat {
    let (mut server, addr, fingerprint) = start_server(t, server_extra);
    let mut client = start_client(t, &addr, &fingerprint, client_extra);
    await_connected(&mut server, &mut client, t, &fingerprint);
    Chat {
        server,
        client,
        addr,
        fingerprint,
    }
}

/// `from` sends `text` as message `id`; checks `sent` and `ack` on `from`
/// and the `message` on `to`.
pub fn exchange(from: &mut Peer, to: &mut Peer, id: u64, text: &str) {
    from.send_text(text);
    let sent = from.wait_event_id("sent", id, TIMEOUT);
    if sent["bytes"].as_u64() != Some(text.len() as u64) {
        from.fail(&format!("sent.bytes should be {}: {sent}", text.len()));
    }
    let msg = to.wait_event_id("message", id, TIMEOUT);
    if msg["text"].as_str() != Some(text) || msg["bytes"].as_u64() != Some(text.len() as u64) {
        to.fail(&format!(
            "message {id} should carry text {text:?} ({} bytes): {msg}",
            text.len()
        ));
    }
    let ack = from.wait_event_id("ack", id, TIMEOUT);
    if ack["rtt_us"].as_u64().is_none() {
        from.fail(&format!(
            "ack.rtt_us should be a non-negative integer: {ack}"
        ));
    }
}

/// The bytes of a `message` event (from `text` or `base64`).
pub fn message_bytes(ev: &Value) -> Vec<u8> {
    if let Some(t) = ev.get("text").and_then(Value::as_str) {
        t.as_bytes().to_vec()
    } else if let Some(b) = ev.get("base64").and_then(Value::as_str) {
        B64.decode(b)
            .unwrap_or_else(|e| panic!("message.base64 is not valid base64: {e}"))
    } else {
        panic!(
            "message event has neither text nor base64: {}",
            truncate(&ev.to_string(), 300)
        )
    }
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    B64.decode(s)
        .unwrap_or_else(|e| panic!("not valid base64: {e}"))
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
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

/// Whether this machine can use IPv6 loopback (TCP and UDP on [::1]).
pub fn ipv6_loopback_available() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0").map_err(|e| format!("TCP bind [::1]:0 failed: {e}"))?;
    std::net::UdpSocket::bind("[::1]:0").map_err(|e| format!("UDP bind [::1]:0 failed: {e}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Homes, trust and identities
// ---------------------------------------------------------------------------

/// Spawn `chat --mode server --transport T --bind 127.0.0.1 --port PORT
/// --home HOME --json <extra>` without waiting for anything (for servers
/// expected to fail at start-up). `home` stays the caller's.
pub fn spawn_server_in(t: TransportKind, home: &Path, port: u16, extra: &[&str]) -> Peer {
    Launch::new(format!("server/{}#{}", t.name(), next_id()), &[])
        .args(&server_args_in(t, "127.0.0.1", home, port, true))
        .args(extra)
        .spawn()
}

/// A server whose home is `home` (kept by the caller, so the identity in
/// it outlives the process), on `port` (0 for a free one); waits for
/// `listening`. Returns (server, addr, fingerprint).
///
/// With a fixed port the start is retried for a while if the server exits
/// before listening (the port may still be held by a server just stopped).
pub fn start_server_in(
    t: TransportKind,
    home: &Path,
    port: u16,
    extra: &[&str],
) -> (Peer, String, String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut server = spawn_server_in(t, home, port, extra);
        if let Some(ev) = server.try_wait_event("listening", TIMEOUT) {
            let (addr, fp) = check_listening(&mut server, t, &ev);
            if port != 0 && port_of(&addr) != port {
                server.fail(&format!("server should listen on port {port}: {ev}"));
            }
            return (server, addr, fp);
        }
        if port == 0 || Instant::now() >= deadline {
            server.fail("server did not start listening");
        }
        // Exited at start-up (port still in use?): try again shortly.
        let _ = server.wait_exit(TIMEOUT);
        thread::sleep(Duration::from_millis(250));
    }
}

/// A client that, unlike [`start_client`], pins nothing unless asked:
/// `chat --mode client --transport T --addr ADDR --home HOME [--json] <args>`.
/// Without [`ClientBuilder::home`] the client gets a fresh home of its own.
pub struct ClientBuilder {
    t: TransportKind,
    addr: String,
    home: Option<PathBuf>,
    args: Vec<String>,
    json: bool,
}

impl ClientBuilder {
    pub fn new(t: TransportKind, addr: &str) -> ClientBuilder {
        ClientBuilder {
            t,
            addr: addr.to_string(),
            home: None,
            args: Vec::new(),
            json: true,
        }
    }

    /// Use (and share) this home directory; it stays the caller's.
    pub fn home(mut self, home: &Path) -> ClientBuilder {
        self.home = Some(home.to_path_buf());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> ClientBuilder {
        self.args.push(a.into());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, a: &[S]) -> ClientBuilder {
        self.args.extend(a.iter().map(|s| s.as_ref().to_string()));
        self
    }

    pub fn fingerprint(self, fp: &str) -> ClientBuilder {
        self.arg("--fingerprint").arg(fp)
    }

    pub fn accept_new(self) -> ClientBuilder {
        self.arg("--accept-new")
    }

    pub fn insecure(self) -> ClientBuilder {
        self.arg("--insecure")
    }

    /// Plain output for people instead of `--json`.
    pub fn plain(mut self) -> ClientBuilder {
        self.json = false;
        self
    }

    /// The command line (without the program) for a given home.
    pub fn command_args(&self, home: &Path) -> Vec<String> {
        let mut a: Vec<String> = [
            "--mode",
            "client",
            "--transport",
            self.t.name(),
            "--addr",
            &self.addr,
            "--home",
            home.to_str().expect("home path is not UTF-8"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.json {
            a.push("--json".to_string());
        }
        a.extend(self.args.iter().cloned());
        a
    }

    pub fn spawn(self) -> Peer {
        let label = format!("client/{}#{}", self.t.name(), next_id());
        match &self.home {
            Some(home) => Launch::new(label, &[]).args(&self.command_args(home)),
            None => {
                let home = TempDir::new("client-home");
                Launch::new(label, &[])
                    .args(&self.command_args(home.path()))
                    .home(home)
            }
        }
        .spawn()
    }
}

/// Wait for the client's `connected` and the server's, and check that the
/// client saw `server_fp` and the server saw `client_fp`; returns the
/// server's `connected` event.
pub fn await_connected_identities(
    server: &mut Peer,
    client: &mut Peer,
    t: TransportKind,
    server_fp: &str,
    client_fp: &str,
) -> Value {
    await_connected(server, client, t, server_fp);
    let sev = server
        .events_named("connected")
        .last()
        .map(|v| (*v).clone())
        .expect("server reported connected");
    if sev["fingerprint"].as_str() != Some(client_fp) {
        server.fail(&format!(
            "server's connected.fingerprint should be the client's identity {client_fp}: {sev}"
        ));
    }
    sev
}

/// A client that has chatted: close its input and expect exit 0, and the
/// server's `disconnected`.
pub fn finish_client(server: &mut Peer, client: &mut Peer) {
    client.close_stdin();
    client.expect_exit_code(0, TIMEOUT);
    server.wait_event("disconnected", TIMEOUT);
}

/// The `known_hosts` file of a client home.
pub fn known_hosts_path(home: &Path) -> PathBuf {
    home.join("known_hosts")
}

/// The text of a home's `known_hosts` ("" when there is none).
pub fn known_hosts_text(home: &Path) -> String {
    match std::fs::read_to_string(known_hosts_path(home)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read {}: {e}", known_hosts_path(home).display()),
    }
}

/// One entry of `known_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHost {
    /// 1-based line number.
    pub line: usize,
    pub host: String,
    pub fingerprint: String,
}

/// The entries of a home's `known_hosts` (none when there is no file).
/// Every line must be a `#` comment, blank, or `HOST:PORT sha256:<hex>`.
pub fn known_hosts(home: &Path) -> Vec<KnownHost> {
    let text = known_hosts_text(home);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = l.split_whitespace().collect();
        assert!(
            fields.len() == 2 && is_fingerprint(fields[1]) && fields[0].contains(':'),
            "known_hosts line {} should be `HOST:PORT sha256:<hex>`: {line:?}\nwhole file:\n{text}",
            i + 1
        );
        out.push(KnownHost {
            line: i + 1,
            host: fields[0].to_string(),
            fingerprint: fields[1].to_string(),
        });
    }
    out
}

/// Assert that `known_hosts` has exactly these (host, fingerprint) entries
/// (in any order), after a `#` comment header.
pub fn assert_known_hosts(home: &Path, want: &[(&str, &str)]) {
    let text = known_hosts_text(home);
    let mut got: Vec<(String, String)> = known_hosts(home)
        .into_iter()
        .map(|e| (e.host, e.fingerprint))
        .collect();
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(h, f)| (h.to_string(), f.to_string()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "known_hosts entries differ; whole file:\n{text}");
    if !want.is_empty() {
        assert!(
            text.starts_with('#'),
            "known_hosts should start with a `#` comment header:\n{text}"
        );
    }
}

/// Every `sha256:<64 hex>` in `text`, in order.
pub fn fingerprints_in(text: &str) -> Vec<String> {
    text.match_indices("sha256:")
        .map(|(i, _)| text[i..].chars().take(7 + 64).collect::<String>())
        .filter(|c| is_fingerprint(c))
        .collect()
}

/// `chat id --home HOME <extra>`: exit status and the (role, fingerprint)
/// lines it printed, e.g. ("client", "sha256:…").
pub fn chat_id(home: &Path, extra: &[&str]) -> (ExitStatus, Vec<(String, String)>, Peer) {
    let home_s = home.to_str().expect("home path is not UTF-8");
    let mut args = vec!["id", "--home", home_s];
    args.extend_from_slice(extra);
    let (st, p) = run_chat("chat id", &args, TIMEOUT);
    let lines = p
        .stdout_lines()
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let role = f.next().unwrap_or_default().to_string();
            let fp = f.next().unwrap_or_default().to_string();
            assert!(
                is_fingerprint(&fp) && f.next().is_none(),
                "`chat id` lines should be `ROLE sha256:<hex>`, got {l:?}"
            );
            (role, fp)
        })
        .collect();
    (st, lines, p)
}

/// The client identity of `home` (created if needed), from `chat id`.
pub fn client_fingerprint(home: &Path) -> String {
    let (st, lines, p) = chat_id(home, &[]);
    assert_eq!(
        st.code(),
        Some(0),
        "`chat id` should exit 0, got {st}; stderr:\n{}",
        p.stderr_text()
    );
    lines
        .iter()
        .find(|(role, _)| role == "client")
        .map(|(_, fp)| fp.clone())
        .unwrap_or_else(|| panic!("`chat id` should print a `client sha256:…` line: {lines:?}"))
}

/// Unix permission bits of a file.
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `chat cert --out DIR <extra>`: exit status, the fingerprint printed (if
/// any), and the finished process.
pub fn chat_cert(out: &Path, extra: &[&str]) -> (ExitStatus, Option<String>, Peer) {
    let out_s = out.to_str().expect("path is not UTF-8");
    let mut args = vec!["cert", "--out", out_s];
    args.extend_from_slice(extra);
    let (st, p) = run_chat("chat cert", &args, TIMEOUT);
    let fp = fingerprints_in(&p.stdout_lines().join("\n"))
        .into_iter()
        .next();
    (st, fp, p)
}

/// What is wrong with ids counted in `seen`, which should be each of
/// 0..n exactly once: `None` when nothing is.
pub fn id_problems(seen: &std::collections::BTreeMap<u64, usize>, n: u64) -> Option<String> {
    let dups: Vec<u64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    let missing: Vec<u64> = (0..n).filter(|id| !seen.contains_key(id)).collect();
    let extra: Vec<u64> = seen.keys().copied().filter(|id| *id >= n).collect();
    (!dups.is_empty() || !missing.is_empty() || !extra.is_empty()).then(|| {
        format!("duplicated ids {dups:?}, missing ids {missing:?}, unexpected ids {extra:?}")
    })
}
