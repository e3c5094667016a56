//! Server mode: admit one client at a time, turn others away as busy, and
//! wait for the next client when a chat ends.
//!
//! [`run`] is the whole server as a library function, in the shape of
//! mini-redis's: a bound [`Listener`], a [`Config`], the user's I/O and a
//! shutdown signal. The binary, the tests and the benchmark all run it.
//!
//! Handshakes run in their own tasks (inside the listener); a doorman task
//! decides, for each finished handshake, whether the peer is admitted or
//! refused, so a refusal never waits on the open chat and the open chat
//! never waits on a refusal. On chat/2 a connection becomes a client only
//! with its HELLO (docs/protocol.md §12.3): each waits for it in a task of
//! its own, and one that goes away before it (a client's race loser) is
//! never reported; BUSY is decided when HELLO arrives. A chat/1 connection
//! counts as a HELLO at the end of its handshake.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::protocol::codec::{TOKEN_LEN, Token, Version};
use crate::protocol::{Frame, MessageId, close_code};
use crate::session::{Held, Role, Session};
use crate::transport::{
    Disconnect, Event, Handshaken, Limits, Link, Listener, PeerInfo, Transport, TransportKind,
    agreed_idle_timeout, millis,
};
use crate::trust::allow::{AllowList, Verdict};
use crate::trust::identity::{Fingerprint, Identity};
use crate::ui::input::UserInput;
use crate::ui::output::{Output, Shown};
use crate::ui::render::sanitize_line;
use crate::ui::{Quit, UserIo};

/// How long a chat/2 connection has to send HELLO (docs/protocol.md §12.3).
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// chat/2 connections waiting for their HELLO at once (each holds a
/// connection and a task for up to [`HELLO_DEADLINE`]). A new one beyond
/// it pushes out the one that has waited longest: a stranger who opens
/// silent connections without end only ever holds up his own.
const MAX_AWAITING_HELLO: usize = 64;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    pub allow: AllowList,
    /// How long a chat/2 chat whose connection was lost is held for its
    /// client (zero: a lost connection ends the chat).
    pub resume_window: Duration,
}

/// Runs the server until `shutdown` (Ctrl-C, `/quit`): one chat at a time,
/// other clients turned away while it is open or held.
pub async fn run(listener: Listener, config: Config, mut io: UserIo, mut shutdown: Quit) {
    io.out.show_now(Shown::Listening {
        transports: listener.transports().to_vec(),
        addr: listener.local_addr(),
        fingerprint: listener.fingerprint(),
    });
    let door = Door::default();
    let (admit_tx, mut admitted) = mpsc::channel::<Admitted>(1);
    let (stop, stopped) = oneshot::channel();
    let doorman = tokio::spawn(doorman(
        listener,
        Doorman {
            admit: admit_tx,
            door: door.clone(),
            allow: config.allow.clone(),
            out: io.out.clone(),
            limits: config.limits.clone(),
            resume_window: config.resume_window,
        },
        stopped,
    ));
    let mut chat = Chat {
        admitted: &mut admitted,
        door: &door,
        window: config.resume_window,
        idle: config.limits.idle_timeout,
        io: &mut io,
        shutdown: &mut shutdown,
    };
    loop {
        tokio::select! {
            biased;
            () = chat.shutdown.wait() => break,
            Some(client) = chat.admitted.recv() => {
                let quit = chat.serve(client).await;
                if quit || chat.shutdown.is_triggered() {
                    // Still busy: no one is admitted to a server going away.
                    break;
                }
                chat.io.out.info("waiting for a client…");
            }
            input = chat.io.input.recv(), if chat.io.input_open => match input {
                Some(UserInput::Message(_)) => chat.io.out.error("no one is connected; message not sent"),
                Some(UserInput::Invalid(why)) => chat.io.out.error(why),
                Some(UserInput::Stats) => chat.io.out.info("no chat is open"),
                Some(UserInput::End) | None => chat.io.input_open = false,
            },
        }
    }
    let _ = stop.send(());
    // A doorman waiting to hand over a client must not wait for a loop
    // that has stopped taking them.
    drop(admitted);
    if let Ok(listener) = doorman.await {
        listener.shutdown().await;
    }
    io.out.notice("server stopped");
    io.out.finish();
}

