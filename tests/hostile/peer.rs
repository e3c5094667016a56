//! Hostile peers for the `hostile` suite: hand-written chat/1 and chat/2
//! peers (on tokio, quinn and tokio-rustls) that break the protocol on
//! purpose. Each offers exactly one ALPN, so the server has no choice. What
//! the server answers them is checked here; what it reports and logs, in
//! [`crate::fixture`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chat::protocol::codec::{Frame, FrameDecoder, TOKEN_LEN, Token, Version, put_varint};
use chat::trust::identity::{Fingerprint, Identity};
use chat::trust::tls::{FingerprintVerifier, ServerTrust, client_config};
use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use support::{TIMEOUT, TransportKind};

/// The chat/1 ALPN.
pub const ALPN: &[u8] = b"chat/1";
/// The chat/2 ALPN (docs/protocol.md §12).
pub const ALPN_V2: &[u8] = b"chat/2";

/// The protocol an ALPN names.
fn version_of(alpn: &[u8]) -> Version {
    if alpn == ALPN_V2 {
        Version::V2
    } else {
        Version::V1
    }
}

/// Close and stream error codes the tests look for.
pub const NO_ERROR: u64 = 0;
pub const BUSY: u64 = 1;
pub const PROTOCOL_ERROR: u64 = 2;
/// chat/2: the client resumed the chat on another connection.
pub const REPLACED: u64 = 5;

/// A TLS 1.3 client configuration that accepts any server certificate with a
/// valid handshake signature, offering `alpn` (none when empty).
pub fn tls_client(alpn: &[&[u8]]) -> rustls::ClientConfig {
    tls_client_as(alpn, None)
}

/// [`tls_client`] presenting `identity` as the client certificate (none
/// when `None`).
pub fn tls_client_as(alpn: &[&[u8]], identity: Option<&Identity>) -> rustls::ClientConfig {
    let mut config = client_config(
        FingerprintVerifier::new(ServerTrust::AnyValidSignature),
        identity,
    )
    .expect("client TLS configuration");
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// A new self-signed client identity (ECDSA P-256, made with rcgen as
/// `chat cert` makes one), kept in memory only.
pub fn new_identity(name: &str) -> Identity {
    let certified =
        rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen certificate");
    Identity {
        cert: certified.cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
    }
}

/// How the server shows the identity of a peer presenting `identity`: its
/// fingerprint (`sha256:…`), or JSON null for none.
pub fn shown_fingerprint(identity: Option<&Identity>) -> serde_json::Value {
    identity.map_or(serde_json::Value::Null, |id| {
        Fingerprint::of(&id.cert).to_string().into()
    })
}

pub fn sock(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|e| panic!("not a socket address {addr:?}: {e}"))
}

/// Frame bytes of type `ty` with `payload` (the header written minimally).
pub fn raw_frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_varint(&mut b, ty);
    put_varint(&mut b, payload.len() as u64);
    b.extend_from_slice(payload);
    b.to_vec()
}

/// Varint bytes of `v`.
pub fn varint(v: u64) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_varint(&mut b, v);
    b.to_vec()
}

/// A WELCOME, as a client must never send one.
pub fn stray_welcome() -> Vec<u8> {
    frame(&Frame::Welcome {
        token: chat::protocol::codec::Token([1; 16]),
        resume_window_ms: 0,
        resumed: false,
        idle_timeout_ms: 0,
    })
}

/// The bytes of one encoded frame.
pub fn frame(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b.to_vec()
}

/// An END frame: a complete one-frame message.
pub fn end(id: u64, body: &[u8]) -> Vec<u8> {
    frame(&Frame::End {
        id,
        chunk: Bytes::copy_from_slice(body),
    })
}

pub fn data(id: u64, body: &[u8]) -> Vec<u8> {
    frame(&Frame::Data {
        id,
        chunk: Bytes::copy_from_slice(body),
    })
}

/// A chat/2 HELLO: our idle timeout, and a session token or none.
pub fn hello(idle_timeout_ms: u64, token: Option<[u8; TOKEN_LEN]>) -> Vec<u8> {
    frame(&Frame::Hello {
        idle_timeout_ms,
        token: token.map(Token),
    })
}

