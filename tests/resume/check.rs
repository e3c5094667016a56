//! What the suite types and what it checks: each side's messages of one
//! session, the waits for them to arrive and be confirmed, and the
//! exactly-once accounting over everything a process printed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Extra time allowed, beyond an idle timeout or a resume window, for a
/// loaded 2-core CI machine running a debug build to notice and report
/// something (a bound, not a pause: every wait ends at its event).
pub const MARGIN: Duration = Duration::from_secs(20);

/// Message `id` of direction `dir` in test `tag`: its test, direction and
/// id spelled out, lengths that vary with the id, quotes, backslashes and
/// non-ASCII, so a mixed-up, truncated or mangled message cannot pass for
/// another.
pub fn body(tag: &str, dir: &str, id: u64) -> String {
    let mut s = format!("{tag} {dir} #{id}:");
    for k in 0..(id * 7 % 23) {
        s.push_str(if k % 2 == 0 { " é✓" } else { " ~\"\\" });
        s.push_str(&"x".repeat((id % 5) as usize));
    }
    s
}

/// One direction of one session: what its sender typed, by id, and how far
/// the waits for its delivery and confirmation have got.
pub struct Dir {
    pub tag: String,
    /// `"c2s"` or `"s2c"`.
    pub dir: &'static str,
    /// `texts[id]` is message `id`.
    pub texts: Vec<String>,
    /// Ids below this have been seen `sent`, shown, confirmed.
    sent: u64,
    delivered: u64,
    confirmed: u64,
}

