//! `stellar-bench soak` (issue 12): the gateway at a fixed share (default 80 %) of its measured
//! peak for a long time (default 10 minutes), watching what would show a leak: its resident
//! memory, its open file descriptors and its connections to the engine, sampled every
//! `interval` seconds. The verdict per figure compares the mean of the first third of the
//! samples with that of the last third: "growing" when the last third is higher by more than the
//! figure's tolerance, else "flat".
//!
//! The stack is the one of `stellar-bench gateway` (release engine, SQLite account DB, tier
//! limits so large nothing is refused); the peak comes from a wrk run against the gateway
//! (`GET /api/v1/stats`, the same request as the load), the load from the open-loop fixed-rate
//! client over keep-alive connections.

use crate::gateway::{paced, rss_mib, seed_memories, start_gateway, wrk, Backdrop};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use stellar_tests::spawn::TempDir;

/// Options of `stellar-bench soak`.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    /// Directory with the release binaries.
    pub bin_dir: PathBuf,
    /// Seconds of load at the fixed rate.
    pub secs: u64,
    /// Seconds between samples.
    pub interval_secs: u64,
    /// Seconds of the wrk run that measures the peak.
    pub peak_secs: u64,
    /// The fixed rate as a percentage of the peak.
    pub load_percent: f64,
    /// Keep-alive connections of the load (and of the peak run).
    pub connections: u32,
    /// Gateway proxy threads.
    pub workers: usize,
}

impl Default for SoakOpts {
    fn default() -> Self {
        SoakOpts {
            bin_dir: PathBuf::from("target/release"),
            secs: 600,
            interval_secs: 10,
            peak_secs: 10,
            load_percent: 80.0,
            connections: 64,
            workers: 2,
        }
    }
}

/// One sample of the gateway process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_mib: f64,
    fds: usize,
    upstream: usize,
}

/// Whether a figure held flat over the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trend {
    Flat,
    Growing,
}

/// Compare the mean of the first third of `values` with the mean of the last third: `Growing`
/// when the last is higher by more than `abs` and more than `rel` × the first. Fewer than three
/// samples cannot show a trend (`Flat`).
pub fn trend(values: &[f64], rel: f64, abs: f64) -> (Trend, f64, f64) {
    let n = values.len();
    if n < 3 {
        let v = values.first().copied().unwrap_or(0.0);
        return (Trend::Flat, v, values.last().copied().unwrap_or(v));
    }
    let k = n / 3;
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&values[..k]), mean(&values[n - k..]));
    let growth = last - first;
    let t = if growth > abs && growth > rel * first {
        Trend::Growing
    } else {
        Trend::Flat
    };
    (t, first, last)
}

/// Entries of `/proc/PID/fd`, and the inodes of the sockets among them.
fn fds(pid: u32) -> (usize, HashSet<u64>) {
    let mut n = 0;
    let mut sockets = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            n += 1;
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.to_string_lossy();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(ino) = ino.parse() {
                        sockets.insert(ino);
                    }
                }
            }
        }
    }
    (n, sockets)
}

/// Established TCP connections to `port` whose socket is one of `sockets` (from `/proc/net/tcp`
/// and `tcp6`): the gateway's connections to the engine.
fn connections_to(port: u16, sockets: &HashSet<u64>) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let rem_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let ino = f[9].parse::<u64>().ok();
            if rem_port == Some(port) && ino.is_some_and(|i| sockets.contains(&i)) {
                n += 1;
            }
        }
    }
    n
}

fn sample(pid: u32, engine_port: u16, started: Instant) -> Sample {
    let (fd_count, sockets) = fds(pid);
    Sample {
        secs: started.elapsed().as_secs_f64(),
        rss_mib: rss_mib(pid),
        fds: fd_count,
        upstream: connections_to(engine_port, &sockets),
    }
}

