//! Counts for `/stats`: messages sent, received and confirmed in this chat,
//! and the spread of round-trip times.

use std::time::Duration;

use crate::ui::plain::format_rtt;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub sent: u64,
    pub received: u64,
    /// Messages confirmed by a resume's RECEIVED (no round-trip time).
    pub on_resume: u64,
    /// Connections the chat went on over after a lost one.
    pub resumes: u64,
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
            self.rtts.len() as u64 + self.on_resume
        );
        if self.resumes > 0 {
            s.push_str(&format!(
                " ({} on resume); resumed {} time(s)",
                self.on_resume, self.resumes
            ));
        }
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