/// The chat the server holds, as the doorman sees it: shared between the
/// doorman, which admits, resumes and turns away, and the server loop,
/// which ends chats. Each decision is taken under its lock, so that a chat
/// ending and a client arriving cannot both think the server free.
#[derive(Clone, Default)]
struct Door(Arc<Mutex<Option<HeldChat>>>);

/// The open or suspended chat.
struct HeldChat {
    token: Token,
    /// The client identity that opened it (docs/protocol.md §12.4: only
    /// the same identity may resume it, or replace it while suspended).
    fingerprint: Option<Fingerprint>,
    /// Its connection was lost; it waits for a resume.
    suspended: bool,
    /// Resumes passed on to the server loop and not yet taken: the chat
    /// does not expire under them.
    resuming: usize,
}

/// What the doorman decided about a client's HELLO.
enum Decision {
    /// A new chat with this token.
    New(Token),
    /// A new chat with this token; the suspended chat of the same client
    /// identity ends.
    Replace(Token),
    /// The held chat goes on over this connection.
    Resume,
    Busy,
}

impl Door {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HeldChat>> {
        // A panic elsewhere cannot leave the state half-updated: every
        // change is a single assignment.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides about a client's HELLO (`token`: the chat it asks to
    /// resume) from `fingerprint` (docs/protocol.md §12.4–§12.5).
    fn decide(&self, fingerprint: Option<Fingerprint>, token: Option<Token>) -> Decision {
        let mut held = self.lock();
        let fresh = |held: &mut Option<HeldChat>| {
            let token = new_token();
            *held = Some(HeldChat {
                token,
                fingerprint,
                suspended: false,
                resuming: 0,
            });
            token
        };
        match held.as_mut() {
            None => Decision::New(fresh(&mut held)),
            Some(chat) if token == Some(chat.token) && chat.fingerprint == fingerprint => {
                chat.resuming += 1;
                Decision::Resume
            }
            Some(chat) if chat.suspended && chat.fingerprint == fingerprint => {
                Decision::Replace(fresh(&mut held))
            }
            Some(_) => Decision::Busy,
        }
    }

    /// The chat named `token` lost its connection and is held.
    fn suspend(&self, token: Token) {
        if let Some(chat) = self.lock().as_mut().filter(|c| c.token == token) {
            chat.suspended = true;
        }
    }

    /// The server loop took a resume of the chat named `token`.
    fn resumed(&self, token: Token) {
        if let Some(chat) = self.lock().as_mut().filter(|c| c.token == token) {
            chat.suspended = false;
            chat.resuming = chat.resuming.saturating_sub(1);
        }
    }

    /// The chat named `token` ends, unless a client is on its way in to
    /// resume or replace it (then `false`: the caller takes that client
    /// from the queue instead).
    fn end(&self, token: Token) -> bool {
        let mut held = self.lock();
        match held.as_ref() {
            Some(chat) if chat.token == token && chat.resuming == 0 => {
                *held = None;
                true
            }
            Some(chat) if chat.token == token => false,
            // Replaced: the new chat's client is in the queue.
            Some(_) => false,
            None => true,
        }
    }

    /// The chat named `token` is over, whatever else is on its way (that
    /// client is then treated as a new one).
    fn close(&self, token: Token) {
        let mut held = self.lock();
        if held.as_ref().is_some_and(|c| c.token == token) {
            *held = None;
        }
    }
}

/// A client the doorman admitted: its connection is started; WELCOME is on
/// its way for a new chat/2 chat; a resume is answered by the server loop.
struct Admitted {
    link: Link,
    peer: PeerInfo,
    label: Option<String>,
    /// The idle timeout agreed with it.
    idle_timeout: Duration,
    how: How,
}

enum How {
    /// A new chat: the doorman showed it as connected.
    New { token: Token },
    /// A new chat of the client identity whose suspended chat it replaces.
    Replace { token: Token },
    /// A resume, with the client's RECEIVED.
    Resume {
        below: MessageId,
        ids: Vec<MessageId>,
    },
}

/// The server loop's side of a chat: what it needs between connections.
struct Chat<'a> {
    admitted: &'a mut mpsc::Receiver<Admitted>,
    door: &'a Door,
    window: Duration,
    /// Our own idle timeout, as WELCOME carries it.
    idle: Duration,
    io: &'a mut UserIo,
    shutdown: &'a mut Quit,
}