/// A RECEIVED frame (PROTOCOL.md §9.6): every id below `below`, and `ids`.
pub fn received(below: u64, ids: &[u64]) -> Vec<u8> {
    frame(&Frame::Received {
        below,
        ids: ids.to_vec(),
    })
}

/// A PARTIAL frame: of file `id`, the first `held` bytes are stored.
pub fn partial(id: u64, held: u64) -> Vec<u8> {
    frame(&Frame::Partial { id, held })
}

/// What a server's WELCOME said (docs/protocol.md §12.2).
#[derive(Debug)]
pub struct Welcome {
    pub token: [u8; TOKEN_LEN],
    pub resume_window_ms: u64,
    pub resumed: bool,
    pub idle_timeout_ms: u64,
}

impl Welcome {
    fn of(f: Frame) -> Option<Welcome> {
        match f {
            Frame::Welcome {
                token,
                resume_window_ms,
                resumed,
                idle_timeout_ms,
            } => Some(Welcome {
                token: token.0,
                resume_window_ms,
                resumed,
                idle_timeout_ms,
            }),
            _ => None,
        }
    }

    /// The shape this server's WELCOME for a new chat has: a fresh token
    /// (not all zeros, not `ours`), its resume window `window_ms`, not
    /// resumed, and its idle timeout `idle_ms`.
    pub fn check(&self, idle_ms: u64, window_ms: u64, ours: Option<[u8; TOKEN_LEN]>) {
        assert!(
            self.token != [0; TOKEN_LEN] && Some(self.token) != ours,
            "WELCOME should carry a fresh random token"
        );
        assert!(!self.resumed, "a new chat is not resumed: {self:?}");
        self.check_timers(idle_ms, window_ms);
    }

    /// The shape of this server's WELCOME that resumes the chat named
    /// `token`: that token, resumed, its window and idle timeout.
    pub fn check_resumed(&self, idle_ms: u64, window_ms: u64, token: [u8; TOKEN_LEN]) {
        assert!(
            self.token == token,
            "a resuming WELCOME should carry the chat's own token"
        );
        assert!(self.resumed, "the chat should be resumed: {self:?}");
        self.check_timers(idle_ms, window_ms);
    }

    fn check_timers(&self, idle_ms: u64, window_ms: u64) {
        assert_eq!(
            self.resume_window_ms, window_ms,
            "WELCOME should carry the server's resume window: {self:?}"
        );
        assert_eq!(
            self.idle_timeout_ms, idle_ms,
            "WELCOME should carry the server's idle timeout: {self:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------

/// What reading from a hostile TCP connection gave.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the texts are read through Debug, in failure messages"
)]
pub enum Got {
    Frame(Frame),
    /// The server closed its side (close_notify or FIN).
    Eof,
    /// The connection failed (reset, TLS error, a FIN without close_notify).
    Error(String),
    /// Nothing arrived in time.
    Timeout,
    /// The server sent bytes that are not chat/1 frames.
    Garbage(String),
}

/// A chat/1 or chat/2 client over TLS over TCP that says whatever the test
/// wants.
pub struct HostileTcp {
    pub stream: TlsStream<TcpStream>,
    /// Our address as the server sees it.
    pub local: String,
    /// The protocol the handshake chose: how the server's frames read.
    pub version: Version,
    buf: BytesMut,
    /// Every frame received so far (for failure messages).
    pub seen: Vec<String>,
}

/// Connects and completes the TLS handshake with the given ALPN offer,
/// presenting `identity` as the client certificate (none when `None`).
pub async fn tcp_connect_tls_as(
    addr: &str,
    alpn: &[&[u8]],
    identity: Option<&Identity>,
) -> Result<(TlsStream<TcpStream>, String), String> {
    let socket = TcpStream::connect(sock(addr))
        .await
        .map_err(|e| format!("TCP connect: {e}"))?;
    socket.set_nodelay(true).ok();
    let local = socket.local_addr().map_err(|e| e.to_string())?.to_string();
    let name = rustls::pki_types::ServerName::try_from("chat").expect("server name");
    let stream = tokio::time::timeout(
        TIMEOUT,
        TlsConnector::from(Arc::new(tls_client_as(alpn, identity))).connect(name, socket),
    )
    .await
    .map_err(|_| format!("TLS handshake from {local} timed out"))?
    .map_err(|e| format!("TLS handshake from {local} failed: {e}"))?;
    Ok((stream, local))
}

impl HostileTcp {
    /// Connects with ALPN `chat/1`; panics if the handshake fails.
    pub async fn connect(addr: &str) -> HostileTcp {
        HostileTcp::connect_as(addr, ALPN).await
    }

