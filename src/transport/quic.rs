//! chat/1 over QUIC (docs/protocol.md §6), on quinn.
//!
//! Each message travels on its own unidirectional stream, so messages never
//! wait behind each other; acknowledgements travel on a dedicated control
//! stream, so an ack never waits behind message data. Per connection there
//! are a few long-lived tasks (control writer, message sender, stream
//! acceptor, close watcher, control-stream watchdog), and a short task per
//! message stream received. An outgoing message stream is written in place
//! when it can be done in one go, as a short message usually can, and gets
//! a task of its own only if it has to wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, ReadError, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{Disconnect, EndReason, Event, Limits, PeerInfo, Transport};
use crate::protocol::body::Body;
use crate::protocol::codec::{self, Frame, FrameDecoder, put_varint, stream_type};
use crate::protocol::received::ReceivedIds;
use crate::protocol::{MessageId, close_code, reject_code, stream_error};
use crate::trust::identity::{Fingerprint, Identity};
use crate::trust::tls;
use crate::ui::render::sanitize_line;

/// How long a peer has to open its control stream (docs/protocol.md §6).
const CONTROL_STREAM_DEADLINE: Duration = Duration::from_secs(10);

/// Concurrent unidirectional streams we grant the peer (the protocol asks for
/// at least 64; quinn's default of 100 measured best).
const MAX_UNI_STREAMS: u32 = 100;

/// Events buffered between the connection's tasks and the session. Small on
/// purpose: when the session falls behind, stream readers stop reading and
/// QUIC flow control pushes back on the peer.
const EVENT_QUEUE: usize = 64;

/// Messages read into memory at once. A message stream that finishes frees
/// its QUIC stream slot, so stream credit alone does not bound what a fast
/// peer can make us buffer while the session is busy; this does: at most
/// this many bodies (each within the size limit) are being read or waiting
/// for the session, and further streams wait unread under flow control.
const MAX_READING: usize = 16;

/// Bytes a message reader takes in before it lets the other tasks run (as
/// the TCP reader does).
const READ_TURN: usize = 64 * 1024;

/// Control frames (acks) queued and not yet taken by quinn beyond which no
/// new message stream is read: a peer that does not read its acks cannot
/// make us queue one per message without end. (Our own sender keeps at most
/// 1,024 messages unacknowledged, far below.)
const MAX_CONTROL_BACKLOG: usize = 8192;

/// Longest we wait, when closing, for queued acknowledgements to reach the
/// peer before CONNECTION_CLOSE discards them.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

fn transport_config(limits: &Limits) -> Result<quinn::TransportConfig, QuicSetupError> {
    let mut config = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|_| QuicSetupError::IdleTimeout(limits.idle_timeout))?;
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(limits.idle_timeout / 3));
    Ok(config)
}

/// Errors setting up a QUIC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("idle timeout {0:?} is out of range")]
    IdleTimeout(Duration),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS configuration is not usable for QUIC: {0}")]
    Crypto(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server endpoint: one UDP socket, any number of handshakes.
pub struct Listener {
    endpoint: quinn::Endpoint,
    handshake_timeout: Duration,
}

impl Listener {
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        limits: &Limits,
        handshake_timeout: Duration,
    ) -> Result<Self, QuicSetupError> {
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(identity)?)
                .map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config(limits)?));
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| QuicSetupError::Bind { addr, source })?;
        Ok(Listener {
            endpoint,
            handshake_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections forever, completing each handshake in its own task
    /// (so a stalled client holds up no one) and passing finished ones on.
    pub fn spawn_acceptor(&self, tx: mpsc::Sender<Handshaken>) -> JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let timeout = self.handshake_timeout;
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let from = incoming.remote_address();
                    match tokio::time::timeout(timeout, handshake(incoming)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send(conn).await;
                        }
                        Ok(Err(e)) => warn!(
                            peer = %from,
                            "QUIC handshake failed: {}",
                            sanitize_line(&e.to_string())
                        ),
                        Err(_) => warn!(peer = %from, "QUIC handshake timed out"),
                    }
                });
            }
        })
    }

    /// Closes every connection and gives the CONNECTION_CLOSE frames a moment
    /// to leave.
    pub async fn shutdown(&self) {
        self.endpoint.close(
            varint(close_code::GOING_AWAY),
            b"the server is shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn handshake(incoming: quinn::Incoming) -> Result<Handshaken, ConnectionError> {
    let conn = incoming.accept()?.await?;
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(tls::ALPN) {
        // rustls already refuses a mismatching ALPN; this catches a client
        // that offered none.
        conn.close(
            VarInt::from_u32(close_code::PROTOCOL_ERROR as u32),
            b"ALPN chat/1 required",
        );
        return Err(ConnectionError::LocallyClosed);
    }
    let peer = peer_info(&conn);
    Ok(Handshaken { conn, peer })
}

fn peer_info(conn: &quinn::Connection) -> PeerInfo {
    let fingerprint = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().map(|c| Fingerprint::of(c)));
    PeerInfo {
        addr: super::canonical(conn.remote_address()),
        fingerprint,
        transport: super::TransportKind::Quic,
    }
}

