//! The chat/1 wire protocol (docs/protocol.md), apart from any socket: the
//! encoding of varints and frames, the codes, message ids, and a received
//! message's body.
//!
//! Nothing here does I/O, so all of it can be unit-tested, property-tested
//! and fuzzed without a network.

pub mod body;
pub mod codec;
pub(crate) mod received;

pub use body::Body;
pub use codec::{Frame, FrameDecoder, VARINT_MAX, peek_varint, put_varint};

/// Message ids number the messages of one direction of one chat
/// (docs/protocol.md §4).
pub type MessageId = u64;

/// Close codes (docs/protocol.md §5.1).
pub mod close_code {
    pub const NO_ERROR: u64 = 0x00;
    pub const BUSY: u64 = 0x01;
    pub const PROTOCOL_ERROR: u64 = 0x02;
    pub const UNAUTHORIZED: u64 = 0x03;
    pub const GOING_AWAY: u64 = 0x04;
    /// chat/2: the client resumed this chat on another connection; this
    /// connection ends, not the chat.
    pub const REPLACED: u64 = 0x05;

    /// Human name of a close code, for status lines.
    pub fn name(code: u64) -> &'static str {
        match code {
            NO_ERROR => "NO_ERROR",
            BUSY => "BUSY",
            PROTOCOL_ERROR => "PROTOCOL_ERROR",
            UNAUTHORIZED => "UNAUTHORIZED",
            GOING_AWAY => "GOING_AWAY",
            REPLACED => "REPLACED",
            _ => "unknown code",
        }
    }
}

/// REJECT codes (docs/protocol.md §5.2).
pub mod reject_code {
    pub const TOO_LARGE: u64 = 0x01;
    pub const REFUSED: u64 = 0x02;
}

/// QUIC stream error codes used with STOP_SENDING (docs/protocol.md §5.3).
pub mod stream_error {
    pub const TOO_LARGE: u32 = 0x01;
    pub const UNKNOWN_STREAM_TYPE: u32 = 0x02;
}

/// Longest reason phrase we send (docs/protocol.md §5.1).
pub const MAX_REASON_LEN: usize = 256;

/// Cuts a reason phrase to at most [`MAX_REASON_LEN`] bytes on a character
/// boundary.
pub fn clip_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
