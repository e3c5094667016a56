//! The interactive terminal front end: a line editor that keeps the line
//! being typed intact while messages, confirmations and status lines are
//! printed above it.
//!
//! The editor is reedline (nushell's line editor) rather than
//! rustyline-async: it has history, Emacs keys, bracketed paste (a pasted
//! block with newlines becomes one message) and Alt-Enter for a newline
//! built in, and its "external printer" prints lines above the prompt
//! without disturbing it. Reedline blocks while reading, so it runs on its
//! own thread; the chat talks to it through two channels: typed input comes
//! out as [`UserInput`], screen lines go in through [`TerminalOutput`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use bytes::Bytes;
use reedline::{
    ExternalPrinter, FileBackedHistory, Prompt, PromptEditMode, PromptHistorySearch, Reedline,
    Signal,
};
use tokio::sync::mpsc;

use crate::identity::Fingerprint;
use crate::input::UserInput;
use crate::output::{Output, format_rtt, reject_kind};
use crate::render::{sanitize, sanitize_line};
use crate::transport::{Disconnect, MessageId, close_code};

/// Lines waiting to be printed above the prompt before writers wait.
const PRINT_QUEUE: usize = 4096;

/// Longest peer message shown whole, in characters; longer ones are cut.
const MAX_SHOWN_CHARS: usize = 4000;

/// Help shown by `/help`.
const HELP: &str = "\
commands:
  /help    this help
  /quit    leave the chat (Ctrl-C does the same; Ctrl-D on an empty line too)
  /stats   messages sent and received, round-trip times in this chat
  //text   send a message that starts with '/'
keys: Enter sends; Alt-Enter starts a new line; a paste is sent as one message;
      Up/Down recall earlier lines; Ctrl-A/E/U/W/K and friends edit as in a shell";

/// The printer channel, once the terminal is up: logs use it too, so that
/// they never break the line being typed.
static PRINTER: OnceLock<SyncSender<String>> = OnceLock::new();

/// Shows a status line above the prompt when the terminal front end is up
/// (for events outside the open chat, such as a client turned away); a no-op
/// otherwise, where the log line suffices.
pub fn notice(text: &str) {
    if let Some(p) = PRINTER.get() {
        let _ = p.try_send(format!("{} {text}", clock()));
    }
}

/// Whether standard input and output are both terminals.
pub fn is_interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Whether to use colour: only on a terminal, and never with NO_COLOR set.
fn use_colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Starts the line editor. `ctrl_d_quits`: at an empty line, Ctrl-D leaves
/// (server) rather than ending input (client, which then waits for its
/// acknowledgements before leaving).
pub fn start(ctrl_d_quits: bool) -> (mpsc::Receiver<UserInput>, TerminalOutput) {
    let printer = ExternalPrinter::<String>::new(PRINT_QUEUE);
    let sender = printer.sender();
    let _ = PRINTER.set(sender.clone());
    let (tx, rx) = mpsc::channel(64);
    let colour = use_colour();
    install_panic_restore();
    let print = sender.clone();
    std::thread::spawn(move || {
        let history = FileBackedHistory::new(1000).ok().map(|h| Box::new(h) as _);
        let mut editor = Reedline::create()
            .use_bracketed_paste(true)
            .with_external_printer(printer)
            .with_poll_interval(Duration::from_millis(10))
            .with_ansi_colors(colour)
            .with_transient_prompt(Box::new(ChatPrompt { transient: true }));
        if let Some(h) = history {
            editor = editor.with_history(h);
        }
        let prompt = ChatPrompt { transient: false };
        loop {
            let input = match editor.read_line(&prompt) {
                Ok(Signal::Success(line)) => match command(&line) {
                    Command::Send(body) => UserInput::Message(body),
                    Command::Help => {
                        let _ = print.send(HELP.to_string());
                        continue;
                    }
                    Command::Stats => UserInput::Stats,
                    Command::Quit => UserInput::Quit,
                    Command::Unknown(cmd) => {
                        let _ = print.send(format!(
                            "unknown command {}; /help lists them, // sends a line starting with /",
                            sanitize_line(&cmd)
                        ));
                        continue;
                    }
                },
                Ok(Signal::CtrlC) => UserInput::Quit,
                Ok(Signal::CtrlD) if ctrl_d_quits => UserInput::Quit,
                Ok(Signal::CtrlD) => UserInput::End,
                Ok(_) => continue,
                Err(e) => UserInput::Invalid(format!("terminal error: {e}")),
            };
            // Keep the editor running after Ctrl-D or /quit: while the chat
            // winds down (waiting for acknowledgements, closing), its lines
            // are still printed above the prompt.
            let failed = matches!(input, UserInput::Invalid(_));
            if tx.blocking_send(input).is_err() || failed {
                break;
            }
        }
    });
    (
        rx,
        TerminalOutput {
            print: sender,
            colour,
            pending: HashMap::new(),
        },
    )
}