/// A QUIC connection whose handshake is done, not yet admitted to a chat.
pub struct Handshaken {
    conn: quinn::Connection,
    peer: PeerInfo,
}

impl super::Handshaken for Handshaken {
    type Transport = QuicTransport;

    fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    async fn start(self, limits: Limits) -> QuicTransport {
        QuicTransport::start(self.conn, None, limits).await
    }

    async fn refuse(self, code: u64, reason: &str) {
        self.conn.close(
            varint(code),
            crate::protocol::clip_reason(reason).as_bytes(),
        );
    }
}

fn varint(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}

/// Connects to `addr` as a client.
pub async fn connect(
    addr: SocketAddr,
    client_tls: rustls::ClientConfig,
    limits: &Limits,
) -> Result<(QuicTransport, PeerInfo), ConnectFailure> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .map_err(|e| ConnectFailure::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(
        transport_config(limits).map_err(|e| ConnectFailure::Setup(e.to_string()))?,
    ));
    let local: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(local).map_err(ConnectFailure::Io)?;
    // The certificate is checked by fingerprint, so the name only has to be
    // syntactically valid.
    let connecting = endpoint
        .connect_with(config, addr, "chat")
        .map_err(|e| ConnectFailure::Setup(e.to_string()))?;
    let conn = connecting.await.map_err(ConnectFailure::Quic)?;
    let peer = peer_info(&conn);
    let transport = QuicTransport::start(conn, Some(endpoint), limits.clone()).await;
    Ok((transport, peer))
}

/// Why a QUIC connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Quic(ConnectionError),
}

