//! The set-up and the checks every hostile case shares: a real server (with
//! or without a normal client's chat open), the runtime the hand-written
//! peers run on, what the server must report and log about a peer that
//! broke the protocol, and, at the end, that the server still chats with a
//! normal client.
//!
//! The peers are async and the [`Peer`]s blocking: a test drives the peers
//! with [`Hostile::block_on`] in between the blocking calls. The runtime is
//! multi-threaded so that background tasks (quinn's endpoint driver, the ack
//! readers) keep running while a test blocks on a `Peer`.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    ChatProcess, Peer, TIMEOUT, TransportKind, await_connected, exchange, finish_client,
    start_chat, start_client, start_server_with,
};
use tokio::runtime::Runtime;

use chat::trust::identity::Identity;

use crate::peer::{ALPN_V2, HostileQuic, HostileTcp, HostileV2, NO_ERROR, PROTOCOL_ERROR};

/// A real `chat` server under attack; see the module docs.
pub struct Hostile {
    pub t: TransportKind,
    pub server: Peer,
    pub addr: String,
    pub fp: String,
    /// The normal client's chat, when one is open.
    client: Option<Peer>,
    rt: Runtime,
}

impl Hostile {
    /// A TCP server with no chat open.
    pub fn tcp() -> Hostile {
        Hostile::server(TransportKind::Tcp, &[], &[])
    }

    /// A QUIC server with no chat open.
    pub fn quic() -> Hostile {
        Hostile::server(TransportKind::Quic, &[], &[])
    }

    /// A server started with `extra` arguments and environment `envs`.
    pub fn server(t: TransportKind, extra: &[&str], envs: &[(&str, &str)]) -> Hostile {
        let rt = runtime();
        let (server, addr, fp) = start_server_with(t, "127.0.0.1", extra, envs, true);
        Hostile {
            t,
            server,
            addr,
            fp,
            client: None,
            rt,
        }
    }

    /// A server with a normal client's chat open, in which the client has
    /// sent message 0, `first`.
    pub fn with_open_chat(t: TransportKind, first: &str) -> Hostile {
        let rt = runtime();
        let mut chat = start_chat(t, &[], &[]);
        exchange(&mut chat.client, &mut chat.server, 0, first);
        Hostile {
            t,
            server: chat.server,
            addr: chat.addr,
            fp: chat.fingerprint,
            client: Some(chat.client),
            rt,
        }
    }

    /// Runs one step of the hostile peers.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    // ----- the normal client ---------------------------------------------

    /// A normal client connects (while whatever the test set up goes on);
    /// it sends message 0, `first`, and the server answers with `reply`.
    pub fn client_joins(&mut self, first: &str, reply: &str) {
        let mut client = start_client(self.t, &self.addr, &self.fp, &[]);
        await_connected(&mut self.server, &mut client, self.t, &self.fp);
        exchange(&mut client, &mut self.server, 0, first);
        exchange(&mut self.server, &mut client, 0, reply);
        self.client = Some(client);
    }

    /// The open chat goes on: the client sends message `id`, `text`.
    pub fn client_sends(&mut self, id: u64, text: &str) {
        let (server, client) = self.chat();
        exchange(client, server, id, text);
    }

    /// The open chat goes on: the client sends message 1, `after`, and
    /// the server answers with its message 0, `reply`.
    pub fn chat_goes_on(&mut self, after: &str, reply: &str) {
        let (server, client) = self.chat();
        exchange(client, server, 1, after);
        exchange(server, client, 0, reply);
    }

    /// The client of the open chat leaves cleanly.
    pub fn client_leaves(&mut self) {
        let (server, client) = self.chat();
        finish_client(server, client);
        self.client = None;
    }

    fn chat(&mut self) -> (&mut Peer, &mut Peer) {
        let client = self.client.as_mut().expect("a chat is open");
        (&mut self.server, client)
    }

    /// Ends the test: the open chat's client (if any) leaves cleanly, and a
    /// new normal client connects, sends a message and gets its ack,
    /// receives one from the server and acks it, then leaves cleanly.
    pub fn assert_server_still_serves(mut self) {
        if self.client.is_some() {
            self.client_leaves();
        }
        // Messages from earlier (hostile) peers carry the same ids as the
        // new client's: set them aside so the checks below see only the
        // new ones.
        let server = &mut self.server;
        server.poll();
        while server.try_wait_event("message", Duration::ZERO).is_some() {}
        let mut client = start_client(self.t, &self.addr, &self.fp, &[]);
        await_connected(server, &mut client, self.t, &self.fp);
        exchange(&mut client, server, 0, "hello after the hostile peer");
        exchange(server, &mut client, 0, "and hello back");
        finish_client(server, &mut client);
    }

    // ----- hostile peers ---------------------------------------------------

    /// A hostile TCP peer that the server has admitted (no chat was open).
    pub fn tcp_peer(&mut self) -> HostileTcp {
        let h = self.block_on(HostileTcp::connect(&self.addr));
        self.wait_connected_from(&h.local);
        h
    }

