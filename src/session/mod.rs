//! One chat: the event loop between the user and a connected peer.
//!
//! The session numbers outgoing messages, remembers when each was handed to
//! the transport, turns acknowledgements into round-trip times, acknowledges
//! every message it receives, and, when the connection ends, reports each
//! message that was never confirmed. It knows nothing about sockets: it sees
//! only the [`Transport`] trait, which is what lets it be unit-tested against
//! an in-memory transport.

pub mod unconfirmed;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::protocol::{MessageId, close_code};
use crate::transport::{Disconnect, Event, Transport};
use crate::ui::input::UserInput;
use crate::ui::output::Output;
use unconfirmed::Unconfirmed;

/// Which end of the chat this is; it decides what end of input and Ctrl-C do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// End of input keeps the chat open; Ctrl-C closes with GOING_AWAY.
    Server,
    /// End of input waits for acknowledgements, then closes with NO_ERROR.
    Client,
}

/// The user's side of a session: input, output, and the Ctrl-C signal. It
/// outlives sessions: a server reuses it for each client.
pub struct UserIo {
    pub input: mpsc::Receiver<UserInput>,
    /// False once input has ended.
    pub input_open: bool,
    pub out: Box<dyn Output>,
    pub interrupt: watch::Receiver<bool>,
}

/// Resolves when the user asks to leave (Ctrl-C). Never resolves if no one
/// can send that signal any more. (A free function so that it borrows only
/// the signal, not the rest of [`UserIo`].)
pub async fn interrupted(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|&quit| quit).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl UserIo {
    /// Standard input and output: the line editor at a terminal, else plain
    /// lines or (with `json`) JSON objects.
    pub fn stdio(json: bool, role: Role, interrupt: watch::Receiver<bool>) -> Self {
        if !json && crate::ui::terminal::is_interactive() {
            let (input, out) = crate::ui::terminal::start(role == Role::Server);
            return UserIo {
                input,
                input_open: true,
                out: Box::new(out),
                interrupt,
            };
        }
        UserIo {
            input: crate::ui::input::spawn_stdin(json),
            input_open: true,
            out: crate::ui::output::stdout(json),
            interrupt,
        }
    }

    pub fn is_interrupted(&self) -> bool {
        *self.interrupt.borrow()
    }
}

/// How a session ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub disconnect: Disconnect,
    pub unacked: Vec<MessageId>,
    /// The user asked to leave (Ctrl-C, /quit): a server stops serving.
    pub quit: bool,
}

