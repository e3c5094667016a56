//! chat/1 over TLS 1.3 over TCP (PROTOCOL.md §6), the fallback for networks
//! that block UDP.
//!
//! One TLS stream carries frames both ways. A reader task parses frames and
//! reassembles messages; a writer task owns the write half and is the only
//! one to touch it. The writer always empties its control queue (ACK,
//! REJECT, CLOSE) before writing more message data, and cuts messages into
//! chunks of at most 64 KiB interleaved round-robin, so neither an ack nor a
//! small message ever waits behind a large one for more than one chunk.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::{debug, warn};

use super::{
    Disconnect, EndReason, Event, Limits, MessageId, PeerInfo, ReceivedIds, Transport, close_code,
    reject_code,
};
use crate::body::Body;
use crate::codec::{self, Frame, FrameDecoder, MAX_CHUNK, encode_chunk_header, frame_type};
use crate::identity::{Fingerprint, Identity};
use crate::render::sanitize_line;
use crate::tls;

/// Messages a receiver accepts in progress at once (PROTOCOL.md §6); a sender
/// keeps no more than this many started and unfinished.
const MAX_IN_PROGRESS: usize = 64;

/// See the QUIC transport: a small queue makes a slow session push back.
const EVENT_QUEUE: usize = 64;

/// How long a closing endpoint keeps reading so its CLOSE is not destroyed
/// by a reset (PROTOCOL.md §6).
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
        // Dropped before any frame is sent (PROTOCOL.md §6).
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
            transport: "tcp",
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
        transport: "tcp",
    };
    Ok((
        TcpTransport::start(TlsStream::Client(stream), limits.clone(), addr),
        peer,
    ))
}

/// Requests to the writer task.
enum Ctrl {
    /// ACK or REJECT, sent ahead of message data.
    Frame(Frame),
    /// The peer rejected this message: stop sending it (empty END).
    Abort(MessageId),
    /// We end the chat: CLOSE, close_notify, stop writing.
    Close {
        code: u64,
        reason: String,
        done: oneshot::Sender<()>,
    },
    /// The peer ended the chat: close_notify, stop writing.
    Shutdown,
}