/// Run the soak and return the Markdown report.
pub async fn run(opts: SoakOpts) -> anyhow::Result<String> {
    let load_avg = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    std::env::set_var("STELLAR_BIN_DIR", &opts.bin_dir);
    let dir = TempDir::new("bench-soak");
    let Backdrop {
        engine,
        engine_addr,
        db_url,
        acct,
        tiers,
        ..
    } = Backdrop::start(&dir).await?;
    let engine_port: u16 = engine_addr.rsplit(':').next().unwrap_or("0").parse()?;
    seed_memories(&engine_addr, acct.user_id, "soak").await?;
    let (gw, gw_addr) = start_gateway(&engine_addr, &db_url, &tiers, None, opts.workers)?;
    let pid = gw.pid().unwrap_or(0);
    let path = "/api/v1/stats";
    let key_hdr = vec![("X-API-Key", acct.key.clone())];
    let url = format!("http://{gw_addr}{path}");

    // Peak, after a warm-up.
    wrk(&url, &key_hdr, 2, opts.connections)?;
    let peak = wrk(&url, &key_hdr, opts.peak_secs, opts.connections)?;
    let rate = peak.rps * opts.load_percent / 100.0;
    eprintln!(
        "soak: peak {:.0} req/s; {:.0} % = {rate:.0} req/s for {} s, sampling every {} s",
        peak.rps, opts.load_percent, opts.secs, opts.interval_secs
    );

    let started = Instant::now();
    let mut samples = vec![sample(pid, engine_port, started)];
    let (addr, hdr, secs, conns) = (
        gw_addr.clone(),
        key_hdr.clone(),
        opts.secs,
        opts.connections as usize,
    );
    let load = tokio::spawn(async move { paced(&addr, path, &hdr, rate, secs, conns).await });
    let interval = Duration::from_secs(opts.interval_secs.max(1));
    let mut next = started + interval;
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() >= next {
            let s = sample(pid, engine_port, started);
            eprintln!(
                "soak: {:>5.0} s  RSS {:.1} MiB  fds {}  upstream {}",
                s.secs, s.rss_mib, s.fds, s.upstream
            );
            samples.push(s);
            next += interval;
        }
    }
    let result = load.await??;
    // Once the load has stopped, for the record (idle connections are kept until they time out).
    let after = sample(pid, engine_port, started);
    drop(gw);
    drop(engine);

    let mut md = String::new();
    md.push_str(&format!(
        "`stellar-bench soak --secs {}`: gateway peak (wrk -c{} -d{}s, `GET {path}`) **{:.0} req/s**; \
         load at {:.0} % = {rate:.0} req/s, open loop over {} keep-alive connections for {} s: \
         achieved {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors. Gateway threads {}; load \
         generator, gateway and engine share this machine's {} cores (load average before: {load_avg}).\n\n",
        opts.secs,
        opts.connections,
        opts.peak_secs,
        peak.rps,
        opts.load_percent,
        opts.connections,
        opts.secs,
        result.achieved,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        opts.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    md.push_str(
        "| t (s) | RSS (MiB) | open fds | connections to the engine |\n|---:|---:|---:|---:|\n",
    );
    for s in &samples {
        md.push_str(&format!(
            "| {:.0} | {:.1} | {} | {} |\n",
            s.secs, s.rss_mib, s.fds, s.upstream
        ));
    }
    md.push_str(&format!(
        "| after the load | {:.1} | {} | {} |\n\n",
        after.rss_mib, after.fds, after.upstream
    ));
    // The first sample is taken before any load: leave it out of the trend.
    let loaded = if samples.len() > 1 {
        &samples[1..]
    } else {
        &samples[..]
    };
    let figures: [(&str, Vec<f64>, f64, f64); 3] = [
        (
            "RSS (MiB)",
            loaded.iter().map(|s| s.rss_mib).collect(),
            0.05,
            2.0,
        ),
        (
            "open fds",
            loaded.iter().map(|s| s.fds as f64).collect(),
            0.10,
            8.0,
        ),
        (
            "connections to the engine",
            loaded.iter().map(|s| s.upstream as f64).collect(),
            0.25,
            8.0,
        ),
    ];
    md.push_str("| figure | mean, first third | mean, last third | tolerance | verdict |\n|---|---:|---:|---|---|\n");
    let mut all_flat = true;
    for (name, values, rel, abs) in figures {
        let (t, first, last) = trend(&values, rel, abs);
        all_flat &= t == Trend::Flat;
        md.push_str(&format!(
            "| {name} | {first:.1} | {last:.1} | +{:.0} % and +{abs} | **{}** |\n",
            rel * 100.0,
            if t == Trend::Flat { "flat" } else { "growing" }
        ));
    }
    md.push_str(&format!(
        "\nVerdict: **{}** ({} samples under load, every {} s).\n",
        if all_flat { "flat" } else { "growing" },
        loaded.len(),
        opts.interval_secs
    ));
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_noise_is_flat_and_a_climb_is_growing() {
        // Noise around 60 MiB, within the tolerance.
        let flat = [60.1, 61.0, 60.4, 60.9, 60.2, 61.2, 60.6, 60.8, 61.1];
        assert_eq!(trend(&flat, 0.05, 2.0).0, Trend::Flat);
        // A steady climb of 1 MiB per sample: last third 6 MiB above the first.
        let climb: Vec<f64> = (0..9).map(|i| 60.0 + f64::from(i)).collect();
        let (t, first, last) = trend(&climb, 0.05, 2.0);
        assert_eq!(t, Trend::Growing);
        assert_eq!((first, last), (61.0, 67.0));
        // Growth past the absolute tolerance but not the relative one is flat (and vice versa).
        assert_eq!(
            trend(&[100.0, 100.0, 100.0, 105.0, 105.0, 105.0], 0.10, 2.0).0,
            Trend::Flat
        );
        assert_eq!(
            trend(&[10.0, 10.0, 10.0, 11.5, 11.5, 11.5], 0.10, 2.0).0,
            Trend::Flat
        );
        // Shrinking is flat; too few samples show no trend.
        assert_eq!(
            trend(&[70.0, 69.0, 65.0, 64.0, 60.0, 59.0], 0.10, 2.0).0,
            Trend::Flat
        );
        assert_eq!(trend(&[1.0, 100.0], 0.10, 2.0).0, Trend::Flat);
        assert_eq!(trend(&[], 0.10, 2.0).0, Trend::Flat);
    }

    #[test]
    fn counts_this_process_connections_to_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _a = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _b = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_, sockets) = fds(std::process::id());
        // Both client ends belong to this process; the accepted ends have `port` as their
        // local, not remote, port.
        assert_eq!(connections_to(port, &sockets), 2);
        assert_eq!(connections_to(port, &HashSet::new()), 0);
    }
}
