//! One chat: its state, and the loop that drives it over a connection.
//!
//! A [`Session`] owns what a chat is: the numbering of outgoing messages,
//! the ones not yet confirmed (with their bodies and the moment each was
//! handed to the transport), the ids received, the statistics. It is not
//! the connection that carries it: [`Session::run`] drives it over one
//! connection until that ends, and the session is still there afterwards.
//! On chat/2 a lost connection does not end the chat (docs/protocol.md
//! §12.4–§12.5): [`Session::hold`] keeps taking the user's messages while
//! there is none, and [`Session::resume`] goes on over the next one —
//! what the peer's RECEIVED covers is confirmed, the rest sent again in id
//! order. [`Session::end`] reports the end and what was never confirmed.
//!
//! It knows nothing about sockets, only the [`Transport`] trait, which is
//! what lets it be unit-tested against an in-memory transport; and nothing
//! about terminals, only [`UserIo`].

mod stats;
pub mod unconfirmed;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use crate::protocol::codec::Frame;
use crate::protocol::received::ReceivedIds;
use crate::protocol::{MessageId, close_code};
use crate::transport::{Disconnect, Event, Transport};
use crate::ui::input::UserInput;
use crate::ui::output::Shown;
use crate::ui::{Quit, UserIo};
use stats::Stats;
use unconfirmed::Unconfirmed;

/// Which end of the chat this is; it decides what end of input and Ctrl-C do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// End of input keeps the chat open; Ctrl-C closes with GOING_AWAY.
    Server,
    /// End of input waits for acknowledgements, then closes with NO_ERROR.
    Client,
}

/// Most ids a RECEIVED frame of ours lists above its `below`: far more than
/// a peer of ours leaves unconfirmed (1,024), and within a frame's size.
const MAX_RECEIVED_IDS: usize = 1 << 16;

/// How one connection of the chat ended (the chat itself may go on).
#[derive(Debug, Clone)]
pub struct Ended {
    pub disconnect: Disconnect,
    /// The user asked to leave (Ctrl-C, /quit).
    pub quit: bool,
}

impl Ended {
    /// Whether the connection was lost rather than closed by either side:
    /// on chat/2 the chat may resume.
    pub fn is_lost(&self) -> bool {
        !self.quit && matches!(self.disconnect, Disconnect::Lost { .. })
    }
}

/// What [`Session::hold`] ended with.
pub enum Held<T> {
    /// The user asked to leave.
    Quit,
    /// What the caller waited for.
    Done(T),
}

/// What a resume did with the unconfirmed messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resumption {
    /// Sent before and not covered by the peer's RECEIVED: sent again.
    pub resent: Vec<MessageId>,
    /// Covered by the peer's RECEIVED: confirmed, with no round-trip time.
    pub confirmed: Vec<MessageId>,
    /// Typed while there was no connection: sent now for the first time.
    pub held: Vec<MessageId>,
}

/// How a chat ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub disconnect: Disconnect,
    pub unacked: Vec<MessageId>,
    /// The user asked to leave (Ctrl-C, /quit): a server stops serving.
    pub quit: bool,
}

/// What one turn of the loop decided.
enum Step {
    Continue,
    /// We end the chat: close the connection with this code and reason.
    Close {
        code: u64,
        reason: String,
        /// How the end is reported (a protocol error we found is reported
        /// as such, not as an ordinary close).
        report: Option<Disconnect>,
        quit: bool,
    },
    /// The connection ended.
    Ended(Disconnect),
}

impl Step {
    fn close(code: u64, reason: &str, quit: bool) -> Step {
        Step::Close {
            code,
            reason: reason.to_string(),
            report: None,
            quit,
        }
    }
}

/// One chat's state.
pub struct Session {
    role: Role,
    next_id: MessageId,
    unconfirmed: Unconfirmed,
    /// Ids of the peer's messages we accepted.
    received: ReceivedIds,
    stats: Stats,
    /// Set once a client's input has ended: leave when everything is
    /// confirmed, or when no acknowledgement came for `ack_wait`.
    leaving_by: Option<Instant>,
    ack_wait: Duration,
}

