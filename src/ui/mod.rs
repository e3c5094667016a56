//! What the user types and sees: input (lines, JSON objects, the line
//! editor), output (plain lines, JSON events, the terminal) through a queue
//! that never blocks the chat, and the safe rendering of whatever came from
//! the network.

pub mod input;
pub mod json;
mod json_line;
mod lines;
pub mod output;
pub mod plain;
pub mod render;
pub mod terminal;
pub(crate) mod tty;

use std::io::BufWriter;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use input::UserInput;
use output::{Output, OutputThread};

/// The user's side of a chat: what they type and where what they should see
/// goes. It outlives chats: a server reuses it for each client.
pub struct UserIo {
    pub input: mpsc::Receiver<UserInput>,
    /// False once input has ended.
    pub input_open: bool,
    pub out: Output,
}

/// The user asked to leave: Ctrl-C (a signal, or a key in the line editor),
/// `/quit`, Ctrl-D at a server's terminal. Any clone can trigger it and any
/// clone can wait for it; once triggered it stays so.
#[derive(Clone)]
pub struct Quit {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Quit {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Quit {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Asks to leave. Callable from any thread.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once someone asked to leave. Cancel-safe.
    pub async fn wait(&mut self) {
        // The sender lives in `self` too, so this never fails.
        let _ = self.rx.wait_for(|&quit| quit).await;
    }
}

impl Default for Quit {
    fn default() -> Self {
        Self::new()
    }
}

/// Output buffer for stdout: large enough that a burst of events goes out
/// in a few writes.
const STDOUT_BUFFER: usize = 64 * 1024;

/// Standard input and output: the line editor at a terminal (`ctrl_d_quits`
/// at a server), else plain lines or (with `json`) JSON objects. Returns
/// the output thread too, to be closed before the process exits. Input
/// messages are bounded by `max_message` (our `--max-message-size`).
pub fn stdio(
    json: bool,
    ctrl_d_quits: bool,
    quit: &Quit,
    max_message: u64,
) -> (UserIo, OutputThread) {
    let (input, (out, thread)) = if !json && terminal::is_interactive() {
        let (input, sink) = terminal::start(ctrl_d_quits, quit.clone());
        (input, Output::spawn(|_| sink))
    } else {
        let stdout = |p: output::Progress| {
            BufWriter::with_capacity(STDOUT_BUFFER, p.writer(std::io::stdout()))
        };
        let output = if json {
            Output::spawn(|p| json::JsonSink { out: stdout(p) })
        } else {
            Output::spawn(|p| plain::PlainSink { out: stdout(p) })
        };
        (input::spawn_stdin(json, max_message), output)
    };
    let io = UserIo {
        input,
        input_open: true,
        out,
    };
    (io, thread)
}
