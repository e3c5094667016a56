//! Network namespaces for the tests that need a network of their own: the
//! `netfaults` suite (loss, cuts) and the `reach` suite (UDP blocked on the
//! way to the server).
//!
//! [`NetPair`] makes two fresh network namespaces `chat-<pid>-<n>-a` and
//! `…-b`, joined by a veth pair with private addresses that exist only
//! inside them (`10.200.<n>.1/24` in A, `10.200.<n>.2/24` in B; neither
//! namespace has any other interface than `lo` and its veth end, nor any
//! route, so no packet can leave them). Each namespace gets an nftables table
//! `inet chaos` with a chain `in` on the input hook; every fault is a rule
//! there, on the receiving side, so it is silent like a lossy or broken
//! wire (a drop on the output hook would instead fail the sender's
//! `sendmsg` with EPERM, which no real network does):
//!
//! * [`NetPair::set_loss`] drops a random `pct` % of the packets each
//!   namespace receives (`numgen random mod 100 < pct drop`), so each
//!   direction loses `pct` % (one drop point per direction, so the loss is
//!   not applied twice to one packet);
//! * [`NetPair::cut`] drops every packet either namespace receives: nothing
//!   gets through either way;
//! * [`NetPair::restore`] removes every rule;
//! * [`NetPair::set_rules`] puts any rules of the test's own on one side
//!   (say, drop or reject UDP to the server's port).
//!
//! Processes are started inside a namespace by [`NetPair::spawn`], a thin
//! wrapper around [`Peer::spawn`]: a short-lived thread joins
//! the namespace (`setns(2)`, what `ip netns exec` does) and spawns the
//! `chat` binary from there, so the child lives in the namespace while the
//! `Peer` plumbing (JSON events, diagnostics, kill on drop) is the shared one.
//!
//! Everything is removed on drop, even when the test panics. Namespaces
//! left behind by a test process that was killed outright are swept by the
//! next run (their owner pid is in the name).
//!
//! When namespaces or nftables cannot be used here (not root, `ip` or `nft`
//! missing, no kernel support), [`NetPair::new_or_skip`] prints a
//! `SKIPPED: <reason>` line on stderr (not captured by the test harness) and
//! returns `None`; the test then returns. Set `CHAT_NETFAULTS_REQUIRED=1` to
//! turn such a skip into a failure.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use crate::conversation::await_connected;
use crate::peer::{Launch, Peer};
use crate::process::ChatProcess;
use crate::server::{await_listening, check_listening_auto, default_server_args, server_args};
use crate::temp::TempDir;
use crate::{TIMEOUT, TransportKind};

/// Which end of a [`NetPair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Namespace A (the server's, by convention), address `10.200.<n>.1`.
    A,
    /// Namespace B (the client's), address `10.200.<n>.2`.
    B,
}

/// Numbers the pairs of this process (namespace names and subnets).
static NEXT: AtomicU32 = AtomicU32::new(0);
/// Numbers the clients started in namespaces (labels only).
static CLIENTS: AtomicU32 = AtomicU32::new(0);

const PREFIX: &str = "chat-";

/// Two network namespaces joined by a veth pair; see the module docs.
pub struct NetPair {
    pub ns_a: String,
    pub ns_b: String,
    /// The IPv4 address of A's veth end (no prefix length).
    pub addr_a: String,
    /// The IPv4 address of B's veth end (no prefix length).
    pub addr_b: String,
    /// Which namespaces exist (and must be removed on drop).
    created: Vec<String>,
}

/// Print a `SKIPPED:` line where the test harness does not capture it.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CHAT_NETFAULTS_REQUIRED").is_some_and(|v| v == "1") {
        panic!("{test}: network-fault test cannot run ({reason}) and CHAT_NETFAULTS_REQUIRED=1");
    }
    // Written straight to the stderr handle: libtest captures `eprintln!`
    // but not this, so the line shows in a plain `cargo test` run.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// The path of a system tool: found on PATH, or in the sbin directories