impl Dir {
    pub fn new(tag: &str, dir: &'static str) -> Dir {
        Dir {
            tag: tag.to_string(),
            dir,
            texts: Vec::new(),
            sent: 0,
            delivered: 0,
            confirmed: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.texts.len() as u64
    }

    /// `from` is given the next message to send (on its stdin) without
    /// waiting for anything (it may be frozen). Returns its id.
    pub fn type_in(&mut self, from: &mut Peer) -> u64 {
        let id = self.len();
        let text = body(&self.tag, self.dir, id);
        from.send_text(&text);
        self.texts.push(text);
        id
    }

    /// Waits (within `timeout` each) for the `sent` events of everything
    /// typed so far: the ids in order, each with its size.
    pub fn wait_sent(&mut self, from: &mut Peer, timeout: Duration) {
        while self.sent < self.len() {
            let id = self.sent;
            let text = &self.texts[id as usize];
            let ev = from.wait_event("sent", timeout);
            if ev["id"].as_u64() != Some(id) || ev["bytes"].as_u64() != Some(text.len() as u64) {
                from.fail(&format!(
                    "{}: the next `sent` should be id {id}, {} bytes: {ev}",
                    self.dir,
                    text.len()
                ));
            }
            self.sent += 1;
        }
    }

    /// `from` types the next message; waits for its `sent` event. Returns
    /// the id.
    pub fn say(&mut self, from: &mut Peer) -> u64 {
        let id = self.type_in(from);
        self.wait_sent(from, TIMEOUT);
        id
    }

    /// `from` types `n` messages, waiting for each one's `sent`.
    pub fn say_n(&mut self, from: &mut Peer, n: u64) -> Vec<u64> {
        (0..n).map(|_| self.say(from)).collect()
    }

    /// Waits until `to` has shown every message typed so far (each within
    /// `timeout`), checking each one's content. (Each `message` event
    /// waited for is consumed, so a later session's ids are new ones.)
    pub fn wait_delivered(&mut self, to: &mut Peer, timeout: Duration) {
        while self.delivered < self.len() {
            let id = self.delivered;
            let m = to.wait_event_id("message", id, timeout);
            check_message(to, &m, &self.texts[id as usize]);
            self.delivered += 1;
        }
    }

    /// Waits until `from` has confirmed every message typed so far: an
    /// `ack`, or its id in the `confirmed` list of a `resumed` event seen
    /// so far (each within `timeout`).
    pub fn wait_confirmed(&mut self, from: &mut Peer, timeout: Duration) {
        while self.confirmed < self.len() {
            let id = self.confirmed;
            from.poll();
            if !confirmed_on_resume(from).contains(&id) {
                from.wait_event_id("ack", id, timeout);
            }
            self.confirmed += 1;
        }
    }

    /// [`Dir::wait_delivered`] and [`Dir::wait_confirmed`].
    pub fn wait_through(&mut self, from: &mut Peer, to: &mut Peer, timeout: Duration) {
        self.wait_sent(from, timeout);
        self.wait_delivered(to, timeout);
        self.wait_confirmed(from, timeout);
    }

    /// Everything `from` and `to` printed, after both are done (see
    /// [`Dir::check_exactly_once_since`]), for processes that had one
    /// session only.
    pub fn check_exactly_once(&self, from: &mut Peer, to: &mut Peer) {
        self.check_exactly_once_since(from, 0, to, 0);
    }

    /// What `from` printed from its `from_since`-th JSON event on, and `to`
    /// from its `to_since`-th (the start of this session on each): `from`
    /// printed `sent` for ids 0..n in order, each with its size, and
    /// confirmed each exactly once (`ack`, or in `resumed.confirmed`),
    /// rejected none; `to` showed each exactly once, with its content.
    pub fn check_exactly_once_since(
        &self,
        from: &mut Peer,
        from_since: usize,
        to: &mut Peer,
        to_since: usize,
    ) {
        from.poll();
        to.poll();
        let n = self.len();
        let of = |p: &Peer, since: usize, name: &str| -> Vec<Value> {
            p.events()
                .into_iter()
                .skip(since)
                .filter(|e| e["event"].as_str() == Some(name))
                .cloned()
                .collect()
        };
        let sent = of(from, from_since, "sent");
        let sent_ids: Vec<Option<u64>> = sent.iter().map(|e| e["id"].as_u64()).collect();
        if sent_ids != (0..n).map(Some).collect::<Vec<_>>() {
            from.fail(&format!(
                "{}: `sent` ids should be 0..{n} in order, got {sent_ids:?}",
                self.dir
            ));
        }
        for (e, text) in sent.iter().zip(&self.texts) {
            if e["bytes"].as_u64() != Some(text.len() as u64) {
                from.fail(&format!("sent.bytes should be {}: {e}", text.len()));
            }
        }

        let mut confirmations: BTreeMap<u64, usize> = BTreeMap::new();
        for a in of(from, from_since, "ack") {
            match (a["id"].as_u64(), a["rtt_us"].as_u64()) {
                (Some(id), Some(_)) => *confirmations.entry(id).or_default() += 1,
                _ => from.fail(&format!("ack needs an integer id and rtt_us: {a}")),
            }
        }
        for r in of(from, from_since, "resumed") {
            for id in ids_in(&r, "confirmed") {
                *confirmations.entry(id).or_default() += 1;
            }
        }
        if let Some(problems) = id_problems(&confirmations, n) {
            from.fail(&format!(
                "{}: each message must be confirmed exactly once (ack or resumed.confirmed): \
                 {problems}",
                self.dir
            ));
        }
        let rejected = of(from, from_since, "rejected");
        if !rejected.is_empty() {
            from.fail(&format!(
                "no message should have been rejected: {rejected:?}"
            ));
        }

        let mut shown: BTreeMap<u64, usize> = BTreeMap::new();
        for m in of(to, to_since, "message") {
            let Some(id) = m["id"].as_u64() else {
                to.fail(&format!("message without an integer id: {m}"));
            };
            *shown.entry(id).or_default() += 1;
            if let Some(text) = self.texts.get(id as usize) {
                check_message(to, &m, text);
            }
        }
        if let Some(problems) = id_problems(&shown, n) {
            to.fail(&format!(
                "{}: each message must be shown exactly once: {problems}",
                self.dir
            ));
        }
    }
}

/// A `message` event carries exactly `text`.
pub fn check_message(to: &mut Peer, m: &Value, text: &str) {
    if m["text"].as_str() != Some(text) || m["bytes"].as_u64() != Some(text.len() as u64) {
        to.fail(&format!(
            "message should carry {text:?} ({} bytes): {m}",
            text.len()
        ));
    }
}

/// The ids in the `confirmed` lists of every `resumed` event seen so far.
pub fn confirmed_on_resume(p: &Peer) -> Vec<u64> {
    p.events_named("resumed")
        .iter()
        .flat_map(|r| ids_in(r, "confirmed"))
        .collect()
}

/// The integer ids of list `field` of event `ev` (empty if it is missing).
pub fn ids_in(ev: &Value, field: &str) -> Vec<u64> {
    ev[field]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// The `unacked` ids of a `disconnected` event (fails if not a list of ids).
pub fn unacked_of(p: &mut Peer, d: &Value) -> Vec<u64> {
    let list = d["unacked"].as_array().cloned();
    let ids: Option<Vec<u64>> = list.and_then(|l| l.iter().map(Value::as_u64).collect());
    match ids {
        Some(ids) => ids,
        None => p.fail(&format!(
            "disconnected.unacked should be a list of ids: {d}"
        )),
    }
}

/// Checks a `resumed` event: over `t`, from a socket address, and with
/// exactly these `resent`, `confirmed` and `held` lists (`None`: not
/// checked, but still a list of ids).
pub fn check_resumed(
    p: &mut Peer,
    ev: &Value,
    t: TransportKind,
    resent: Option<&[u64]>,
    confirmed: Option<&[u64]>,
    held: Option<&[u64]>,
) {
    if ev["transport"].as_str() != Some(t.name()) {
        p.fail(&format!("resumed.transport should be {:?}: {ev}", t.name()));
    }
    if ev["peer"]
        .as_str()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .is_none()
    {
        p.fail(&format!("resumed.peer should be a socket address: {ev}"));
    }
    for (field, want) in [("resent", resent), ("confirmed", confirmed), ("held", held)] {
        let ok = ev[field]
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_u64));
        if !ok {
            p.fail(&format!("resumed.{field} should be a list of ids: {ev}"));
        }
        if let Some(want) = want
            && ids_in(ev, field) != want
        {
            p.fail(&format!("resumed.{field} should be {want:?}: {ev}"));
        }
    }
}

