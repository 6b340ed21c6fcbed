//! The load generator and the measurements it takes: throughput, latency percentiles, CPU time.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second of /proc CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system) of a process so far, in microseconds.
pub fn cpu_micros(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    ticks * 1_000_000 / TICKS_PER_SECOND
}

/// Peak resident set size of a process, in kilobytes.
pub fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Requests answered successfully per second.
    pub per_second: f64,
    /// Requests that failed.
    pub errors: u64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// CPU microseconds per request, this process plus the other processes given.
    pub cpu_us_per_request: f64,
}

/// The `p`th percentile of sorted microsecond values, in milliseconds.
pub fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

/// Runs `call` from `in_flight` concurrent workers for `duration`; CPU is summed over this
/// process and `other_pids`.
pub async fn drive<F, Fut>(in_flight: usize, duration: Duration, other_pids: &[u32], call: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    // Warm up: connections, caches, the JIT of the database's page cache.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        call().await;
    }
    let pids: Vec<u32> = std::iter::once(std::process::id()).chain(other_pids.iter().copied()).collect();
    let cpu_before: u64 = pids.iter().map(|pid| cpu_micros(*pid)).sum();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (call, stop) = (call.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if call().await {
                    latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((mut l, e)) = worker.await {
            latencies.append(&mut l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    let cpu_after: u64 = pids.iter().map(|pid| cpu_micros(*pid)).sum();
    latencies.sort_unstable();
    let answered = latencies.len().max(1) as f64;
    Sample {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        errors,
        p50_ms: percentile_ms(&latencies, 50.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        p999_ms: percentile_ms(&latencies, 99.9),
        cpu_us_per_request: cpu_after.saturating_sub(cpu_before) as f64 / answered,
    }
}

/// The median sample of several rounds, by throughput.
pub fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    samples.swap_remove(samples.len() / 2)
}