enum ControlCmd {
    Frame(Frame),
    /// Answered once every frame queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// What goes to the control-stream writer, counted: the stream acceptor
/// takes no new message while a peer leaves too many of the acks it is owed
/// unread (each message taken would queue one more).
#[derive(Clone)]
struct ControlQueue {
    tx: mpsc::UnboundedSender<ControlCmd>,
    backlog: Arc<Backlog>,
}

/// Control frames queued and not yet taken by quinn.
#[derive(Default)]
struct Backlog {
    frames: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl ControlQueue {
    fn frame(&self, f: Frame) {
        self.backlog.frames.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(ControlCmd::Frame(f));
    }

    /// Asks to be told once everything queued so far is written.
    fn flush(&self, done: oneshot::Sender<()>) -> bool {
        self.tx.send(ControlCmd::Flush(done)).is_ok()
    }
}

impl Backlog {
    fn written(&self, frames: usize) {
        self.frames.fetch_sub(frames, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    async fn wait_below(&self, max: usize) {
        loop {
            let drained = self.drained.notified();
            if self.frames.load(Ordering::Acquire) < max {
                return;
            }
            drained.await;
        }
    }
}

/// A chat/1 connection over QUIC.
pub struct QuicTransport {
    conn: quinn::Connection,
    /// A client owns its endpoint and waits on it when closing, so that the
    /// CONNECTION_CLOSE leaves before the process exits.
    endpoint: Option<quinn::Endpoint>,
    outgoing: mpsc::UnboundedSender<(MessageId, Bytes)>,
    control: ControlQueue,
    events: mpsc::Receiver<Event>,
    end: EndReason,
    _tasks: super::Tasks,
}

/// What the per-connection tasks share.
#[derive(Clone)]
struct Shared {
    conn: quinn::Connection,
    limits: Limits,
    events: mpsc::Sender<Event>,
    control: ControlQueue,
    end: EndReason,
    received: Arc<Mutex<ReceivedIds>>,
    peer_control_seen: Arc<AtomicBool>,
    reading: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The peer broke the protocol: close with PROTOCOL_ERROR and a reason.
    fn violation(&self, reason: String) {
        warn!(peer = %self.conn.remote_address(), "protocol error: {reason}");
        let reason = crate::protocol::clip_reason(&reason).to_string();
        self.end.set(Disconnect::Violation {
            reason: reason.clone(),
        });
        self.conn
            .close(varint(close_code::PROTOCOL_ERROR), reason.as_bytes());
    }

    fn record_received(&self, id: MessageId) -> bool {
        let refused = match self.received.lock() {
            Ok(mut r) => r.insert(id).err(),
            Err(_) => return false,
        };
        match refused {
            None => true,
            Some(crate::protocol::received::Refused::Duplicate) => {
                self.violation(format!("message id {id} received twice"));
                false
            }
            Some(crate::protocol::received::Refused::TooFragmented) => {
                self.violation("too many gaps in message ids".into());
                false
            }
        }
    }
}

impl QuicTransport {
    async fn start(
        conn: quinn::Connection,
        endpoint: Option<quinn::Endpoint>,
        limits: Limits,
    ) -> Self {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let control = ControlQueue {
            tx: control_tx,
            backlog: Arc::default(),
        };
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            conn: conn.clone(),
            limits,
            events: events_tx,
            control: control.clone(),
            end: EndReason::default(),
            received: Arc::default(),
            peer_control_seen: Arc::default(),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READING)),
        };
        let tasks = vec![
            tokio::spawn(watch_close(shared.clone())),
            tokio::spawn(accept_streams(shared.clone())),
            tokio::spawn(control_deadline(shared.clone())),
            tokio::spawn(write_streams(
                conn.clone(),
                control_rx,
                control.backlog.clone(),
                outgoing_rx,
            )),
        ];
        QuicTransport {
            conn,
            endpoint,
            outgoing,
            control,
            events,
            end: shared.end,
            _tasks: super::Tasks(tasks),
        }
    }
}

impl Transport for QuicTransport {
    fn send(&mut self, id: MessageId, body: Bytes) {
        let _ = self.outgoing.send((id, body));
    }

    fn ack(&mut self, id: MessageId) {
        self.control.frame(Frame::Ack { id });
    }

    fn reject(&mut self, id: MessageId, code: u64, reason: &str) {
        let reason = Bytes::copy_from_slice(crate::protocol::clip_reason(reason).as_bytes());
        self.control.frame(Frame::Reject { id, code, reason });
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
        let reason = crate::protocol::clip_reason(reason);
        self.end.set(Disconnect::Local {
            code,
            reason: reason.to_string(),
        });
        // CONNECTION_CLOSE discards stream data not yet delivered, so first
        // let queued acknowledgements reach quinn and give them about a round
        // trip to reach the peer.
        let (tx, rx) = oneshot::channel();
        if self.control.flush(tx) {
            let _ = tokio::time::timeout(CLOSE_GRACE, rx).await;
            let grace = (self.conn.rtt() * 2).min(CLOSE_GRACE);
            tokio::time::sleep(grace).await;
        }
        self.conn.close(varint(code), reason.as_bytes());
    }