impl Session {
    /// A new chat. `ack_wait` bounds how long a client whose input has
    /// ended waits for outstanding acknowledgements; the wait restarts
    /// whenever one arrives, so a slow but moving transfer is not cut short.
    pub fn new(role: Role, ack_wait: Duration) -> Self {
        Session {
            role,
            next_id: 0,
            unconfirmed: Unconfirmed::default(),
            received: ReceivedIds::default(),
            stats: Stats::default(),
            leaving_by: None,
            ack_wait,
        }
    }

    /// Runs the chat over `link` until either side ends it, the user
    /// leaves (`quit`), or `replaced` resolves (the client resumed the chat
    /// on another connection: this one is closed with REPLACED). Reports
    /// nothing about the end: the caller decides whether the chat is over
    /// ([`Session::end`]) or held for a resume.
    pub async fn run<T: Transport>(
        &mut self,
        link: &mut T,
        io: &mut UserIo,
        quit: &mut Quit,
        replaced: impl Future<Output = ()>,
    ) -> Ended {
        let mut replaced = std::pin::pin!(replaced);
        // Whether anything may wait in a buffer (the link's or the
        // output's): it is written out whenever nothing else is ready.
        let mut flushed = true;
        loop {
            let step = if self.leaving_by.is_some() && self.unconfirmed.is_empty() {
                Step::close(close_code::NO_ERROR, "the client left", false)
            } else {
                tokio::select! {
                    // Leaving wins over everything else that is ready.
                    biased;
                    () = quit.wait() => self.leave(),
                    () = &mut replaced => Step::close(
                        close_code::REPLACED,
                        "the client resumed this chat on another connection",
                        false,
                    ),
                    event = link.next_event() => self.on_event(event, link, io),
                    // Still read while leaving: /quit or Ctrl-C must work
                    // during the wait, and a line typed then must be
                    // reported as not sent. Not while too much is
                    // unconfirmed: the transport would queue it all, so
                    // piping a large file in would fill memory instead of
                    // waiting.
                    input = io.input.recv(), if io.input_open && self.unconfirmed.has_room() => {
                        self.on_input(input, link, io)
                    }
                    () = sleep_until_some(self.leaving_by) => {
                        Step::close(close_code::NO_ERROR, "the client left", false)
                    }
                    // Last in a biased select: taken only when nothing above
                    // is ready, i.e. just before the session would wait.
                    // What this turn queued (messages, acks, output) leaves
                    // together.
                    () = std::future::ready(()), if !flushed => {
                        link.flush();
                        io.out.flush();
                        flushed = true;
                        continue;
                    }
                }
            };
            flushed = false;
            match step {
                Step::Continue => {}
                Step::Close {
                    code,
                    reason,
                    report,
                    quit,
                } => {
                    io.out.flush();
                    link.close(code, &reason).await;
                    let disconnect = report.unwrap_or(Disconnect::Local { code, reason });
                    return Ended { disconnect, quit };
                }
                Step::Ended(disconnect) => {
                    return Ended {
                        disconnect,
                        quit: false,
                    };
                }
            }
        }
    }

    /// Something happened on the connection.
    fn on_event<T: Transport>(&mut self, event: Event, link: &mut T, io: &mut UserIo) -> Step {
        match event {
            Event::Message { id, body } => {
                if self.received.insert(id).is_err() {
                    let reason = format!("message id {id} received twice");
                    return Step::Close {
                        code: close_code::PROTOCOL_ERROR,
                        reason: reason.clone(),
                        report: Some(Disconnect::Violation { reason }),
                        quit: false,
                    };
                }
                // Ack first: the peer's round-trip time should not include
                // how long our output takes to draw.
                link.ack(id);
                io.out.show(Shown::Message { id, body });
                self.stats.received += 1;
            }
            Event::Ack { id } => match self.unconfirmed.remove(id) {
                Some(sent) => {
                    let rtt = sent.at.elapsed();
                    io.out.show(Shown::Ack { id, rtt });
                    self.stats.confirmed(rtt);
                    if let Some(by) = self.leaving_by.as_mut() {
                        *by = Instant::now() + self.ack_wait;
                    }
                }
                None => debug!(id, "ignoring ACK for a message not outstanding"),
            },
            Event::Rejected { id, code, reason } => match self.unconfirmed.remove(id) {
                Some(_) => io.out.show(Shown::Rejected { id, code, reason }),
                None => debug!(id, "ignoring REJECT for a message not outstanding"),
            },
            // Handled before the chat starts (a RECEIVED, by `resume`); the
            // transport lets none of them come twice.
            Event::Hello { .. } | Event::Welcome { .. } | Event::Received { .. } => {
                debug!("ignoring an opening frame during the chat");
            }
            Event::Closed(d) => return Step::Ended(d),
        }
        Step::Continue
    }

