//! The terminal's mode for the whole interactive chat: raw from the moment
//! the line editor starts until the process leaves, and restored on every
//! exit path (normal end, error, panic).
//!
//! The line editor switches raw mode on and off around each line it reads.
//! Left to that, the terminal is in cooked mode for a moment after every
//! Enter: keys typed then are echoed by the tty driver outside the input
//! line, and a Ctrl-D is taken as end-of-file and lost. So this module puts
//! the terminal in raw mode first. The editor's library saves the mode it
//! finds (already raw) and restores that, so the terminal stays raw between
//! lines, and keys typed there wait, unechoed, for the editor's next read.

use std::io::Write;
use std::sync::Mutex;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcsetattr};

/// The mode the terminal was in before [`enter`]; `None` when not entered
/// (or already restored).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Bracketed paste on: a paste arrives as one event, so a pasted block with
/// newlines becomes one message. Kept on for the whole chat, for the same
/// reason as raw mode.
const PASTE_ON: &[u8] = b"\x1b[?2004h";
const PASTE_OFF: &[u8] = b"\x1b[?2004l";

/// Puts standard input's terminal in raw mode and bracketed paste on, saving
/// the mode to restore.
pub fn enter() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let original = tcgetattr(&stdin)?;
    let mut raw = original.clone();
    raw.make_raw();
    tcsetattr(&stdin, OptionalActions::Now, &raw)?;
    if let Ok(mut saved) = SAVED.lock() {
        saved.get_or_insert(original);
    }
    let mut out = std::io::stdout();
    let _ = out.write_all(PASTE_ON);
    let _ = out.flush();
    Ok(())
}

/// Puts the terminal back as [`enter`] found it. Safe to call more than
/// once and from a panic hook; the saved mode is kept, so a later call (at
/// exit, after the line editor has set raw mode again while unwinding)
/// still restores it.
pub fn restore() {
    let original = match SAVED.lock() {
        Ok(saved) => saved.clone(),
        // A panic while the lock was held: the mode itself is still good.
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    if let Some(original) = original {
        let mut out = std::io::stdout();
        let _ = out.write_all(PASTE_OFF);
        let _ = out.flush();
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &original);
    }
}
