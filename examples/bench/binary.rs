//! `binary`: the release binary through the Runtime API: cold start, size, peak
//! RSS of a 1-record and a 1,000-record batch, and how many times it reads the
//! system's root certificate store at init.

use std::process::Stdio;
use std::time::Duration;

use d365_sandbox::Sandbox;

use crate::batches::batch;
use crate::harness::ROOT;
use crate::runtime_api::{cold_start, process_run, relay_process_as, runtime_api};

/// The system's root certificate store, as rustls-native-certs finds it (openssl-probe).
const CERTS: &str = "/etc/ssl/certs";

/// Pushes the scenario's rows; returns the root-store reads at init, or why they
/// could not be counted.
pub async fn run(sandbox: &Sandbox, rows: &mut Vec<String>) -> Result<usize, String> {
    let url = sandbox.url();
    let _ = cold_start(&url).await; // page cache
    let mut starts = Vec::new();
    for _ in 0..9 {
        starts.push(cold_start(&url).await);
    }
    starts.sort_by(f64::total_cmp);
    let binary = std::fs::metadata(format!("{ROOT}/target/release/d365-trigger-relay")).map(|m| m.len()).unwrap_or(0);
    let idle = process_run(batch(1, "rss-1"), &url).await;
    let thousand = batch(1_000, "rss");
    let thousand_mb = thousand.to_string().len() as f64 / 1e6;
    let r = process_run(thousand, &url).await;
    rows.push(format!(
        "| cold start: process start → first Runtime API `next` (median of 9, min–max) | **{:.1} ms** ({:.1}–{:.1}) |",
        starts[4], starts[0], starts[8]
    ));
    rows.push(format!("| binary size (x86_64, LTO, stripped) | {:.1} MB |", binary as f64 / 1e6));
    rows.push(format!(
        "| peak RSS, 1,000-record SQS batch ({thousand_mb:.2} MB) through the Runtime API | {:.1} MiB (batch item failures: {}) |",
        r.peak_rss_kib as f64 / 1024.0,
        r.failures
    ));
    rows.push(format!("| peak RSS, 1-record SQS batch (what the process costs before any batch) | {:.1} MiB |", idle.peak_rss_kib as f64 / 1024.0));
    rows.push(format!("| token requests for those two processes | {} (one each) |", sandbox.stats().token_requests));
    let roots = root_store_reads(&url).await;
    match &roots {
        Ok(r) => {
            println!("root-store reads at init: {}", r.reads);
            rows.push(format!(
                "| root-store reads at init: process start → first `next` under strace ({} listings of {CERTS}, {} opens of its bundle, {} opens of files in it of {} entries) | **{}** (target ≤ 1) |",
                r.listings, r.bundles, r.files, r.entries, r.reads
            ));
        }
        Err(why) => {
            println!("root-store reads at init: not counted ({why})");
            rows.push(format!("| root-store reads at init | not counted: {why} |"));
        }
    }
    roots.map(|r| r.reads)
}

/// What the process opened under the root certificate store before its first `next`.
struct RootStoreReads {
    /// Whole reads of the store: rustls-native-certs opens the bundle
    /// (`ca-certificates.crt`) and lists the directory once per load, then opens
    /// each file in it; the more of the two.
    reads: usize,
    listings: usize,
    bundles: usize,
    /// Opens of the store's other files (its hash-named links, ~150 a read here).
    files: usize,
    /// Entries in the store's directory.
    entries: usize,
}

/// The release binary under `strace -f -e trace=openat,open` until it first asks
/// the Runtime API for an event (its init done), then stopped.
async fn root_store_reads(sandbox: &str) -> Result<RootStoreReads, String> {
    let strace = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("strace")).find(|p| p.is_file()))
        .ok_or("strace not found (apt-get install strace; `make bench` installs it)")?;
    let dir = format!("{ROOT}/target/bench-strace");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let trace = format!("{dir}/init.trace");
    let _ = std::fs::remove_file(&trace);
    let binary = format!("{ROOT}/target/release/d365-trigger-relay");
    let mut api = runtime_api(None).await;
    let mut command = relay_process_as(&strace.to_string_lossy(), api.addr, sandbox);
    command.args(["-f", "-qq", "-e", "trace=openat,open", "-o", trace.as_str(), "--", binary.as_str()]).stderr(Stdio::null());
    // Its own process group, so that the relay can be stopped with it if its pid cannot be read.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| format!("strace: {e}"))?;
    let asked = tokio::time::timeout(Duration::from_secs(30), api.next_asked.recv()).await;
    // strace's child is the relay: stopping it lets strace write out its trace and exit.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap_or_default();
    let group = format!("-{}", child.id());
    let pids: Vec<&str> = children.split_whitespace().collect();
    let _ = std::process::Command::new("kill").args(["-KILL", "--"]).args(if pids.is_empty() { vec![group.as_str()] } else { pids }).status();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while child.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    if asked.is_err() {
        return Err("the relay did not ask for an event under strace (ptrace not permitted?)".into());
    }
    let text = std::fs::read_to_string(&trace).map_err(|e| format!("{trace}: {e}"))?;
    let (mut listings, mut bundles, mut files) = (0, 0, 0);
    for line in text.lines().filter(|l| l.contains("open")) {
        let Some(path) = line.split('"').nth(1) else { continue };
        let Some(rest) = path.strip_prefix(CERTS) else { continue };
        match rest.trim_start_matches('/') {
            "" => listings += 1,
            "ca-certificates.crt" => bundles += 1,
            _ if rest.starts_with('/') => files += 1,
            _ => {}
        }
    }
    let entries = std::fs::read_dir(CERTS).map(|d| d.count()).unwrap_or(0);
    Ok(RootStoreReads { reads: listings.max(bundles), listings, bundles, files, entries })
}