/// Runs one chat over `transport` until either side ends it.
///
/// `ack_wait` bounds how long a client whose input has ended waits for
/// outstanding acknowledgements; the wait restarts whenever one arrives, so a
/// slow but moving transfer is not cut short.
pub async fn run<T: Transport>(
    transport: &mut T,
    io: &mut UserIo,
    role: Role,
    ack_wait: Duration,
) -> Outcome {
    let mut next_id: MessageId = 0;
    let mut outstanding = Unconfirmed::default();
    // Set once a client's input has ended: close when everything is acked.
    let mut leaving_by: Option<Instant> = None;
    let mut stats = Stats::default();
    let end = |d: Disconnect, outstanding: &Unconfirmed, io: &mut UserIo| {
        let unacked = outstanding.ids();
        io.out.disconnected(&d, &unacked);
        // Lines typed while the chat was closing were never read: say so.
        // (A server reads them next, and answers that no one is connected.)
        if role == Role::Client {
            while let Ok(input) = io.input.try_recv() {
                if let UserInput::Message(_) = input {
                    io.out.error("not sent: the chat has ended");
                }
            }
        }
        Outcome {
            disconnect: d,
            unacked,
            quit: false,
        }
    };
    let leave = |d, outstanding: &Unconfirmed, io: &mut UserIo| Outcome {
        quit: true,
        ..end(d, outstanding, io)
    };

    // Whether output may be waiting in a buffer: it is written out whenever
    // nothing else is ready (see `Output::flush`).
    let mut flushed = true;
    loop {
        if leaving_by.is_some() && outstanding.is_empty() {
            io.out.flush();
            let d = close(transport, close_code::NO_ERROR, "the client left").await;
            return end(d, &outstanding, io);
        }
        tokio::select! {
            // Ctrl-C wins over everything else that is ready.
            biased;
            () = interrupted(&mut io.interrupt) => {
                io.out.flush();
                let d = quit(transport, role).await;
                return leave(d, &outstanding, io);
            }
            event = transport.next_event() => match event {
                Event::Message { id, body } => {
                    // Ack first: the peer's round-trip time should not include
                    // how long our terminal takes to draw.
                    transport.ack(id);
                    io.out.message(id, &body);
                    stats.received += 1;
                }
                Event::Ack { id } => match outstanding.remove(id) {
                    Some(sent) => {
                        let rtt = sent.at.elapsed();
                        io.out.ack(id, rtt);
                        stats.rtts.push(rtt);
                        if let Some(by) = leaving_by.as_mut() {
                            *by = Instant::now() + ack_wait;
                        }
                    }
                    None => debug!(id, "ignoring ACK for a message not outstanding"),
                },
                Event::Rejected { id, code, reason } => match outstanding.remove(id) {
                    Some(_) => io.out.rejected(id, code, &reason),
                    None => debug!(id, "ignoring REJECT for a message not outstanding"),
                },
                Event::Closed(d) => return end(d, &outstanding, io),
            },
            // Still read while leaving: /quit or Ctrl-C must work during the
            // wait, and a line typed then must be reported as not sent.
            // Not while too much is unconfirmed: the transport would queue
            // it all, so piping a large file in would fill memory instead
            // of waiting. (Ctrl-C is a signal, so it still gets through.)
            input = io.input.recv(), if io.input_open && outstanding.has_room() => match input {
                Some(UserInput::Message(_)) if leaving_by.is_some() => {
                    io.out.error("not sent: input has ended and the chat is closing");
                }
                Some(UserInput::Message(body)) => {
                    let id = next_id;
                    next_id += 1;
                    outstanding.insert(id, body.len());
                    io.out.sent(id, &body);
                    transport.send(id, body);
                    stats.sent += 1;
                }
                Some(UserInput::Stats) => io.out.info(&stats.summary()),
                Some(UserInput::Quit) => {
                    io.out.flush();
                    let d = quit(transport, role).await;
                    return leave(d, &outstanding, io);
                }
                Some(UserInput::Invalid(why)) => io.out.error(&why),
                // A server keeps the chat open without input; a client
                // leaves once its messages are confirmed. (A terminal goes
                // on reading keys meanwhile, so Ctrl-C still works.)
                Some(UserInput::End) | None if role == Role::Server => io.input_open = false,
                Some(UserInput::End) | None => {
                    if input.is_none() {
                        io.input_open = false;
                    }
                    if leaving_by.is_none() {
                        leaving_by = Some(Instant::now() + ack_wait);
                        if !outstanding.is_empty() {
                            io.out.notice(&format!(
                                "leaving once {} sent message(s) are confirmed; Ctrl-C leaves now",
                                outstanding.len()
                            ));
                        }
                    }
                }
            },
            () = sleep_until_some(leaving_by) => {
                io.out.flush();
                let d = close(transport, close_code::NO_ERROR, "the client left").await;
                return end(d, &outstanding, io);
            }
            // Last in a biased select: taken only when nothing above is
            // ready, i.e. just before the session would wait. What this
            // turn queued (messages, acks, output lines) leaves together.
            () = std::future::ready(()), if !flushed => {
                transport.flush();
                io.out.flush();
                flushed = true;
                continue;
            }
        }
        flushed = false;
    }
}

/// The user leaves: a client ends the chat, a server goes away.
async fn quit<T: Transport>(transport: &mut T, role: Role) -> Disconnect {
    let (code, reason) = match role {
        Role::Server => (close_code::GOING_AWAY, "the server is shutting down"),
        Role::Client => (close_code::NO_ERROR, "the client left"),
    };
    close(transport, code, reason).await
}

