//! Cases that drive the project's own transport and session code in-process.
//!
//! Server and client each run on their own OS thread with their own
//! `current_thread` runtime, as the `chat` binary runs one such runtime per
//! process. The server is the real one: `chat::server::run` on a bound
//! `Listener`, its output on a writer thread as in the binary (a [`Probe`]
//! sink that counts what arrives). The client is `transport::connect`,
//! chat/2's opening (HELLO, then the server's WELCOME, as the binary's
//! client does it), then a [`Session`] as [`Role::Client`], fed by a
//! scripted driver through the same `UserIo` input channel that standard input feeds in the
//! binary; its [`Probe`] output, called in place, hands each
//! acknowledgement (with the RTT the session computed) back to the driver.
//!
//! All RTTs are the session's own: from the moment it takes the message from
//! its input and hands it to the transport until it processes the ACK.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use chat::TransportKind;
use chat::protocol::codec::{Frame, Version};
use chat::protocol::{MessageId, close_code};
use chat::server;
use chat::session::{Role, Session};
use chat::transport::{self, Event, Limits, Link, Listener, PeerInfo, Transport};
use chat::trust::allow::AllowList;
use chat::trust::identity::{self, Identity};
use chat::trust::tls::{self, FingerprintVerifier, ServerTrust};
use chat::ui::input::UserInput;
use chat::ui::output::{Output, Shown, Sink};
use chat::ui::{Quit, UserIo};
use tokio::sync::mpsc;

use crate::util::{CpuClock, TempDir, spawn_runtime, thread_cpu_ns, thread_id};

/// Same slack as the binary's stdin reader (`chat::ui::input::spawn_stdin`).
const INPUT_QUEUE: usize = 256;
/// How long the driver waits for any single acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a whole case may take before it is abandoned.
const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// A server identity on disk, shared by every library case of a run.
pub struct Setup {
    dir: TempDir,
    limits: Limits,
}

impl Setup {
    /// Creates a fresh server identity and limits large enough for the bulk
    /// cases (the default 16 MiB would reject a 64 MiB message).
    pub fn new(max_message_size: u64) -> Result<Setup> {
        let dir = TempDir::new("lib")?;
        identity::write_new(dir.path(), &[], true).context("cannot create an identity")?;
        Ok(Setup {
            dir,
            limits: Limits {
                max_message_size,
                idle_timeout: Duration::from_secs(10),
            },
        })
    }

    fn identity_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn load_identity(dir: &std::path::Path) -> Result<Identity> {
    Identity::load(
        &dir.join(identity::CERT_FILE),
        &dir.join(identity::KEY_FILE),
    )
    .context("cannot load the bench identity")
}

/// An acknowledgement as the session reported it.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub id: MessageId,
    /// The round-trip time the session computed.
    pub rtt: Duration,
    /// When the session reported it.
    pub at: Instant,
}

/// What the recording output passes to the driver.
enum Note {
    Ack(Acked),
    Rejected(MessageId, String),
    Closed(String),
}

/// What the server side saw, for a sanity check of each case.
#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Chats that ended abnormally, with why.
    abnormal: std::sync::Mutex<Vec<String>>,
}

/// A [`Sink`] that renders nothing: it forwards acknowledgements to the
/// driver and counts received messages.
struct Probe {
    notes: Option<mpsc::UnboundedSender<Note>>,
    counts: Arc<Counts>,
}

impl Probe {
    fn note(&self, note: Note) {
        if let Some(tx) = &self.notes {
            let _ = tx.send(note);
        }
    }
}

