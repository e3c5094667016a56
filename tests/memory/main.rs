//! Memory per chat, not per message (issue 14): an input line longer than
//! a message may be is refused as it is read, without the sender's memory
//! growing with it; and (ignored: too slow for CI) what a 512 MiB message
//! costs each side at its peak.

use std::time::{Duration, Instant};

use support::*;

both_transports!(an_over_long_input_line_is_refused_as_it_is_read);

const MIB: u64 = 1024;

/// A 64 MiB line (no message may be over 1 MiB here) is refused with an
/// error naming the limit, while the client's RSS stays within a few MiB of
/// idle: it keeps at most the longest line that may hold a message (in
/// JSON 6 MiB, every byte escaped as `\u0000`) and skips the rest. The
/// next line is sent as usual.
fn an_over_long_input_line_is_refused_as_it_is_read(t: TransportKind) {
    let limit = "1048576";
    let Chat {
        mut server,
        mut client,
        ..
    } = start_chat(t, &[], &["--max-message-size", limit]);
    let pid = client.pid();
    let idle = rss_kib(pid);
    client.send_line(&"x".repeat(64 << 20));
    let mut peak = idle;
    let deadline = Instant::now() + LONG_TIMEOUT;
    let error = loop {
        peak = peak.max(rss_kib(pid));
        if let Some(e) = client.try_wait_event("error", Duration::from_millis(20)) {
            break e;
        }
        assert!(Instant::now() < deadline, "no error for the long line");
    };
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(limit) && message.contains("not sent"),
        "the error should name the limit and say nothing was sent: {error}"
    );
    eprintln!(
        "client RSS idle {} KiB, peak {} KiB while refusing a 64 MiB line",
        idle, peak
    );
    assert!(
        peak < idle + 12 * MIB,
        "the client's RSS grew from {idle} to {peak} KiB reading a line it refuses"
    );
    exchange(&mut client, &mut server, 0, "the next line goes");
    finish_client(&mut server, &mut client);
}