impl Chat<'_> {
    /// One chat, from its first client until it ends: over as many
    /// connections as the client resumes it on. Returns whether the user
    /// asked to leave.
    async fn serve(&mut self, first: Admitted) -> bool {
        let token = match first.how {
            How::New { token } | How::Replace { token } => token,
            // A resume that reached an idle server names a chat that has
            // ended: it is a new chat (docs/protocol.md §12.5).
            How::Resume { .. } => return self.stale_resume(first).await,
        };
        self.chat(first, token).await
    }

    async fn chat(&mut self, mut client: Admitted, mut token: Token) -> bool {
        let mut session = Session::new(Role::Server, client.idle_timeout);
        if matches!(client.how, How::Replace { .. }) {
            connected(&mut self.io.out, &client);
        }
        loop {
            let Admitted { mut link, peer, .. } = client;
            let mut next = None;
            let admitted = &mut *self.admitted;
            let replaced = async {
                match admitted.recv().await {
                    Some(a) => next = Some(a),
                    None => std::future::pending().await,
                }
            };
            let ended = session
                .run(&mut link, self.io, self.shutdown, replaced)
                .await;
            // The last bytes of this connection (a CLOSE, the linger) finish
            // in the background while the chat goes on or the next client
            // is served.
            tokio::spawn(link.finish());
            info!(
                peer = %peer.addr,
                "connection ended: {}",
                sanitize_line(&ended.disconnect.describe())
            );
            let arrived = if let Some(a) = next {
                a
            } else if ended.is_lost() && peer.version == Version::V2 && !self.window.is_zero() {
                match self.suspend(&mut session, token, &ended.disconnect).await {
                    Suspension::Back(a) => *a,
                    Suspension::Over { quit } => return quit,
                }
            } else {
                self.door.close(token);
                session.end(ended.disconnect, self.io, ended.quit);
                return ended.quit;
            };
            client = match self.arrive(&mut session, token, arrived) {
                Arrival::Resumed(client) => client,
                Arrival::Replaced(client, new) => {
                    token = new;
                    session = Session::new(Role::Server, client.idle_timeout);
                    client
                }
            };
        }
    }

    /// Holds the chat after its connection was lost, until its client comes
    /// back or the window passes.
    async fn suspend(
        &mut self,
        session: &mut Session,
        token: Token,
        why: &Disconnect,
    ) -> Suspension {
        self.door.suspend(token);
        info!(window = ?self.window, "client's connection lost; holding the chat");
        self.io.out.show_now(Shown::Suspended {
            reason: why.describe(),
            window: self.window,
        });
        let deadline = tokio::time::Instant::now() + self.window;
        let admitted = &mut *self.admitted;
        let back = session
            .hold(self.io, self.shutdown, async {
                // Past the window the chat ends, unless a client is already
                // on its way in to resume or replace it.
                if let Ok(a) = tokio::time::timeout_at(deadline, admitted.recv()).await {
                    return a;
                }
                if self.door.end(token) {
                    return None;
                }
                admitted.recv().await
            })
            .await;
        match back {
            Held::Done(Some(a)) => Suspension::Back(Box::new(a)),
            Held::Done(None) => {
                let reason = format!(
                    "the client did not come back within {} s",
                    self.window.as_secs_f64().round()
                );
                info!("{reason}; the chat ends");
                session.end(Disconnect::Lost { reason }, self.io, false);
                Suspension::Over { quit: false }
            }
            Held::Quit => {
                self.door.close(token);
                session.end(
                    Disconnect::Local {
                        code: close_code::GOING_AWAY,
                        reason: "the server is shutting down".into(),
                    },
                    self.io,
                    true,
                );
                Suspension::Over { quit: true }
            }
        }
    }

    /// A client came for the chat named `token`: it resumes it, or (the
    /// same identity with a new chat) replaces it.
    fn arrive(&mut self, session: &mut Session, token: Token, mut a: Admitted) -> Arrival {
        // What it came for is settled here; an empty resume stands in.
        let resume = How::Resume {
            below: 0,
            ids: Vec::new(),
        };
        match std::mem::replace(&mut a.how, resume) {
            How::Resume { below, ids } => {
                self.door.resumed(token);
                a.link.send_control(Frame::Welcome {
                    token,
                    resume_window_ms: millis(self.window),
                    resumed: true,
                    idle_timeout_ms: millis(self.idle),
                });
                a.link.send_control(session.received_frame());
                let resumption = session.resume(&mut a.link, below, &ids);
                a.link.flush();
                info!(peer = %a.peer.addr, transport = %a.peer.transport, "chat resumed");
                self.io.out.show_now(Shown::Resumed {
                    transport: a.peer.transport,
                    peer: a.peer.addr,
                    resumption,
                });
                Arrival::Resumed(a)
            }
            How::New { token: new } | How::Replace { token: new } => {
                info!("the client started a new chat; the held one ends");
                session.end(
                    Disconnect::Lost {
                        reason: "the client started a new chat".into(),
                    },
                    self.io,
                    false,
                );
                connected(&mut self.io.out, &a);
                Arrival::Replaced(a, new)
            }
        }
    }

    /// A resume that arrived once its chat had ended: answered as a new
    /// chat, or turned away if another has begun meanwhile.
    async fn stale_resume(&mut self, mut a: Admitted) -> bool {
        match self.door.decide(a.peer.fingerprint, None) {
            Decision::New(token) | Decision::Replace(token) => {
                a.link
                    .send_control(welcome_new(token, self.window, self.idle));
                a.link.flush();
                a.how = How::Replace { token };
                self.chat(a, token).await
            }
            Decision::Resume | Decision::Busy => {
                tokio::spawn(RefuseLater::Link(Box::new(a.link)).busy());
                false
            }
        }
    }
}