    async fn finish(self) {
        // A client owns its endpoint: give the CONNECTION_CLOSE (ours or the
        // answer to the peer's) time to leave before the process exits. A
        // server's endpoint lives on.
        if let Some(endpoint) = &self.endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// Reports the end of the connection, whoever ended it.
async fn watch_close(shared: Shared) {
    let err = shared.conn.closed().await;
    let d = shared.end.set(match err {
        ConnectionError::ApplicationClosed(c) => Disconnect::Peer {
            code: c.error_code.into_inner(),
            reason: codec::reason_text(&c.reason),
        },
        ConnectionError::TimedOut => Disconnect::Lost {
            reason: "connection lost (idle timeout)".into(),
        },
        ConnectionError::LocallyClosed => Disconnect::Local {
            code: close_code::NO_ERROR,
            reason: "closed".into(),
        },
        ConnectionError::Reset => Disconnect::Lost {
            reason: "connection lost (reset by peer)".into(),
        },
        other => Disconnect::Lost {
            reason: format!("connection lost ({other})"),
        },
    });
    let _ = shared.events.send(Event::Closed(d)).await;
}

/// Closes the connection if the peer never opens its control stream.
async fn control_deadline(shared: Shared) {
    tokio::time::sleep(CONTROL_STREAM_DEADLINE).await;
    if !shared.peer_control_seen.load(Ordering::Acquire) {
        shared.violation(format!(
            "no control stream within {} s",
            CONTROL_STREAM_DEADLINE.as_secs()
        ));
    }
}

/// Opens our control stream, then serves it and the outgoing messages.
/// Nothing here is awaited by `start`: a peer that grants no stream credit
/// stalls only this task, never the caller (the control-stream deadline and
/// idle timeout end such a connection).
async fn write_streams(
    conn: quinn::Connection,
    control: mpsc::UnboundedReceiver<ControlCmd>,
    backlog: Arc<Backlog>,
    outgoing: mpsc::UnboundedReceiver<(MessageId, Bytes)>,
) {
    // If the control stream cannot be opened the connection is already
    // closing, and the close watcher reports why.
    let stream = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            return debug!(
                "cannot open control stream: {}",
                sanitize_line(&e.to_string())
            );
        }
    };
    tokio::join!(
        write_control(stream, control, backlog),
        send_messages(conn, outgoing)
    );
}

/// Writes our control stream: its type, then ACK/REJECT frames, batching
/// whatever is queued into one write.
async fn write_control(
    mut stream: SendStream,
    mut rx: mpsc::UnboundedReceiver<ControlCmd>,
    backlog: Arc<Backlog>,
) {
    let mut buf = BytesMut::with_capacity(256);
    put_varint(&mut buf, stream_type::CONTROL);
    let mut flushes = Vec::new();
    let mut frames = 0;
    loop {
        if !buf.is_empty() {
            if let Err(e) = stream.write_all(&buf).await {
                debug!(
                    "control stream write failed: {}",
                    sanitize_line(&e.to_string())
                );
                return;
            }
            buf.clear();
            backlog.written(frames);
            frames = 0;
        }
        for f in flushes.drain(..) {
            let _: Result<(), ()> = oneshot::Sender::send(f, ());
        }
        let Some(cmd) = rx.recv().await else { return };
        let mut next = Some(cmd);
        while let Some(cmd) = next {
            match cmd {
                ControlCmd::Frame(f) => {
                    f.encode(&mut buf);
                    frames += 1;
                }
                ControlCmd::Flush(tx) => flushes.push(tx),
            }
            next = rx.try_recv().ok();
        }
    }
}

/// Opens one stream per message, in id order, waiting for stream credit when
/// the peer's limit is reached (the message is delayed, never failed).
async fn send_messages(
    conn: quinn::Connection,
    mut rx: mpsc::UnboundedReceiver<(MessageId, Bytes)>,
) {
    while let Some((id, body)) = rx.recv().await {
        let stream = match conn.open_uni().await {
            Ok(s) => s,
            Err(e) => {
                debug!(
                    "cannot open message stream: {}",
                    sanitize_line(&e.to_string())
                );
                return;
            }
        };
        run_or_spawn(write_message(stream, id, body)).await;
    }
}

/// Polls `task` once here and gives it a task of its own only if it has to
/// wait. A short message usually leaves whole in that one poll, and
/// spawning a task for it costs more than the work it carries.
async fn run_or_spawn<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut task = Box::pin(task);
    let first = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx))).await;
    if first.is_pending() {
        tokio::spawn(task);
    }
}

async fn write_message(mut stream: SendStream, id: MessageId, body: Bytes) {
    let mut header = BytesMut::with_capacity(9);
    put_varint(&mut header, stream_type::MESSAGE);
    put_varint(&mut header, id);
    let result = async {
        stream.write_all(&header).await?;
        stream.write_chunk(body).await?;
        Ok::<_, quinn::WriteError>(())
    }
    .await;
    match result {
        // A peer that stops the stream (TOO_LARGE) also sends a REJECT on its
        // control stream; that is what reaches the user.
        Err(e) => debug!(
            id,
            "message stream ended early: {}",
            sanitize_line(&e.to_string())
        ),
        Ok(()) => {
            let _ = stream.finish();
        }
    }
}

