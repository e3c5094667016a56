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
//! out as [`UserInput`], screen lines go in through [`TerminalSink`], which
//! the output thread drives; leaving (Ctrl-C, /quit) is signalled through
//! [`Quit`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use reedline::{
    ExternalPrinter, FileBackedHistory, Prompt, PromptEditMode, PromptHistorySearch, Reedline,
    Signal,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Quit;
use super::input::UserInput;
use super::output::{Shown, Sink, transports_text};
use super::plain::{
    format_rtt, peer_identity, reconnecting, reject_kind, resumed, skipped, suspended, turned_away,
    where_to_connect,
};
use super::render::{sanitize, sanitize_line};
use crate::protocol::MessageId;
use crate::protocol::body::Body;
use crate::transport::Disconnect;

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

/// The screen, once the terminal front end is up: everything printed above
/// the prompt (chat lines, logs, notices) goes through its queue.
static SCREEN: OnceLock<Screen> = OnceLock::new();

struct Screen {
    queue: SyncSender<Print>,
    /// Set by [`finish`]: from then on logs go to stderr again.
    closed: AtomicBool,
    /// Receives once the editor thread has stopped.
    editor_done: Mutex<Option<Receiver<()>>>,
}

/// One item on the screen's queue.
enum Print {
    Line(String),
    /// Print everything queued before this, then stop the editor.
    Stop,
}

/// Queues a line for the screen; false once the screen is closed.
fn print(line: String) -> bool {
    match SCREEN.get() {
        Some(s) if !s.closed.load(Ordering::Acquire) => s.queue.try_send(Print::Line(line)).is_ok(),
        _ => false,
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
///
/// Three parts: the editor thread (reedline blocks while reading); a
/// forwarder thread that hands queued lines to the editor in batches; and
/// [`TerminalSink`], which queues lines. The hand-over is a rendezvous:
/// when the forwarder's send returns, the editor has taken the batch and
/// prints it before it next looks at the stop signal. That is what lets
/// [`finish`] stop the editor only after the last line is on the screen,
/// and only while it is waiting for keys, never in the middle of asking the
/// terminal where the cursor is (whose answer would otherwise be left for
/// the shell to read).
pub fn start(ctrl_d_quits: bool, quit: Quit) -> (mpsc::Receiver<UserInput>, TerminalSink) {
    if let Err(e) = crate::ui::tty::enter() {
        tracing::warn!("cannot put the terminal in raw mode: {e}");
    }
    install_panic_restore();
    let (queue, lines) = sync_channel(PRINT_QUEUE);
    let (done_tx, done_rx) = sync_channel(1);
    let _ = SCREEN.set(Screen {
        queue: queue.clone(),
        closed: AtomicBool::new(false),
        editor_done: Mutex::new(Some(done_rx)),
    });
    let printer = ExternalPrinter::<String>::new(0);
    let stop = Arc::new(AtomicBool::new(false));
    let to_editor = printer.sender();
    let stop_editor = Arc::clone(&stop);
    std::thread::spawn(move || forward(&lines, &to_editor, &stop_editor));

    let (tx, rx) = mpsc::channel(64);
    let colour = use_colour();
    std::thread::spawn(move || {
        edit(printer, stop, colour, ctrl_d_quits, &tx, &quit);
        let _ = done_tx.send(());
    });
    (
        rx,
        TerminalSink {
            print: queue,
            colour,
            pending: HashMap::new(),
        },
    )
}

/// The forwarder: moves queued lines to the editor, all that are waiting as
/// one batch, until told to stop.
fn forward(lines: &Receiver<Print>, to_editor: &SyncSender<String>, stop: &AtomicBool) {
    while let Ok(first) = lines.recv() {
        let mut batch = String::new();
        let mut stopping = false;
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Print::Line(line) => {
                    if !batch.is_empty() {
                        batch.push('\n');
                    }
                    batch.push_str(&line);
                }
                Print::Stop => {
                    stopping = true;
                    break;
                }
            }
            next = lines.try_recv().ok();
        }
        // Blocks until the editor takes the batch; fails once it is gone.
        if !batch.is_empty() && to_editor.send(batch).is_err() {
            return;
        }
        if stopping {
            stop.store(true, Ordering::Release);
            return;
        }
    }
}