enum Suspension {
    /// A client came back for the chat (or replaced it).
    Back(Box<Admitted>),
    /// The chat is over; `quit`: the user asked to leave.
    Over { quit: bool },
}

enum Arrival {
    Resumed(Admitted),
    /// A new chat with this token replaces the held one.
    Replaced(Admitted, Token),
}

/// Shows a client as connected (the server loop does it for a chat that
/// replaces a held one, after that one's end).
fn connected(out: &mut Output, a: &Admitted) {
    info!(peer = %a.peer.addr, "client connected");
    out.show_now(Shown::Connected {
        transport: a.peer.transport,
        peer: a.peer.addr,
        fingerprint: a.peer.fingerprint,
        label: a.label.clone(),
        fallback: None,
    });
}

/// WELCOME for a new chat.
fn welcome_new(token: Token, window: Duration, idle_timeout: Duration) -> Frame {
    Frame::Welcome {
        token,
        resume_window_ms: millis(window),
        resumed: false,
        idle_timeout_ms: millis(idle_timeout),
    }
}

/// What the doorman needs besides the listener.
struct Doorman {
    admit: mpsc::Sender<Admitted>,
    door: Door,
    allow: AllowList,
    /// Its own handle on the output, for the clients it turns away.
    out: Output,
    limits: Limits,
    resume_window: Duration,
}

/// A chat/2 connection whose HELLO (and, to resume, RECEIVED) has come.
struct Greeted {
    link: Link,
    peer: PeerInfo,
    label: Option<String>,
    idle_timeout_ms: u64,
    /// The chat it asks to resume, and what it received of it.
    resume: Option<(Token, MessageId, Vec<MessageId>)>,
}