/// Accepts the peer's unidirectional streams and hands each to its reader.
async fn accept_streams(shared: Shared) {
    loop {
        // A peer that does not read its acks gets no new stream read (and
        // so no more stream credit) until it does.
        shared.control.backlog.wait_below(MAX_CONTROL_BACKLOG).await;
        match shared.conn.accept_uni().await {
            // Each stream gets a task of its own, spawned in the order the
            // streams arrive: run in place, a stream whose message was
            // complete would overtake an earlier one still arriving, and
            // messages would be shown out of order far more often.
            Ok(stream) => {
                tokio::spawn(read_stream(shared.clone(), stream));
            }
            Err(e) => {
                debug!("no more streams: {}", sanitize_line(&e.to_string()));
                return;
            }
        }
    }
}

/// A receive stream with the bytes read past what has been parsed.
struct StreamReader {
    stream: RecvStream,
    buf: BytesMut,
}

enum Read<T> {
    Got(T),
    /// The stream finished.
    Finished,
    /// The stream was reset or the connection failed.
    Failed(ReadError),
}

impl StreamReader {
    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> Read<()> {
        match self.stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk.bytes);
                Read::Got(())
            }
            Ok(None) => Read::Finished,
            Err(e) => Read::Failed(e),
        }
    }

    async fn varint(&mut self) -> Read<u64> {
        loop {
            if let Some(v) = codec::get_varint(&mut self.buf) {
                return Read::Got(v);
            }
            match self.fill().await {
                Read::Got(()) => {}
                Read::Finished => return Read::Finished,
                Read::Failed(e) => return Read::Failed(e),
            }
        }
    }
}

async fn read_stream(shared: Shared, stream: RecvStream) {
    let mut reader = StreamReader {
        stream,
        buf: BytesMut::new(),
    };
    // A stream that ends before its type (and id) are complete is ignored.
    let ty = match reader.varint().await {
        Read::Got(ty) => ty,
        _ => return,
    };
    match ty {
        stream_type::CONTROL => {
            if shared.peer_control_seen.swap(true, Ordering::AcqRel) {
                shared.violation("second control stream".into());
                return;
            }
            read_control(shared, reader).await;
        }
        stream_type::MESSAGE => read_message(shared, reader).await,
        other => {
            debug!("ignoring stream of unknown type {other:#x}");
            let _ = reader
                .stream
                .stop(VarInt::from_u32(stream_error::UNKNOWN_STREAM_TYPE));
        }
    }
}

async fn read_control(shared: Shared, mut reader: StreamReader) {
    loop {
        loop {
            let frame = match FrameDecoder.decode(&mut reader.buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return shared
                        .violation(format!("control stream: {}", sanitize_line(&e.to_string())));
                }
            };
            let event = match frame {
                Frame::Ack { id } => Event::Ack { id },
                Frame::Reject { id, code, reason } => Event::Rejected {
                    id,
                    code,
                    reason: codec::reason_text(&reason),
                },
                // Unknown types are skipped; a PING is meaningless here but
                // harmless, so it is skipped too.
                Frame::Unknown { .. } | Frame::Ping => continue,
                f @ (Frame::Data { .. } | Frame::End { .. } | Frame::Close { .. }) => {
                    return shared.violation(format!("{} frame on the control stream", f.name()));
                }
            };
            if shared.events.send(event).await.is_err() {
                return;
            }
        }
        match reader.fill().await {
            Read::Got(()) => {}
            Read::Finished => return shared.violation("peer finished its control stream".into()),
            Read::Failed(ReadError::Reset(_)) => {
                return shared.violation("peer reset its control stream".into());
            }
            Read::Failed(_) => return,
        }
    }
}