/// A chat/1 connection over TLS over TCP.
pub struct TcpTransport {
    control: mpsc::UnboundedSender<Ctrl>,
    outgoing: mpsc::UnboundedSender<(MessageId, Bytes)>,
    events: mpsc::Receiver<Event>,
    end: EndReason,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl TcpTransport {
    /// Starts chat/1 on an established TLS stream.
    pub fn start<S>(stream: S, limits: Limits, peer: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let end = EndReason::default();
        let writer = tokio::spawn(
            Writer {
                io: write_half,
                control: control_rx,
                outgoing: outgoing_rx,
                ping_every: limits.idle_timeout / 3,
                active: VecDeque::new(),
                waiting: VecDeque::new(),
                out: BytesMut::with_capacity(WRITE_BATCH + 1024),
            }
            .run(),
        );
        let reader = tokio::spawn(
            Reader {
                peer,
                io: read_half,
                limits,
                events: events_tx,
                control: control.clone(),
                end: end.clone(),
                partial: HashMap::new(),
                received: ReceivedIds::default(),
            }
            .run(),
        );
        TcpTransport {
            control,
            outgoing,
            events,
            end,
            reader: Some(reader),
            writer: Some(writer),
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        for task in [&self.reader, &self.writer].into_iter().flatten() {
            task.abort();
        }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, id: MessageId, body: Bytes) {
        let _ = self.outgoing.send((id, body));
    }

    fn ack(&mut self, id: MessageId) {
        let _ = self.control.send(Ctrl::Frame(Frame::Ack { id }));
    }

    fn reject(&mut self, id: MessageId, code: u64, reason: &str) {
        let reason = Bytes::copy_from_slice(super::clip_reason(reason).as_bytes());
        let _ = self
            .control
            .send(Ctrl::Frame(Frame::Reject { id, code, reason }));
    }

    async fn next_event(&mut self) -> Event {
        match self.events.recv().await {
            Some(e) => e,
            None => Event::Closed(self.end.get().unwrap_or(Disconnect::Lost {
                reason: "connection lost".into(),
            })),
        }
    }

    async fn close(&mut self, code: u64, reason: &str) {
        let reason = super::clip_reason(reason).to_string();
        self.end.set(Disconnect::Local {
            code,
            reason: reason.clone(),
        });
        // From here on nobody reads events; the reader notices and only
        // drains the socket until the peer closes or the linger ends.
        self.events.close();
        let (done, written) = oneshot::channel();
        if self
            .control
            .send(Ctrl::Close { code, reason, done })
            .is_ok()
        {
            let _ = tokio::time::timeout(LINGER, written).await;
        }
        if let Some(reader) = self.reader.take() {
            let abort = reader.abort_handle();
            if tokio::time::timeout(LINGER, reader).await.is_err() {
                abort.abort();
            }
        }
    }

    async fn finish(mut self) {
        // Dropping our ends of the channels lets the writer stop once it has
        // written what it was asked to (a CLOSE, a close_notify); the reader
        // stops at end of stream or after its linger.
        self.control = mpsc::unbounded_channel().0;
        self.outgoing = mpsc::unbounded_channel().0;
        self.events.close();
        let tasks: Vec<JoinHandle<()>> = [self.reader.take(), self.writer.take()]
            .into_iter()
            .flatten()
            .collect();
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(LINGER * 2, all).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
    }
}

/// A message being sent.
struct Outgoing {
    id: MessageId,
    body: Bytes,
    aborted: bool,
}

struct Writer<W> {
    io: W,
    control: mpsc::UnboundedReceiver<Ctrl>,
    outgoing: mpsc::UnboundedReceiver<(MessageId, Bytes)>,
    ping_every: Duration,
    /// Started, unfinished messages, served round-robin.
    active: VecDeque<Outgoing>,
    /// Messages not started yet because `active` is full.
    waiting: VecDeque<(MessageId, Bytes)>,
    out: BytesMut,
}

/// What the writer does after a control request.
enum Next {
    Continue,
    Stop,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn run(mut self) {
        let mut last_write = Instant::now();
        // One timer for the whole connection, moved only when it fires: a
        // timer set per write costs the runtime a wake-up of its own, which
        // showed as microseconds on every round trip.
        let ping = tokio::time::sleep(self.ping_every);
        tokio::pin!(ping);
        loop {
            // Control frames first, always.
            while let Ok(cmd) = self.control.try_recv() {
                if let Next::Stop = self.handle(cmd).await {
                    return;
                }
            }
            while let Ok(m) = self.outgoing.try_recv() {
                self.waiting.push_back(m);
            }
            self.fill_with_data();
            if !self.out.is_empty() {
                if let Err(e) = self.write_out().await {
                    debug!("write failed: {}", sanitize_line(&e.to_string()));
                    return;
                }
                last_write = Instant::now();
                continue;
            }
            tokio::select! {
                cmd = self.control.recv() => match cmd {
                    Some(cmd) => if let Next::Stop = self.handle(cmd).await { return },
                    None => return,
                },
                Some(m) = self.outgoing.recv() => self.waiting.push_back(m),
                () = &mut ping => {
                    let due = last_write + self.ping_every;
                    if Instant::now() >= due {
                        Frame::Ping.encode(&mut self.out);
                        ping.as_mut().reset(Instant::now() + self.ping_every);
                    } else {
                        ping.as_mut().reset(due);
                    }
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Ctrl) -> Next {
        match cmd {
            Ctrl::Frame(f) => f.encode(&mut self.out),
            Ctrl::Abort(id) => {
                if let Some(m) = self.active.iter_mut().find(|m| m.id == id) {
                    m.aborted = true;
                }
            }
            Ctrl::Close { code, reason, done } => {
                Frame::Close {
                    code,
                    reason: Bytes::from(reason),
                }
                .encode(&mut self.out);
                let _ = self.finish().await;
                let _ = done.send(());
                return Next::Stop;
            }
            Ctrl::Shutdown => {
                let _ = self.finish().await;
                return Next::Stop;
            }
        }
        Next::Continue
    }

    /// Writes what is buffered, then close_notify and FIN.
    async fn finish(&mut self) -> std::io::Result<()> {
        self.write_out().await?;
        self.io.shutdown().await
    }

    async fn write_out(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await
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
}

/// A message being received.
#[derive(Default)]
struct Partial {
    body: Body,
    /// Over the limit and rejected: the rest is read and dropped.
    discarding: bool,
}

struct Reader<R> {
    io: R,
    /// For log lines: which peer broke the protocol.
    peer: SocketAddr,
    limits: Limits,
    events: mpsc::Sender<Event>,
    control: mpsc::UnboundedSender<Ctrl>,
    end: EndReason,
    partial: HashMap<MessageId, Partial>,
    received: ReceivedIds,
}

/// How the reader loop goes on after a frame.
enum Flow {
    Go,
    /// The connection is over for this reason.
    End(Disconnect),
    /// We closed locally (the session stopped listening): drain and stop.
    Drain,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn run(mut self) {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let idle = self.limits.idle_timeout;
        let mut last_frame = Instant::now();
        // As the writer's ping timer: set once, moved only when it fires.
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        let mut this_turn = 0;
        let flow = 'conn: loop {
            loop {
                match FrameDecoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        last_frame = Instant::now();
                        match self.handle(frame).await {
                            Flow::Go => {}
                            other => break 'conn other,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => break 'conn self.violation(e.to_string()),
                }
            }
            if this_turn >= READ_TURN {
                this_turn = 0;
                tokio::task::yield_now().await;
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            let read = tokio::select! {
                biased;
                read = self.io.read_buf(&mut buf) => Ok(read),
                () = &mut idle_timer => Err(()),
            };
            match read {
                Err(()) => {
                    let due = last_frame + idle;
                    if Instant::now() < due {
                        idle_timer.as_mut().reset(due);
                        continue;
                    }
                    break Flow::End(Disconnect::Lost {
                        reason: "connection lost (idle timeout)".into(),
                    });
                }
                Ok(Ok(0)) => {
                    break Flow::End(Disconnect::Lost {
                        reason: "connection lost (closed without CLOSE)".into(),
                    });
                }
                Ok(Ok(n)) => this_turn += n,
                Ok(Err(e)) => {
                    break Flow::End(Disconnect::Lost {
                        reason: format!("connection lost ({e})"),
                    });
                }
            }
        };
        match flow {
            Flow::End(d) => {
                let d = self.end.set(d);
                let _ = self.events.send(Event::Closed(d)).await;
            }
            Flow::Drain | Flow::Go => self.drain().await,
        }
    }

    /// Reads and discards until the peer closes or the linger time is up.
    async fn drain(&mut self) {
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

    fn violation(&mut self, reason: String) -> Flow {
        warn!(peer = %self.peer, "protocol error: {reason}");
        let reason = super::clip_reason(&reason).to_string();
        let d = self.end.set(Disconnect::Violation {
            reason: reason.clone(),
        });
        let (done, _) = oneshot::channel();
        let _ = self.control.send(Ctrl::Close {
            code: close_code::PROTOCOL_ERROR,
            reason,
            done,
        });
        // Tell the session now; then linger so the CLOSE is not lost.
        let _ = self.events.try_send(Event::Closed(d));
        Flow::Drain
    }

    async fn emit(&mut self, event: Event) -> Flow {
        match self.events.send(event).await {
            Ok(()) => Flow::Go,
            Err(_) => Flow::Drain,
        }
    }

    async fn handle(&mut self, frame: Frame) -> Flow {
        match frame {
            Frame::Ack { id } => self.emit(Event::Ack { id }).await,
            Frame::Reject { id, code, reason } => {
                let _ = self.control.send(Ctrl::Abort(id));
                self.emit(Event::Rejected {
                    id,
                    code,
                    reason: codec::reason_text(&reason),
                })
                .await
            }
            Frame::Data { id, chunk } => self.chunk(id, chunk, false).await,
            Frame::End { id, chunk } => self.chunk(id, chunk, true).await,
            Frame::Close { code, reason } => {
                let _ = self.control.send(Ctrl::Shutdown);
                Flow::End(Disconnect::Peer {
                    code,
                    reason: codec::reason_text(&reason),
                })
            }
            Frame::Ping | Frame::Unknown { .. } => Flow::Go,
        }
    }

    async fn chunk(&mut self, id: MessageId, chunk: Bytes, last: bool) -> Flow {
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
                let _ = self.control.send(Ctrl::Frame(Frame::Reject {
                    id,
                    code: reject_code::TOO_LARGE,
                    reason: Bytes::from(format!("message exceeds the limit of {limit} bytes")),
                }));
            } else {
                p.body.push(chunk);
            }
        }
        if !last {
            return Flow::Go;
        }
        let Some(p) = self.partial.remove(&id) else {
            return Flow::Go;
        };
        if let Err(e) = self.received.insert(id) {
            return self.violation(format!("cannot record message id {id}: {e:?}"));
        }
        if p.discarding {
            return Flow::Go;
        }
        self.emit(Event::Message { id, body: p.body }).await
    }
}