    /// Runs the chat over `link` alone and reports its end: a chat that is
    /// never resumed (chat/1, or a resume window of zero).
    pub async fn run_once<T: Transport>(
        &mut self,
        link: &mut T,
        io: &mut UserIo,
        quit: &mut Quit,
    ) -> Outcome {
        let ended = self.run(link, io, quit, std::future::pending()).await;
        self.end(ended.disconnect, io, ended.quit)
    }

    /// The user did something (`None`: input is closed).
    fn on_input<T: Transport>(
        &mut self,
        input: Option<UserInput>,
        link: &mut T,
        io: &mut UserIo,
    ) -> Step {
        if let Some((id, body)) = self.take_input(input, io, true) {
            link.send(id, body);
        }
        Step::Continue
    }

    /// Numbers, keeps and shows a message the user typed (returned, to be
    /// handed to the transport when `transmit`), or handles a command.
    fn take_input(
        &mut self,
        input: Option<UserInput>,
        io: &mut UserIo,
        transmit: bool,
    ) -> Option<(MessageId, Bytes)> {
        match input {
            Some(UserInput::Message(_)) if self.leaving_by.is_some() => {
                io.out
                    .error("not sent: input has ended and the chat is closing");
            }
            Some(UserInput::Message(body)) => {
                let id = self.next_id;
                self.next_id += 1;
                self.unconfirmed.insert(id, body.clone(), transmit);
                io.out.show(Shown::Sent {
                    id,
                    body: body.clone(),
                });
                self.stats.sent += 1;
                return transmit.then_some((id, body));
            }
            Some(UserInput::Stats) => io.out.info(self.stats.summary()),
            Some(UserInput::Invalid(why)) => io.out.error(why),
            // A server keeps the chat open without input; a client leaves
            // once its messages are confirmed. (A terminal goes on reading
            // keys meanwhile, so Ctrl-C still works.)
            Some(UserInput::End) | None if self.role == Role::Server => io.input_open = false,
            Some(UserInput::End) | None => {
                if input.is_none() {
                    io.input_open = false;
                }
                if self.leaving_by.is_none() {
                    self.leaving_by = Some(Instant::now() + self.ack_wait);
                    if !self.unconfirmed.is_empty() {
                        io.out.notice(format!(
                            "leaving once {} sent message(s) are confirmed; Ctrl-C leaves now",
                            self.unconfirmed.len()
                        ));
                    }
                }
            }
        }
        None
    }

    /// Holds the chat while it has no connection, until `until` resolves
    /// or the user leaves (`Quit`; also a client whose input has ended and
    /// who has nothing left to confirm): messages typed meanwhile are
    /// numbered in the session, shown as sent and kept, to go out after a
    /// resume.
    pub async fn hold<F: Future>(
        &mut self,
        io: &mut UserIo,
        quit: &mut Quit,
        until: F,
    ) -> Held<F::Output> {
        let mut until = std::pin::pin!(until);
        loop {
            // A client whose input has ended, with nothing left to
            // confirm, has no reason to get the chat back.
            if self.role == Role::Client && self.leaving_by.is_some() && self.unconfirmed.is_empty()
            {
                return Held::Quit;
            }
            tokio::select! {
                biased;
                () = quit.wait() => return Held::Quit,
                done = &mut until => return Held::Done(done),
                input = io.input.recv(), if io.input_open && self.unconfirmed.has_room() => {
                    self.take_input(input, io, false);
                    io.out.flush();
                }
            }
        }
    }