    /// Connects offering only `alpn` (`chat/1` or `chat/2`); panics if the
    /// handshake fails or chooses anything else.
    pub async fn connect_as(addr: &str, alpn: &[u8]) -> HostileTcp {
        HostileTcp::connect_as_identity(addr, alpn, None).await
    }

    /// [`HostileTcp::connect_as`] presenting `identity` as the client
    /// certificate (none when `None`).
    pub async fn connect_as_identity(
        addr: &str,
        alpn: &[u8],
        identity: Option<&Identity>,
    ) -> HostileTcp {
        let (stream, local) = tcp_connect_tls_as(addr, &[alpn], identity)
            .await
            .unwrap_or_else(|e| panic!("hostile TCP peer: {e}"));
        let chosen = stream.get_ref().1.alpn_protocol();
        assert_eq!(
            chosen,
            Some(alpn),
            "[hostile tcp {local}] the server should agree to the only ALPN offered"
        );
        HostileTcp {
            stream,
            local,
            version: version_of(alpn),
            buf: BytesMut::new(),
            seen: Vec::new(),
        }
    }

    /// Writes raw bytes (after the handshake, so inside TLS records).
    pub async fn send(&mut self, bytes: &[u8]) {
        let r = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        }
        .await;
        if let Err(e) = r {
            panic!(
                "[hostile tcp {}] write of {} bytes failed: {e}; frames seen: {:?}",
                self.local,
                bytes.len(),
                self.seen
            );
        }
    }

    /// Like [`HostileTcp::send`], but a failed write is not an error (the
    /// server may already have closed on us).
    pub async fn send_lenient(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// The next frame (PINGs included), end of stream, or an error.
    pub async fn next(&mut self, timeout: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match FrameDecoder.decode_as(self.version, &mut self.buf) {
                Ok(Some(f)) => {
                    self.seen.push(format!("{f:?}"));
                    return Got::Frame(f);
                }
                Ok(None) => {}
                Err(e) => return Got::Garbage(e.to_string()),
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Got::Timeout,
                Ok(Ok(0)) => return Got::Eof,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Got::Error(e.to_string()),
            }
        }
    }

    /// chat/2: waits for the server's WELCOME, which must be its first
    /// frame (PINGs aside, which may come before it, docs/protocol.md §12.3).
    pub async fn expect_welcome(&mut self) -> Welcome {
        loop {
            match self.next(TIMEOUT).await {
                Got::Frame(Frame::Ping) => {}
                Got::Frame(f @ Frame::Welcome { .. }) => {
                    return Welcome::of(f).expect("a WELCOME");
                }
                other => panic!(
                    "[hostile tcp {}] expected WELCOME first, got {other:?}; frames seen: {:?}",
                    self.local, self.seen
                ),
            }
        }
    }

    /// Waits for the ACK of message `id`, skipping PINGs and other acks.
    pub async fn expect_ack(&mut self, id: u64) {
        loop {
            match self.next(TIMEOUT).await {
                Got::Frame(Frame::Ack { id: got }) if got == id => return,
                Got::Frame(Frame::Ack { .. } | Frame::Ping | Frame::Unknown { .. }) => {}
                other => panic!(
                    "[hostile tcp {}] expected ACK({id}), got {other:?}; frames seen: {:?}",
                    self.local, self.seen
                ),
            }
        }
    }