    /// A hostile QUIC peer with a proper control stream that the server has
    /// admitted (no chat was open).
    pub fn quic_peer(&mut self) -> HostileQuic {
        let h = self.block_on(HostileQuic::connect_with_control(&self.addr));
        self.wait_connected_from(&h.local);
        h
    }

    /// [`Hostile::quic_peer`] after a first message round trip: message 0,
    /// "first", is acked and reaches the server's user.
    pub fn quic_peer_chatting(&mut self) -> HostileQuic {
        let mut h = self.quic_peer();
        self.block_on(async {
            h.send_message(0, b"first").await;
            h.expect_ack(0).await;
        });
        self.expect_message(0, "first");
        h
    }

    // ----- chat/2 peers ------------------------------------------------------

    /// A hostile chat/2 TCP peer whose handshake is done and which has sent
    /// nothing: not a client yet (docs/protocol.md §12.3).
    pub fn tcp_peer_v2(&mut self) -> HostileTcp {
        self.block_on(HostileTcp::connect_as(&self.addr, ALPN_V2))
    }

    /// A hostile chat/2 QUIC peer whose handshake is done and which has
    /// opened no stream: not a client yet.
    pub fn quic_peer_v2(&mut self) -> HostileQuic {
        self.block_on(HostileQuic::connect_as(&self.addr, ALPN_V2))
    }

    /// A hostile chat/2 peer over the case's transport, presenting
    /// `identity` as its client certificate (none when `None`), whose
    /// handshake is done and which has sent nothing.
    pub fn peer_v2_as(&mut self, identity: Option<&Identity>) -> HostileV2 {
        self.block_on(HostileV2::connect(self.t, &self.addr, identity))
    }

    /// How many clients the server has shown so far: its `connected`,
    /// `refused` and `disconnected` events.
    pub fn shown(&mut self) -> [usize; 3] {
        self.server.poll();
        ["connected", "refused", "disconnected"].map(|n| self.server.events_named(n).len())
    }

    /// After a while to take effect, the server still shows `before` (see
    /// [`Hostile::shown`]): nothing of a peer that never said HELLO.
    pub fn assert_nothing_more_shown(&mut self, before: [usize; 3], what: &str) {
        self.server.settle(Duration::from_millis(300));
        let now = self.shown();
        if now != before {
            self.server.fail(&format!(
                "{what}: a connection that never said HELLO is no client; the server's \
                 (connected, refused, disconnected) went from {before:?} to {now:?}"
            ));
        }
    }

    /// chat/2: `h` broke the rules before its HELLO. It gets a close with
    /// PROTOCOL_ERROR whose reason mentions each of `all`; the server logs
    /// a protocol error naming the peer, and shows nothing of it (it was
    /// never a client). Returns the close reason.
    pub fn expect_unshown_protocol_error(&mut self, mut h: impl Intruder, all: &[&str]) -> String {
        let before = self.shown();
        let reason = h.expect_protocol_close(&self.rt, &[]);
        for word in all {
            assert!(
                mentions_any(&reason, &[word]),
                "the close reason should mention {word:?}: {reason:?}"
            );
        }
        let line = self.wait_log_line(h.local(), "protocol error", &all[..1]);
        eprintln!("close reason {reason:?}; log: {line}");
        self.assert_nothing_more_shown(before, &format!("after {reason:?}"));
        reason
    }

    /// Waits for the server's `connected` event for the peer at `peer`.
    pub fn wait_connected_from(&mut self, peer: &str) -> Value {
        let p = peer.to_string();
        self.server.wait_event_where(
            "connected",
            &format!("peer = {peer}"),
            move |v| v["peer"].as_str() == Some(p.as_str()),
            TIMEOUT,
        )
    }

    // ----- what the server says --------------------------------------------

    /// The server's user got message `id` with the text `text`.
    pub fn expect_message(&mut self, id: u64, text: &str) {
        let m = self.server.wait_event_id("message", id, TIMEOUT);
        assert_eq!(m["text"], text, "{m}");
    }

    /// The texts of every message the server's user got so far.
    pub fn server_messages(&mut self) -> Vec<String> {
        self.server.poll();
        self.server
            .events_named("message")
            .iter()
            .map(|m| m["text"].as_str().unwrap_or("<binary>").to_string())
            .collect()
    }

    /// The server admitted no one but the open chat's client.
    pub fn assert_only_the_client_admitted(&mut self) {
        self.server.poll();
        assert_eq!(
            self.server.events_named("connected").len(),
            1,
            "only the real client should have been admitted"
        );
    }

    /// `h` broke the protocol: it gets a close with PROTOCOL_ERROR and a
    /// reason mentioning one of `any` (see [`Intruder`]), and the server
    /// reports and logs it ([`Hostile::server_reports_protocol_error`]).
    pub fn expect_protocol_error(&mut self, mut h: impl Intruder, any: &[&str]) {
        let reason = h.expect_protocol_close(&self.rt, any);
        let line = self.server_reports_protocol_error(h.local(), any);
        eprintln!("close reason {reason:?}; log: {line}");
    }

