//! What a home holds and the commands that manage it: identities and their
//! fingerprints, `known_hosts`, file modes, `chat id` and `chat cert`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::TIMEOUT;
use crate::peer::{Peer, run_chat};

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_fingerprint(s: &str) -> bool {
    match s.strip_prefix("sha256:") {
        Some(hex) => {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

/// Every `sha256:<64 hex>` in `text`, in order.
pub fn fingerprints_in(text: &str) -> Vec<String> {
    text.match_indices("sha256:")
        .map(|(i, _)| text[i..].chars().take(7 + 64).collect::<String>())
        .filter(|c| is_fingerprint(c))
        .collect()
}

/// The `known_hosts` file of a client home.
pub fn known_hosts_path(home: &Path) -> PathBuf {
    home.join("known_hosts")
}

/// The text of a home's `known_hosts` ("" when there is none).
pub fn known_hosts_text(home: &Path) -> String {
    match std::fs::read_to_string(known_hosts_path(home)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read {}: {e}", known_hosts_path(home).display()),
    }
}

/// One entry of `known_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHost {
    /// 1-based line number.
    pub line: usize,
    pub host: String,
    pub fingerprint: String,
}

/// The entries of a home's `known_hosts` (none when there is no file).
/// Every line must be a `#` comment, blank, or `HOST:PORT sha256:<hex>`.
pub fn known_hosts(home: &Path) -> Vec<KnownHost> {
    let text = known_hosts_text(home);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = l.split_whitespace().collect();
        assert!(
            fields.len() == 2 && is_fingerprint(fields[1]) && fields[0].contains(':'),
            "known_hosts line {} should be `HOST:PORT sha256:<hex>`: {line:?}\nwhole file:\n{text}",
            i + 1
        );
        out.push(KnownHost {
            line: i + 1,
            host: fields[0].to_string(),
            fingerprint: fields[1].to_string(),
        });
    }
    out
}

/// Assert that `known_hosts` has exactly these (host, fingerprint) entries
/// (in any order), after a `#` comment header.
pub fn assert_known_hosts(home: &Path, want: &[(&str, &str)]) {
    let text = known_hosts_text(home);
    let mut got: Vec<(String, String)> = known_hosts(home)
        .into_iter()
        .map(|e| (e.host, e.fingerprint))
        .collect();
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(h, f)| (h.to_string(), f.to_string()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "known_hosts entries differ; whole file:\n{text}");
    if !want.is_empty() {
        assert!(
            text.starts_with('#'),
            "known_hosts should start with a `#` comment header:\n{text}"
        );
    }
}

/// `chat id --home HOME <extra>`: exit status and the (role, fingerprint)
/// lines it printed, e.g. ("client", "sha256:…").
pub fn chat_id(home: &Path, extra: &[&str]) -> (ExitStatus, Vec<(String, String)>, Peer) {
    let home_s = home.to_str().expect("home path is not UTF-8");
    let mut args = vec!["id", "--home", home_s];
    args.extend_from_slice(extra);
    let (st, p) = run_chat("chat id", &args, TIMEOUT);
    let lines = p
        .stdout_lines()
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let role = f.next().unwrap_or_default().to_string();
            let fp = f.next().unwrap_or_default().to_string();
            assert!(
                is_fingerprint(&fp) && f.next().is_none(),
                "`chat id` lines should be `ROLE sha256:<hex>`, got {l:?}"
            );
            (role, fp)
        })
        .collect();
    (st, lines, p)
}

/// The client identity of `home` (created if needed), from `chat id`.
pub fn client_fingerprint(home: &Path) -> String {
    let (st, lines, p) = chat_id(home, &[]);
    assert_eq!(
        st.code(),
        Some(0),
        "`chat id` should exit 0, got {st}; stderr:\n{}",
        p.stderr_text()
    );
    lines
        .iter()
        .find(|(role, _)| role == "client")
        .map(|(_, fp)| fp.clone())
        .unwrap_or_else(|| panic!("`chat id` should print a `client sha256:…` line: {lines:?}"))
}

/// Unix permission bits of a file.
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `chat cert --out DIR <extra>`: exit status, the fingerprint printed (if
/// any), and the finished process.
pub fn chat_cert(out: &Path, extra: &[&str]) -> (ExitStatus, Option<String>, Peer) {
    let out_s = out.to_str().expect("path is not UTF-8");
    let mut args = vec!["cert", "--out", out_s];
    args.extend_from_slice(extra);
    let (st, p) = run_chat("chat cert", &args, TIMEOUT);
    let fp = fingerprints_in(&p.stdout_lines().join("\n"))
        .into_iter()
        .next();
    (st, fp, p)
}