    /// Waits for acks of all of `ids`, in any order.
    pub async fn expect_acks(&mut self, ids: impl IntoIterator<Item = u64>) {
        let mut want: BTreeSet<u64> = ids.into_iter().collect();
        while !want.is_empty() {
            match self.next(TIMEOUT).await {
                Got::Frame(Frame::Ack { id }) => {
                    want.remove(&id);
                }
                Got::Frame(Frame::Ping | Frame::Unknown { .. }) => {}
                other => panic!(
                    "[hostile tcp {}] expected ACKs for {want:?}, got {other:?}; frames seen: {:?}",
                    self.local, self.seen
                ),
            }
        }
    }

    /// Waits for a CLOSE with `code`; returns its reason (lossy UTF-8).
    /// Nothing but PINGs may come first (in particular no ACK).
    pub async fn expect_close(&mut self, code: u64) -> String {
        loop {
            match self.next(TIMEOUT).await {
                Got::Frame(Frame::Close { code: got, reason }) => {
                    let reason = String::from_utf8_lossy(&reason).into_owned();
                    assert_eq!(
                        got, code,
                        "[hostile tcp {}] CLOSE should carry code {code}, got {got} ({reason:?})",
                        self.local
                    );
                    return reason;
                }
                Got::Frame(Frame::Ping) => {}
                other => panic!(
                    "[hostile tcp {}] expected CLOSE({code}), got {other:?}; frames seen: {:?}",
                    self.local, self.seen
                ),
            }
        }
    }

    /// After a CLOSE: the server ends the stream (no more frames).
    pub async fn expect_end(&mut self) {
        loop {
            match self.next(TIMEOUT).await {
                Got::Eof | Got::Error(_) => return,
                Got::Frame(Frame::Ping) => {}
                other => panic!(
                    "[hostile tcp {}] expected the end of the stream, got {other:?}; frames seen: {:?}",
                    self.local, self.seen
                ),
            }
        }
    }

    /// Ends the chat politely: CLOSE(NO_ERROR), close_notify, then waits for
    /// the server to close its side.
    pub async fn close_politely(mut self) {
        self.send(&frame(&Frame::Close {
            code: NO_ERROR,
            reason: Bytes::from_static(b"bye"),
        }))
        .await;
        let _ = self.stream.shutdown().await;
        loop {
            match self.next(TIMEOUT).await {
                Got::Eof | Got::Error(_) => return,
                Got::Frame(Frame::Ping | Frame::Ack { .. } | Frame::Unknown { .. }) => {}
                other => panic!(
                    "[hostile tcp {}] after our CLOSE expected the end of the stream, got {other:?}",
                    self.local
                ),
            }
        }
    }
}

/// Reads a stream (raw TCP, or TLS) until the server closes it (EOF or
/// error); returns the bytes read, or `None` if it was still open after
/// `timeout`.
pub async fn read_until_closed(
    s: &mut (impl AsyncRead + Unpin),
    timeout: Duration,
) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| got)
}

// ---------------------------------------------------------------------------
// QUIC
// ---------------------------------------------------------------------------

/// What came in on the server's streams to a hostile QUIC peer.
#[derive(Debug)]
pub enum FromServer {
    /// A frame on the server's control stream.
    Control(Frame),
    /// Something that should not happen (a bad stream, a bad frame).
    Odd(String),
}

/// A chat/1 or chat/2 client over QUIC that does whatever the test wants.
pub struct HostileQuic {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    /// Our address as the server sees it.
    pub local: String,
    /// Our control stream, once opened. Kept alive on purpose: dropping a
    /// quinn `SendStream` finishes it, which is a protocol error here.
    pub control: Option<SendStream>,
    from_server: mpsc::UnboundedReceiver<FromServer>,
    acked: BTreeSet<u64>,
    pub seen: Vec<String>,
}

/// A client endpoint on loopback.
pub fn quic_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(sock("127.0.0.1:0")).expect("bind a UDP socket")
}

