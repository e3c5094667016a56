//! Counts for `/stats`: messages sent, received and confirmed in this chat,
//! and the spread of round-trip times.

use std::time::Duration;

use crate::ui::plain::format_rtt;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub sent: u64,
    pub received: u64,
    rtts: Vec<Duration>,
}

impl Stats {
    pub fn confirmed(&mut self, rtt: Duration) {
        self.rtts.push(rtt);
    }

    pub fn summary(&mut self) -> String {
        let mut s = format!(
            "this chat: {} sent, {} received, {} confirmed",
            self.sent,
            self.received,
            self.rtts.len()
        );
        if !self.rtts.is_empty() {
            self.rtts.sort_unstable();
            let at = |q: f64| {
                let i = ((self.rtts.len() - 1) as f64 * q).round() as usize;
                format_rtt(self.rtts[i])
            };
            s.push_str(&format!(
                "; round trip min {} p50 {} p99 {} max {}",
                at(0.0),
                at(0.5),
                at(0.99),
                at(1.0)
            ));
        }
        s
    }
}