impl Sink for Probe {
    fn show(&mut self, shown: Shown) {
        match shown {
            Shown::Ack { id, rtt } => {
                let at = Instant::now();
                self.note(Note::Ack(Acked { id, rtt, at }));
            }
            Shown::Rejected { id, reason, .. } => self.note(Note::Rejected(id, reason)),
            Shown::Message { body, .. } => {
                self.counts.messages.fetch_add(1, Ordering::Relaxed);
                self.counts
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            Shown::Disconnected { why, .. } => {
                if !why.is_normal()
                    && let Ok(mut abnormal) = self.counts.abnormal.lock()
                {
                    abnormal.push(why.describe());
                }
                self.note(Note::Closed(why.describe()));
            }
            Shown::Error(message) => self.note(Note::Closed(format!("error: {message}"))),
            Shown::Skipped { events, .. } => {
                self.note(Note::Closed(format!("{events} events skipped")));
            }
            _ => {}
        }
    }
}

/// The scripted user of the client side.
pub struct Driver {
    /// The session's input: what stdin feeds in the binary.
    pub input: mpsc::Sender<UserInput>,
    pub acks: Acks,
    /// The server thread's kernel id, to read its CPU time.
    pub server_tid: i64,
}

/// Acknowledgements in the order the session reported them.
pub struct Acks {
    notes: mpsc::UnboundedReceiver<Note>,
    /// Set once and moved only when it fires (see [`Acks::next`]).
    watchdog: std::pin::Pin<Box<tokio::time::Sleep>>,
    last: tokio::time::Instant,
}

impl Acks {
    fn new(notes: mpsc::UnboundedReceiver<Note>) -> Acks {
        Acks {
            notes,
            watchdog: Box::pin(tokio::time::sleep(ACK_TIMEOUT)),
            last: tokio::time::Instant::now(),
        }
    }