/// (which a non-login PATH may lack); the bare name if it is nowhere.
fn tool(name: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| name.to_string())
}

/// Run a command (`ip` and `nft` are looked up with [`tool`]); Ok(stdout)
/// if it exits 0, Err(description) otherwise.
fn run(cmd: &[&str]) -> Result<String, String> {
    let program = match cmd[0] {
        "ip" | "nft" => tool(cmd[0]),
        other => other.to_string(),
    };
    let out = Command::new(program)
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here, if they cannot (cheap checks only).
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces and nftables need root)".into());
    }
    if run(&["ip", "-V"]).is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    if run(&["nft", "--version"]).is_err() {
        return Some("`nft` (nftables) is not installed".into());
    }
    None
}

/// Remove namespaces named by this scheme whose owning test process is gone
/// (left behind by a run that was killed before it could clean up).
fn sweep_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(n), Some(side), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || n.parse::<u32>().is_err() || !["a", "b"].contains(&side) {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

impl NetPair {
    /// Set up a pair, or print `SKIPPED: <test>: <reason>` and return None
    /// when this machine cannot.
    pub fn new_or_skip(test: &str) -> Option<NetPair> {
        if let Some(reason) = unavailable() {
            skip(test, &reason);
            return None;
        }
        match NetPair::new() {
            Ok(net) => Some(net),
            Err(reason) => {
                skip(test, &reason);
                None
            }
        }
    }

    /// Set up a pair; Err(reason) if the machine does not allow it (anything
    /// created so far is removed).
    pub fn new() -> Result<NetPair, String> {
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let subnet = format!("10.200.{}", n % 250);
        let mut net = NetPair {
            ns_a: format!("{PREFIX}{pid}-{n}-a"),
            ns_b: format!("{PREFIX}{pid}-{n}-b"),
            addr_a: format!("{subnet}.1"),
            addr_b: format!("{subnet}.2"),
            created: Vec::new(),
        };
        for ns in [net.ns_a.clone(), net.ns_b.clone()] {
            run(&["ip", "netns", "add", &ns])
                .map_err(|e| format!("cannot create a network namespace: {e}"))?;
            net.created.push(ns);
        }
        let (a, b) = (net.ns_a.as_str(), net.ns_b.as_str());
        let cidr_a = format!("{}/24", net.addr_a);
        let cidr_b = format!("{}/24", net.addr_b);
        // The veth pair is created inside A with its peer end moved straight
        // into B: no interface ever appears in the host's namespace.
        // gso_max_segs 1: TCP and UDP hand the link one MTU-sized packet at
        // a time (no 64 KiB GSO super-packets), so a drop is one packet's
        // worth as on a real wire.
        let steps: [&[&str]; 9] = [
            &[
                "ip", "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
                "netns", b,
            ],
            &["ip", "-n", a, "addr", "add", &cidr_a, "dev", "veth0"],
            &["ip", "-n", b, "addr", "add", &cidr_b, "dev", "veth1"],
            &["ip", "-n", a, "link", "set", "lo", "up"],
            &["ip", "-n", b, "link", "set", "lo", "up"],
            &["ip", "-n", a, "link", "set", "veth0", "gso_max_segs", "1"],
            &["ip", "-n", b, "link", "set", "veth1", "gso_max_segs", "1"],
            &["ip", "-n", a, "link", "set", "veth0", "up"],
            &["ip", "-n", b, "link", "set", "veth1", "up"],
        ];
        for step in steps {
            run(step).map_err(|e| format!("cannot set up the veth link: {e}"))?;
        }
        for ns in [a, b] {
            net.nft(
                ns,
                "add table inet chaos; \
                 add chain inet chaos in { type filter hook input priority 0; policy accept; }",
            )
            .map_err(|e| format!("nftables does not work in a namespace: {e}"))?;
        }
        Ok(net)
    }

    /// The namespace of a side.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.ns_a,
            Side::B => &self.ns_b,
        }
    }

    /// The address of a side's veth end.
    pub fn addr(&self, side: Side) -> &str {
        match side {
            Side::A => &self.addr_a,
            Side::B => &self.addr_b,
        }
    }

    /// Run one nft script (`;`-separated commands, applied as one
    /// transaction) inside namespace `ns`.
    fn nft(&self, ns: &str, script: &str) -> Result<String, String> {
        run(&["ip", "netns", "exec", ns, &tool("nft"), script])
    }

    fn nft_both(&self, script: &str) {
        for ns in [&self.ns_a, &self.ns_b] {
            if let Err(e) = self.nft(ns, script) {
                panic!("nft in {ns}: {e}");
            }
        }
    }

    /// Each namespace drops a random `pct` % of the packets it receives
    /// (so each direction loses `pct` %); 0 removes the loss. Replaces any
    /// earlier rule (including a cut).
    pub fn set_loss(&self, pct: u32) {
        assert!(pct <= 100, "loss percentage {pct} > 100");
        let mut script = String::from("flush chain inet chaos in");
        if pct > 0 {
            script +=
                &format!("; add rule inet chaos in numgen random mod 100 < {pct} counter drop");
        }
        self.nft_both(&script);
    }

    /// Cut the link: both namespaces drop every packet they receive, so
    /// nothing gets through either way.
    pub fn cut(&self) {
        self.nft_both("flush chain inet chaos in; add rule inet chaos in counter drop");
    }

    /// Remove every rule (no loss, link up).
    pub fn restore(&self) {
        self.set_loss(0);
    }

    /// Replaces the rules of one side's input chain with `rules` (nft rule
    /// statements for `add rule inet chaos in …`, applied as one
    /// transaction); none removes them all.
    pub fn set_rules(&self, side: Side, rules: &[&str]) {
        let mut script = String::from("flush chain inet chaos in");
        for rule in rules {
            script += &format!("; add rule inet chaos in {rule}");
        }
        let ns = self.ns(side);
        if let Err(e) = self.nft(ns, &script) {
            panic!("nft in {ns}: {e}");
        }
    }

    /// How many packets the current rules of both namespaces have dropped
    /// (counters start at 0 with each [`NetPair::set_loss`] / [`NetPair::cut`]).
    pub fn dropped(&self) -> u64 {
        [Side::A, Side::B]
            .iter()
            .map(|&side| {
                let listing = self
                    .nft(self.ns(side), "list chain inet chaos in")
                    .unwrap_or_else(|e| panic!("{e}"));
                // `... counter packets N bytes M drop`
                listing
                    .split("counter packets ")
                    .skip(1)
                    .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// The current ruleset of one side (for diagnostics).
    pub fn ruleset(&self, side: Side) -> String {
        self.nft(self.ns(side), "list ruleset")
            .unwrap_or_else(|e| e)
    }

    /// Spawn `launch` (the `chat` binary) inside a side's namespace.
    pub fn spawn(&self, side: Side, launch: Launch) -> Peer {
        let ns = self.ns(side).to_string();
        let path = format!("/run/netns/{ns}");
        let handle = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        // A throw-away thread joins the namespace (a network namespace
        // belongs to a thread, and a child process inherits its creator's),
        // spawns the child, and ends: the test's own thread never moves.
        let spawner = thread::spawn(move || {
            // SAFETY: setns only reads the descriptor, which `handle` keeps
            // open for the duration of the call.
            let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                panic!("setns({path}) failed: {}", std::io::Error::last_os_error());
            }
            launch.spawn()
        });
        match spawner.join() {
            Ok(peer) => peer,
            Err(e) => std::panic::resume_unwind(e),
        }
    }

    /// `chat --mode server --transport T --bind <A's address> --port 0
    /// --home <fresh> --json <extra>` in namespace A, waiting for
    /// `listening`. Returns (server, addr, fingerprint).
    pub fn start_server(&self, t: TransportKind, extra: &[&str]) -> (Peer, String, String) {
        let home = TempDir::new("server-home");
        let launch = Launch::new(format!("server/{}@{}", t.name(), self.ns_a), &[])
            .args(&server_args(t, &self.addr_a, &home, true))
            .args(extra)
            .home(home);
        let mut server = self.spawn(Side::A, launch);
        let (addr, fp) = await_listening(&mut server, t);
        if !addr.starts_with(&format!("{}:", self.addr_a)) {
            server.fail(&format!(
                "server should listen on {} (its --bind): {addr}",
                self.addr_a
            ));
        }
        (server, addr, fp)
    }

    /// `chat --mode server --bind <A's address> --port 0 --home <fresh>
    /// --json <extra>` in namespace A, without `--transport` (so on QUIC and
    /// TCP at once, the default), waiting for `listening`. Returns (server,
    /// addr, fingerprint).
    pub fn start_default_server(&self, extra: &[&str]) -> (Peer, String, String) {
        let home = TempDir::new("server-home");
        let launch = Launch::new(format!("server/auto@{}", self.ns_a), &[])
            .args(&default_server_args(&self.addr_a, home.path(), 0))
            .args(extra)
            .home(home);
        let mut server = self.spawn(Side::A, launch);
        let ev = server.wait_event("listening", TIMEOUT);
        let (addr, fp) = check_listening_auto(&mut server, &ev);
        if !addr.starts_with(&format!("{}:", self.addr_a)) {
            server.fail(&format!(
                "server should listen on {} (its --bind): {addr}",
                self.addr_a
            ));
        }
        (server, addr, fp)
    }

    /// `chat --mode client --addr ADDR --fingerprint FP --home <fresh> --json
    /// <extra>` in namespace B, without `--transport` (the default, auto).
    /// Does not wait for anything.
    pub fn start_default_client(&self, addr: &str, fingerprint: &str, extra: &[&str]) -> Peer {
        self.start_client_via(None, addr, fingerprint, extra)
    }

    /// `chat --mode client --transport T --addr ADDR --fingerprint FP --home
    /// <fresh> --json <extra>` in namespace B. Does not wait for anything.
    pub fn start_client(
        &self,
        t: TransportKind,
        addr: &str,
        fingerprint: &str,
        extra: &[&str],
    ) -> Peer {
        self.start_client_via(Some(t), addr, fingerprint, extra)
    }

    /// A client in namespace B over `t`, or without `--transport` (`None`).
    fn start_client_via(
        &self,
        t: Option<TransportKind>,
        addr: &str,
        fingerprint: &str,
        extra: &[&str],
    ) -> Peer {
        let home = TempDir::new("client-home");
        let via = t.map_or("auto", TransportKind::name);
        let mut args = vec!["--mode", "client"];
        if let Some(t) = t {
            args.extend(["--transport", t.name()]);
        }
        let home_s = home.path_str();
        args.extend([
            "--addr",
            addr,
            "--fingerprint",
            fingerprint,
            "--home",
            &home_s,
            "--json",
        ]);
        let launch = Launch::new(
            format!(
                "client/{via}@{}#{}",
                self.ns_b,
                CLIENTS.fetch_add(1, Ordering::SeqCst)
            ),
            &args,
        )
        .args(extra)
        .home(home);
        self.spawn(Side::B, launch)
    }

    /// A server in namespace A and a client in B, both started with
    /// `extra`, and both reporting `connected`. Returns (server, client,
    /// addr, fingerprint).
    pub fn start_chat(&self, t: TransportKind, extra: &[&str]) -> (Peer, Peer, String, String) {
        let (mut server, addr, fp) = self.start_server(t, extra);
        let mut client = self.start_client(t, &addr, &fp, extra);
        await_connected(&mut server, &mut client, t, &fp);
        (server, client, addr, fp)
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace that a (killed, not yet reaped) process still
        // holds only unlinks its name; the kernel frees it, and the veth
        // pair with it, when the last process leaves.
        for ns in self.created.drain(..) {
            if let Err(e) = run(&["ip", "netns", "del", &ns]) {
                let _ = writeln!(std::io::stderr(), "warning: cleanup: {e}");
            }
        }
    }
}