/// The QUIC client configuration of a hostile peer offering `alpn` and
/// presenting `identity` as the client certificate (none when `None`).
pub fn quic_client_config_as(alpn: &[&[u8]], identity: Option<&Identity>) -> quinn::ClientConfig {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls_client_as(alpn, identity))
        .expect("TLS configuration usable for QUIC");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(60)).expect("idle timeout"),
        ))
        .keep_alive_interval(Some(Duration::from_secs(2)));
    config.transport_config(Arc::new(transport));
    config
}

/// Connects with the given ALPN offer; the handshake's outcome.
pub async fn quic_connect(
    endpoint: &quinn::Endpoint,
    addr: &str,
    alpn: &[&[u8]],
) -> Result<quinn::Connection, String> {
    quic_connect_as(endpoint, addr, alpn, None).await
}

/// [`quic_connect`] presenting `identity` as the client certificate.
pub async fn quic_connect_as(
    endpoint: &quinn::Endpoint,
    addr: &str,
    alpn: &[&[u8]],
    identity: Option<&Identity>,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect_with(quic_client_config_as(alpn, identity), sock(addr), "chat")
        .map_err(|e| format!("connect: {e}"))?;
    match tokio::time::timeout(TIMEOUT, connecting).await {
        Err(_) => Err("QUIC handshake timed out".into()),
        Ok(Err(e)) => Err(format!("QUIC handshake failed: {e}")),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Reads the server's unidirectional streams: its control stream's frames
/// go to `tx`; message streams (the server sends none in these tests) are
/// drained.
async fn read_server_streams(
    conn: quinn::Connection,
    version: Version,
    tx: mpsc::UnboundedSender<FromServer>,
) {
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(read_server_stream(stream, version, tx.clone()));
    }
}

async fn read_server_stream(
    mut stream: RecvStream,
    version: Version,
    tx: mpsc::UnboundedSender<FromServer>,
) {
    let mut buf = BytesMut::new();
    let mut ty = None;
    loop {
        if ty.is_none()
            && let Some((v, n)) = chat::protocol::codec::peek_varint(&buf)
        {
            let _ = buf.split_to(n);
            ty = Some(v);
            if v != 0 {
                // A message from the server: not expected, just drained.
                let _ = tx.send(FromServer::Odd(format!("server stream of type {v:#x}")));
            }
        }
        if ty == Some(0) {
            loop {
                match FrameDecoder.decode_as(version, &mut buf) {
                    Ok(Some(f)) => {
                        let _ = tx.send(FromServer::Control(f));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(FromServer::Odd(format!(
                            "bad frame on the server's control stream: {e}"
                        )));
                        return;
                    }
                }
            }
        } else if ty.is_some() {
            buf.clear();
        }
        match stream.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) => {
                if ty == Some(0) {
                    let _ = tx.send(FromServer::Odd(
                        "the server finished its control stream".into(),
                    ));
                }
                return;
            }
            Err(_) => return,
        }
    }
}

impl HostileQuic {
    /// Connects with ALPN `chat/1` (panics if that fails) and starts reading
    /// the server's streams. Opens no stream of its own.
    pub async fn connect(addr: &str) -> HostileQuic {
        HostileQuic::connect_as(addr, ALPN).await
    }

    /// Connects offering only `alpn` (`chat/1` or `chat/2`; panics if the
    /// handshake fails or chooses anything else) and starts reading the
    /// server's streams. Opens no stream of its own.
    pub async fn connect_as(addr: &str, alpn: &[u8]) -> HostileQuic {
        HostileQuic::connect_as_identity(addr, alpn, None).await
    }