/// Called once before the process exits: lets the editor print the last
/// lines queued for it (it picks them up every poll interval, 10 ms), then
/// restores the terminal.
pub fn finish() {
    if PRINTER.get().is_some() {
        std::thread::sleep(Duration::from_millis(50));
        restore();
    }
}

/// Puts the terminal back as it was (cooked mode, no bracketed paste). The
/// editor does this itself when it returns; this covers exits while it is
/// still reading, and panics.
pub fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x1b[?2004l\r\n");
    let _ = out.flush();
}

fn install_panic_restore() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}

/// What a submitted line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Send(Bytes),
    Help,
    Stats,
    Quit,
    Unknown(String),
}

fn command(line: &str) -> Command {
    if let Some(rest) = line.strip_prefix("//") {
        return Command::Send(Bytes::from(format!("/{rest}")));
    }
    match line.trim_end() {
        "/help" | "/?" => Command::Help,
        "/stats" => Command::Stats,
        "/quit" | "/exit" => Command::Quit,
        cmd if cmd.starts_with('/') => Command::Unknown(cmd.to_string()),
        _ => Command::Send(Bytes::from(line.to_string())),
    }
}

/// The prompt; once a line is submitted, the transient form replaces it with
/// the time and "you", so the screen reads as a transcript.
struct ChatPrompt {
    transient: bool,
}

impl Prompt for ChatPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        if self.transient {
            Cow::Owned(format!("{} you: ", clock()))
        } else {
            Cow::Borrowed("")
        }
    }

    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn render_prompt_indicator(&self, _mode: PromptEditMode) -> Cow<'_, str> {
        if self.transient {
            Cow::Borrowed("")
        } else {
            Cow::Borrowed("› ")
        }
    }

    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("  ")
    }

    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        Cow::Owned(format!("(search: {}) ", search.term))
    }
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// A log writer that prints through the terminal once it is up, so a log
/// line never breaks the line being typed; stderr otherwise.
pub struct LogWriter {
    buf: Vec<u8>,
}

impl LogWriter {
    pub fn new() -> Self {
        LogWriter { buf: Vec::new() }
    }
}