async fn read_message(shared: Shared, mut reader: StreamReader) {
    let id = match reader.varint().await {
        Read::Got(id) => id,
        _ => return,
    };
    if shared.received.lock().is_ok_and(|r| r.contains(id)) {
        return shared.violation(format!("message id {id} received twice"));
    }
    // Held until the message is in the session's queue.
    let Ok(_reading) = shared.reading.clone().acquire_owned().await else {
        return;
    };
    let limit = shared.limits.max_message_size;
    let mut body = Body::default();
    body.push(reader.buf.split().freeze());
    let mut this_turn = 0;
    loop {
        if body.len() as u64 > limit {
            // A refused message still counts as received: its id may not be
            // used again (as on TCP).
            if !shared.record_received(id) {
                return;
            }
            let _ = reader
                .stream
                .stop(VarInt::from_u32(stream_error::TOO_LARGE));
            debug!(
                id,
                size = body.len(),
                limit,
                "rejecting message over the size limit"
            );
            shared.control.frame(Frame::Reject {
                id,
                code: reject_code::TOO_LARGE,
                reason: Bytes::from(format!("message exceeds the limit of {limit} bytes")),
            });
            return;
        }
        match reader.stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                this_turn += chunk.bytes.len();
                body.push(chunk.bytes);
                // Reading chunks quinn already holds never waits, so without
                // this one task could take in a whole stream window (about
                // 1.25 MB) per turn while acks and small messages wait.
                if this_turn >= READ_TURN {
                    this_turn = 0;
                    tokio::task::yield_now().await;
                } else {
                    tokio::task::consume_budget().await;
                }
            }
            Ok(None) => break,
            // Reset by the sender: the message is abandoned, not acknowledged.
            Err(e) => {
                debug!(
                    id,
                    "message stream failed: {}",
                    sanitize_line(&e.to_string())
                );
                return;
            }
        }
    }
    if shared.record_received(id) {
        let _ = shared.events.send(Event::Message { id, body }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Handshaken as _;
    use crate::transport::testing;

    /// A peer that sends messages and never reads its acks: once
    /// [`MAX_CONTROL_BACKLOG`] acks wait, no new message stream is read (so
    /// the peer gets no new stream credit either), rather than one more ack
    /// being queued per message for as long as the peer goes on.
    #[tokio::test]
    async fn a_peer_that_never_reads_its_acks_gets_no_new_stream_read() {
        let id = testing::identity("quic-backlog");
        let limits = Limits {
            max_message_size: 1024,
            idle_timeout: Duration::from_secs(60),
        };
        let listener = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &id,
            &limits,
            Duration::from_secs(5),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut handshaken) = mpsc::channel(1);
        let _acceptor = listener.spawn_acceptor(tx);

        let client_tls = testing::client_tls();
        let _peer = tokio::spawn(async move {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap();
            let mut config = quinn::ClientConfig::new(Arc::new(crypto));
            let mut transport = quinn::TransportConfig::default();
            // Little room for the acks it never reads.
            transport.stream_receive_window(VarInt::from_u32(1024));
            config.transport_config(Arc::new(transport));
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let conn = endpoint
                .connect_with(config, addr, "chat")
                .unwrap()
                .await
                .unwrap();
            let mut control = conn.open_uni().await.unwrap();
            let mut header = BytesMut::new();
            put_varint(&mut header, stream_type::CONTROL);
            control.write_all(&header).await.unwrap();
            for id in 0u64.. {
                let Ok(mut stream) = conn.open_uni().await else {
                    return;
                };
                header.clear();
                put_varint(&mut header, stream_type::MESSAGE);
                put_varint(&mut header, id);
                if stream.write_all(&header).await.is_err() {
                    return;
                }
                let _ = stream.finish();
            }
        });

        let mut transport = handshaken.recv().await.unwrap().start(limits).await;
        // The session's part: ack each message. Once no new stream is
        // read, no event comes for a while.
        let messages = testing::ack_until_quiet(&mut transport, 50_000).await;
        assert!(
            messages < 50_000,
            "the transport went on reading a peer that reads nothing"
        );
        let backlog = transport.control.backlog.frames.load(Ordering::Acquire);
        assert!(
            (MAX_CONTROL_BACKLOG..MAX_CONTROL_BACKLOG + 200).contains(&backlog),
            "{backlog} acks queued after {messages} messages"
        );
    }
}
