//! Identities: fingerprint pinning and `chat cert`.

mod common;

use std::process::Command;

use common::*;

both_transports!(
    wrong_fingerprint_is_refused_and_server_goes_on,
    cert_subcommand_and_server_with_cert
);

/// A client pinned to a different fingerprint refuses the server: it exits
/// 1 and says "fingerprint" (stderr or an `error`/`disconnected` event); the
/// server keeps serving a correct client.
fn wrong_fingerprint_is_refused_and_server_goes_on(t: Transport) {
    let (mut server, addr, fp) = start_server(t, &[]);
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert_ne!(wrong, fp);

    let mut bad = start_client(t, &addr, &wrong, &[]);
    bad.expect_exit_code(1, TIMEOUT);
    bad.drain_stdout(TIMEOUT);
    let mut said = bad.stderr_text();
    for e in bad.events_named("error") {
        said += &e["message"].to_string();
    }
    for e in bad.events_named("disconnected") {
        said += &e["reason"].to_string();
    }
    if !said.to_lowercase().contains("fingerprint") {
        bad.fail("a refused server fingerprint should be explained (mention \"fingerprint\")");
    }
    if !bad.events_named("connected").is_empty() {
        bad.fail("a client must not report `connected` to a server it does not trust");
    }
    bad.assert_only_json_events();

    let mut good = start_client(t, &addr, &fp, &[]);
    await_connected(&mut server, &mut good, t, &fp);
    exchange(&mut good, &mut server, 0, "trusted");
    exchange(&mut server, &mut good, 0, "welcome");
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `chat cert --out DIR` writes DIR/cert.pem and DIR/key.pem and prints the
/// fingerprint, which matches openssl's; a server started with those files
/// reports the same fingerprint and a client pinned to it chats.
fn cert_subcommand_and_server_with_cert(t: Transport) {
    let out = TempDir::new("certs");
    let out_s = out.path_str();
    let (st, p) = run_chat("chat cert", &["cert", "--out", &out_s], TIMEOUT);
    let stdout = p.stdout_lines().join("\n");
    assert_eq!(
        st.code(),
        Some(0),
        "`chat cert` should exit 0, got {st}\nstdout:\n{stdout}\nstderr:\n{}",
        p.stderr_text()
    );

    let fp = stdout
        .match_indices("sha256:")
        .map(|(i, _)| stdout[i..].chars().take(7 + 64).collect::<String>())
        .find(|c| is_fingerprint(c))
        .unwrap_or_else(|| {
            panic!("`chat cert` should print sha256:<64 hex> on stdout, got:\n{stdout}")
        });

    let cert = out.path().join("cert.pem");
    let key = out.path().join("key.pem");
    for f in [&cert, &key] {
        let meta =
            std::fs::metadata(f).unwrap_or_else(|e| panic!("{} should exist: {e}", f.display()));
        assert!(meta.len() > 0, "{} is empty", f.display());
    }
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    assert!(
        cert_pem.contains("-----BEGIN CERTIFICATE-----"),
        "cert.pem is not a PEM certificate"
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY-----"),
        "key.pem is not a PEM key"
    );

    if openssl_available() {
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "openssl failed on cert.pem: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let theirs: String = text
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_lowercase();
        assert_eq!(
            format!("sha256:{theirs}"),
            fp,
            "printed fingerprint differs from openssl's ({})",
            text.trim()
        );
    } else {
        eprintln!("NOTE: openssl not on PATH; skipped comparing with openssl's fingerprint");
    }

    let cert_s = cert.to_str().unwrap();
    let key_s = key.to_str().unwrap();
    let (mut server, addr, server_fp) = start_server(t, &["--cert", cert_s, "--key", key_s]);
    assert_eq!(
        server_fp, fp,
        "server started with --cert/--key should report the cert's fingerprint"
    );

    let mut client = start_client(t, &addr, &fp, &[]);
    await_connected(&mut server, &mut client, t, &fp);
    exchange(&mut client, &mut server, 0, "pinned to chat cert");
}