/// The editor thread: reads lines until the chat stops it.
fn edit(
    printer: ExternalPrinter<String>,
    stop: Arc<AtomicBool>,
    colour: bool,
    ctrl_d_quits: bool,
    tx: &mpsc::Sender<UserInput>,
    quit: &Quit,
) {
    let history = FileBackedHistory::new(1000).ok().map(|h| Box::new(h) as _);
    // Bracketed paste is left to the tty module, which keeps it on between
    // lines too; reedline understands paste events either way.
    let mut editor = Reedline::create()
        .use_bracketed_paste(false)
        .with_external_printer(printer)
        .with_break_signal(Arc::clone(&stop))
        .with_poll_interval(Duration::from_millis(10))
        .with_ansi_colors(colour)
        .with_transient_prompt(Box::new(ChatPrompt { transient: true }));
    if let Some(h) = history {
        editor = editor.with_history(h);
    }
    let prompt = ChatPrompt { transient: false };
    // The stop signal is also checked here because reedline looks at it only
    // while reading: a stop that comes between two lines waits here.
    while !stop.load(Ordering::Acquire) {
        let input = match editor.read_line(&prompt) {
            Ok(Signal::Success(line)) => match command(&line) {
                Command::Send(body) => UserInput::Message(body),
                Command::Blank => {
                    erase_row_above();
                    continue;
                }
                Command::Help => {
                    print(stamped(HELP));
                    continue;
                }
                Command::Stats => UserInput::Stats,
                Command::Quit => {
                    quit.trigger();
                    continue;
                }
                Command::Unknown(cmd) => {
                    print(stamped(&format!(
                        "unknown command {}; /help lists them, // sends a line starting with /",
                        sanitize_line(&cmd)
                    )));
                    continue;
                }
            },
            Ok(Signal::ExternalBreak(_)) => return,
            Ok(signal @ (Signal::CtrlC | Signal::CtrlD)) => {
                // The editor leaves the input row as it was (`› ` and any
                // text); the status lines that follow say what happened.
                erase_row_above();
                if matches!(signal, Signal::CtrlD) && !ctrl_d_quits {
                    UserInput::End
                } else {
                    quit.trigger();
                    continue;
                }
            }
            Ok(_) => continue,
            Err(e) => UserInput::Invalid(format!("terminal error: {e}")),
        };
        // Keep the editor running after Ctrl-D or /quit: while the chat
        // winds down (waiting for acknowledgements, closing), its lines
        // are still printed above the prompt, until `finish` stops it.
        let failed = matches!(input, UserInput::Invalid(_));
        // Never block on a full queue here: the session may itself be
        // waiting for the screen, which waits for this thread; and it stops
        // reading input while too much is unconfirmed. (Leaving does not
        // depend on this queue: see `Quit`.)
        match tx.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(UserInput::Message(_))) => {
                print(stamped(
                    "not sent: the chat is busy (too much unconfirmed); try again",
                ));
            }
            Err(TrySendError::Full(_)) => {
                print(stamped("the chat is busy; Ctrl-C leaves now"));
            }
            Err(TrySendError::Closed(UserInput::Message(_))) => {
                print(stamped("not sent: the chat has ended"));
            }
            // Ctrl-D or /stats after the chat has ended: nothing to do.
            Err(TrySendError::Closed(_)) => {}
        }
        if failed {
            return;
        }
    }
}