    /// Our RECEIVED for a resume: which of the peer's messages we accepted.
    pub fn received_frame(&self) -> Frame {
        let (below, ids) = self.received.summary(MAX_RECEIVED_IDS);
        Frame::Received { below, ids }
    }

    /// Goes on over a new connection, given the peer's RECEIVED
    /// (docs/protocol.md §12.5): every unconfirmed message it covers is
    /// confirmed (its acknowledgement was lost), every other one is sent
    /// again with its id, in id order, before anything new.
    pub fn resume<T: Transport>(
        &mut self,
        link: &mut T,
        below: MessageId,
        ids: &[MessageId],
    ) -> Resumption {
        let mut r = Resumption::default();
        let now = Instant::now();
        for (id, sent) in self.unconfirmed.iter_mut() {
            if id < below || ids.binary_search(&id).is_ok() {
                r.confirmed.push(id);
                continue;
            }
            if sent.transmitted {
                r.resent.push(id);
            } else {
                r.held.push(id);
            }
            sent.at = now;
            sent.transmitted = true;
            link.send(id, sent.body.clone());
        }
        for &id in &r.confirmed {
            self.unconfirmed.remove(id);
        }
        self.stats.on_resume += r.confirmed.len() as u64;
        self.stats.resumes += 1;
        // A client that is leaving waits for its acknowledgements afresh
        // over the new connection.
        if let Some(by) = self.leaving_by.as_mut() {
            *by = now + self.ack_wait;
        }
        r
    }

    /// The user leaves: a client ends the chat, a server goes away.
    fn leave(&self) -> Step {
        match self.role {
            Role::Server => {
                Step::close(close_code::GOING_AWAY, "the server is shutting down", true)
            }
            Role::Client => Step::close(close_code::NO_ERROR, "the client left", true),
        }
    }