    /// [`HostileQuic::connect_as`] presenting `identity` as the client
    /// certificate (none when `None`).
    pub async fn connect_as_identity(
        addr: &str,
        alpn: &[u8],
        identity: Option<&Identity>,
    ) -> HostileQuic {
        let endpoint = quic_endpoint();
        let local = endpoint.local_addr().expect("local address").to_string();
        let conn = quic_connect_as(&endpoint, addr, &[alpn], identity)
            .await
            .unwrap_or_else(|e| panic!("hostile QUIC peer {local}: {e}"));
        let chosen = conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol);
        assert_eq!(
            chosen.as_deref(),
            Some(alpn),
            "[hostile quic {local}] the server should agree to the only ALPN offered"
        );
        let (tx, from_server) = mpsc::unbounded_channel();
        tokio::spawn(read_server_streams(conn.clone(), version_of(alpn), tx));
        HostileQuic {
            endpoint,
            conn,
            local,
            control: None,
            from_server,
            acked: BTreeSet::new(),
            seen: Vec::new(),
        }
    }

    /// Connects and opens a proper control stream.
    pub async fn connect_with_control(addr: &str) -> HostileQuic {
        let mut h = HostileQuic::connect(addr).await;
        h.control = Some(h.open_control().await);
        h
    }

    /// Opens a unidirectional stream and writes `first` on it.
    pub async fn open_uni_with(&self, first: &[u8]) -> SendStream {
        let mut s = tokio::time::timeout(TIMEOUT, self.conn.open_uni())
            .await
            .unwrap_or_else(|_| panic!("[hostile quic {}] no stream credit in time", self.local))
            .unwrap_or_else(|e| panic!("[hostile quic {}] open_uni: {e}", self.local));
        if !first.is_empty() {
            s.write_all(first)
                .await
                .unwrap_or_else(|e| panic!("[hostile quic {}] write: {e}", self.local));
        }
        s
    }

    /// Opens a control stream (type 0x00) and returns it.
    pub async fn open_control(&self) -> SendStream {
        self.open_uni_with(&varint(0)).await
    }

    /// Opens our control stream with `first` as its first bytes (chat/2:
    /// a HELLO, or whatever the test sends instead), and keeps it.
    pub async fn open_control_with(&mut self, first: &[u8]) {
        let mut head = varint(0);
        head.extend_from_slice(first);
        self.control = Some(self.open_uni_with(&head).await);
    }

    /// The next thing from the server (`None`: its streams ended, or
    /// nothing came within `timeout`).
    pub async fn next_from_server(&mut self, timeout: Duration) -> Option<FromServer> {
        tokio::time::timeout(timeout, self.from_server.recv())
            .await
            .ok()
            .flatten()
    }

    /// chat/2: waits for the server's WELCOME, which must be the first
    /// frame on its control stream (PINGs aside).
    pub async fn expect_welcome(&mut self) -> Welcome {
        loop {
            match self.next_from_server(TIMEOUT).await {
                Some(FromServer::Control(Frame::Ping)) => {}
                Some(FromServer::Control(f @ Frame::Welcome { .. })) => {
                    self.seen.push(format!("{f:?}"));
                    return Welcome::of(f).expect("a WELCOME");
                }
                other => panic!(
                    "[hostile quic {}] expected WELCOME first, got {other:?}; connection: {:?}",
                    self.local,
                    self.conn.close_reason()
                ),
            }
        }
    }

    /// Writes raw bytes on our control stream.
    pub async fn control_write(&mut self, bytes: &[u8]) {
        let local = self.local.clone();
        let s = self.control.as_mut().expect("control stream opened");
        s.write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("[hostile quic {local}] control write: {e}"));
    }

    /// Sends message `id` on a new stream: `01`, the id, the body, FIN.
    pub async fn send_message(&self, id: u64, body: &[u8]) {
        let mut head = varint(1);
        head.extend(varint(id));
        head.extend_from_slice(body);
        let mut s = self.open_uni_with(&head).await;
        s.finish()
            .unwrap_or_else(|e| panic!("[hostile quic {}] finish: {e}", self.local));
    }

    /// Waits until every id in `ids` has been acked on the server's control
    /// stream (acks may come in any order).
    pub async fn expect_acks(&mut self, ids: impl IntoIterator<Item = u64>, timeout: Duration) {
        let want: BTreeSet<u64> = ids.into_iter().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while !want.is_subset(&self.acked) {
            let got = tokio::select! {
                m = self.from_server.recv() => m,
                _ = tokio::time::sleep_until(deadline) => {
                    let missing: Vec<_> = want.difference(&self.acked).take(20).collect();
                    panic!(
                        "[hostile quic {}] timed out after {timeout:?}: {} of {} acks missing (first: {missing:?}); \
                         connection: {:?}; seen: {:?}",
                        self.local,
                        want.difference(&self.acked).count(),
                        want.len(),
                        self.conn.close_reason(),
                        self.seen.iter().rev().take(20).collect::<Vec<_>>()
                    );
                }
            };
            match got {
                Some(FromServer::Control(Frame::Ack { id })) => {
                    self.acked.insert(id);
                }
                Some(FromServer::Control(f)) => {
                    self.seen.push(format!("{f:?}"));
                    if !matches!(f, Frame::Unknown { .. } | Frame::Ping) {
                        panic!(
                            "[hostile quic {}] unexpected frame on the server's control stream: {f:?}",
                            self.local
                        );
                    }
                }
                Some(FromServer::Odd(what)) => {
                    panic!("[hostile quic {}] {what}", self.local)
                }
                None => panic!(
                    "[hostile quic {}] the server's streams ended before the acks; connection: {:?}",
                    self.local,
                    self.conn.close_reason()
                ),
            }
        }
    }

    pub async fn expect_ack(&mut self, id: u64) {
        self.expect_acks([id], TIMEOUT).await
    }

    /// Waits (up to `timeout`) for the server to close the connection with
    /// `code`; returns the reason phrase.
    pub async fn expect_closed(&self, code: u64, timeout: Duration) -> String {
        let err = tokio::time::timeout(timeout, self.conn.closed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "[hostile quic {}] the server did not close the connection within {timeout:?}",
                    self.local
                )
            });
        match err {
            ConnectionError::ApplicationClosed(c) => {
                let reason = String::from_utf8_lossy(&c.reason).into_owned();
                assert_eq!(
                    c.error_code.into_inner(),
                    code,
                    "[hostile quic {}] CONNECTION_CLOSE should carry code {code}; reason {reason:?}",
                    self.local
                );
                reason
            }
            other => panic!(
                "[hostile quic {}] expected an application close with code {code}, got: {other}",
                self.local
            ),
        }
    }

    /// The connection is still open.
    pub fn assert_open(&self) {
        if let Some(e) = self.conn.close_reason() {
            panic!(
                "[hostile quic {}] connection should still be open, but: {e}",
                self.local
            );
        }
    }

    /// Ends the chat with NO_ERROR and lets the CONNECTION_CLOSE leave.
    pub async fn close_politely(self) {
        self.conn.close(VarInt::from_u32(0), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }
}

