//! Chats that survive a lost connection (chat/2, PROTOCOL.md §9, CLI.md's
//! chat/2 section), on both transports:
//!
//! * a link cut past the idle timeout while both sides keep typing, then
//!   restored (twice): the client reconnects by itself, both sides report
//!   `resumed`, and every message is shown exactly once and confirmed
//!   exactly once (an `ack`, or its id in `resumed.confirmed`);
//! * a one-way cut (the client's messages get through, nothing comes
//!   back): the acknowledgements lost are made up for on resume, the
//!   client's messages listed in `resumed.confirmed`, never acked twice;
//! * the client resuming before the server has noticed the loss (only the
//!   old connection is cut): the server hands the chat over to the new
//!   connection, exactly once;
//! * the client's input ending while it is disconnected: it resumes,
//!   waits for its acknowledgements and leaves normally;
//! * the client's address changes mid-chat: QUIC carries on over the same
//!   connection (no reconnect), TCP resumes on a new one, exactly once;
//! * the link stays cut past idle timeout + resume window: the server ends
//!   the held chat (`disconnected` with the unconfirmed ids) and serves the
//!   next client; the client gives up (exit 1, the same kind of report);
//! * a client frozen (SIGSTOP) past the idle timeout, a stranger turned
//!   away BUSY meanwhile, then SIGCONT: the chat resumes, exactly once;
//! * the same client identity started afresh while its chat is held: the
//!   held chat ends (its unconfirmed ids reported) and a new one begins;
//! * the server killed and restarted (same port, same home) while the
//!   client reconnects: the client reports the old chat's unconfirmed
//!   messages and goes on in a new chat, ids from 0;
//! * `--no-reconnect`, and a server's `--resume-window 0`: a lost
//!   connection ends the chat (the client exits 1), and the server serves
//!   the next client.
//!
//! The first six run the server in one network namespace and the client
//! in another (see `netns.rs` in the support crate): they need root, `ip`
//! (iproute2) and `nft` (nftables); without them each prints
//! `SKIPPED: <reason>` on stderr and returns (`CHAT_NETFAULTS_REQUIRED=1`
//! makes that a failure). The others run on loopback.
//!
//! Idle timeouts of 2 s and short windows keep the suite fast; every wait
//! is bounded by a deadline for its event, never a pause.
//!
//! Run just these: `cargo test --test resume` (as root).

mod check;
mod loopback;
mod namespaces;

use loopback::*;
use namespaces::*;

support::both_transports!(
    link_cut_past_the_idle_timeout_resumes_exactly_once,
    acks_lost_in_a_one_way_cut_are_confirmed_on_resume,
    resume_before_the_server_notices_the_loss,
    input_ends_while_disconnected,
    client_address_change_keeps_the_chat,
    window_runs_out_while_the_link_is_cut,
    frozen_client_resumes_and_a_stranger_is_turned_away,
    same_identity_restarted_replaces_the_held_chat,
    restarted_server_gives_a_new_chat,
    no_reconnect_client_gives_up_when_the_connection_is_lost,
    window_0_ends_the_chat_when_the_connection_is_lost,
    ended_input_leaves_the_chat_a_restarted_server_gives,
    ended_input_with_nothing_unconfirmed_stops_reconnecting,
);

/// Over TCP the server closes the connection a resume replaces with
/// REPLACED; that close lingers (up to 1 s) on a connection whose peer is
/// gone, and the resumed chat must not wait for it (it did, until the
/// linger moved from `close` to `finish`).
#[test]
fn tcp_resume_is_not_held_up_by_the_replaced_connection() {
    resume_before_the_server_notices(
        support::TransportKind::Tcp,
        Some(std::time::Duration::from_millis(700)),
    );
}
