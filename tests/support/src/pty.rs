//! Running `chat` on a pseudo-terminal, as a person at a terminal would:
//! its stdin, stdout and stderr are the slave side of a fresh pty (which is
//! also its controlling terminal, in a session of its own); the test types
//! into the master side and reads everything the program shows.
//!
//! Uses `posix_openpt` through `libc` directly (no extra process such as
//! `script`, no pty crate): the child is the `chat` process itself and is
//! killed and reaped when the [`PtyPeer`] is dropped.
//!
//! Everything the program writes is kept raw and also fed to a terminal
//! emulator ([`vt100`]), so tests can assert on what the screen shows (rows,
//! cursor, window title). Like a real terminal, the emulator answers the
//! status queries line editors send (cursor position `ESC [ 6 n`, device
//! status `ESC [ 5 n`, primary device attributes `ESC [ c`).

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::chat_bin;
use crate::process::{ChatProcess, Process, poll};

/// How to set up the terminal of a [`PtyPeer`].
#[derive(Clone, Debug)]
pub struct PtyOptions {
    pub rows: u16,
    pub cols: u16,
    /// Extra environment for the program (e.g. `NO_COLOR=1`).
    pub envs: Vec<(String, String)>,
    /// Answer terminal queries (cursor position etc.) as a terminal would.
    pub answer_queries: bool,
}

impl Default for PtyOptions {
    fn default() -> Self {
        PtyOptions {
            rows: 24,
            cols: 80,
            envs: Vec::new(),
            answer_queries: true,
        }
    }
}

impl PtyOptions {
    pub fn size(mut self, rows: u16, cols: u16) -> Self {
        self.rows = rows;
        self.cols = cols;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }
}

/// What the emulated terminal was asked to do besides drawing.
#[derive(Default, Debug)]
pub struct TermEvents {
    /// Window titles set (OSC 0 / OSC 2), in order.
    pub titles: Vec<Vec<u8>>,
    /// Icon names set (OSC 0 / OSC 1), in order.
    pub icon_names: Vec<Vec<u8>>,
    /// Clipboard writes or reads requested (OSC 52).
    pub clipboard: Vec<Vec<u8>>,
    /// Other OSC sequences received.
    pub other_osc: Vec<Vec<Vec<u8>>>,
    /// Audible bells.
    pub bells: usize,
    /// Replies to queries, waiting to be written to the program.
    replies: Vec<u8>,
    /// Queries answered so far.
    pub queries_answered: usize,
}

impl vt100::Callbacks for TermEvents {
    fn audible_bell(&mut self, _: &mut vt100::Screen) {
        self.bells += 1;
    }

    fn set_window_icon_name(&mut self, _: &mut vt100::Screen, name: &[u8]) {
        self.icon_names.push(name.to_vec());
    }

    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.titles.push(title.to_vec());
    }

    fn copy_to_clipboard(&mut self, _: &mut vt100::Screen, _ty: &[u8], data: &[u8]) {
        self.clipboard.push(data.to_vec());
    }

    fn paste_from_clipboard(&mut self, _: &mut vt100::Screen, ty: &[u8]) {
        self.clipboard.push(ty.to_vec());
    }

    fn unhandled_osc(&mut self, _: &mut vt100::Screen, params: &[&[u8]]) {
        self.other_osc
            .push(params.iter().map(|p| p.to_vec()).collect());
    }

    fn unhandled_csi(
        &mut self,
        screen: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        let first = params.first().and_then(|p| p.first()).copied();
        let reply = match (i1, c, first) {
            // Cursor position report, 1-based.
            (None, 'n', Some(6)) => {
                let (row, col) = screen.cursor_position();
                format!("\x1b[{};{}R", row + 1, col + 1)
            }
            (None, 'n', Some(5)) => "\x1b[0n".to_string(),
            // Primary device attributes: a VT220 with ANSI colour.
            (None, 'c', None | Some(0)) => "\x1b[?62;22c".to_string(),
            _ => return,
        };
        self.replies.extend_from_slice(reply.as_bytes());
        self.queries_answered += 1;
    }
}

/// The terminal: the raw bytes written to it and the emulated screen.
struct Terminal {
    raw: Vec<u8>,
    parser: vt100::Parser<TermEvents>,
}

/// A snapshot of the emulated screen.
#[derive(Clone, Debug)]
pub struct Screen {
    /// The visible rows, trailing blanks removed.
    pub rows: Vec<String>,
    /// The visible rows joined where the terminal wrapped a long line: (the
    /// row the line starts on, its text, trailing blanks removed).
    pub lines: Vec<(usize, String)>,
    /// (row, column), 0-based.
    pub cursor: (u16, u16),
    /// Whether the program has bracketed paste turned on.
    pub bracketed_paste: bool,
}

impl Screen {
    /// The row the cursor is on.
    pub fn cursor_row(&self) -> &str {
        self.rows
            .get(usize::from(self.cursor.0))
            .map_or("", String::as_str)
    }