/// Decides about each handshaken peer until told to stop, then hands the
/// listener back: refused as UNAUTHORIZED when an allow list is set and it
/// is not on it (checked at the handshake, and before anything else, so an
/// outsider learns nothing about whether a chat is open), refused as BUSY
/// while a chat is open or held for another client, admitted otherwise.
/// Refusals run in their own tasks: a slow peer cannot hold up the next
/// decision.
async fn doorman(
    mut listener: Listener,
    mut d: Doorman,
    mut stop: oneshot::Receiver<()>,
) -> Listener {
    let (greeted_tx, mut greeted) = mpsc::channel(MAX_AWAITING_HELLO);
    // Connections waiting for HELLO, oldest first: each one's task ends
    // when told to (`()`: make room) or when its sender goes (the server
    // stops).
    let mut awaiting: std::collections::VecDeque<oneshot::Sender<()>> = Default::default();
    // Said once per wave, not once per connection: a flood must not flood
    // the log too.
    let mut saturated = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            conn = listener.accept() => {
                let Some(conn) = conn else { break };
                let Some((conn, label)) = d.check_allowed(conn) else { continue };
                if conn.peer().version == Version::V1 {
                    // A chat/1 connection is a client from its handshake on:
                    // a HELLO with an empty token.
                    let peer = conn.peer().clone();
                    let how = match d.decide(&peer, None) {
                        Decision::New(token) => How::New { token },
                        Decision::Replace(token) => How::Replace { token },
                        Decision::Resume | Decision::Busy => {
                            tokio::spawn(RefuseLater::Handshaken(conn).busy());
                            continue;
                        }
                    };
                    let link = conn.start(d.limits.clone()).await;
                    let idle_timeout = d.limits.idle_timeout;
                    if !d.admit(link, peer, label, idle_timeout, how).await {
                        break;
                    }
                    continue;
                }
                awaiting.retain(|task| !task.is_closed());
                if awaiting.len() >= MAX_AWAITING_HELLO
                    && let Some(oldest) = awaiting.pop_front()
                {
                    if !saturated {
                        warn!(
                            "{MAX_AWAITING_HELLO} connections wait for HELLO; dropping the \
                             longest-waiting ones to make room"
                        );
                        saturated = true;
                    }
                let _ = oldest.send(());
                } else if awaiting.len() < MAX_AWAITING_HELLO / 2 {
                    saturated = false;
                }
                let (limits, tx) = (d.limits.clone(), greeted_tx.clone());
                let (evict, evicted) = oneshot::channel();
                tokio::spawn(await_hello(conn, label, limits, tx, evicted));
                awaiting.push_back(evict);
            }
            Some(g) = greeted.recv() => {
                let Greeted { mut link, peer, label, idle_timeout_ms, resume } = g;
                let idle_timeout = agreed_idle_timeout(d.limits.idle_timeout, idle_timeout_ms);
                let token = resume.as_ref().map(|(t, ..)| *t);
                let how = match d.decide(&peer, token) {
                    Decision::Busy => {
                        tokio::spawn(RefuseLater::Link(Box::new(link)).busy());
                        continue;
                    }
                    // The server loop answers: it holds the chat.
                    Decision::Resume => {
                        let (below, ids) = resume.map(|(_, b, i)| (b, i)).unwrap_or_default();
                        How::Resume { below, ids }
                    }
                    Decision::New(token) => How::New { token },
                    Decision::Replace(token) => How::Replace { token },
                };
                link.set_idle_timeout(idle_timeout);
                if let How::New { token } | How::Replace { token } = how {
                    link.send_control(welcome_new(token, d.resume_window, d.limits.idle_timeout));
                    link.flush();
                }
                if !d.admit(link, peer, label, idle_timeout, how).await {
                    break;
                }
            }
        }
    }
    // Connections still waiting for HELLO are told the server is going
    // away (their senders drop with `awaiting`); what the doorman could
    // not show yet is counted.
    drop(awaiting);
    d.out.finish();
    listener
}

/// A connection to turn away, in whatever state it is.
enum RefuseLater {
    Handshaken(Handshaken),
    Link(Box<Link>),
}

impl RefuseLater {
    async fn busy(self) {
        self.refuse(close_code::BUSY, "the server is busy in another chat")
            .await;
    }

