//! A person at a terminal taking their time over the trust question: the
//! server waits only 10 s for HELLO, so an answer after that must come on a
//! new connection, and meanwhile the server shows no client at all.

use std::time::Duration;

use support::pty::PtyPeer;

use super::*;

/// How long the person takes to answer, from the moment the question
/// shows: past the server's 10 s wait for HELLO.
const ANSWER_AFTER: Duration = Duration::from_secs(12);

/// First contact at a terminal with a default server and a default
/// client: while the question is open the server shows nothing (no
/// `connected`, `refused` or `disconnected`); `y` after 12 s connects (on a
/// new connection: the server logged the first one for its missing HELLO),
/// records the server, and the chat works both ways, the server having
/// shown exactly one client.
#[test]
fn trust_answered_after_the_hello_deadline_connects_again() {
    let (mut server, addr, fp) = start_default_server(&[]);
    let home = client_home();
    let host = format!("127.0.0.1:{}", port_of(&addr));
    let args = ClientBuilder::auto(&host).plain().command_args(home.path());
    let mut client = PtyPeer::spawn("pty-client/auto", &args);
    client.wait_for("Trust this server? [y/N]", TIMEOUT);
    let asked = Instant::now();
    if !client.screen_text().contains(&fp) {
        client.fail(&format!("the question should show the fingerprint {fp}"));
    }

    let nothing_shown = |server: &mut Peer, when: &str| {
        for name in ["connected", "refused", "disconnected"] {
            if count(server, name) != 0 {
                server.fail(&format!(
                    "{when}, the server must not show the client (it has not said HELLO): \
                     got `{name}`"
                ));
            }
        }
    };
    server.settle(Duration::from_secs(3));
    nothing_shown(&mut server, "3 s into the question");
    server.settle(ANSWER_AFTER.saturating_sub(asked.elapsed()));
    nothing_shown(&mut server, "12 s into the question");

    client.type_keys("y\r");
    let answered = Instant::now();
    client.wait_for(" connected with ", TIMEOUT);
    measured(
        "slow trust answer (12 s) to connected on a new connection",
        answered.elapsed(),
    );
    server.wait_event("connected", TIMEOUT);
    server.wait_stderr_contains("no HELLO", TIMEOUT);
    assert_known_hosts(home.path(), &[(&host, &fp)]);

    client.type_keys("after a slow answer\r");
    let msg = server.wait_event_id("message", 0, TIMEOUT);
    if msg["text"].as_str() != Some("after a slow answer") {
        server.fail(&format!("message 0 should be the typed line: {msg}"));
    }
    server.send_text("and an answer back");
    server.wait_event_id("ack", 0, TIMEOUT);
    client.wait_for("and an answer back", TIMEOUT);
    client.type_keys("\x04");
    client.expect_exit_code(0, TIMEOUT);
    server.wait_event("disconnected", TIMEOUT);
    assert_clients_shown(&mut server, 1);
    measured("slow trust test, whole", asked.elapsed());
}
