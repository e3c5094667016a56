//! Shared helpers: percentiles, worker threads that each own a
//! `current_thread` runtime, CPU time and memory read from `/proc`, and
//! temporary directories.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The value at quantile `q` (0..=1) of `sorted`, nearest-rank: the smallest
/// sample with at least `q` of the samples at or below it. No interpolation,
/// so p99 of 2,000 samples is the 1,980th smallest, a value that was measured.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of a list of values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Latency samples summarised as `p50_us`, `p90_us`, `p99_us`, `max_us` and
/// the sample count.
pub fn latency_figures(samples: &[Duration]) -> Vec<(&'static str, f64)> {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    vec![
        ("p50_us", quantile(&us, 0.50)),
        ("p90_us", quantile(&us, 0.90)),
        ("p99_us", quantile(&us, 0.99)),
        ("max_us", us.last().copied().unwrap_or(f64::NAN)),
        ("samples", us.len() as f64),
    ]
}

/// A thread running one future on its own `current_thread` runtime: one
/// runtime per side, as the `chat` binary has one per process.
pub struct Worker<T> {
    name: String,
    result: std::sync::mpsc::Receiver<Result<T>>,
}

/// Starts `make()`'s future on a new thread with a fresh `current_thread`
/// runtime.
pub fn spawn_runtime<T, F, Fut>(name: &str, make: F) -> Result<Worker<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let (tx, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot build a tokio runtime")
                .and_then(|rt| rt.block_on(make()));
            let _ = tx.send(outcome);
        })
        .with_context(|| format!("cannot start thread {name}"))?;
    Ok(Worker {
        name: name.to_string(),
        result,
    })
}

impl<T> Worker<T> {
    /// Waits for the worker's result. A worker that overruns `timeout` is
    /// abandoned (its thread dies with the process) so that one stuck case
    /// cannot hang the whole suite.
    pub fn wait(self, timeout: Duration) -> Result<T> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.result.recv_timeout(timeout) {
            Ok(r) => r.with_context(|| format!("in {}", self.name)),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{} did not finish within {timeout:?}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => bail!("{} panicked", self.name),
        }
    }
}

/// The calling thread's kernel id, to read its CPU time from elsewhere.
pub fn thread_id() -> i64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        i64::from(unsafe { libc::gettid() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// CPU time (user + system) one thread of this process has used, from
/// `/proc/self/task/TID/schedstat` (nanoseconds).
pub fn thread_cpu_ns(tid: i64) -> Option<u64> {
    task_cpu_ns(&PathBuf::from(format!("/proc/self/task/{tid}")))
}

/// CPU time of the calling thread and one other thread of this process,
/// between `start` and `stop`.
pub struct CpuClock {
    threads: [i64; 2],
    at_start: Option<[u64; 2]>,
}

impl CpuClock {
    /// A clock for the calling thread and `other`.
    pub fn new(other: i64) -> CpuClock {
        CpuClock {
            threads: [thread_id(), other],
            at_start: None,
        }
    }

    fn read(&self) -> Option<[u64; 2]> {
        Some([
            thread_cpu_ns(self.threads[0])?,
            thread_cpu_ns(self.threads[1])?,
        ])
    }

    pub fn start(&mut self) {
        self.at_start = self.read();
    }

    /// Both threads' CPU time since `start`, added up.
    pub fn stop(&self) -> Option<Duration> {
        let (a, b) = (self.at_start?, self.read()?);
        let used = b[0].checked_sub(a[0])? + b[1].checked_sub(a[1])?;
        Some(Duration::from_nanos(used))
    }
}

/// CPU time (user + system) of every thread of a process, in nanoseconds.
/// Threads that exited before the call are not counted, which is fine for
/// the long-lived runtime and stdin threads of `chat`.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        total += task_cpu_ns(&task.path()).unwrap_or(0);
    }
    Some(total)
}

/// One task's CPU time: `schedstat` (ns) if the kernel has it, else
/// `utime + stime` from `stat` (clock ticks, 10 ms on most kernels).
fn task_cpu_ns(dir: &Path) -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string(dir.join("schedstat"))
        && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
    {
        return Some(ns);
    }
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name may contain spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / hz)
}

/// A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`, …) in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: f64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    })
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "chat-bench-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
