//! What a test does with a `chat` process whichever way it talks to it
//! (pipes, [`crate::Peer`], or a pseudo-terminal, [`crate::pty::PtyPeer`]):
//! wait for its exit, kill it, and fail with its diagnostics. The process
//! is killed when its handle is dropped.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// A spawned child and, once it has been reaped, its exit status.
pub struct Process {
    child: Child,
    exit: Option<ExitStatus>,
}

impl Process {
    pub(crate) fn new(child: Child) -> Process {
        Process { child, exit: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is known to have exited (and has been reaped).
    pub fn has_exited(&self) -> bool {
        self.exit.is_some()
    }

    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.exit = Some(st);
        }
        self.exit
    }

    /// "exited: STATUS" or "still running", for diagnostics.
    pub fn status_text(&mut self) -> String {
        match self.try_exit_status() {
            Some(st) => format!("exited: {st}"),
            None => "still running".to_string(),
        }
    }

    /// SIGKILL the child and reap it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.exit = Some(st);
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test's handle on a running `chat` process. The waits panic, with the
/// handle's diagnostics, when they time out.
pub trait ChatProcess {
    /// Names the process in failure messages.
    fn label(&self) -> &str;

    fn process(&mut self) -> &mut Process;

    /// What the process was started with, did and said so far.
    fn diagnostics(&mut self) -> String;

    /// Panic with `msg` and the diagnostics.
    fn fail(&mut self, msg: &str) -> ! {
        let d = self.diagnostics();
        panic!("[{}] {msg}\n{d}", self.label());
    }

    /// SIGKILL the process and reap it.
    fn kill(&mut self) {
        self.process().kill();
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.process().try_exit_status()
    }

    /// Wait for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match poll(timeout, || self.try_exit_status()) {
            Some(st) => st,
            None => self.fail(&format!(
                "timed out after {timeout:?} waiting for the process to exit"
            )),
        }
    }

    /// Wait for exit and assert the exit code.
    fn expect_exit_code(&mut self, code: i32, timeout: Duration) {
        let st = self.wait_exit(timeout);
        if st.code() != Some(code) {
            self.fail(&format!("expected exit status {code}, got {st}"));
        }
    }
}

/// A figure in KiB from /proc/PID/status: `field` is `VmRSS` (resident
/// memory now), `VmHWM` (its peak so far), ….
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} line in /proc/{pid}/status"))
}

/// Resident memory of a process, in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count()
}

/// Calls `ready` every 20 ms until it gives a value, for at most `timeout`
/// (and at least once).
pub(crate) fn poll<T>(timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
