//! What the user types and sees: input (lines, JSON objects, the line
//! editor), output (plain lines, JSON events, the terminal), and the safe
//! rendering of whatever came from the network.

pub mod input;
pub mod output;
pub mod render;
pub mod terminal;
pub(crate) mod tty;