// ---------------------------------------------------------------------------
// chat/2 over either transport
// ---------------------------------------------------------------------------

/// A hostile chat/2 peer over either transport (ALPN `chat/2` only),
/// presenting a client certificate or none: for the cases that read the
/// same on both (resumption, PROTOCOL.md §9.2–§9.6).
pub enum HostileV2 {
    /// Boxed: a TLS stream is much larger than a QUIC connection handle.
    Tcp(Box<HostileTcp>),
    Quic(HostileQuic),
}

impl HostileV2 {
    /// Connects over `t` presenting `identity` (none when `None`); has sent
    /// nothing yet (over QUIC: opened no stream).
    pub async fn connect(t: TransportKind, addr: &str, identity: Option<&Identity>) -> HostileV2 {
        match t {
            TransportKind::Tcp => HostileV2::Tcp(Box::new(
                HostileTcp::connect_as_identity(addr, ALPN_V2, identity).await,
            )),
            TransportKind::Quic => {
                HostileV2::Quic(HostileQuic::connect_as_identity(addr, ALPN_V2, identity).await)
            }
        }
    }

    /// Our address as the server sees it.
    pub fn local(&self) -> &str {
        match self {
            HostileV2::Tcp(h) => &h.local,
            HostileV2::Quic(h) => &h.local,
        }
    }