/// Clears the row above the cursor and moves there. Used between two reads,
/// while the editor thread has the terminal to itself.
fn erase_row_above() {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x1b[1A\r\x1b[2K");
    let _ = out.flush();
}

/// How long [`finish`] waits for the editor to print the last lines and
/// stop; it only runs out if the editor is stuck.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// Called once before the process exits: prints the lines still queued,
/// stops the editor, clears the input line and restores the terminal.
pub fn finish() {
    let Some(screen) = SCREEN.get() else {
        return;
    };
    let deadline = std::time::Instant::now() + FINISH_WAIT;
    let mut stop = Print::Stop;
    loop {
        match screen.queue.try_send(stop) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(again))
                if std::time::Instant::now() < deadline =>
            {
                stop = again;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
    let done = screen.editor_done.lock().ok().and_then(|mut d| d.take());
    if let Some(done) = done {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = done.recv_timeout(left);
    }
    screen.closed.store(true, Ordering::Release);
    // The editor leaves the input line (prompt and anything typed but not
    // sent) on the screen; the transcript ends with the last status line.
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\r\x1b[J");
    let _ = out.flush();
    crate::ui::tty::restore();
}

/// Restores the terminal on a panic too (cooked mode, no bracketed paste),
/// before the panic message is printed.
fn install_panic_restore() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        crate::ui::tty::restore();
        previous(info);
    }));
}