/// Counts for `/stats`.
#[derive(Debug, Default)]
struct Stats {
    sent: u64,
    received: u64,
    rtts: Vec<Duration>,
}

impl Stats {
    fn summary(&mut self) -> String {
        let mut s = format!(
            "this chat: {} sent, {} received, {} confirmed",
            self.sent,
            self.received,
            self.rtts.len()
        );
        if !self.rtts.is_empty() {
            self.rtts.sort_unstable();
            let at = |q: f64| {
                let i = ((self.rtts.len() - 1) as f64 * q).round() as usize;
                crate::ui::output::format_rtt(self.rtts[i])
            };
            s.push_str(&format!(
                "; round trip min {} p50 {} p99 {} max {}",
                at(0.0),
                at(0.5),
                at(0.99),
                at(1.0)
            ));
        }
        s
    }
}

async fn close<T: Transport>(transport: &mut T, code: u64, reason: &str) -> Disconnect {
    transport.close(code, reason).await;
    Disconnect::Local {
        code,
        reason: reason.to_string(),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The chat logic against an in-memory transport: no sockets, no TLS.
    use super::*;
    use crate::trust::identity::Fingerprint;
    use bytes::Bytes;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// Records what the session asked of the transport; the test plays the
    /// peer by pushing events.
    struct MemoryTransport {
        events: mpsc::UnboundedReceiver<Event>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Transport for MemoryTransport {
        fn send(&mut self, id: MessageId, body: Bytes) {
            self.log
                .lock()
                .unwrap()
                .push(format!("send {id} {}", body.len()));
        }
        fn ack(&mut self, id: MessageId) {
            self.log.lock().unwrap().push(format!("ack {id}"));
        }
        fn reject(&mut self, id: MessageId, code: u64, _reason: &str) {
            self.log.lock().unwrap().push(format!("reject {id} {code}"));
        }
        async fn next_event(&mut self) -> Event {
            match self.events.recv().await {
                Some(e) => e,
                None => std::future::pending().await,
            }
        }
        async fn close(&mut self, code: u64, _reason: &str) {
            self.log.lock().unwrap().push(format!("close {code}"));
        }
        async fn finish(self) {}
    }

    /// Output that records events as short strings.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Output for Recorder {
        fn listening(&mut self, _: &str, _: SocketAddr, _: Fingerprint) {}
        fn connected(&mut self, _: &str, _: SocketAddr, _: Option<Fingerprint>, _: Option<&str>) {}
        fn sent(&mut self, id: MessageId, body: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("sent {id} {}", body.len()));
        }
        fn ack(&mut self, id: MessageId, _rtt: Duration) {
            self.0.lock().unwrap().push(format!("ack {id}"));
        }
        fn rejected(&mut self, id: MessageId, code: u64, _reason: &str) {
            self.0.lock().unwrap().push(format!("rejected {id} {code}"));
        }
        fn message(&mut self, id: MessageId, body: &crate::protocol::body::Body) {
            self.0.lock().unwrap().push(format!(
                "message {id} {}",
                String::from_utf8_lossy(&body.contiguous())
            ));
        }
        fn disconnected(&mut self, why: &Disconnect, unacked: &[MessageId]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("disconnected {:?} {unacked:?}", why.code()));
        }
        fn error(&mut self, message: &str) {
            self.0.lock().unwrap().push(format!("error {message}"));
        }
        fn info(&mut self, _: &str) {}
    }

    struct Harness {
        transport: MemoryTransport,
        io: UserIo,
        peer: mpsc::UnboundedSender<Event>,
        user: mpsc::Sender<UserInput>,
        interrupt: watch::Sender<bool>,
        wire: Arc<Mutex<Vec<String>>>,
        screen: Arc<Mutex<Vec<String>>>,
    }

    fn harness() -> Harness {
        let (peer, events) = mpsc::unbounded_channel();
        let (user, input) = mpsc::channel(16);
        let (interrupt, interrupt_rx) = watch::channel(false);
        let wire = Arc::new(Mutex::new(Vec::new()));
        let screen = Arc::new(Mutex::new(Vec::new()));
        Harness {
            transport: MemoryTransport {
                events,
                log: wire.clone(),
            },
            io: UserIo {
                input,
                input_open: true,
                out: Box::new(Recorder(screen.clone())),
                interrupt: interrupt_rx,
            },
            peer,
            user,
            interrupt,
            wire,
            screen,
        }
    }

    fn msg(s: &'static str) -> UserInput {
        UserInput::Message(Bytes::from_static(s.as_bytes()))
    }

    #[tokio::test]
    async fn messages_are_numbered_acked_and_unconfirmed_ones_reported() {
        let mut h = harness();
        for m in ["a", "bb", "ccc"] {
            h.user.send(msg(m)).await.unwrap();
        }
        h.peer
            .send(Event::Message {
                id: 0,
                body: Bytes::from_static(b"hi").into(),
            })
            .unwrap();
        let peer = h.peer.clone();
        let screen = h.screen.clone();
        let task = tokio::spawn(async move {
            // Play the peer: ack message 1 once it has been sent, reject 2 as
            // unknown-id noise, then drop the connection.
            while !screen.lock().unwrap().iter().any(|l| l == "sent 2 3") {
                tokio::task::yield_now().await;
            }
            peer.send(Event::Ack { id: 1 }).unwrap();
            peer.send(Event::Ack { id: 99 }).unwrap();
            peer.send(Event::Closed(Disconnect::Lost {
                reason: "gone".into(),
            }))
            .unwrap();
        });
        let out = run(
            &mut h.transport,
            &mut h.io,
            Role::Server,
            Duration::from_secs(5),
        )
        .await;
        task.await.unwrap();
        assert_eq!(out.unacked, vec![0, 2]);
        let wire = h.wire.lock().unwrap().clone();
        assert!(wire.contains(&"ack 0".to_string()), "{wire:?}");
        assert_eq!(wire.iter().filter(|l| l.starts_with("send")).count(), 3);
        let screen = h.screen.lock().unwrap().clone();
        assert!(screen.contains(&"message 0 hi".to_string()));
        assert!(screen.contains(&"ack 1".to_string()));
        assert!(
            !screen.iter().any(|l| l == "ack 99"),
            "unknown ids are ignored"
        );
        assert_eq!(screen.last().unwrap(), "disconnected None [0, 2]");
    }

    #[tokio::test]
    async fn client_end_of_input_waits_for_acks_then_closes_normally() {
        let mut h = harness();
        h.user.send(msg("x")).await.unwrap();
        h.user.send(UserInput::End).await.unwrap();
        let peer = h.peer.clone();
        let screen = h.screen.clone();
        tokio::spawn(async move {
            while !screen.lock().unwrap().iter().any(|l| l == "sent 0 1") {
                tokio::task::yield_now().await;
            }
            peer.send(Event::Ack { id: 0 }).unwrap();
        });
        let out = run(
            &mut h.transport,
            &mut h.io,
            Role::Client,
            Duration::from_secs(5),
        )
        .await;
        assert!(out.unacked.is_empty());
        assert!(out.disconnect.is_normal());
        assert_eq!(h.wire.lock().unwrap().last().unwrap(), "close 0");
    }

    #[tokio::test]
    async fn input_waits_while_too_much_is_unconfirmed() {
        let (peer, events) = mpsc::unbounded_channel();
        let (user, input) = mpsc::channel(4096);
        let (interrupt, interrupt_rx) = watch::channel(false);
        let wire = Arc::new(Mutex::new(Vec::new()));
        let mut transport = MemoryTransport {
            events,
            log: wire.clone(),
        };
        let mut io = UserIo {
            input,
            input_open: true,
            out: Box::new(Recorder(Arc::new(Mutex::new(Vec::new())))),
            interrupt: interrupt_rx,
        };
        for _ in 0..crate::session::unconfirmed::MAX_MESSAGES + 100 {
            user.send(msg("m")).await.unwrap();
        }
        let sends = |w: &Arc<Mutex<Vec<String>>>| {
            w.lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("send"))
                .count()
        };
        let w = wire.clone();
        let driver = tokio::spawn(async move {
            while sends(&w) < crate::session::unconfirmed::MAX_MESSAGES {
                tokio::task::yield_now().await;
            }
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            let stalled = sends(&w);
            peer.send(Event::Ack { id: 0 }).unwrap();
            while sends(&w) == stalled {
                tokio::task::yield_now().await;
            }
            let after_one_ack = sends(&w);
            interrupt.send(true).unwrap();
            (stalled, after_one_ack)
        });
        run(
            &mut transport,
            &mut io,
            Role::Client,
            Duration::from_secs(5),
        )
        .await;
        let (stalled, after_one_ack) = driver.await.unwrap();
        assert_eq!(stalled, crate::session::unconfirmed::MAX_MESSAGES);
        assert_eq!(after_one_ack, crate::session::unconfirmed::MAX_MESSAGES + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn client_input_closed_without_end_also_leaves() {
        let h = harness();
        let Harness {
            mut transport,
            mut io,
            user,
            wire,
            ..
        } = h;
        user.send(msg("x")).await.unwrap();
        drop(user);
        let out = run(
            &mut transport,
            &mut io,
            Role::Client,
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(out.unacked, vec![0]);
        assert_eq!(wire.lock().unwrap().last().unwrap(), "close 0");
    }

    #[tokio::test(start_paused = true)]
    async fn client_gives_up_waiting_for_acks_and_says_which_are_unconfirmed() {
        let mut h = harness();
        h.user.send(msg("x")).await.unwrap();
        h.user.send(UserInput::End).await.unwrap();
        let out = run(
            &mut h.transport,
            &mut h.io,
            Role::Client,
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(out.unacked, vec![0]);
        assert_eq!(h.wire.lock().unwrap().last().unwrap(), "close 0");
    }

    #[tokio::test]
    async fn server_end_of_input_keeps_the_chat_open() {
        let mut h = harness();
        h.user.send(UserInput::End).await.unwrap();
        h.user
            .send(UserInput::Invalid("nope".into()))
            .await
            .unwrap();
        let peer = h.peer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peer.send(Event::Message {
                id: 0,
                body: Bytes::from_static(b"still here").into(),
            })
            .unwrap();
            peer.send(Event::Closed(Disconnect::Peer {
                code: 0,
                reason: "bye".into(),
            }))
            .unwrap();
        });
        let out = run(
            &mut h.transport,
            &mut h.io,
            Role::Server,
            Duration::from_secs(5),
        )
        .await;
        assert!(out.disconnect.is_normal());
        assert!(
            h.screen
                .lock()
                .unwrap()
                .contains(&"message 0 still here".to_string())
        );
    }

    #[tokio::test]
    async fn interrupt_closes_with_the_role_code() {
        for (role, code) in [(Role::Server, "close 4"), (Role::Client, "close 0")] {
            let mut h = harness();
            h.interrupt.send(true).unwrap();
            run(&mut h.transport, &mut h.io, role, Duration::from_secs(5)).await;
            assert_eq!(h.wire.lock().unwrap().last().unwrap(), code);
        }
    }

    #[tokio::test]
    async fn rejection_is_reported_and_clears_the_message() {
        let mut h = harness();
        h.user.send(msg("big")).await.unwrap();
        let peer = h.peer.clone();
        let screen = h.screen.clone();
        tokio::spawn(async move {
            while !screen.lock().unwrap().iter().any(|l| l == "sent 0 3") {
                tokio::task::yield_now().await;
            }
            peer.send(Event::Rejected {
                id: 0,
                code: 1,
                reason: "too large".into(),
            })
            .unwrap();
            peer.send(Event::Closed(Disconnect::Peer {
                code: 0,
                reason: String::new(),
            }))
            .unwrap();
        });
        let out = run(
            &mut h.transport,
            &mut h.io,
            Role::Server,
            Duration::from_secs(5),
        )
        .await;
        assert!(out.unacked.is_empty());
        assert!(
            h.screen
                .lock()
                .unwrap()
                .contains(&"rejected 0 1".to_string())
        );
    }
}