    /// Writes frame bytes where HELLO and RECEIVED go: on the connection
    /// (TCP), or on our control stream (QUIC; opened with these bytes the
    /// first time). A write failure is no error (the server may already
    /// have closed on us): what the server answers is checked after.
    pub async fn send_control(&mut self, bytes: &[u8]) {
        match self {
            HostileV2::Tcp(h) => h.send_lenient(bytes).await,
            HostileV2::Quic(h) => match h.control.as_mut() {
                None => h.open_control_with(bytes).await,
                Some(s) => {
                    if let Err(e) = s.write_all(bytes).await {
                        eprintln!("[hostile quic {}] control write failed: {e}", h.local);
                    }
                }
            },
        }
    }

    /// Sends message `id`, `body`, whole: an END frame (TCP), a stream
    /// (QUIC).
    pub async fn send_message(&mut self, id: u64, body: &[u8]) {
        match self {
            HostileV2::Tcp(h) => h.send(&end(id, body)).await,
            HostileV2::Quic(h) => h.send_message(id, body).await,
        }
    }

    /// The server's WELCOME, its first frame (PINGs aside).
    pub async fn expect_welcome(&mut self) -> Welcome {
        match self {
            HostileV2::Tcp(h) => h.expect_welcome().await,
            HostileV2::Quic(h) => h.expect_welcome().await,
        }
    }

    /// The server's next frame after its resuming WELCOME, which must be
    /// its RECEIVED (PINGs and unknown frames aside): `(below, ids)`.
    pub async fn expect_received(&mut self) -> (u64, Vec<u64>) {
        loop {
            let got = match self {
                HostileV2::Tcp(h) => match h.next(TIMEOUT).await {
                    Got::Frame(f) => Ok(f),
                    other => Err(format!("{other:?}; frames seen: {:?}", h.seen)),
                },
                HostileV2::Quic(h) => match h.next_from_server(TIMEOUT).await {
                    Some(FromServer::Control(f)) => Ok(f),
                    other => Err(format!(
                        "{other:?}; connection: {:?}",
                        h.conn.close_reason()
                    )),
                },
            };
            match got {
                Ok(Frame::Received { below, ids }) => return (below, ids),
                Ok(Frame::Ping | Frame::Unknown { .. }) => {}
                Ok(f) => panic!(
                    "[hostile {}] expected RECEIVED after WELCOME, got {f:?}",
                    self.local()
                ),
                Err(e) => panic!(
                    "[hostile {}] expected RECEIVED after WELCOME, got {e}",
                    self.local()
                ),
            }
        }
    }

    /// Waits for the ACK of our message `id` (nothing but other acks,
    /// PINGs and unknown frames may come first).
    pub async fn expect_ack(&mut self, id: u64) {
        match self {
            HostileV2::Tcp(h) => h.expect_ack(id).await,
            HostileV2::Quic(h) => h.expect_ack(id).await,
        }
    }

    /// Waits for the server to close the connection with `code`, sending
    /// no WELCOME (nor anything but PINGs, over TCP) first; returns the
    /// reason.
    pub async fn expect_closed(&mut self, code: u64) -> String {
        match self {
            HostileV2::Tcp(h) => {
                let reason = h.expect_close(code).await;
                h.expect_end().await;
                reason
            }
            HostileV2::Quic(h) => {
                let reason = h.expect_closed(code, TIMEOUT).await;
                while let Some(got) = h.next_from_server(Duration::ZERO).await {
                    if let FromServer::Control(Frame::Welcome { .. }) = got {
                        panic!(
                            "[hostile quic {}] the server closed with {code} after a WELCOME",
                            h.local
                        );
                    }
                }
                reason
            }
        }
    }

    /// The connection is still open (as far as we can tell without
    /// reading: over TCP, nothing but PINGs is waiting).
    pub async fn assert_open(&mut self) {
        match self {
            HostileV2::Tcp(h) => loop {
                match h.next(Duration::from_millis(100)).await {
                    Got::Timeout => return,
                    Got::Frame(Frame::Ping) => {}
                    other => panic!(
                        "[hostile tcp {}] connection should still be open, got {other:?}",
                        h.local
                    ),
                }
            },
            HostileV2::Quic(h) => h.assert_open(),
        }
    }
}