/// Checks the `reconnecting` events `p` printed so far: after each loss,
/// attempts 1, 2, … in order (counting again after each `resumed`,
/// `connected` or `disconnected`), each with a reason. Returns how many in
/// all.
pub fn check_reconnecting(p: &mut Peer) -> usize {
    p.poll();
    let events: Vec<Value> = p.events().into_iter().cloned().collect();
    let (mut next, mut total) = (1u64, 0);
    for e in &events {
        match e["event"].as_str() {
            Some("reconnecting") => {
                if e["attempt"].as_u64() != Some(next)
                    || e["reason"].as_str().is_none_or(|r| r.trim().is_empty())
                {
                    p.fail(&format!(
                        "this reconnecting should have attempt {next} and a reason: {e}"
                    ));
                }
                next += 1;
                total += 1;
            }
            Some("resumed" | "connected" | "disconnected") => next = 1,
            _ => {}
        }
    }
    total
}

/// The server's `suspended` event: a reason and the window it holds the
/// chat for.
pub fn check_suspended(server: &mut Peer, ev: &Value, window: Duration) {
    if ev["window_ms"].as_u64() != Some(window.as_millis() as u64)
        || ev["reason"].as_str().is_none_or(|r| r.trim().is_empty())
    {
        server.fail(&format!(
            "suspended should carry a reason and window_ms {}: {ev}",
            window.as_millis()
        ));
    }
}

/// A `disconnected` event for a lost connection or an expired window (no
/// close code).
pub fn expect_lost(p: &mut Peer, d: &Value) {
    if !d["code"].is_null() {
        p.fail(&format!("expected no close code (a loss): {d}"));
    }
}

/// No event called `name` among what `p` printed so far.
pub fn expect_none(p: &mut Peer, name: &str, why: &str) {
    p.poll();
    let seen: Vec<String> = p.events_named(name).iter().map(|e| e.to_string()).collect();
    if !seen.is_empty() {
        p.fail(&format!("no `{name}` event expected ({why}): {seen:?}"));
    }
}

/// The client ends the chat by closing its input: it exits 0 and neither
/// side has anything left unconfirmed.
pub fn finish_normally(server: &mut Peer, client: &mut Peer) {
    client.close_stdin();
    client.expect_exit_code(0, TIMEOUT);
    client.drain_stdout(TIMEOUT);
    let sd = server.wait_event("disconnected", TIMEOUT);
    let cd = client_last_disconnected(client);
    for (p, d) in [(&mut *server, sd), (&mut *client, cd)] {
        if d["code"].as_u64() != Some(0) || !unacked_of(p, &d).is_empty() {
            p.fail(&format!(
                "the chat should end normally (code 0) with nothing unconfirmed: {d}"
            ));
        }
    }
    // Anything printed late (a duplicate would be) is in before checking.
    server.settle(Duration::from_millis(200));
}

fn client_last_disconnected(client: &mut Peer) -> Value {
    match client.events_named("disconnected").last() {
        Some(d) => (*d).clone(),
        None => client.fail("the client should report `disconnected` before exiting"),
    }
}
