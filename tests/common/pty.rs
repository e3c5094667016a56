//! Running `chat` on a pseudo-terminal, as a person at a terminal would:
//! its stdin, stdout and stderr are the slave side of a fresh pty (which is
//! also its controlling terminal, in a session of its own); the test types
//! into the master side and reads everything the program shows.
//!
//! Uses `posix_openpt` through `libc` directly (no extra process such as
//! `script`, no pty crate): the child is the `chat` process itself and is
//! killed and reaped when the [`PtyPeer`] is dropped.

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::chat_bin;

/// A `chat` process whose terminal is a pty we hold the master side of.
pub struct PtyPeer {
    pub label: String,
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    output_closed: Arc<AtomicBool>,
    args: Vec<String>,
    exit: Option<ExitStatus>,
}

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Opens a pty pair (80x24): (master, slave). Both are close-on-exec; the
/// child gets the slave through its stdio.
fn open_pty() -> Result<(File, File), String> {
    // SAFETY: plain libc calls on a descriptor we own; every result is
    // checked, and the master descriptor is owned by a File at once.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(last_os_error("posix_openpt"));
        }
        let master = File::from_raw_fd(fd);
        if libc::grantpt(fd) != 0 {
            return Err(last_os_error("grantpt"));
        }
        if libc::unlockpt(fd) != 0 {
            return Err(last_os_error("unlockpt"));
        }
        let mut name = [0 as libc::c_char; 256];
        if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(last_os_error("ptsname_r"));
        }
        let path = CStr::from_ptr(name.as_ptr())
            .to_str()
            .map_err(|e| format!("pty name is not UTF-8: {e}"))?
            .to_string();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) != 0 {
            return Err(last_os_error("TIOCSWINSZ"));
        }
        Ok((master, slave))
    }
}

impl PtyPeer {
    /// Starts `chat <args>` on a new pty. Panics if no pty can be had.
    pub fn spawn(label: impl Into<String>, args: &[String]) -> PtyPeer {
        let label = label.into();
        let (master, slave) = open_pty().unwrap_or_else(|e| panic!("[{label}] no pty: {e}"));
        let stdio = |what: &str| {
            Stdio::from(
                slave
                    .try_clone()
                    .unwrap_or_else(|e| panic!("[{label}] cannot dup the pty for {what}: {e}")),
            )
        };
        let mut cmd = Command::new(chat_bin());
        cmd.args(args)
            .stdin(stdio("stdin"))
            .stdout(stdio("stdout"))
            .stderr(stdio("stderr"));
        for k in ["MODE", "IP_ADDR", "CHAT_HOME"] {
            cmd.env_remove(k);
        }
        cmd.env("TERM", "xterm-256color");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        // SAFETY: runs in the child between fork and exec, after its stdio
        // has been set up; setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("[{label}] cannot spawn {} {args:?}: {e}", chat_bin()));
        // Only the child may hold the slave side now, so that reading the
        // master ends (EIO) when the child is gone.
        drop(cmd);
        drop(slave);

        let output = Arc::new(Mutex::new(Vec::new()));
        let output_closed = Arc::new(AtomicBool::new(false));
        {
            let mut reader = master
                .try_clone()
                .unwrap_or_else(|e| panic!("[{label}] cannot dup the pty master: {e}"));
            let output = Arc::clone(&output);
            let output_closed = Arc::clone(&output_closed);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => output.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
                output_closed.store(true, Ordering::SeqCst);
            });
        }

        PtyPeer {
            label,
            child,
            master,
            output,
            output_closed,
            args: args.to_vec(),
            exit: None,
        }
    }

    /// Types `bytes` (use `\r` for Enter, `\x04` for Ctrl-D).
    pub fn type_keys(&mut self, bytes: &str) {
        if let Err(e) = self
            .master
            .write_all(bytes.as_bytes())
            .and_then(|_| self.master.flush())
        {
            let msg = format!("cannot type {bytes:?}: {e}");
            self.fail(&msg);
        }
    }

    /// Everything shown on the terminal so far, with escape sequences and
    /// carriage returns removed.
    pub fn screen_text(&self) -> String {
        strip_terminal_codes(&String::from_utf8_lossy(&self.output.lock().unwrap()))
    }

    /// The lines shown so far (see [`PtyPeer::screen_text`]).
    pub fn screen_lines(&self) -> Vec<String> {
        self.screen_text().lines().map(str::to_string).collect()
    }

    /// Waits until `pred` holds for the screen text; panics with
    /// diagnostics on timeout, or when the program has exited and its
    /// output is closed without it holding.
    pub fn wait_until(&mut self, what: &str, pred: impl Fn(&str) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the flag before the text, so a final check after the
            // output closed sees everything.
            let closed = self.output_closed.load(Ordering::SeqCst);
            if pred(&self.screen_text()) {
                return;
            }
            if closed {
                let msg = format!("the terminal closed (program exited?) before {what}");
                self.fail(&msg);
            }
            if Instant::now() >= deadline {
                let msg = format!("timed out after {timeout:?} waiting for {what}");
                self.fail(&msg);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the screen shows `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.wait_until(
            &format!("the terminal to show {needle:?}"),
            |s| s.contains(needle),
            timeout,
        );
    }

    /// Waits until the screen has a line starting with `prefix`.
    pub fn wait_for_line_starting(&mut self, prefix: &str, timeout: Duration) {
        self.wait_until(
            &format!("a line starting with {prefix:?}"),
            |s| s.lines().any(|l| l.starts_with(prefix)),
            timeout,
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

    /// Waits for the program to exit; panics (with diagnostics) on timeout.
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

    pub fn expect_exit_code(&mut self, code: i32, timeout: Duration) {
        let st = self.wait_exit(timeout);
        if st.code() != Some(code) {
            let msg = format!("expected exit status {code}, got {st}");
            self.fail(&msg);
        }
    }

    pub fn diagnostics(&mut self) -> String {
        let status = match self.try_exit_status() {
            Some(st) => format!("exited: {st}"),
            None => "still running".to_string(),
        };
        let text = self.screen_text();
        let start = text
            .char_indices()
            .rev()
            .nth(4000)
            .map(|(i, _)| i)
            .unwrap_or(0);
        format!(
            "[{}] pid {} ({status}) on a pty\n  command: {} {}\n  terminal ({} chars, tail):\n{}\n",
            self.label,
            self.child.id(),
            chat_bin(),
            self.args.join(" "),
            text.len(),
            text[start..]
                .lines()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    pub fn fail(&mut self, msg: &str) -> ! {
        let d = self.diagnostics();
        panic!("[{}] {msg}\n{d}", self.label);
    }
}

impl Drop for PtyPeer {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes ANSI escape sequences (CSI, OSC and two-byte ones), carriage
/// returns and other C0 controls except newline and tab.
pub fn strip_terminal_codes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then a final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
