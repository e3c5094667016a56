//! Results: the rows each case produces, the targets, the medians
//! over runs, and the two outputs (a table for people, `BENCH {json}` lines
//! for scripts).

use serde_json::{Map, Value, json};

use crate::Via;
use crate::binary::Situation;
use crate::util::median;
use chat::TransportKind;

/// One case's figures from one run. Figure names carry their unit:
/// `_us` (microseconds), `_mib`, `_per_s`, `_x_floor` (a ratio).
#[derive(Debug, Clone)]
pub struct Row {
    pub case: &'static str,
    pub via: Via,
    /// The transport used; for the reach case, the one that should win.
    pub kind: TransportKind,
    /// The reach case's situation (the others have none).
    pub situation: Option<Situation>,
    /// Exactly what was measured, for the legend and the JSON line.
    pub what: String,
    pub figures: Vec<(&'static str, f64)>,
    pub error: Option<String>,
}

impl Row {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    fn key(&self) -> Key {
        (self.case, self.via, self.kind, self.situation)
    }
}

/// What tells rows apart (and the same row of different runs together).
type Key = (&'static str, Via, TransportKind, Option<Situation>);

/// A target from the issue: a figure, a bound, and which way is good.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub figure: &'static str,
    pub at_most: bool,
    pub bound: f64,
}

impl Target {
    const fn le(figure: &'static str, bound: f64) -> Target {
        Target {
            figure,
            at_most: true,
            bound,
        }
    }

    const fn ge(figure: &'static str, bound: f64) -> Target {
        Target {
            figure,
            at_most: false,
            bound,
        }
    }

    fn passes(&self, value: f64) -> bool {
        if self.at_most {
            value <= self.bound
        } else {
            value >= self.bound
        }
    }