    /// The next acknowledgement; a rejection or the end of the chat is an
    /// error, as is waiting longer than [`ACK_TIMEOUT`]. (Not a timeout per
    /// call: a timer set per ack costs the client's runtime an extra wake-up
    /// in the middle of the round trips being measured.)
    pub async fn next(&mut self) -> Result<Acked> {
        let note = loop {
            tokio::select! {
                biased;
                note = self.notes.recv() => break note,
                () = self.watchdog.as_mut() => {
                    let due = self.last + ACK_TIMEOUT;
                    if tokio::time::Instant::now() >= due {
                        bail!("no acknowledgement within {ACK_TIMEOUT:?}");
                    }
                    self.watchdog.as_mut().reset(due);
                }
            }
        };
        self.last = tokio::time::Instant::now();
        match note {
            None => bail!("the session ended"),
            Some(Note::Ack(a)) => Ok(a),
            Some(Note::Rejected(id, why)) => bail!("message {id} was rejected: {why}"),
            Some(Note::Closed(why)) => bail!("the chat ended early: {why}"),
        }
    }
}

/// Sends one message as the user would.
pub async fn send(input: &mpsc::Sender<UserInput>, body: Bytes) -> Result<()> {
    input
        .send(UserInput::Message(body))
        .await
        .map_err(|_| anyhow!("the session stopped taking input"))
}

/// What the server side saw.
pub struct ServerReport {
    pub messages: u64,
    pub bytes: u64,
}

/// A running server: `chat::server::run` on its own thread.
struct Server {
    addr: SocketAddr,
    tid: i64,
    worker: crate::util::Worker<ServerReport>,
    /// Ctrl-C, for the server: it stops once the case is done with it.
    quit: Quit,
}

impl Server {
    /// Stops the server and checks that every chat it had ended normally.
    fn stop(self) -> Result<ServerReport> {
        self.quit.trigger();
        self.worker.wait(Duration::from_secs(30))
    }
}

/// Starts a server thread running `chat::server::run`, exactly as `chat
/// --mode server` does (its user types nothing).
fn spawn_server(kind: TransportKind, setup: &Setup) -> Result<Server> {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (dir, limits) = (setup.identity_dir(), setup.limits.clone());
    let quit = Quit::new();
    let shutdown = quit.clone();
    let worker = spawn_runtime("bench-server", move || async move {
        let identity = load_identity(&dir)?;
        let bind: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let listener = Listener::bind(&[kind], bind, &identity, &limits).await?;
        let _ = ready_tx.send((listener.local_addr(), thread_id()));
        let counts = Arc::new(Counts::default());
        let sink = Probe {
            notes: None,
            counts: counts.clone(),
        };
        let (out, output) = Output::spawn(|_| sink);
        // The sender is kept so that input does not read as closed.
        let (_input_tx, input) = mpsc::channel(1);
        let io = UserIo {
            input,
            input_open: false,
            out,
        };
        let config = server::Config {
            limits,
            allow: AllowList::new(Vec::new(), None),
            resume_window: Duration::ZERO,
        };
        server::run(listener, config, io, shutdown).await;
        output.close(Duration::from_secs(5));
        let abnormal = counts
            .abnormal
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        ensure!(
            abnormal.is_empty(),
            "server side: a chat ended abnormally: {}",
            abnormal.join("; ")
        );
        Ok(ServerReport {
            messages: counts.messages.load(Ordering::Relaxed),
            bytes: counts.bytes.load(Ordering::Relaxed),
        })
    })?;
    match ready.recv_timeout(Duration::from_secs(10)) {
        Ok((addr, tid)) => Ok(Server {
            addr,
            tid,
            worker,
            quit,
        }),
        // The server failed before it could listen: its error says why.
        Err(_) => Err(worker
            .wait(Duration::from_secs(5))
            .err()
            .unwrap_or_else(|| anyhow!("the server stopped before listening"))),
    }
}

/// The server identity and client TLS configuration the library cases use,
/// for a bare TLS ping-pong with the same cryptography.
pub fn tls_parts(setup: &Setup) -> Result<(Identity, rustls::ClientConfig)> {
    Ok((load_identity(&setup.identity_dir())?, client_tls()?))
}

/// The client's TLS configuration: a client without identity that accepts
/// any server whose handshake signature is valid (the pinning itself costs a
/// hash compare, nothing measurable).
fn client_tls() -> Result<rustls::ClientConfig> {
    Ok(tls::client_config(
        FingerprintVerifier::new(ServerTrust::AnyValidSignature),
        None,
    )?)
}

/// Runs one chat: a server thread and a client thread; `scenario` plays the
/// client's user. Returns the scenario's result and what the server got.
pub fn run_chat<R, F, Fut>(
    kind: TransportKind,
    setup: &Setup,
    scenario: F,
) -> Result<(R, ServerReport)>
where
    R: Send + 'static,
    F: FnOnce(Driver) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
{
    let server = spawn_server(kind, setup)?;
    let (addr, server_tid) = (server.addr, server.tid);
    let limits = setup.limits.clone();
    let client = spawn_runtime("bench-client", move || async move {
        let config = client_tls()?;
        let (mut link, peer) = transport::connect(kind, addr, config, &limits).await?;
        let idle = open(&mut link, &peer, &limits).await?;
        chat_as_client(link, idle, server_tid, scenario).await
    })?;
    let result = client.wait(CASE_TIMEOUT);
    let report = server.stop()?;
    Ok((result?, report))
}

/// A [`Session`] as the client, with the scenario as its user. When the
/// scenario returns, input ends, and the session closes the chat normally
/// once every message is acknowledged, as the binary does at end of stdin.
async fn chat_as_client<T, R, F, Fut>(
    mut transport: T,
    idle_timeout: Duration,
    server_tid: i64,
    scenario: F,
) -> Result<R>
where
    T: Transport,
    F: FnOnce(Driver) -> Fut,
    Fut: Future<Output = Result<R>>,
{
    let (input_tx, input) = mpsc::channel(INPUT_QUEUE);
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let mut quit = Quit::new();
    let mut session = Session::new(Role::Client, idle_timeout);
    let mut io = UserIo {
        input,
        input_open: true,
        out: Output::inline(Probe {
            notes: Some(notes_tx),
            counts: Arc::default(),
        }),
    };
    let driver = Driver {
        input: input_tx,
        acks: Acks::new(notes),
        server_tid,
    };
    // The driver is dropped when the scenario returns: that is end of input.
    let (outcome, result) = tokio::join!(
        session.run_once(&mut transport, &mut io, &mut quit),
        scenario(driver)
    );
    transport.finish().await;
    let result = result?;
    ensure!(
        outcome.disconnect.is_normal() && outcome.unacked.is_empty(),
        "client side: the chat ended abnormally: {} (unacked: {})",
        outcome.disconnect.describe(),
        outcome.unacked.len()
    );
    Ok(result)
}

/// rtt: `n` sequential messages of `size` bytes (each sent only once the
/// previous one is acknowledged), after `warmup` more.
pub fn rtt(
    kind: TransportKind,
    setup: &Setup,
    size: usize,
    warmup: usize,
    n: usize,
) -> Result<crate::floor::PingPong> {
    let (pingpong, server) = run_chat(kind, setup, move |mut d| async move {
        let body = Bytes::from(vec![b'x'; size]);
        let mut rtts = Vec::with_capacity(n);
        let mut cpu = CpuClock::new(d.server_tid);
        for i in 0..warmup + n {
            if i == warmup {
                cpu.start();
            }
            send(&d.input, body.clone()).await?;
            let ack = d.acks.next().await?;
            ensure!(
                ack.id == i as u64,
                "ack for {} while waiting for {i}",
                ack.id
            );
            if i >= warmup {
                rtts.push(ack.rtt);
            }
        }
        let cpu = cpu.stop();
        Ok(crate::floor::PingPong { rtts, cpu })
    })?;
    ensure!(
        server.messages == (warmup + n) as u64,
        "server got {} messages",
        server.messages
    );
    Ok(pingpong)
}

/// What the rate case measured.
pub struct Rate {
    pub messages: usize,
    pub elapsed: Duration,
    pub client_cpu: Option<Duration>,
    pub server_cpu: Option<Duration>,
}

/// rate: `n` messages of `size` bytes handed to the session as fast as it
/// takes them; timed from the first hand-over to the last acknowledgement.
/// CPU time is each side's runtime thread over the same window. A pipelined
/// warm-up of `n / 10` messages runs first.
pub fn rate(kind: TransportKind, setup: &Setup, size: usize, n: usize) -> Result<Rate> {
    let warmup = n / 10;
    let (rate, server) = run_chat(kind, setup, move |d| async move {
        let Driver {
            input,
            mut acks,
            server_tid,
        } = d;
        let body = Bytes::from(vec![b'r'; size]);
        let burst = |count: usize| {
            let (input, body) = (&input, &body);
            async move {
                for _ in 0..count {
                    send(input, body.clone()).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        };
        tokio::try_join!(burst(warmup), async {
            for _ in 0..warmup {
                acks.next().await?;
            }
            Ok(())
        })?;
        let me = thread_id();
        let cpu0 = (thread_cpu_ns(me), thread_cpu_ns(server_tid));
        let t0 = Instant::now();
        let ((), last) = tokio::try_join!(burst(n), async {
            let mut last = t0;
            for _ in 0..n {
                last = acks.next().await?.at;
            }
            Ok(last)
        })?;
        let cpu1 = (thread_cpu_ns(me), thread_cpu_ns(server_tid));
        let delta =
            |a: Option<u64>, b: Option<u64>| Some(Duration::from_nanos(b?.checked_sub(a?)?));
        Ok(Rate {
            messages: n,
            elapsed: last - t0,
            client_cpu: delta(cpu0.0, cpu1.0),
            server_cpu: delta(cpu0.1, cpu1.1),
        })
    })?;
    ensure!(
        server.messages == (warmup + n) as u64,
        "server got {} messages",
        server.messages
    );
    Ok(rate)
}

/// bulk: `reps` messages of `size` bytes, one at a time; the time from
/// hand-over to acknowledgement of each.
pub fn bulk(kind: TransportKind, setup: &Setup, size: usize, reps: usize) -> Result<Vec<Duration>> {
    let (times, server) = run_chat(kind, setup, move |mut d| async move {
        // Built before the clock starts; `Bytes` clones share it, so the
        // transport gets the body without a copy, as from the stdin reader.
        let body = Bytes::from(vec![b'b'; size]);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            send(&d.input, body.clone()).await?;
            times.push(d.acks.next().await?.rtt);
        }
        Ok(times)
    })?;
    ensure!(
        server.bytes == (size * reps) as u64,
        "server got {} bytes",
        server.bytes
    );
    Ok(times)
}

/// What the head-of-line case measured.
pub struct Hol {
    /// RTTs of the small messages.
    pub small: Vec<Duration>,
    /// Small messages acknowledged before the big one was.
    pub during: usize,
    /// The big message's RTT.
    pub big: Duration,
}

/// hol: one message of `big` bytes, then `n` messages of `small` bytes, one
/// every `gap`, while the big one is in flight.
pub fn hol(
    kind: TransportKind,
    setup: &Setup,
    big: usize,
    small: usize,
    n: usize,
    gap: Duration,
) -> Result<Hol> {
    let (hol, _) = run_chat(kind, setup, move |d| async move {
        let Driver {
            input, mut acks, ..
        } = d;
        send(&input, Bytes::from(vec![b'b'; big])).await?;
        let body = Bytes::from(vec![b's'; small]);
        let mut tick = tokio::time::interval(gap);
        // Keep the spacing after a late tick rather than catching up in a
        // burst: these model a person typing while a file goes out.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        for _ in 0..n {
            tick.tick().await;
            send(&input, body.clone()).await?;
        }
        let (mut small_rtts, mut during, mut big_rtt) = (Vec::with_capacity(n), 0, None);
        for _ in 0..=n {
            let ack = acks.next().await?;
            if ack.id == 0 {
                big_rtt = Some(ack.rtt);
            } else {
                small_rtts.push(ack.rtt);
                if big_rtt.is_none() {
                    during += 1;
                }
            }
        }
        // Acks that come after the big one's say nothing about head-of-line
        // blocking (the big one finished too soon, or the small ones were not
        // sent while it was in flight): no figures rather than wrong ones.
        ensure!(
            during == n,
            "only {during} of {n} small messages were acknowledged while the big one was in flight"
        );
        Ok(Hol {
            small: small_rtts,
            during,
            big: big_rtt.context("no ack for the big message")?,
        })
    })?;
    Ok(hol)
}

/// Opens the chat as the binary's client does (`open` in
/// src/client/mod.rs): on chat/2, HELLO, then the server's WELCOME. Returns
/// the idle timeout agreed with the server.
async fn open(link: &mut Link, peer: &PeerInfo, limits: &Limits) -> Result<Duration> {
    if peer.version == Version::V1 {
        return Ok(limits.idle_timeout);
    }
    link.send_control(Frame::Hello {
        idle_timeout_ms: transport::millis(limits.idle_timeout),
        token: None,
    });
    link.flush();
    match tokio::time::timeout(ACK_TIMEOUT, link.next_event()).await {
        Ok(Event::Welcome {
            idle_timeout_ms, ..
        }) => {
            let idle = transport::agreed_idle_timeout(limits.idle_timeout, idle_timeout_ms);
            link.set_idle_timeout(idle);
            Ok(idle)
        }
        Ok(other) => bail!("the server answered HELLO with {other:?}"),
        Err(_) => bail!("no WELCOME within {ACK_TIMEOUT:?}"),
    }
}

/// connect: `warmup + n` connections one after the other, each timed from
/// the call to `connect` until the chat is open (the handshake, then on
/// chat/2 HELLO and WELCOME: the client's `connected` event follows at
/// once), then closed normally before the next.
pub fn connect(
    kind: TransportKind,
    setup: &Setup,
    warmup: usize,
    n: usize,
) -> Result<Vec<Duration>> {
    let server = spawn_server(kind, setup)?;
    let addr = server.addr;
    let limits = setup.limits.clone();
    let client = spawn_runtime("bench-client", move || async move {
        // Built once, as the binary builds it before its connect loop.
        let config = client_tls()?;
        let mut times = Vec::with_capacity(n);
        for i in 0..warmup + n {
            let t0 = Instant::now();
            let (mut link, peer) = transport::connect(kind, addr, config.clone(), &limits).await?;
            open(&mut link, &peer, &limits).await?;
            let elapsed = t0.elapsed();
            leave(link).await;
            if i >= warmup {
                times.push(elapsed);
            }
        }
        Ok(times)
    })?;
    let times = client.wait(CASE_TIMEOUT);
    server.stop()?;
    times
}

/// Ends a chat from the client side as `/quit` does.
async fn leave<T: Transport>(mut transport: T) {
    transport
        .close(close_code::NO_ERROR, "the client left")
        .await;
    transport.finish().await;
}
