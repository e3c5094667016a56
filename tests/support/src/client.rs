//! Starting `chat` clients: pinned to a fingerprint ([`start_client`]) or
//! trusting as asked ([`ClientBuilder`]); over one transport, or (without
//! `--transport`) over whichever the client's race picks
//! ([`ClientBuilder::auto`]).

use std::path::{Path, PathBuf};

use crate::TransportKind;
use crate::peer::{Launch, Peer};
use crate::temp::{TempDir, next_id};

/// `chat --mode client --transport T --addr ADDR --fingerprint FP --home <fresh> --json <extra>`.
/// Does not wait for anything.
pub fn start_client(t: TransportKind, addr: &str, fingerprint: &str, extra: &[&str]) -> Peer {
    start_client_with(t, Some(addr), fingerprint, extra, &[], true)
}

/// Like [`start_client`]; `addr: None` omits `--addr`, `mode_flag: false`
/// omits `--mode` (for the env fallbacks).
pub fn start_client_with(
    t: TransportKind,
    addr: Option<&str>,
    fingerprint: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
    mode_flag: bool,
) -> Peer {
    let home = TempDir::new("client-home");
    let mut args: Vec<String> = Vec::new();
    if mode_flag {
        args.extend(["--mode".into(), "client".into()]);
    }
    args.extend(["--transport".into(), t.name().into()]);
    if let Some(a) = addr {
        args.extend(["--addr".into(), a.into()]);
    }
    args.extend([
        "--fingerprint".into(),
        fingerprint.into(),
        "--home".into(),
        home.path_str(),
        "--json".into(),
    ]);
    let mut launch = Launch::new(format!("client/{}#{}", t.name(), next_id()), &[])
        .args(&args)
        .args(extra)
        .home(home);
    for (k, v) in envs {
        launch = launch.env(k, v);
    }
    launch.spawn()
}

/// A client that, unlike [`start_client`], pins nothing unless asked:
/// `chat --mode client [--transport T] --addr ADDR --home HOME [--json] <args>`.
/// Without [`ClientBuilder::home`] the client gets a fresh home of its own.
pub struct ClientBuilder {
    /// `None`: no `--transport` (the default, auto: QUIC, then TCP too).
    t: Option<TransportKind>,
    addr: String,
    home: Option<PathBuf>,
    args: Vec<String>,
    json: bool,
}

impl ClientBuilder {
    pub fn new(t: TransportKind, addr: &str) -> ClientBuilder {
        ClientBuilder::with(Some(t), addr)
    }

    /// A client started without `--transport`: the default, auto (QUIC
    /// first, TLS over TCP too if QUIC does not answer quickly).
    pub fn auto(addr: &str) -> ClientBuilder {
        ClientBuilder::with(None, addr)
    }

    fn with(t: Option<TransportKind>, addr: &str) -> ClientBuilder {
        ClientBuilder {
            t,
            addr: addr.to_string(),
            home: None,
            args: Vec::new(),
            json: true,
        }
    }

    /// Use (and share) this home directory; it stays the caller's.
    pub fn home(mut self, home: &Path) -> ClientBuilder {
        self.home = Some(home.to_path_buf());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> ClientBuilder {
        self.args.push(a.into());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, a: &[S]) -> ClientBuilder {
        self.args.extend(a.iter().map(|s| s.as_ref().to_string()));
        self
    }

    pub fn fingerprint(self, fp: &str) -> ClientBuilder {
        self.arg("--fingerprint").arg(fp)
    }

    pub fn accept_new(self) -> ClientBuilder {
        self.arg("--accept-new")
    }

    pub fn insecure(self) -> ClientBuilder {
        self.arg("--insecure")
    }

    /// Plain output for people instead of `--json`.
    pub fn plain(mut self) -> ClientBuilder {
        self.json = false;
        self
    }

    /// The command line (without the program) for a given home.
    pub fn command_args(&self, home: &Path) -> Vec<String> {
        let mut a: Vec<String> = vec!["--mode".into(), "client".into()];
        if let Some(t) = self.t {
            a.extend(["--transport".into(), t.name().into()]);
        }
        a.extend([
            "--addr".into(),
            self.addr.clone(),
            "--home".into(),
            home.to_str().expect("home path is not UTF-8").into(),
        ]);
        if self.json {
            a.push("--json".to_string());
        }
        a.extend(self.args.iter().cloned());
        a
    }

    pub fn spawn(self) -> Peer {
        let via = self.t.map_or("auto", TransportKind::name);
        let label = format!("client/{via}#{}", next_id());
        match &self.home {
            Some(home) => Launch::new(label, &[]).args(&self.command_args(home)),
            None => {
                let home = TempDir::new("client-home");
                Launch::new(label, &[])
                    .args(&self.command_args(home.path()))
                    .home(home)
            }
        }
        .spawn()
    }
}
