//! chat/1 over TLS 1.3 over TCP (docs/protocol.md §7), the fallback for networks
//! that block UDP.
//!
//! One TLS stream carries frames both ways, driven by the session's own task
//! (see [`TcpTransport`]). Control frames (ACK, REJECT, PING, CLOSE) are
//! always written before more message data, and messages are cut into
//! chunks of at most 64 KiB interleaved round-robin, so neither an ack nor a
//! small message ever waits behind a large one for more than one chunk.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::{debug, warn};

use super::{Disconnect, Event, Limits, PeerInfo, Transport};
use crate::protocol::body::Body;
use crate::protocol::codec::{
    self, Frame, FrameDecoder, MAX_CHUNK, encode_chunk_header, frame_type,
};
use crate::protocol::received::ReceivedIds;
use crate::protocol::{MessageId, close_code, reject_code};
use crate::trust::identity::{Fingerprint, Identity};
use crate::trust::tls;
use crate::ui::render::sanitize_line;

/// Messages a receiver accepts in progress at once (docs/protocol.md §7); a sender
/// keeps no more than this many started and unfinished.
const MAX_IN_PROGRESS: usize = 64;

/// How long a closing endpoint keeps reading so its CLOSE is not destroyed
/// by a reset (docs/protocol.md §7).
const LINGER: Duration = Duration::from_secs(1);

/// TLS handshakes allowed in progress at once.
const MAX_HANDSHAKES: usize = 1024;

/// Bytes of frames gathered into one write when many small messages wait.
const WRITE_BATCH: usize = 64 * 1024;

/// Unsent bytes the kernel may hold for us (`TCP_NOTSENT_LOWAT`). Without a
/// limit it takes megabytes of a large message, and an ack or a small
/// message written after them waits until they are on the wire; with it,
/// the rest stays in the writer, where control frames go first.
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Control frames (acks) queued and not yet written beyond which nothing
/// more is read from the peer.
const MAX_CONTROL_BACKLOG: usize = 64 * 1024;

/// Bytes the reader takes in before it lets the other tasks run. The whole
/// process is one thread; left to tokio's budget alone, a reader fed a large
/// message decrypts megabytes per turn while the session waits to ack the
/// small messages that came with it.
const READ_TURN: usize = 64 * 1024;

/// A listening TCP socket with its TLS configuration.
pub struct Listener {
    tcp: Arc<TcpListener>,
    tls: TlsAcceptor,
    handshake_timeout: Duration,
}

/// Errors setting up the TCP transport.
#[derive(Debug, thiserror::Error)]
pub enum TcpSetupError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot bind TCP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Listener {
    pub async fn bind(
        addr: SocketAddr,
        identity: &Identity,
        handshake_timeout: Duration,
    ) -> Result<Self, TcpSetupError> {
        let config = tls::server_config(identity)?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| TcpSetupError::Bind { addr, source })?;
        Ok(Listener {
            tcp: Arc::new(tcp),
            tls: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections forever; each TLS handshake runs in its own task
    /// under a timeout, so a client that connects and stalls blocks no one.
    pub fn spawn_acceptor(&self, tx: mpsc::Sender<Handshaken>) -> JoinHandle<()> {
        let (tcp, tls, timeout) = (self.tcp.clone(), self.tls.clone(), self.handshake_timeout);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (socket, from) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        warn!("accept failed: {}", sanitize_line(&e.to_string()));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // A flood of connections that never finish their handshake
                // must not use up the process's file descriptors: past the
                // cap, new connections are dropped at once.
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    warn!(peer = %from, "too many handshakes in progress; dropping connection");
                    continue;
                };
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(timeout, handshake(tls, socket, from)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send(conn).await;
                        }
                        Ok(Err(e)) => {
                            warn!(peer = %from, "TLS handshake failed: {}", sanitize_line(&e.to_string()))
                        }
                        Err(_) => warn!(peer = %from, "TLS handshake timed out"),
                    }
                });
            }
        })
    }
}