    fn describe(&self) -> String {
        let op = if self.at_most { "≤" } else { "≥" };
        format!(
            "{} {op} {}",
            label(self.figure),
            format_value(self.figure, self.bound)
        )
    }
}

/// The targets, attached to the rows they are about: rtt ratios,
/// bulk, hol and connect for the library; rate ("end to end through the
/// binary") and memory for the binary. For reach (issue #12), against the
/// pinned clients measured with it: racing costs nothing when QUIC
/// answers; a first fallback costs QUIC's 250 ms head start, not more (20
/// ms of slack); a remembered one no head start at all (the same 20 ms,
/// well below the shortest head start, 100 ms). For resume (issue #13, "1
/// RTT + the reconnect pause + one handshake"): the p50 of the link's
/// return to `resumed` against the longest pause (2 s) + one handshake (5
/// ms, the connect target: handshake and HELLO/WELCOME) + one RTT (1 ms,
/// well above veth's ~0.1 ms); the part without a pause (from the first
/// attempt begun after the return) against the handshake and RTT alone.
pub fn targets(case: &str, via: Via, kind: TransportKind, s: Option<Situation>) -> Vec<Target> {
    use TransportKind::{Quic, Tcp};
    use Via::{Bin, Lib};
    match s {
        Some(Situation::QuicAnswers) => return vec![Target::le("p50_x_connect", REACH_SAME)],
        Some(Situation::FirstTime) => return vec![Target::le("excess_us", 270_000.0)],
        Some(Situation::Remembered) => return vec![Target::le("excess_us", 20_000.0)],
        None => {}
    }
    match (case, via, kind) {
        ("rtt", Lib, Quic) => vec![
            Target::le("p50_x_floor", 2.0),
            Target::le("p99_x_floor", 3.0),
        ],
        ("rtt", Lib, Tcp) => vec![
            Target::le("p50_x_floor", 1.3),
            Target::le("p99_x_floor", 2.0),
        ],
        ("rate", Bin, Quic) => vec![Target::ge("msgs_per_s", 100_000.0)],
        ("rate", Bin, Tcp) => vec![Target::ge("msgs_per_s", 400_000.0)],
        ("bulk", Lib, Quic) => vec![Target::ge("mib_per_s", 450.0)],
        ("bulk", Lib, Tcp) => vec![Target::ge("mib_per_s", 550.0)],
        ("bulk", Bin, _) => vec![Target::le("recv_peak_rss_mib", 100.0)],
        ("hol", Lib, _) => vec![Target::le("p99_us", 3_000.0)],
        ("connect", Lib, _) => vec![Target::le("p50_us", 5_000.0)],
        ("resume", Bin, _) => vec![
            Target::le(
                "p50_us",
                RESUME_PAUSE_US + RESUME_HANDSHAKE_US + RESUME_RTT_US,
            ),
            Target::le("new_attempt_p50_us", RESUME_HANDSHAKE_US + RESUME_RTT_US),
        ],
        ("idle", Bin, _) => vec![Target::le("rss_mib", 10.0)],
        _ => Vec::new(),
    }
}

/// How much slower than the pinned clients' connect (interleaved with it)
/// an auto client's may be and still count as "the same": the noise of a
/// p50 of 20 process starts on a busy 2-vCPU machine.
const REACH_SAME: f64 = 1.10;

/// The resume target's parts (µs): the longest reconnect pause
/// (src/client/reconnect.rs), one handshake (the connect target) and one
/// RTT.
const RESUME_PAUSE_US: f64 = 2_000_000.0;
const RESUME_HANDSHAKE_US: f64 = 5_000.0;
const RESUME_RTT_US: f64 = 1_000.0;

/// Adds `p50_x_floor` and `p99_x_floor` to the rtt rows of one run, against
/// the floor of the same kind measured in that same run.
pub fn add_floor_ratios(rows: &mut [Row]) {
    let floors: Vec<(TransportKind, f64, f64)> = rows
        .iter()
        .filter(|r| r.case == "floor" && r.error.is_none())
        .filter_map(|r| Some((r.kind, r.get("p50_us")?, r.get("p99_us")?)))
        .collect();
    for row in rows
        .iter_mut()
        .filter(|r| r.case == "rtt" && r.error.is_none())
    {
        let Some(&(_, p50, p99)) = floors.iter().find(|f| f.0 == row.kind) else {
            continue;
        };
        if let (Some(a), Some(b)) = (row.get("p50_us"), row.get("p99_us")) {
            row.figures.push(("p50_x_floor", a / p50));
            row.figures.push(("p99_x_floor", b / p99));
        }
    }
}

/// One case over all runs: per-figure medians, and every run's figures.
pub struct Merged {
    pub case: &'static str,
    pub via: Via,
    pub kind: TransportKind,
    pub situation: Option<Situation>,
    pub what: String,
    pub medians: Vec<(&'static str, f64)>,
    pub runs: Vec<Vec<(&'static str, f64)>>,
    pub errors: Vec<String>,
}

impl Merged {
    fn get(&self, name: &str) -> Option<f64> {
        self.medians
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }
}

/// Groups the rows of all runs by case, in first-seen order, and takes the
/// median of each figure over the runs that produced it (ratios are taken
/// per run first, then their median: "same run as the floor").
pub fn merge(runs: &[Vec<Row>]) -> Vec<Merged> {
    let mut merged: Vec<Merged> = Vec::new();
    for row in runs.iter().flatten() {
        let i = match merged
            .iter()
            .position(|m| (m.case, m.via, m.kind, m.situation) == row.key())
        {
            Some(i) => i,
            None => {
                merged.push(Merged {
                    case: row.case,
                    via: row.via,
                    kind: row.kind,
                    situation: row.situation,
                    what: row.what.clone(),
                    medians: Vec::new(),
                    runs: Vec::new(),
                    errors: Vec::new(),
                });
                merged.len() - 1
            }
        };
        let m = &mut merged[i];
        match &row.error {
            Some(e) => m.errors.push(e.clone()),
            None => m.runs.push(row.figures.clone()),
        }
    }
    for m in &mut merged {
        let mut names: Vec<&'static str> = Vec::new();
        for run in &m.runs {
            for (name, _) in run {
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        m.medians = names
            .into_iter()
            .map(|name| {
                let values: Vec<f64> = m
                    .runs
                    .iter()
                    .filter_map(|r| r.iter().find(|(n, _)| *n == name).map(|&(_, v)| v))
                    .collect();
                (name, median(&values))
            })
            .collect();
    }
    merged
}

/// The figure's name without its unit suffix, for the table.
fn label(figure: &str) -> String {
    match figure {
        "msgs_per_s" => return "rate".to_string(),
        "mib_per_s" => return "throughput".to_string(),
        _ => {}
    }
    if let Some(base) = figure.strip_suffix("_x_floor") {
        return format!("{base}/floor");
    }
    if let Some(base) = figure.strip_suffix("_x_connect") {
        return format!("{base}/connect");
    }
    for suffix in ["_us", "_mib", "_per_s"] {
        if let Some(base) = figure.strip_suffix(suffix) {
            return base.replace('_', " ");
        }
    }
    figure.replace('_', " ")
}

/// A value in the unit its name says, scaled for reading.
pub fn format_value(figure: &str, v: f64) -> String {
    if v.is_nan() {
        return "n/a".to_string();
    }
    if figure.ends_with("_x_floor") || figure.ends_with("_x_connect") {
        format!("{v:.2}×")
    } else if figure.ends_with("_us") {
        if v.abs() < 1_000.0 {
            format!("{v:.1} µs")
        } else if v.abs() < 1_000_000.0 {
            format!("{:.2} ms", v / 1e3)
        } else if v.abs() < 10_000_000.0 {
            // Milliseconds still show (the resume target: 2.006 s).
            format!("{:.3} s", v / 1e6)
        } else {
            format!("{:.2} s", v / 1e6)
        }
    } else if figure == "mib_per_s" {
        format!("{v:.0} MiB/s")
    } else if figure.ends_with("_per_s") {
        format!("{}/s", thousands(v))
    } else if figure.ends_with("_mib") {
        format!("{v:.1} MiB")
    } else {
        thousands(v)
    }
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// The human-readable table.
pub fn table(merged: &[Merged], runs: usize) -> String {
    let header = [
        "case".to_string(),
        "via".to_string(),
        "transport".to_string(),
        if runs > 1 {
            format!("figures (median of {runs} runs)")
        } else {
            "figures".to_string()
        },
        "target".to_string(),
    ];
    let mut lines: Vec<[String; 5]> = vec![header];
    for m in merged {
        let transport = match (m.case, m.kind, m.situation) {
            (_, _, Some(s)) => s.label().to_string(),
            ("floor", TransportKind::Quic, _) => "udp (quic floor)".to_string(),
            ("floor", TransportKind::Tcp, _) => "tcp (tcp floor)".to_string(),
            (_, k, _) => k.name().to_string(),
        };
        let figures = if m.runs.is_empty() {
            format!("ERROR: {}", m.errors.join("; "))
        } else {
            // Sample counts are in the legend and the JSON, not the table.
            let mut s: Vec<String> = m
                .medians
                .iter()
                .filter(|(n, _)| *n != "samples")
                .map(|&(n, v)| format!("{} {}", label(n), format_value(n, v)))
                .collect();
            if !m.errors.is_empty() {
                s.push(format!("({} failed runs)", m.errors.len()));
            }
            s.join(" · ")
        };
        let checks: Vec<String> = targets(m.case, m.via, m.kind, m.situation)
            .iter()
            .map(|t| {
                let mark = match m.get(t.figure) {
                    Some(v) if !v.is_nan() => {
                        if t.passes(v) {
                            "✓"
                        } else {
                            "✗"
                        }
                    }
                    _ => "?",
                };
                format!("{} {mark}", t.describe())
            })
            .collect();
        lines.push([
            m.case.to_string(),
            m.via.name().to_string(),
            transport,
            figures,
            checks.join(" · "),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let mut cells = Vec::new();
        for (c, cell) in l.iter().enumerate() {
            // The last column is not padded (no trailing spaces).
            if c == 4 {
                cells.push(cell.clone());
            } else {
                let pad = widths[c] - cell.chars().count();
                cells.push(format!("{cell}{}", " ".repeat(pad)));
            }
        }
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * 4;
            out.push_str(&"-".repeat(total.min(160)));
            out.push('\n');
        }
    }
    out
}

/// One JSON object per case.
pub fn json_line(m: &Merged, quick: bool) -> Value {
    let figures = |f: &[(&'static str, f64)]| -> Value {
        let mut map = Map::new();
        for &(name, v) in f {
            // JSON has no NaN: a figure that could not be read is null.
            map.insert(
                name.to_string(),
                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            );
        }
        Value::Object(map)
    };
    let checks: Vec<Value> = targets(m.case, m.via, m.kind, m.situation)
        .iter()
        .map(|t| {
            let value = m.get(t.figure).filter(|v| !v.is_nan());
            json!({
                "figure": t.figure,
                "op": if t.at_most { "<=" } else { ">=" },
                "target": t.bound,
                "value": value,
                "pass": value.map(|v| t.passes(v)),
            })
        })
        .collect();
    let mut v = json!({
        "case": m.case,
        "via": m.via.name(),
        "transport": if m.situation.is_some() { "auto" } else { m.kind.name() },
        "quick": quick,
        "runs": m.runs.len(),
        "figures": figures(&m.medians),
        "targets": checks,
        "what": m.what,
    });
    if let Some(s) = m.situation {
        v["situation"] = json!(s.name());
        v["expected_winner"] = json!(s.winner().name());
    }
    if m.runs.len() > 1 {
        v["per_run"] = Value::Array(m.runs.iter().map(|r| figures(r)).collect());
    }
    if !m.errors.is_empty() {
        v["errors"] = json!(m.errors);
    }
    v
}