    /// The server reports the end of the chat with code 2 and a reason
    /// mentioning one of `any`, and logs a line naming the peer at `peer`,
    /// saying "protocol error" and one of `any`; returns that line.
    pub fn server_reports_protocol_error(&mut self, peer: &str, any: &[&str]) -> String {
        self.expect_server_disconnected(Some(PROTOCOL_ERROR), any);
        self.wait_log_line(peer, "protocol error", any)
    }

    /// `h` ends its chat politely, and the server reports a normal end.
    pub fn ends_politely(&mut self, h: impl Intruder) {
        h.end_politely(&self.rt);
        self.expect_server_disconnected(Some(NO_ERROR), &[]);
    }

    /// Waits for the server's next `disconnected` and checks its code
    /// (`None`: no close code, a lost connection) and that its reason
    /// mentions one of `any`; returns the event.
    pub fn expect_server_disconnected(&mut self, code: Option<u64>, any: &[&str]) -> Value {
        let server = &mut self.server;
        let d = server.wait_event("disconnected", TIMEOUT);
        if d["code"].as_u64() != code {
            server.fail(&format!(
                "server's disconnected.code should be {code:?}: {d}"
            ));
        }
        let reason = d["reason"].as_str().unwrap_or_default();
        if !mentions_any(reason, any) {
            server.fail(&format!(
                "server's disconnected.reason should mention one of {any:?}: {d}"
            ));
        }
        d
    }

    /// Waits until one line of the server's stderr contains `peer` (the
    /// hostile peer's address), `what` (case-insensitive) and one of `any`
    /// (case-insensitive); returns that line. Panics with diagnostics
    /// otherwise.
    pub fn wait_log_line(&mut self, peer: &str, what: &str, any: &[&str]) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = strip_ansi(&self.server.stderr_text());
            if let Some(line) = text
                .lines()
                .find(|l| l.contains(peer) && contains_ci(l, what) && mentions_any(l, any))
            {
                return line.to_string();
            }
            if Instant::now() >= deadline {
                self.server.fail(&format!(
                    "stderr should have a line naming the peer {peer}, saying {what:?} and one of {any:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The idle timeout a server started without `--idle-timeout` announces in
/// its WELCOME, in milliseconds.
pub const SERVER_IDLE_MS: u64 = 10_000;

/// The resume window a server started without `--resume-window` announces
/// in its WELCOME, in milliseconds (30 s).
pub const SERVER_RESUME_WINDOW_MS: u64 = 30_000;

/// A small multi-threaded runtime for one test.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

/// What the fixture needs of a hostile peer, over either transport.
pub trait Intruder {
    /// Our address as the server sees it (its log names it).
    fn local(&self) -> &str;

    /// Waits for the server to close on us with PROTOCOL_ERROR and a reason
    /// mentioning one of `any`, and nothing else before; returns the reason.
    fn expect_protocol_close(&mut self, rt: &Runtime, any: &[&str]) -> String;

    /// Ends the chat with NO_ERROR and waits until that is through.
    fn end_politely(self, rt: &Runtime);
}

impl Intruder for HostileTcp {
    fn local(&self) -> &str {
        &self.local
    }

    /// A CLOSE (no ACK or other frame but PINGs first), then the end of
    /// the stream.
    fn expect_protocol_close(&mut self, rt: &Runtime, any: &[&str]) -> String {
        let reason = rt.block_on(self.expect_close(PROTOCOL_ERROR));
        assert!(
            mentions_any(&reason, any),
            "CLOSE reason should mention one of {any:?}: {reason:?}"
        );
        rt.block_on(self.expect_end());
        reason
    }

    fn end_politely(self, rt: &Runtime) {
        rt.block_on(HostileTcp::close_politely(self));
    }
}

impl Intruder for HostileQuic {
    fn local(&self) -> &str {
        &self.local
    }

    /// A CONNECTION_CLOSE.
    fn expect_protocol_close(&mut self, rt: &Runtime, any: &[&str]) -> String {
        let reason = rt.block_on(self.expect_closed(PROTOCOL_ERROR, TIMEOUT));
        assert!(
            mentions_any(&reason, any),
            "close reason should mention one of {any:?}: {reason:?}"
        );
        reason
    }

    fn end_politely(self, rt: &Runtime) {
        rt.block_on(HostileQuic::close_politely(self));
    }
}

impl Intruder for HostileV2 {
    fn local(&self) -> &str {
        HostileV2::local(self)
    }

    fn expect_protocol_close(&mut self, rt: &Runtime, any: &[&str]) -> String {
        match self {
            HostileV2::Tcp(h) => h.expect_protocol_close(rt, any),
            HostileV2::Quic(h) => h.expect_protocol_close(rt, any),
        }
    }

    fn end_politely(self, rt: &Runtime) {
        match self {
            HostileV2::Tcp(h) => (*h).end_politely(rt),
            HostileV2::Quic(h) => h.end_politely(rt),
        }
    }
}

/// Removes ANSI escape sequences (the log formatter may colour its output).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

/// Whether `text` mentions at least one of `any` (case-insensitive); an
/// empty list matches everything.
pub fn mentions_any(text: &str, any: &[&str]) -> bool {
    any.is_empty() || any.iter().any(|k| contains_ci(text, k))
}