    /// The row on which the first line containing `needle` starts (lines
    /// wrapped by the terminal are joined first).
    pub fn find_row(&self, needle: &str) -> Option<usize> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| *i)
    }

    /// The first line (wrapped rows joined) containing `needle`.
    pub fn find_line(&self, needle: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.as_str())
    }

    /// Rows with numbers and the cursor marked, for failure messages.
    pub fn render(&self) -> String {
        let mut s = format!(
            "    screen (cursor at row {}, column {}{}):\n",
            self.cursor.0,
            self.cursor.1,
            if self.bracketed_paste {
                "; bracketed paste on"
            } else {
                ""
            }
        );
        for (i, r) in self.rows.iter().enumerate() {
            let mark = if i == usize::from(self.cursor.0) {
                '>'
            } else {
                ' '
            };
            s += &format!("   {mark}{i:>3}|{r}\n");
        }
        s
    }
}

/// A `chat` process whose terminal is a pty we hold the master side of.
pub struct PtyPeer {
    pub label: String,
    /// Before `master`: the program is killed before its terminal closes.
    process: Process,
    master: File,
    term: Arc<Mutex<Terminal>>,
    output_closed: Arc<AtomicBool>,
    args: Vec<String>,
}

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Opens a pty pair of the given size: (master, slave). Both are
/// close-on-exec; the child gets the slave through its stdio.
fn open_pty(rows: u16, cols: u16) -> Result<(File, File), String> {
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
            ws_row: rows,
            ws_col: cols,
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
    /// Starts `chat <args>` on a new 80x24 pty. Panics if no pty can be had.
    pub fn spawn(label: impl Into<String>, args: &[String]) -> PtyPeer {
        PtyPeer::spawn_with(label, args, &PtyOptions::default())
    }

    /// Starts `chat <args>` on a new pty set up as `opts` says.
    pub fn spawn_with(label: impl Into<String>, args: &[String], opts: &PtyOptions) -> PtyPeer {
        let label = label.into();
        let (master, slave) =
            open_pty(opts.rows, opts.cols).unwrap_or_else(|e| panic!("[{label}] no pty: {e}"));
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
        for (k, v) in &opts.envs {
            cmd.env(k, v);
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
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "[{label}] cannot spawn {} {args:?}: {e}",
                chat_bin().display()
            )
        });
        // Only the child may hold the slave side now, so that reading the
        // master ends (EIO) when the child is gone.
        drop(cmd);
        drop(slave);

        let term = Arc::new(Mutex::new(Terminal {
            raw: Vec::new(),
            parser: vt100::Parser::new_with_callbacks(
                std::num::NonZeroU16::new(opts.rows).expect("rows > 0"),
                std::num::NonZeroU16::new(opts.cols).expect("cols > 0"),
                10_000,
                TermEvents::default(),
            ),
        }));
        let output_closed = Arc::new(AtomicBool::new(false));
        {
            let mut reader = master
                .try_clone()
                .unwrap_or_else(|e| panic!("[{label}] cannot dup the pty master: {e}"));
            let mut answerer = master
                .try_clone()
                .unwrap_or_else(|e| panic!("[{label}] cannot dup the pty master: {e}"));
            let answer = opts.answer_queries;
            let term = Arc::clone(&term);
            let output_closed = Arc::clone(&output_closed);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let replies = {
                                let mut t = term.lock().unwrap();
                                t.raw.extend_from_slice(&chunk[..n]);
                                t.parser.process(&chunk[..n]);
                                std::mem::take(&mut t.parser.callbacks_mut().replies)
                            };
                            if answer && !replies.is_empty() {
                                let _ = answerer.write_all(&replies);
                            }
                        }
                    }
                }
                output_closed.store(true, Ordering::SeqCst);
            });
        }

        PtyPeer {
            label,
            process: Process::new(child),
            master,
            term,
            output_closed,
            args: args.to_vec(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
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

    /// Everything written to the terminal so far, byte for byte.
    pub fn raw_output(&self) -> Vec<u8> {
        self.term.lock().unwrap().raw.clone()
    }

    /// Everything shown on the terminal so far, with escape sequences and
    /// carriage returns removed.
    pub fn screen_text(&self) -> String {
        strip_terminal_codes(&String::from_utf8_lossy(&self.raw_output()))
    }

    /// The lines shown so far (see [`PtyPeer::screen_text`]).
    pub fn screen_lines(&self) -> Vec<String> {
        self.screen_text().lines().map(str::to_string).collect()
    }

    /// What the emulated terminal shows now.
    pub fn screen(&self) -> Screen {
        let t = self.term.lock().unwrap();
        let s = t.parser.screen();
        let (_, cols) = s.size();
        let full: Vec<String> = s.rows(0, cols.get()).collect();
        let mut lines: Vec<(usize, String)> = Vec::new();
        let mut continues = false;
        for (i, row) in full.iter().enumerate() {
            match lines.last_mut() {
                Some((_, line)) if continues => line.push_str(row),
                _ => lines.push((i, row.clone())),
            }
            continues = u16::try_from(i).is_ok_and(|r| s.row_wrapped(r));
        }
        for (_, line) in &mut lines {
            line.truncate(line.trim_end().len());
        }
        Screen {
            rows: full.iter().map(|r| r.trim_end().to_string()).collect(),
            lines,
            cursor: s.cursor_position(),
            bracketed_paste: s.bracketed_paste(),
        }
    }

    /// Runs `f` on the emulated screen itself (cells, colours, modes).
    pub fn with_screen<R>(&self, f: impl FnOnce(&vt100::Screen) -> R) -> R {
        f(self.term.lock().unwrap().parser.screen())
    }

    /// Runs `f` on what the terminal was asked to do besides drawing.
    pub fn term_events<R>(&self, f: impl FnOnce(&TermEvents) -> R) -> R {
        f(self.term.lock().unwrap().parser.callbacks())
    }

    /// Whether the program's output has ended (it exited and nothing holds
    /// the terminal any more); everything it wrote has been read then.
    pub fn output_closed(&self) -> bool {
        self.output_closed.load(Ordering::SeqCst)
    }

    /// The terminal's settings now (`tcgetattr` through the master side,
    /// which on Linux reports the slave's, even after the program exited).
    pub fn termios(&mut self) -> libc::termios {
        // SAFETY: tcgetattr fills a termios we own from a descriptor we own.
        let (rc, t) = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            let rc = libc::tcgetattr(self.master.as_raw_fd(), &mut t);
            (rc, t)
        };
        if rc != 0 {
            let msg = last_os_error("tcgetattr on the pty");
            self.fail(&msg);
        }
        t
    }

    /// Polls `check` until it gives a value; panics with diagnostics on
    /// timeout, or when the program has exited and its output is closed
    /// without `check` giving one.
    fn wait_output<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&PtyPeer) -> Option<T>,
    ) -> T {
        let got = poll(timeout, || {
            // Read the flag before checking, so a final check after the
            // output closed sees everything.
            let closed = self.output_closed();
            match check(self) {
                Some(v) => Some(Ok(v)),
                None if closed => Some(Err(())),
                None => None,
            }
        });
        match got {
            Some(Ok(v)) => v,
            Some(Err(())) => self.fail(&format!(
                "the terminal closed (program exited?) before {what}"
            )),
            None => self.fail(&format!("timed out after {timeout:?} waiting for {what}")),
        }
    }

    /// Waits until `pred` holds for the emulated screen; returns the screen.
    /// Panics as [`PtyPeer::wait_output`] says.
    pub fn wait_screen(
        &mut self,
        what: &str,
        pred: impl Fn(&Screen) -> bool,
        timeout: Duration,
    ) -> Screen {
        self.wait_output(what, timeout, |p| {
            let screen = p.screen();
            pred(&screen).then_some(screen)
        })
    }

    /// Waits until a row of the screen contains `needle`; returns the screen.
    pub fn wait_row(&mut self, needle: &str, timeout: Duration) -> Screen {
        self.wait_screen(
            &format!("a screen row showing {needle:?}"),
            |s| s.find_row(needle).is_some(),
            timeout,
        )
    }

    /// Waits until the screen text (all output so far, escape sequences
    /// removed) satisfies `pred`. Panics as [`PtyPeer::wait_output`] says.
    pub fn wait_until(&mut self, what: &str, pred: impl Fn(&str) -> bool, timeout: Duration) {
        self.wait_output(what, timeout, |p| pred(&p.screen_text()).then_some(()));
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

    /// Waits until the program's output has ended (after it exited).
    pub fn wait_output_closed(&mut self, timeout: Duration) {
        if poll(timeout, || self.output_closed().then_some(())).is_none() {
            self.fail(&format!(
                "timed out after {timeout:?} waiting for the terminal to close"
            ));
        }
    }
}

impl ChatProcess for PtyPeer {
    fn label(&self) -> &str {
        &self.label
    }

    fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    fn diagnostics(&mut self) -> String {
        let status = self.process.status_text();
        let text = self.screen_text();
        let start = text
            .char_indices()
            .rev()
            .nth(4000)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let (titles, queries) = self.term_events(|e| {
            (
                e.titles
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect::<Vec<_>>(),
                e.queries_answered,
            )
        });
        format!(
            "[{}] pid {} ({status}) on a pty\n  command: {} {}\n  terminal ({} chars, tail):\n{}\n{}  window titles set: {titles:?}; queries answered: {queries}\n",
            self.label,
            self.process.pid(),
            chat_bin().display(),
            self.args.join(" "),
            text.len(),
            text[start..]
                .lines()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.screen().render(),
        )
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