/// What a submitted line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Send(Bytes),
    /// An empty or blank line: nothing is sent (an empty message can still
    /// be sent from a script).
    Blank,
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
        blank if blank.trim().is_empty() => Command::Blank,
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
        // Once sent, later lines line up with the first, as a peer's
        // multi-line message does: under "HH:MM:SS ".
        if self.transient {
            Cow::Borrowed("         ")
        } else {
            Cow::Borrowed("  ")
        }
    }

    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        Cow::Owned(format!("(search: {}) ", search.term))
    }
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Text with the time in front, later lines indented under the first.
fn stamped(text: &str) -> String {
    format!("{} {}", clock(), text.replace('\n', "\n         "))
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
        let line = String::from_utf8_lossy(&text).trim_end().to_string();
        if print(line) {
            Ok(())
        } else {
            std::io::stderr().write_all(&text)
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Output for a person at a terminal: timestamped lines above the prompt.
pub struct TerminalSink {
    print: SyncSender<Print>,
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

impl TerminalSink {
    fn line(&mut self, style: &str, text: &str) {
        let line = if self.colour && !style.is_empty() {
            format!("{DIM}{}{RESET} {style}{text}{RESET}", clock())
        } else {
            format!("{} {text}", clock())
        };
        // Waits when the screen is behind: a line is never dropped.
        let _ = self.print.send(Print::Line(line));
    }
}

/// Cuts text for display and says so. Only the start of a long body is
/// looked at: no more is ever shown.
fn cut(body: &Body) -> String {
    let head = body.prefix(MAX_SHOWN_CHARS * 4);
    let text = sanitize(&head);
    let rows = crossterm::terminal::size().map_or(24, |(_, r)| r as usize);
    let max_lines = rows.saturating_sub(4).max(5);
    let mut out = String::new();
    let mut cut = head.len() < body.len();
    for (i, line) in text.split('\n').enumerate() {
        if i >= max_lines {
            cut = true;
            break;
        }
        if i > 0 {
            out.push_str("\n         ");
        }
        // A line that would pass the limit is shown up to it (at a
        // character boundary), not left out.
        let room = MAX_SHOWN_CHARS.saturating_sub(out.len());
        if line.len() > room {
            let end = line
                .char_indices()
                .map(|(at, _)| at)
                .take_while(|&at| at <= room)
                .last()
                .unwrap_or(0);
            out.push_str(&line[..end]);
            cut = true;
            break;
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

impl Sink for TerminalSink {
    fn show(&mut self, shown: Shown) {
        match shown {
            Shown::Listening {
                transports,
                addr,
                fingerprint,
            } => {
                self.line(
                    "",
                    &format!("listening on {addr} ({})", transports_text(&transports)),
                );
                self.line("", &format!("server fingerprint: {fingerprint}"));
                for line in where_to_connect(&transports, addr, fingerprint) {
                    self.line("", &line);
                }
                self.line("", "waiting for a client… (/help for commands)");
            }
            Shown::Connecting { transport, addr } => {
                self.line("", &format!("connecting to {addr} over {transport}…"));
            }
            Shown::Connected {
                transport,
                peer,
                fingerprint,
                label,
                fallback,
            } => {
                let who = peer_identity(fingerprint, label.as_deref())
                    .map_or(String::new(), |w| format!(" ({w})"));
                let why = fallback.map_or(String::new(), |w| format!(" ({w})"));
                self.line(
                    GOOD,
                    &format!("connected with {peer} over {transport}{why}{who}"),
                );
            }
            Shown::Refused {
                peer,
                fingerprint,
                code,
                ..
            } => self.line("", &turned_away(peer, fingerprint, code)),
            Shown::Sent { id, body } => {
                self.pending.insert(id, preview(&body));
            }
            Shown::Ack { id, rtt } => {
                let what = self.pending.remove(&id).unwrap_or_default();
                self.line(DIM, &format!("✓ {}  #{id} {what}", format_rtt(rtt)));
            }
            Shown::Rejected { id, code, reason } => {
                let what = self.pending.remove(&id).unwrap_or_default();
                let kind = reject_kind(code);
                self.line(
                    BAD,
                    &format!(
                        "✗ rejected: {kind} ({})  #{id} {what}",
                        sanitize_line(&reason)
                    ),
                );
            }
            Shown::Message { id, body } => {
                let text = cut(&body);
                if self.colour {
                    self.line(PEER, &format!("peer: {text}{DIM}  #{id}"));
                } else {
                    self.line("", &format!("peer: {text}  #{id}"));
                }
            }
            Shown::Disconnected { why, unacked } => self.disconnected(&why, &unacked),
            Shown::Suspended { reason, window } => self.line(BAD, &suspended(&reason, window)),
            Shown::Reconnecting { attempt, reason } => {
                self.line(BAD, &reconnecting(attempt, &reason));
            }
            Shown::Resumed {
                transport,
                resumption,
                ..
            } => {
                self.line(GOOD, &resumed(transport, &resumption));
                for id in &resumption.confirmed {
                    let what = self.pending.remove(id).unwrap_or_default();
                    self.line(DIM, &format!("✓ on resume  #{id} {what}"));
                }
            }
            Shown::Error(message) => self.line(BAD, &message),
            Shown::Info(message) | Shown::Notice(message) => self.line("", &message),
            Shown::Skipped { events, messages } => self.line(BAD, &skipped(events, messages)),
        }
    }
}

impl TerminalSink {
    fn disconnected(&mut self, why: &Disconnect, unacked: &[MessageId]) {
        // In words only: the reason says what a close code would (a peer
        // that gave none is described with its code's name).
        let text = sanitize_line(&why.describe());
        let (style, text) = match why {
            Disconnect::Local { .. } => ("", "you left the chat".to_string()),
            Disconnect::Peer { .. } if why.is_normal() => ("", format!("peer left: {text}")),
            Disconnect::Peer { .. } => (BAD, format!("peer closed the chat: {text}")),
            Disconnect::Violation { .. } | Disconnect::Lost { .. } => (BAD, text),
        };
        self.line(style, &text);
        for id in unacked {
            let what = self.pending.remove(id).unwrap_or_default();
            self.line(BAD, &format!("? not confirmed  #{id} {what}"));
        }
        self.pending.clear();
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
        assert_eq!(command(""), Command::Blank);
        assert_eq!(command("  \t"), Command::Blank);
    }

    #[test]
    fn long_messages_are_cut_with_a_note() {
        let body = "line\n".repeat(500);
        let s = cut(&Body::from(bytes::Bytes::from(body)));
        assert!(s.contains("2500 bytes, shown truncated"));
        assert!(s.lines().count() < 100);
        let short = cut(&Body::from(&b"a\nb"[..]));
        assert_eq!(short, "a\n         b");
        // One long line: its start is shown, cut at a character boundary.
        let long = cut(&Body::from(bytes::Bytes::from("é".repeat(3500))));
        let shown = long.lines().next().unwrap();
        assert!(shown.starts_with("ééé"), "{long:.40}");
        assert!(shown.len() <= MAX_SHOWN_CHARS && shown.len() > MAX_SHOWN_CHARS - 4);
        assert!(long.contains("7000 bytes, shown truncated"));
    }
}
