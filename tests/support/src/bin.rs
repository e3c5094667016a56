//! Where the `chat` binary under test is.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `chat` binary under test.
///
/// `CARGO_BIN_EXE_chat` is set at compile time only for the `chat`
/// package's own test targets, not for this crate, so the binary is found
/// as `assert_cmd` finds it: a run-time `CARGO_BIN_EXE_chat` if there is
/// one, else `chat` in the profile directory the running test lives under
/// (`target/<profile>/deps/<test>-<hash>` -> `target/<profile>/chat`).
/// Cargo builds the package's binaries before its integration tests.
pub fn chat_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_chat") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        let mut dir = exe
            .parent()
            .expect("the test binary lives in a directory")
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join(format!("chat{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "no chat binary at {} (set CARGO_BIN_EXE_chat to its path)",
            bin.display()
        );
        bin
    })
}