    async fn refuse(self, code: u64, reason: &str) {
        match self {
            RefuseLater::Handshaken(conn) => conn.refuse(code, reason).await,
            RefuseLater::Link(mut link) => {
                link.close(code, reason).await;
                link.finish().await;
            }
        }
    }
}

impl Doorman {
    /// The allow list's verdict: `None` (and the peer refused as
    /// UNAUTHORIZED) if it is not welcome, else its label.
    #[allow(clippy::type_complexity)]
    fn check_allowed(&mut self, conn: Handshaken) -> Option<(Handshaken, Option<String>)> {
        let peer = conn.peer().clone();
        match self.allow.check(peer.fingerprint) {
            Verdict::Open => Some((conn, None)),
            Verdict::Allowed { label } => Some((conn, label)),
            Verdict::Denied => {
                let who = who(&peer);
                warn!(peer = %peer.addr, identity = %who, "refusing a client not on the allow list");
                self.out.show_now(refused(&peer, close_code::UNAUTHORIZED));
                let reason = format!("not on the server's allow list; your identity is {who}");
                tokio::spawn(async move { conn.refuse(close_code::UNAUTHORIZED, &reason).await });
                None
            }
        }
    }

    /// The door's decision about `peer`; a client turned away as BUSY is
    /// reported here (the caller closes its connection).
    fn decide(&mut self, peer: &PeerInfo, token: Option<Token>) -> Decision {
        let decision = self.door.decide(peer.fingerprint, token);
        if let Decision::Busy = decision {
            info!(peer = %peer.addr, identity = %who(peer), "refusing a client: busy in another chat");
            self.out.show_now(refused(peer, close_code::BUSY));
        }
        decision
    }

    /// Hands the client to the server loop (a new chat's client is shown
    /// as connected here, not by the loop, so that a client turned away
    /// right after it is shown after it); false once the loop is gone.
    async fn admit(
        &mut self,
        mut link: Link,
        peer: PeerInfo,
        label: Option<String>,
        idle_timeout: Duration,
        how: How,
    ) -> bool {
        link.admitted();
        let client = Admitted {
            link,
            peer,
            label,
            idle_timeout,
            how,
        };
        if let How::New { .. } = client.how {
            connected(&mut self.out, &client);
        }
        self.admit.send(client).await.is_ok()
    }
}

/// Waits for a chat/2 connection's HELLO (and, when it asks to resume, the
/// RECEIVED that follows it) and passes it on. A connection that closes
/// first was never a client (a client's race loser, say) and is not
/// reported; one that sends nothing is closed after [`HELLO_DEADLINE`] with
/// PROTOCOL_ERROR.
async fn await_hello(
    conn: Handshaken,
    label: Option<String>,
    limits: Limits,
    greeted: mpsc::Sender<Greeted>,
    mut evicted: oneshot::Receiver<()>,
) {
    let peer = conn.peer().clone();
    // Until HELLO the deadline for it decides, not the idle timer (the
    // transports see to that): a peer silent from the start is told why it
    // is dropped.
    let mut link = conn.start(limits).await;
    let opening = async {
        let hello = tokio::time::timeout(HELLO_DEADLINE, link.next_event()).await;
        let Ok(Event::Hello {
            idle_timeout_ms,
            token: Some(token),
        }) = hello
        else {
            return (hello, None);
        };
        // A resume: its RECEIVED comes next (the transport lets nothing
        // else through first), within its own 10 s.
        match tokio::time::timeout(HELLO_DEADLINE, link.next_event()).await {
            Ok(Event::Received { below, ids }) => (
                Ok(Event::Hello {
                    idle_timeout_ms,
                    token: Some(token),
                }),
                Some((token, below, ids)),
            ),
            other => (other, None),
        }
    };
    let (event, resume) = tokio::select! {
        opened = opening => opened,
        why = &mut evicted => {
            let (code, reason) = match why {
                Ok(()) => (close_code::BUSY, "too many connections are waiting to say HELLO; try again"),
                Err(_) => (close_code::GOING_AWAY, "the server is shutting down"),
            };
            debug!(peer = %peer.addr, "closing a connection waiting for HELLO: {reason}");
            link.close(code, reason).await;
            link.finish().await;
            return;
        }
    };
    match event {
        Ok(Event::Hello {
            idle_timeout_ms, ..
        }) => {
            let g = Greeted {
                link,
                peer,
                label,
                idle_timeout_ms,
                resume,
            };
            if let Err(mpsc::error::SendError(g)) = greeted.send(g).await {
                g.link.finish().await;
            }
        }
        Ok(Event::Closed(why)) => {
            debug!(peer = %peer.addr, "connection closed before HELLO: not a client ({})", sanitize_line(&why.describe()));
            link.finish().await;
        }
        // The transport lets nothing else come first (see `Opening`).
        Ok(_) => {
            link.close(close_code::PROTOCOL_ERROR, "HELLO must come first")
                .await;
            link.finish().await;
        }
        Err(_) => {
            warn!(peer = %peer.addr, "protocol error: no HELLO (or RECEIVED) within {} s", HELLO_DEADLINE.as_secs());
            let reason = format!(
                "no HELLO (or RECEIVED) within {} s",
                HELLO_DEADLINE.as_secs()
            );
            link.close(close_code::PROTOCOL_ERROR, &reason).await;
            link.finish().await;
        }
    }
}