impl Default for LogWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.buf);
        match PRINTER.get() {
            Some(p) => {
                let line = String::from_utf8_lossy(&text);
                let _ = p.try_send(line.trim_end().to_string());
                Ok(())
            }
            None => std::io::stderr().write_all(&text),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Output for a person at a terminal: timestamped lines above the prompt.
pub struct TerminalOutput {
    print: SyncSender<String>,
    colour: bool,
    /// Sent and not yet confirmed: id → a short preview, so that a
    /// confirmation says which message it confirms.
    pending: HashMap<MessageId, String>,
}

/// ANSI styles used when colour is on.
const PEER: &str = "\x1b[36m";
const GOOD: &str = "\x1b[32m";
const BAD: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl TerminalOutput {
    fn line(&mut self, style: &str, text: &str) {
        let line = if self.colour && !style.is_empty() {
            format!("{DIM}{}{RESET} {style}{text}{RESET}", clock())
        } else {
            format!("{} {text}", clock())
        };
        let _ = self.print.send(line);
    }
}

/// Cuts text for display and says so.
fn shown(body: &[u8]) -> String {
    let text = sanitize(body);
    let rows = crossterm::terminal::size().map_or(24, |(_, r)| r as usize);
    let max_lines = rows.saturating_sub(4).max(5);
    let mut out = String::new();
    let mut cut = false;
    for (i, line) in text.split('\n').enumerate() {
        if i >= max_lines || out.len() + line.len() > MAX_SHOWN_CHARS {
            cut = true;
            break;
        }
        if i > 0 {
            out.push_str("\n         ");
        }
        out.push_str(line);
    }
    if cut {
        out.push_str(&format!(
            "\n         … [message of {} bytes, shown truncated]",
            body.len()
        ));
    }
    out
}

fn preview(body: &[u8]) -> String {
    let text = sanitize_line(&String::from_utf8_lossy(body));
    let mut p: String = text.chars().take(30).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    p
}

impl Output for TerminalOutput {
    fn listening(&mut self, transport: &str, addr: SocketAddr, fingerprint: Fingerprint) {
        self.line("", &format!("listening on {addr} ({transport})"));
        self.line("", &format!("server fingerprint: {fingerprint}"));
        self.line("", "waiting for a client… (/help for commands)");
    }

    fn connected(
        &mut self,
        transport: &str,
        peer: SocketAddr,
        fingerprint: Option<Fingerprint>,
        label: Option<&str>,
    ) {
        let who = match (fingerprint, label) {
            (Some(fp), Some(label)) => format!(" ({} {fp})", sanitize_line(label)),
            (Some(fp), None) => format!(" (identity {fp})"),
            (None, _) => String::new(),
        };
        self.line(
            GOOD,
            &format!("connected with {peer} over {transport}{who}"),
        );
    }

    fn sent(&mut self, id: MessageId, body: &[u8]) {
        self.pending.insert(id, preview(body));
    }

    fn ack(&mut self, id: MessageId, rtt: Duration) {
        let what = self.pending.remove(&id).unwrap_or_default();
        self.line(DIM, &format!("✓ {}  #{id} {what}", format_rtt(rtt)));
    }

    fn rejected(&mut self, id: MessageId, code: u64, reason: &str) {
        let what = self.pending.remove(&id).unwrap_or_default();
        let kind = reject_kind(code);
        self.line(
            BAD,
            &format!(
                "✗ rejected: {kind} ({})  #{id} {what}",
                sanitize_line(reason)
            ),
        );
    }

    fn message(&mut self, id: MessageId, body: &[u8]) {
        let text = shown(body);
        if self.colour {
            self.line(PEER, &format!("peer: {text}{DIM}  #{id}"));
        } else {
            self.line("", &format!("peer: {text}  #{id}"));
        }
    }

    fn disconnected(&mut self, why: &Disconnect, unacked: &[MessageId]) {
        let code = why
            .code()
            .map_or(String::new(), |c| format!(" ({})", close_code::name(c)));
        let text = sanitize_line(&why.describe());
        let (style, text) = match why {
            Disconnect::Local { .. } => ("", format!("you left the chat{code}")),
            Disconnect::Peer { .. } if why.is_normal() => ("", format!("peer left: {text}{code}")),
            Disconnect::Peer { .. } => (BAD, format!("peer closed the chat: {text}{code}")),
            Disconnect::Violation { .. } | Disconnect::Lost { .. } => {
                (BAD, format!("{text}{code}"))
            }
        };
        self.line(style, &text);
        for id in unacked {
            let what = self.pending.remove(id).unwrap_or_default();
            self.line(BAD, &format!("? not confirmed  #{id} {what}"));
        }
        self.pending.clear();
    }

    fn error(&mut self, message: &str) {
        self.line(BAD, message);
    }

    fn info(&mut self, message: &str) {
        self.line("", message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_and_double_slash_escapes() {
        assert_eq!(command("/help"), Command::Help);
        assert_eq!(command("/stats"), Command::Stats);
        assert_eq!(command("/quit"), Command::Quit);
        assert_eq!(
            command("//etc/passwd"),
            Command::Send(Bytes::from_static(b"/etc/passwd"))
        );
        assert_eq!(
            command("hello /quit"),
            Command::Send(Bytes::from_static(b"hello /quit"))
        );
        assert!(matches!(command("/nope"), Command::Unknown(_)));
    }

    #[test]
    fn long_messages_are_cut_with_a_note() {
        let body = "line\n".repeat(500);
        let s = shown(body.as_bytes());
        assert!(s.contains("2500 bytes, shown truncated"));
        assert!(s.lines().count() < 100);
        let short = shown(b"a\nb");
        assert_eq!(short, "a\n         b");
    }
}
