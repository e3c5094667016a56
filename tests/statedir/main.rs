//! The state directory (the home) guarded as OpenSSH guards `~/.ssh`: links
//! planted at `known_hosts` or at temporary names, homes and keys owned by
//! another user (`nobody`) or writable by others, and a disk that fills
//! while an identity or a known host is being written. Every case runs the
//! real binary; refusals must name the file and the command that fixes it.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use support::*;

const T: TransportKind = TransportKind::Quic;

/// Runs `chat ARGS`, expects exit status 1, and returns what it said.
fn refused(label: &str, args: &[&str]) -> String {
    let (st, mut p) = run_chat(label, args, TIMEOUT);
    let said = p.everything_said();
    assert_eq!(
        st.code(),
        Some(1),
        "{label} should be refused (exit 1), got {st}; it said:\n{said}"
    );
    said
}

fn assert_says(said: &str, what: &[&str]) {
    for w in what {
        assert!(
            said.contains(w),
            "expected {w:?} in what chat said:\n{said}"
        );
    }
}

fn home_arg(home: &Path) -> &str {
    home.to_str().expect("home path is not UTF-8")
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn chown(path: &Path, uid: u32) {
    let st = std::process::Command::new("chown")
        .arg(uid.to_string())
        .arg(path)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown {uid} {} failed", path.display());
}

/// The uid of `nobody`, when the test runs as root (only root can give a
/// file away); `None` after a SKIPPED line otherwise.
fn nobody_as_root() -> Option<u32> {
    if euid() != 0 {
        println!("SKIPPED: needs root to give files to nobody");
        return None;
    }
    let out = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    if uid.is_none() {
        println!("SKIPPED: no user nobody");
    }
    uid
}

/// Names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A private file outside the home, as a victim of redirected writes.
fn victim(dir: &TempDir) -> PathBuf {
    let v = dir.path().join("root-only");
    std::fs::write(&v, "precious\n").unwrap();
    set_mode(&v, 0o600);
    v
}

fn assert_victim_untouched(v: &Path) {
    assert_eq!(
        std::fs::read_to_string(v).unwrap(),
        "precious\n",
        "{} was written through a link",
        v.display()
    );
    assert_eq!(file_mode(v), 0o600, "{} changed mode", v.display());
}

/// A `known_hosts` that is a link to a private file: the client refuses it,
/// naming it (before connecting, so also with --accept-new), `chat forget`
/// too; the target keeps its content and mode, the link stays a link, and
/// no copy of the target appears in the home (the old code copied it into
/// a new 0644 known_hosts).
#[test]
fn symlinked_known_hosts_is_refused_and_its_target_untouched() {
    let (_server, addr, _fp) = start_server(T, &[]);
    let outside = TempDir::new("outside");
    let target = victim(&outside);
    let home = TempDir::new("client-home");
    let kh = known_hosts_path(home.path());
    symlink(&target, &kh).unwrap();

    let mut client = ClientBuilder::new(T, &addr)
        .home(home.path())
        .accept_new()
        .spawn();
    client.close_stdin();
    client.expect_exit_code(1, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    let said = client.everything_said();
    assert_says(
        &said,
        &[
            kh.to_str().unwrap(),
            "symbolic link",
            "cp --remove-destination",
        ],
    );
    if !client.events_named("connected").is_empty() {
        client.fail("a client whose known_hosts is a link must not connect");
    }

    let said = refused(
        "chat forget",
        &["forget", &addr, "--home", home_arg(home.path())],
    );
    assert_says(&said, &[kh.to_str().unwrap(), "symbolic link"]);

    assert_victim_untouched(&target);
    assert!(std::fs::symlink_metadata(&kh).unwrap().is_symlink());
    for name in names_in(home.path()) {
        let p = home.path().join(&name);
        if p.is_file() && !std::fs::symlink_metadata(&p).unwrap().is_symlink() {
            assert_ne!(
                std::fs::read_to_string(&p).unwrap_or_default(),
                "precious\n",
                "{name} in the home is a copy of the link's target"
            );
        }
    }
}

/// The names the old code gave its temporary files, `.FILE.tmpPID.N`, for
/// the next 1,000 process ids, planted in a server's and a client's home as
/// links to a private file outside, and some as files of their own: the
/// server creates its identity, the client its identity, records the
/// server in known_hosts and writes reach. Nothing is written through a
/// link, no planted file is reused (each file of the home is a new inode,
/// keys 0600), and every plant is still there as it was.
#[test]
fn planted_temporary_names_do_not_redirect_writes() {
    let outside = TempDir::new("outside");
    let target = victim(&outside);
    let server_home = TempDir::new("server-home");
    let client_home = TempDir::new("client-home");
    let dirs = [
        server_home.path().join("server"),
        client_home.path().join("client"),
        client_home.path().to_path_buf(),
    ];
    for d in &dirs[..2] {
        std::fs::create_dir(d).unwrap();
        set_mode(d, 0o700);
    }
    let plants: [(&Path, &[&str]); 3] = [
        (&dirs[0], &["key.pem", "cert.pem"]),
        (&dirs[1], &["key.pem", "cert.pem"]),
        (&dirs[2], &["known_hosts", "reach"]),
    ];
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut links = Vec::new();
    let mut files = Vec::new();
    for (dir, names) in plants {
        for name in names {
            for pid in last + 1..=last + 1000 {
                for n in 0..4 {
                    let at = dir.join(format!(".{name}.tmp{pid}.{n}"));
                    if n == 3 && pid <= last + 100 {
                        // A file of its own, open to all, at that name: the
                        // old code truncated and reused it.
                        std::fs::write(&at, "planted\n").unwrap();
                        set_mode(&at, 0o666);
                        files.push(at);
                    } else {
                        symlink(&target, &at).unwrap();
                        links.push(at);
                    }
                }
            }
        }
    }

    let mut server = spawn_server_in(T, server_home.path(), 0, &[]);
    let listening = server.try_wait_event("listening", TIMEOUT);
    // First what matters: the old code wrote the server's key and
    // certificate into the file outside (and then failed to listen).
    assert_victim_untouched(&target);
    let Some(listening) = listening else {
        server.fail("the server did not start listening");
    };
    let (addr, fp) = check_listening(&mut server, T, &listening);
    let mut client = ClientBuilder::auto(&addr)
        .home(client_home.path())
        .accept_new()
        .spawn();
    await_connected(&mut server, &mut client, T, &fp);
    exchange(&mut client, &mut server, 0, "through the plants");
    finish_client(&mut server, &mut client);

    assert_victim_untouched(&target);
    for l in &links {
        assert!(
            std::fs::symlink_metadata(l).is_ok_and(|m| m.is_symlink()),
            "{} is no longer the planted link",
            l.display()
        );
    }
    let planted_inodes: Vec<u64> = files
        .iter()
        .map(|f| {
            assert_eq!(std::fs::read_to_string(f).unwrap(), "planted\n");
            std::fs::metadata(f).unwrap().ino()
        })
        .collect();
    for (file, mode) in [
        (dirs[0].join("key.pem"), 0o600),
        (dirs[0].join("cert.pem"), 0o644),
        (dirs[1].join("key.pem"), 0o600),
        (dirs[1].join("cert.pem"), 0o644),
        (dirs[2].join("known_hosts"), 0o644),
        (dirs[2].join("reach"), 0o600),
    ] {
        let meta = std::fs::symlink_metadata(&file)
            .unwrap_or_else(|e| panic!("{} should exist: {e}", file.display()));
        assert!(
            meta.is_file(),
            "{} should be a regular file",
            file.display()
        );
        assert_eq!(file_mode(&file), mode, "{}", file.display());
        assert!(
            !planted_inodes.contains(&meta.ino()),
            "{} is a planted file, reused",
            file.display()
        );
    }
    assert_known_hosts(
        client_home.path(),
        &[(&format!("127.0.0.1:{}", port_of(&addr)), &fp)],
    );
}

/// A home owned by `nobody`, then a key and a planted server identity owned
/// by `nobody` in a home of ours: refused (exit 1, no `listening`), naming
/// the path and `chown <our uid> PATH`. Once chowned back, all is well.
#[test]
fn home_or_key_owned_by_another_user_is_refused_with_chown() {
    let Some(nobody) = nobody_as_root() else {
        return;
    };
    let ours = euid();
    let fix = |p: &Path| format!("chown {ours} {}", p.display());

    let home = TempDir::new("home");
    chown(home.path(), nobody);
    let said = refused("chat id", &["id", "--home", home_arg(home.path())]);
    assert_says(&said, &[&fix(home.path()), "owned by uid"]);
    let mut server = spawn_server_in(T, home.path(), 0, &[]);
    server.expect_exit_code(1, TIMEOUT);
    server.drain_stdout(TIMEOUT);
    assert_says(&server.everything_said(), &[&fix(home.path())]);
    assert!(server.events_named("listening").is_empty(), "it listened");
    assert!(
        names_in(home.path()).is_empty(),
        "nothing should be created in a refused home"
    );
    chown(home.path(), ours);
    client_fingerprint(home.path());

    // A server identity planted by nobody (in a home of ours).
    let home = TempDir::new("home");
    let (mut first, _, _) = start_server_in(T, home.path(), 0, &[]);
    first.kill();
    let key = home.path().join("server/key.pem");
    let cert = home.path().join("server/cert.pem");
    for f in [&key, &cert] {
        chown(f, nobody);
        let mut server = spawn_server_in(T, home.path(), 0, &[]);
        server.expect_exit_code(1, TIMEOUT);
        server.drain_stdout(TIMEOUT);
        assert_says(&server.everything_said(), &[&fix(f)]);
        assert!(server.events_named("listening").is_empty(), "it listened");
        chown(f, ours);
    }
    start_server_in(T, home.path(), 0, &[]);
}

/// A home writable by its group, then a `client/` writable by all: refused
/// with `chmod go-w PATH`; fixed, it works.
#[test]
fn group_writable_home_is_refused_with_chmod() {
    let home = TempDir::new("home");
    set_mode(home.path(), 0o775);
    let said = refused("chat id", &["id", "--home", home_arg(home.path())]);
    assert_says(
        &said,
        &[
            &format!("chmod go-w {}", home.path().display()),
            "its group",
        ],
    );
    let mut server = spawn_server_in(T, home.path(), 0, &[]);
    server.expect_exit_code(1, TIMEOUT);
    server.drain_stdout(TIMEOUT);
    assert!(server.events_named("listening").is_empty(), "it listened");
    set_mode(home.path(), 0o755);
    let fp = client_fingerprint(home.path());

    let client_dir = home.path().join("client");
    set_mode(&client_dir, 0o777);
    let said = refused("chat id", &["id", "--home", home_arg(home.path())]);
    assert_says(&said, &[&format!("chmod go-w {}", client_dir.display())]);
    set_mode(&client_dir, 0o700);
    assert_eq!(client_fingerprint(home.path()), fp, "the identity was kept");
}

/// Files of a home, but the filler and lock files.
fn state_files(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| n != "FILLER" && !n.ends_with("lock"))
        .collect()
}

/// A disk with room for the key but not the certificate (one page free)
/// while `chat id` and a server create their identities: a clear error
/// naming the file and "No space left on device", no key, certificate or
/// temporary file left (the old code left key.pem alone, and every later
/// start failed); once space is freed, the next start works.
#[test]
fn full_disk_during_identity_creation_leaves_nothing_and_heals() {
    let Some(disk) = Tmpfs::mount("tmpfs", 64 * 1024) else {
        return;
    };
    let client_home = disk.path().join("client-home");
    let server_home = disk.path().join("server-home");
    let filler = disk.fill(4096);

    let said = refused("chat id", &["id", "--home", home_arg(&client_home)]);
    assert_says(&said, &["No space left on device", ".pem"]);
    assert_eq!(
        state_files(&client_home.join("client")),
        Vec::<String>::new(),
        "a failed creation must leave no file behind"
    );
    let mut server = spawn_server_in(T, &server_home, 0, &[]);
    server.expect_exit_code(1, TIMEOUT);
    server.drain_stdout(TIMEOUT);
    assert_says(
        &server.everything_said(),
        &["No space left on device", ".pem"],
    );
    assert_eq!(
        state_files(&server_home.join("server")),
        Vec::<String>::new()
    );

    std::fs::remove_file(&filler).unwrap();
    let fp = client_fingerprint(&client_home);
    assert_eq!(client_fingerprint(&client_home), fp);
    assert_eq!(
        state_files(&client_home.join("client")),
        ["cert.pem", "key.pem"]
    );
    let (mut server, addr, server_fp) = start_server_in(T, &server_home, 0, &[]);
    let mut client = ClientBuilder::new(T, &addr)
        .home(&client_home)
        .fingerprint(&server_fp)
        .spawn();
    await_connected(&mut server, &mut client, T, &server_fp);
}

/// A full disk while a client records a server it trusts (--accept-new):
/// exit 1 naming known_hosts and "No space left on device"; known_hosts as
/// it was (its old entry kept), no temporary file left; once space is
/// freed the same command connects and records the server beside the old
/// entry.
#[test]
fn full_disk_during_known_hosts_recording_keeps_the_file_and_heals() {
    let Some(disk) = Tmpfs::mount("tmpfs", 64 * 1024) else {
        return;
    };
    let home = disk.path().join("client-home");
    client_fingerprint(&home);
    let old_fp = format!("sha256:{}", "ab".repeat(32));
    let kh = known_hosts_path(&home);
    let old_text = format!("# known hosts\nold.example:7200 {old_fp}\n");
    std::fs::write(&kh, &old_text).unwrap();
    let (mut server, addr, fp) = start_server(T, &[]);
    let filler = disk.fill(0);

    let mut client = ClientBuilder::new(T, &addr)
        .home(&home)
        .accept_new()
        .spawn();
    client.close_stdin();
    client.expect_exit_code(1, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    assert_says(
        &client.everything_said(),
        &["No space left on device", kh.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), old_text);
    assert_eq!(state_files(&home), ["client", "known_hosts"]);

    std::fs::remove_file(&filler).unwrap();
    let mut client = ClientBuilder::new(T, &addr)
        .home(&home)
        .accept_new()
        .spawn();
    await_connected(&mut server, &mut client, T, &fp);
    assert_known_hosts(
        &home,
        &[
            ("old.example:7200", &old_fp),
            (&format!("127.0.0.1:{}", port_of(&addr)), &fp),
        ],
    );
}