    /// Whether the chat has messages not yet confirmed.
    pub fn has_unconfirmed(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    /// Reports the end of the chat and every message never confirmed.
    /// A client's process ends with it: lines typed while the chat was
    /// closing were never read, and are reported as not sent.
    pub fn end(&mut self, d: Disconnect, io: &mut UserIo, quit: bool) -> Outcome {
        let outcome = self.report_end(d, io, quit);
        // (A server reads them next, and answers that no one is connected.)
        if self.role == Role::Client {
            while let Ok(input) = io.input.try_recv() {
                if let UserInput::Message(_) = input {
                    io.out.error("not sent: the chat has ended");
                }
            }
        }
        outcome
    }

    /// Reports the end of the chat and every message never confirmed,
    /// leaving what the user typed meanwhile for a chat that follows.
    pub fn report_end(&mut self, d: Disconnect, io: &mut UserIo, quit: bool) -> Outcome {
        let unacked = self.unconfirmed.ids();
        io.out.show_now(Shown::Disconnected {
            why: d.clone(),
            unacked: unacked.clone(),
        });
        Outcome {
            disconnect: d,
            unacked,
            quit,
        }
    }

    /// A new chat with the same peer after this one ended (the server no
    /// longer held it): numbering starts again, and a client whose input
    /// had ended leaves once the new chat has nothing to confirm.
    pub fn successor(&self, ack_wait: Duration) -> Session {
        let mut next = Session::new(self.role, ack_wait);
        if self.leaving_by.is_some() {
            next.leaving_by = Some(Instant::now() + ack_wait);
        }
        next
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
    use crate::ui::output::{Output, Sink};
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    /// Records what the session asked of the transport; the test plays the
    /// peer by pushing events.
    struct MemoryTransport {
        events: mpsc::UnboundedReceiver<Event>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Transport for MemoryTransport {
        fn send_control(&mut self, frame: crate::protocol::Frame) {
            self.log
                .lock()
                .unwrap()
                .push(format!("control {}", frame.name()));
        }
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

    impl Sink for Recorder {
        fn show(&mut self, shown: Shown) {
            let line = match shown {
                Shown::Sent { id, body } => format!("sent {id} {}", body.len()),
                Shown::Ack { id, .. } => format!("ack {id}"),
                Shown::Rejected { id, code, .. } => format!("rejected {id} {code}"),
                Shown::Message { id, body } => format!(
                    "message {id} {}",
                    String::from_utf8_lossy(&body.contiguous())
                ),
                Shown::Disconnected { why, unacked } => {
                    format!("disconnected {:?} {unacked:?}", why.code())
                }
                Shown::Error(message) => format!("error {message}"),
                _ => return,
            };
            self.0.lock().unwrap().push(line);
        }
    }

    /// Runs one chat as `role`.
    async fn run(
        transport: &mut MemoryTransport,
        io: &mut UserIo,
        quit: &mut Quit,
        role: Role,
        ack_wait: Duration,
    ) -> Outcome {
        Session::new(role, ack_wait)
            .run_once(transport, io, quit)
            .await
    }

    struct Harness {
        transport: MemoryTransport,
        io: UserIo,
        peer: mpsc::UnboundedSender<Event>,
        user: mpsc::Sender<UserInput>,
        quit: Quit,
        wire: Arc<Mutex<Vec<String>>>,
        screen: Arc<Mutex<Vec<String>>>,
    }

    impl Harness {
        async fn run(&mut self, role: Role, ack_wait: Duration) -> Outcome {
            run(
                &mut self.transport,
                &mut self.io,
                &mut self.quit,
                role,
                ack_wait,
            )
            .await
        }

        fn screen_has(&self, line: &str) -> bool {
            self.screen.lock().unwrap().iter().any(|l| l == line)
        }
    }

    fn harness() -> Harness {
        let (peer, events) = mpsc::unbounded_channel();
        let (user, input) = mpsc::channel(16);
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
                out: Output::inline(Recorder(screen.clone())),
            },
            peer,
            user,
            quit: Quit::new(),
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
        let out = h.run(Role::Server, Duration::from_secs(5)).await;
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
        let out = h.run(Role::Client, Duration::from_secs(5)).await;
        assert!(out.unacked.is_empty());
        assert!(out.disconnect.is_normal());
        assert_eq!(h.wire.lock().unwrap().last().unwrap(), "close 0");
    }

    #[tokio::test]
    async fn input_waits_while_too_much_is_unconfirmed() {
        let (peer, events) = mpsc::unbounded_channel();
        let (user, input) = mpsc::channel(4096);
        let mut quit = Quit::new();
        let interrupt = quit.clone();
        let wire = Arc::new(Mutex::new(Vec::new()));
        let mut transport = MemoryTransport {
            events,
            log: wire.clone(),
        };
        let mut io = UserIo {
            input,
            input_open: true,
            out: Output::inline(Recorder(Arc::new(Mutex::new(Vec::new())))),
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
            interrupt.trigger();
            (stalled, after_one_ack)
        });
        run(
            &mut transport,
            &mut io,
            &mut quit,
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
            mut quit,
            user,
            wire,
            ..
        } = h;
        user.send(msg("x")).await.unwrap();
        drop(user);
        let out = run(
            &mut transport,
            &mut io,
            &mut quit,
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
        let out = h.run(Role::Client, Duration::from_secs(3)).await;
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
        let out = h.run(Role::Server, Duration::from_secs(5)).await;
        assert!(out.disconnect.is_normal());
        assert!(h.screen_has("message 0 still here"));
    }

    #[tokio::test]
    async fn interrupt_closes_with_the_role_code() {
        for (role, code) in [(Role::Server, "close 4"), (Role::Client, "close 0")] {
            let mut h = harness();
            h.quit.trigger();
            h.run(role, Duration::from_secs(5)).await;
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
        let out = h.run(Role::Server, Duration::from_secs(5)).await;
        assert!(out.unacked.is_empty());
        assert!(h.screen_has("rejected 0 1"));
    }

    #[tokio::test]
    async fn resume_confirms_what_the_peer_received_and_resends_the_rest_in_order() {
        let mut h = harness();
        let mut session = Session::new(Role::Client, Duration::from_secs(5));
        for m in ["a", "bb", "ccc", "dddd"] {
            h.user.send(msg(m)).await.unwrap();
        }
        h.peer
            .send(Event::Message {
                id: 0,
                body: Bytes::from_static(b"in").into(),
            })
            .unwrap();
        let peer = h.peer.clone();
        let wire = h.wire.clone();
        tokio::spawn(async move {
            while wire
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("send"))
                .count()
                < 4
            {
                tokio::task::yield_now().await;
            }
            peer.send(Event::Ack { id: 0 }).unwrap();
            peer.send(Event::Closed(Disconnect::Lost {
                reason: "gone".into(),
            }))
            .unwrap();
        });
        let ended = session
            .run(
                &mut h.transport,
                &mut h.io,
                &mut h.quit,
                std::future::pending(),
            )
            .await;
        assert!(ended.is_lost());
        // While there is no connection, a typed line is numbered and kept.
        h.user.send(msg("eeeee")).await.unwrap();
        let screen = h.screen.clone();
        let typed = async move {
            while !screen.lock().unwrap().iter().any(|l| l == "sent 4 5") {
                tokio::task::yield_now().await;
            }
        };
        assert!(matches!(
            session.hold(&mut h.io, &mut h.quit, typed).await,
            Held::Done(())
        ));
        assert_eq!(
            session.received_frame(),
            Frame::Received {
                below: 1,
                ids: vec![]
            }
        );
        h.wire.lock().unwrap().clear();
        // The peer had 1 and 3 (their acks were lost), not 2.
        let r = session.resume(&mut h.transport, 0, &[1, 3]);
        assert_eq!(
            r,
            Resumption {
                resent: vec![2],
                confirmed: vec![1, 3],
                held: vec![4],
            }
        );
        assert_eq!(*h.wire.lock().unwrap(), vec!["send 2 3", "send 4 5"]);
        assert!(session.has_unconfirmed());
        let out = session.end(Disconnect::Lost { reason: "x".into() }, &mut h.io, false);
        assert_eq!(out.unacked, vec![2, 4]);
    }

    #[tokio::test]
    async fn a_message_received_twice_across_connections_is_a_protocol_error() {
        let mut h = harness();
        let mut session = Session::new(Role::Server, Duration::from_secs(5));
        let body = || Event::Message {
            id: 0,
            body: Bytes::from_static(b"once").into(),
        };
        h.peer.send(body()).unwrap();
        h.peer
            .send(Event::Closed(Disconnect::Lost {
                reason: "gone".into(),
            }))
            .unwrap();
        let first = session
            .run(
                &mut h.transport,
                &mut h.io,
                &mut h.quit,
                std::future::pending(),
            )
            .await;
        assert!(first.is_lost());
        h.peer.send(body()).unwrap();
        let second = session
            .run(
                &mut h.transport,
                &mut h.io,
                &mut h.quit,
                std::future::pending(),
            )
            .await;
        assert!(matches!(second.disconnect, Disconnect::Violation { .. }));
        assert_eq!(
            h.screen
                .lock()
                .unwrap()
                .iter()
                .filter(|l| *l == "message 0 once")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_replaced_connection_is_closed_with_replaced() {
        let mut h = harness();
        let mut session = Session::new(Role::Server, Duration::from_secs(5));
        let ended = session
            .run(&mut h.transport, &mut h.io, &mut h.quit, async {})
            .await;
        assert_eq!(ended.disconnect.code(), Some(close_code::REPLACED));
        assert!(!ended.is_lost());
        assert_eq!(h.wire.lock().unwrap().last().unwrap(), "close 5");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_with_nothing_to_confirm_leaves_instead_of_reconnecting() {
        let mut h = harness();
        let mut session = Session::new(Role::Client, Duration::from_secs(5));
        h.user.send(UserInput::End).await.unwrap();
        let held = session
            .hold(&mut h.io, &mut h.quit, std::future::pending::<()>())
            .await;
        assert!(matches!(held, Held::Quit));
        // The next chat (a server that no longer held this one) keeps the
        // leaving: it closes as soon as it has nothing to confirm.
        let mut next = session.successor(Duration::from_secs(5));
        let out = next
            .run_once(&mut h.transport, &mut h.io, &mut h.quit)
            .await;
        assert!(out.disconnect.is_normal());
        assert_eq!(h.wire.lock().unwrap().last().unwrap(), "close 0");
    }
}