/// The peer's identity, for log lines.
fn who(peer: &PeerInfo) -> String {
    peer.fingerprint
        .map_or("no certificate".to_string(), |f| f.to_string())
}

fn refused(peer: &PeerInfo, code: u64) -> Shown {
    Shown::Refused {
        transport: peer.transport,
        peer: peer.addr,
        fingerprint: peer.fingerprint,
        code,
    }
}

/// A fresh session token: 16 bytes from the TLS stack's secure random
/// generator (docs/protocol.md §12.2).
fn new_token() -> Token {
    let mut t = [0u8; TOKEN_LEN];
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(&mut t).is_err() {
        // ring's generator reads the kernel's; it does not fail on a
        // working system. A guessable token would let anyone with the
        // client's identity (or, for a client without one, anyone) resume
        // the chat in its place: worth a warning.
        warn!("the secure random generator failed; this chat's token is guessable");
    }
    Token(t)
}

/// Binds a listener for `transports` on `bind` (or, without one, on all
/// IPv6 interfaces with IPV6_V6ONLY off, so IPv4 too, whatever the
/// machine's default; IPv4-only is the fallback for machines without IPv6
/// or without dual-stack sockets).
pub async fn bind(
    transports: &[TransportKind],
    bind: Option<IpAddr>,
    port: u16,
    identity: &Identity,
    limits: &Limits,
) -> Result<Listener> {
    let candidates = match bind {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ],
    };
    let mut first = None;
    for addr in candidates {
        match Listener::bind(transports, addr, identity, limits).await {
            Ok(l) => return Ok(l),
            // The port is taken: IPv4 alone would not change that, and the
            // error says which transport found it taken.
            Err(e) if e.addr_in_use() => return Err(e.into()),
            Err(e) => {
                info!("{e}");
                first.get_or_insert(e);
            }
        }
    }
    Err(first.map_or_else(|| anyhow::anyhow!("no address to listen on"), Into::into))
}

/// The identity from `--cert`/`--key`, or the one in the home directory
/// (created on first start).
pub fn identity(cert: Option<&Path>, key: Option<&Path>, home: &Path) -> Result<Identity> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Identity::load_private(cert, key).context("cannot load --cert/--key")
        }
        (Some(_), None) => anyhow::bail!("--cert needs --key"),
        _ => home_identity(home),
    }
}

/// The server identity kept in `home`, created on first use.
pub fn home_identity(home: &Path) -> Result<Identity> {
    let dir = Identity::server_dir(home);
    Identity::load_or_create(&dir, &[hostname()]).with_context(|| {
        format!(
            "cannot load or create the server identity in {}",
            dir.display()
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string(Path::new("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "chat".to_string())
}