async fn handshake(
    tls: TlsAcceptor,
    socket: TcpStream,
    from: SocketAddr,
) -> Result<Handshaken, std::io::Error> {
    tune(&socket)?;
    let stream = tls.accept(socket).await?;
    let session = stream.get_ref().1;
    if session.alpn_protocol() != Some(tls::ALPN) {
        // Dropped before any frame is sent (docs/protocol.md §7).
        return Err(std::io::Error::other("client did not offer ALPN chat/1"));
    }
    let fingerprint = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Fingerprint::of(c));
    Ok(Handshaken {
        stream: TlsStream::Server(stream),
        peer: PeerInfo {
            addr: super::canonical(from),
            fingerprint,
            transport: super::TransportKind::Tcp,
        },
    })
}

/// Socket options for a chat: no Nagle delay, and little unsent data in the
/// kernel (see [`NOTSENT_LOWAT`]).
fn tune(socket: &TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    // An old kernel without the option still chats; acks may just wait
    // longer behind a large message.
    if let Err(e) = set_notsent_lowat(socket, NOTSENT_LOWAT) {
        debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_notsent_lowat(socket: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is an open socket for the whole call (borrowed
    // from `socket`), and the option value is a c_int that lives on this
    // stack frame, passed with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the option is left alone: acks may wait longer behind a large
/// message, nothing more.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_notsent_lowat(_: &TcpStream, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// A TLS connection whose handshake is done, not yet admitted to a chat.
pub struct Handshaken {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl super::Handshaken for Handshaken {
    type Transport = TcpTransport;

    fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    async fn start(self, limits: Limits) -> TcpTransport {
        TcpTransport::start(self.stream, limits, self.peer.addr)
    }

    async fn refuse(self, code: u64, reason: &str) {
        // Refusing is closing a chat that never began; the normal close path
        // sends CLOSE, close_notify, and lingers.
        let limits = Limits {
            max_message_size: 0,
            idle_timeout: LINGER * 2,
        };
        let mut transport = TcpTransport::start(self.stream, limits, self.peer.addr);
        transport.close(code, reason).await;
        transport.finish().await;
    }
}

/// Connects to `addr` as a client.
pub async fn connect(
    addr: SocketAddr,
    client_tls: rustls::ClientConfig,
    limits: &Limits,
) -> Result<(TcpTransport, PeerInfo), std::io::Error> {
    let socket = TcpStream::connect(addr).await?;
    tune(&socket)?;
    let name = rustls_pki_types::ServerName::try_from("chat")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let stream = TlsConnector::from(Arc::new(client_tls))
        .connect(name, socket)
        .await?;
    let session = stream.get_ref().1;
    if session.alpn_protocol() != Some(tls::ALPN) {
        return Err(std::io::Error::other("server did not agree to ALPN chat/1"));
    }
    let fingerprint = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Fingerprint::of(c));
    let peer = PeerInfo {
        addr,
        fingerprint,
        transport: super::TransportKind::Tcp,
    };
    Ok((
        TcpTransport::start(TlsStream::Client(stream), limits.clone(), addr),
        peer,
    ))
}

/// A chat/1 connection over TLS over TCP.
///
/// There are no background tasks: the session drives the socket itself,
/// reading whenever it waits for the next event and writing what it queued
/// when it is about to wait ([`Transport::flush`]) or once the socket takes
/// more. An acknowledgement thus leaves in the same turn of the runtime in
/// which its message was read, with no hand-over between tasks; on loopback
/// those hand-overs were most of what the chat added to a bare TLS round
/// trip.
pub struct TcpTransport {
    io: TlsStream<TcpStream>,
    /// For log lines: which peer broke the protocol.
    peer: SocketAddr,
    limits: Limits,
    /// Why the connection ended, once it has; the first reason stands.
    end: Option<Disconnect>,
    /// Closed is reported once; after it nothing more is read or written,
    /// except by `close`/`finish`.
    reported: bool,
    /// Events decoded and not yet taken by the session.
    events: VecDeque<Event>,

    // Writing.
    /// ACK, REJECT and PING frames: written ahead of message data.
    control: BytesMut,
    /// Bytes being written (control frames, then message chunks).
    out: BytesMut,
    /// Started, unfinished messages, served round-robin.
    active: VecDeque<Outgoing>,
    /// Messages not started yet because `active` is full.
    waiting: VecDeque<(MessageId, Bytes)>,
    /// The socket took less than we had: go on when it is writable again.
    write_blocked: bool,
    /// The peer sent CLOSE, or we hit a protocol error: after what is
    /// queued, close_notify and FIN (in `finish`).
    shutdown_due: bool,
    /// Why writing failed, if it did (see `write_failed`).
    write_error: Option<String>,
    last_write: Instant,
    ping: Pin<Box<Sleep>>,

    // Reading.
    buf: BytesMut,
    partial: HashMap<MessageId, Partial>,
    received: ReceivedIds,
    last_frame: Instant,
    idle: Pin<Box<Sleep>>,
    /// Bytes read since the session last had a turn (see [`READ_TURN`]).
    this_turn: usize,
}

/// A message being sent.
struct Outgoing {
    id: MessageId,
    body: Bytes,
    aborted: bool,
}

/// A message being received.
#[derive(Default)]
struct Partial {
    body: Body,
    /// Over the limit and rejected: the rest is read and dropped.
    discarding: bool,
}

impl TcpTransport {
    /// Starts chat/1 on an established TLS stream.
    fn start(io: TlsStream<TcpStream>, limits: Limits, peer: SocketAddr) -> Self {
        let now = Instant::now();
        let ping_every = limits.idle_timeout / 3;
        TcpTransport {
            io,
            peer,
            end: None,
            reported: false,
            events: VecDeque::new(),
            control: BytesMut::new(),
            out: BytesMut::with_capacity(WRITE_BATCH + 1024),
            active: VecDeque::new(),
            waiting: VecDeque::new(),
            write_blocked: false,
            shutdown_due: false,
            write_error: None,
            last_write: now,
            ping: Box::pin(tokio::time::sleep(ping_every)),
            buf: BytesMut::with_capacity(64 * 1024),
            partial: HashMap::new(),
            received: ReceivedIds::default(),
            last_frame: now,
            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            this_turn: 0,
            limits,
        }
    }

    fn ping_every(&self) -> Duration {
        self.limits.idle_timeout / 3
    }

    /// Records why the connection ended (the first reason stands) and
    /// reports it to the session.
    fn ended(&mut self, d: Disconnect) {
        if self.end.is_none() {
            self.end = Some(d.clone());
            self.events.push_back(Event::Closed(d));
        }
    }

    /// The peer broke the protocol: CLOSE with PROTOCOL_ERROR (written by
    /// `finish`, after what is queued), and the chat ends.
    fn violation(&mut self, reason: String) {
        warn!(peer = %self.peer, "protocol error: {reason}");
        let reason = crate::protocol::clip_reason(&reason).to_string();
        if self.end.is_none() {
            self.queue_close(close_code::PROTOCOL_ERROR, &reason);
        }
        self.ended(Disconnect::Violation { reason });
    }

    /// Queues CLOSE behind the control frames already queued; message data
    /// not yet written is dropped (it is unconfirmed, and reported so).
    fn queue_close(&mut self, code: u64, reason: &str) {
        Frame::Close {
            code,
            reason: Bytes::copy_from_slice(reason.as_bytes()),
        }
        .encode(&mut self.control);
        self.active.clear();
        self.waiting.clear();
        self.shutdown_due = true;
    }

    // ----- writing ---------------------------------------------------------

    /// Writes as much as the socket takes now. `Ready` once everything is
    /// written (or the connection failed), `Pending` if the socket is full.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.write_error.is_some() {
            self.control.clear();
            return Poll::Ready(());
        }
        loop {
            if self.out.is_empty() {
                // Copied rather than swapped in, so that both buffers keep
                // the room they grew to instead of growing again each batch.
                self.out.clear();
                self.out.extend_from_slice(&self.control);
                self.control.clear();
                self.fill_with_data();
            }
            if self.out.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => {
                    self.write_failed("connection lost (write returned 0)".into());
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.last_write = Instant::now();
                }
                Poll::Ready(Err(e)) => {
                    self.write_failed(format!("connection lost ({e})"));
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    self.write_blocked = true;
                    return Poll::Pending;
                }
            }
        }
        // TLS records the socket did not take yet.
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.write_blocked = false;
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) => {
                self.write_failed(format!("connection lost ({e})"));
                Poll::Ready(())
            }
            Poll::Pending => {
                self.write_blocked = true;
                Poll::Pending
            }
        }
    }

    /// Writing is over. The connection is not declared lost yet: the peer
    /// may have closed it properly, and its CLOSE may be waiting unread
    /// (say, while the user was asked whether to trust it). The reading
    /// side decides, once it has read what there is (see `poll_event`).
    fn write_failed(&mut self, reason: String) {
        debug!("write failed: {}", sanitize_line(&reason));
        self.out.clear();
        self.control.clear();
        self.active.clear();
        self.waiting.clear();
        self.write_blocked = false;
        self.shutdown_due = false;
        self.write_error.get_or_insert(reason);
    }

    /// Appends message chunks, round-robin, until a batch is full.
    fn fill_with_data(&mut self) {
        while self.out.len() < WRITE_BATCH {
            while self.active.len() < MAX_IN_PROGRESS {
                let Some((id, body)) = self.waiting.pop_front() else {
                    break;
                };
                self.active.push_back(Outgoing {
                    id,
                    body,
                    aborted: false,
                });
            }
            let Some(mut m) = self.active.pop_front() else {
                return;
            };
            if m.aborted {
                encode_chunk_header(&mut self.out, frame_type::END, m.id, 0);
                continue;
            }
            let n = m.body.len().min(MAX_CHUNK);
            let chunk = m.body.split_to(n);
            let last = m.body.is_empty();
            let ty = if last {
                frame_type::END
            } else {
                frame_type::DATA
            };
            encode_chunk_header(&mut self.out, ty, m.id, n);
            self.out.extend_from_slice(&chunk);
            if !last {
                self.active.push_back(m);
            }
        }
    }

    /// Sends a PING when nothing has been written for a third of the idle
    /// timeout. One timer for the whole connection, moved only when it
    /// fires: a timer set per write would cost the runtime a wake-up per
    /// round trip.
    fn poll_ping(&mut self, cx: &mut Context<'_>) {
        while self.ping.as_mut().poll(cx).is_ready() {
            let every = self.ping_every();
            let due = self.last_write + every;
            let now = Instant::now();
            if now >= due {
                Frame::Ping.encode(&mut self.control);
                self.ping.as_mut().reset(now + every);
                let _ = self.poll_write_out(cx);
            } else {
                self.ping.as_mut().reset(due);
            }
        }
    }

    // ----- reading ---------------------------------------------------------

    /// Reads and decodes until an event is ready, the socket has nothing
    /// more, or this turn's share of bytes is used up.
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut framed = false;
            while self.events.is_empty() {
                match FrameDecoder.decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        framed = true;
                        self.handle(frame);
                    }
                    Ok(None) => break,
                    Err(e) => self.violation(e.to_string()),
                }
            }
            if framed {
                self.last_frame = Instant::now();
            }
            if !self.events.is_empty() {
                return Poll::Ready(());
            }
            if self.this_turn >= READ_TURN {
                // Let the session write its acks (and the runtime run
                // others) before reading on.
                self.this_turn = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let read = {
                let read = self.io.read_buf(&mut self.buf);
                std::pin::pin!(read).poll(cx)
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    self.ended(Disconnect::Lost {
                        reason: "connection lost (closed without CLOSE)".into(),
                    });
                }
                Poll::Ready(Ok(n)) => self.this_turn += n,
                Poll::Ready(Err(e)) => {
                    self.ended(Disconnect::Lost {
                        reason: format!("connection lost ({e})"),
                    });
                }
                Poll::Pending => {
                    self.this_turn = 0;
                    return self.poll_idle(cx);
                }
            }
        }
    }

    /// Ends the connection once the peer has been silent for the idle
    /// timeout (the timer is moved only when it fires; see `poll_ping`).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.idle.as_mut().poll(cx).is_ready() {
            let due = self.last_frame + self.limits.idle_timeout;
            if Instant::now() >= due {
                self.ended(Disconnect::Lost {
                    reason: "connection lost (idle timeout)".into(),
                });
                return Poll::Ready(());
            }
            self.idle.as_mut().reset(due);
        }
        Poll::Pending
    }

    fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::Ack { id } => self.events.push_back(Event::Ack { id }),
            Frame::Reject { id, code, reason } => {
                if let Some(m) = self.active.iter_mut().find(|m| m.id == id) {
                    m.aborted = true;
                }
                self.events.push_back(Event::Rejected {
                    id,
                    code,
                    reason: codec::reason_text(&reason),
                });
            }
            Frame::Data { id, chunk } => self.chunk(id, chunk, false),
            Frame::End { id, chunk } => self.chunk(id, chunk, true),
            Frame::Close { code, reason } => {
                // Our answer is close_notify, after what is queued.
                self.shutdown_due = true;
                self.active.clear();
                self.waiting.clear();
                self.ended(Disconnect::Peer {
                    code,
                    reason: codec::reason_text(&reason),
                });
            }
            Frame::Ping | Frame::Unknown { .. } => {}
        }
    }

    fn chunk(&mut self, id: MessageId, chunk: Bytes, last: bool) {
        if self.received.contains(id) {
            return self.violation(format!("message id {id} received twice"));
        }
        if !self.partial.contains_key(&id) && !last && self.partial.len() >= MAX_IN_PROGRESS {
            return self.violation(format!("more than {MAX_IN_PROGRESS} messages in progress"));
        }
        let limit = self.limits.max_message_size;
        let p = self.partial.entry(id).or_default();
        if !p.discarding {
            if (p.body.len() + chunk.len()) as u64 > limit {
                p.discarding = true;
                p.body = Body::default();
                debug!(id, limit, "rejecting message over the size limit");
                Frame::Reject {
                    id,
                    code: reject_code::TOO_LARGE,
                    reason: Bytes::from(format!("message exceeds the limit of {limit} bytes")),
                }
                .encode(&mut self.control);
            } else {
                p.body.push(chunk);
            }
        }
        if !last {
            return;
        }
        let Some(p) = self.partial.remove(&id) else {
            return;
        };
        if let Err(e) = self.received.insert(id) {
            return self.violation(format!("cannot record message id {id}: {e:?}"));
        }
        if !p.discarding {
            self.events.push_back(Event::Message { id, body: p.body });
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                if matches!(e, Event::Closed(_)) {
                    self.reported = true;
                }
                return Poll::Ready(e);
            }
            if self.reported {
                // Closed was reported; the session asks again only if it
                // goes on waiting, which it should not.
                return Poll::Pending;
            }
            if self.write_blocked {
                let _ = self.poll_write_out(cx);
            }
            self.poll_ping(cx);
            if self.write_blocked && self.control.len() >= MAX_CONTROL_BACKLOG {
                // The peer does not read the acks it is owed: read nothing
                // more from it until it does (each message read would add
                // one). Being writable again wakes us; a peer that stays
                // like this is dropped at the idle timeout.
                if self.poll_idle(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
            if self.events.is_empty() && self.poll_read_in(cx).is_pending() {
                // Nothing more to read: control frames queued meanwhile
                // (acks, and REJECTs the reading itself produced, which
                // the session never sees) leave now, with any data.
                if !self.control.is_empty() && !self.write_blocked {
                    let _ = self.poll_write_out(cx);
                }
                // Everything the peer sent before writing failed has been
                // read (a CLOSE among it would have ended the chat
                // properly): now the connection is lost.
                if let Some(reason) = self.write_error.clone() {
                    self.ended(Disconnect::Lost { reason });
                }
                if self.events.is_empty() {
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes what is queued, then close_notify and FIN; waits for the
    /// socket at most [`LINGER`] for all of it.
    async fn write_and_shut_down(&mut self) {
        let _ = tokio::time::timeout(LINGER, async {
            std::future::poll_fn(|cx| self.poll_write_out(cx)).await;
            if self.write_error.is_none() {
                let _ = self.io.shutdown().await;
            }
        })
        .await;
    }

    /// After we close: reads and discards until the peer closes too, or
    /// the linger time is up, so that our CLOSE is not destroyed by a reset
    /// (docs/protocol.md §7).
    async fn linger(&mut self) {
        let mut sink = [0u8; 16 * 1024];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = self.io.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, id: MessageId, body: Bytes) {
        if self.end.is_none() {
            self.waiting.push_back((id, body));
        }
    }

    fn ack(&mut self, id: MessageId) {
        if self.end.is_none() {
            Frame::Ack { id }.encode(&mut self.control);
        }
    }

    fn reject(&mut self, id: MessageId, code: u64, reason: &str) {
        if self.end.is_none() {
            let reason = Bytes::copy_from_slice(crate::protocol::clip_reason(reason).as_bytes());
            Frame::Reject { id, code, reason }.encode(&mut self.control);
        }
    }

    fn flush(&mut self) {
        if self.end.is_none() && !self.write_blocked {
            // Without waiting: if the socket is full, the rest goes from
            // `next_event`, which waits for it to take more.
            let _ = self.poll_write_out(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }

    async fn hold(&mut self) -> std::convert::Infallible {
        // Keep-alives (and whatever is left to write); reading waits, and
        // the peer's frames, keep-alives included, are read later, before
        // its silence is judged.
        std::future::poll_fn(|cx| {
            if self.write_blocked {
                let _ = self.poll_write_out(cx);
            }
            self.poll_ping(cx);
            Poll::Pending
        })
        .await
    }

    async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    async fn close(&mut self, code: u64, reason: &str) {
        if self.end.is_some() {
            return;
        }
        let reason = crate::protocol::clip_reason(reason).to_string();
        self.end = Some(Disconnect::Local {
            code,
            reason: reason.clone(),
        });
        self.reported = true;
        // Queued acknowledgements go first, then CLOSE, close_notify, FIN.
        self.queue_close(code, &reason);
        self.shutdown_due = false;
        self.write_and_shut_down().await;
        self.linger().await;
    }

    async fn finish(mut self) {
        // A CLOSE we owe (protocol error) or our answer to the peer's: what
        // is queued, then close_notify and FIN. A lost connection owes
        // nothing.
        if self.shutdown_due {
            self.write_and_shut_down().await;
            if matches!(self.end, Some(Disconnect::Violation { .. })) {
                self.linger().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Handshaken as _;
    use crate::transport::testing;

    /// A peer that sends messages and never reads its acks: the transport
    /// stops reading once [`MAX_CONTROL_BACKLOG`] of acks wait, rather than
    /// queueing one more ack per message for as long as the peer goes on.
    #[tokio::test]
    async fn a_peer_that_never_reads_its_acks_is_not_read_either() {
        let id = testing::identity("tcp-backlog");
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), &id, LINGER * 5)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut handshaken) = mpsc::channel(1);
        let _acceptor = listener.spawn_acceptor(tx);

        let client_tls = testing::client_tls();
        let _peer = tokio::spawn(async move {
            // A small receive buffer, so that unread acks fill it soon.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let tcp = socket.connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("chat").unwrap();
            let mut tls = TlsConnector::from(Arc::new(client_tls))
                .connect(name, tcp)
                .await
                .unwrap();
            let mut frames = BytesMut::new();
            for id in 0.. {
                encode_chunk_header(&mut frames, frame_type::END, id, 0);
                if frames.len() >= 16 * 1024 {
                    if tls.write_all(&frames).await.is_err() {
                        return;
                    }
                    frames.clear();
                }
            }
        });

        let limits = Limits {
            max_message_size: 1024,
            idle_timeout: Duration::from_secs(60),
        };
        let mut transport = handshaken.recv().await.unwrap().start(limits).await;
        // The session's part: ack each message. Once the transport stops
        // reading, no event comes for a while.
        let messages = testing::ack_until_quiet(&mut transport, 2_000_000).await;
        assert!(
            messages < 2_000_000,
            "the transport went on reading a peer that reads nothing"
        );
        assert!(
            transport.control.len() <= MAX_CONTROL_BACKLOG + 64,
            "{} bytes of acks queued after {messages} messages",
            transport.control.len()
        );
        assert!(transport.write_blocked);
    }
}
