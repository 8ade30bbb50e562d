//! `d365-trigger-relay send` (SPEC §16): a file of events through the
//! function's own mapping, schema, identity, idempotency and delivery engine,
//! from a shell — the backfill after an outage, the replay of a dead-letter
//! queue.
//!
//! The input is read on a thread of its own ([`input`]) and delivered in
//! windows of [`WINDOW`] records, [`DEPTH`] windows at a time, each one
//! [`Relay::process_events`] call with a budget that never ends
//! ([`Cutoffs::unbounded`]): the same code path as an invocation, with the same
//! pacer. Report lines ([`report`]) are written in input order as windows
//! complete, so memory follows what is in flight, not the size of the file.
//! Ctrl-C stops the pacer: no call starts, the calls in flight finish, their
//! lines are written, and records never started are left for `--resume`.

pub mod input;
pub mod progress;
pub mod report;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::command_line::usage_error;
use crate::deadline::Cutoffs;
use crate::handler::Relay;
use crate::intake::Incoming;
use crate::outcome::{DeliveryError, Outcome, RecordResult};
use input::Item;
use progress::Progress;
use report::{Done, Line};

/// Records per [`Relay::process_events`] call.
pub const WINDOW: usize = 512;
/// Windows under way at once: the next one starts while the last calls of the previous finish.
pub const DEPTH: usize = 3;
/// A window is started with fewer records when the input is slower than this (standard input).
const FILL_WAIT: Duration = Duration::from_millis(100);
/// How long reading the settings and the secret may take before the first record.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// The exit status of a run stopped by Ctrl-C.
pub const INTERRUPTED: i32 = 130;

/// The command line of `send`.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub file: Option<String>,
    pub report: Option<String>,
    pub resume: Option<String>,
    pub dry_run: bool,
    pub rate: Option<f64>,
    pub max_in_flight: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--report" => options.report = Some(value("--report FILE")?),
            "--resume" => options.resume = Some(value("--resume FILE")?),
            "--dry-run" => options.dry_run = true,
            "--rate" => {
                let rate = value("--rate N")?;
                match rate.parse::<f64>() {
                    Ok(n) if n.is_finite() && n > 0.0 => options.rate = Some(n),
                    _ => return Err(format!("--rate must be a positive number of starts per second, not '{rate}'")),
                }
            }
            "--max-in-flight" => options.max_in_flight = Some(value("--max-in-flight N")?),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            file if options.file.is_none() => options.file = Some(file.to_string()),
            extra => return Err(format!("send takes one FILE, not also '{extra}'")),
        }
    }
    if let (Some(report), Some(resume)) = (&options.report, &options.resume) {
        if report != resume {
            return Err("--resume FILE appends to FILE: give --report the same FILE or leave it out".into());
        }
    }
    Ok(options)
}

/// Runs `send`; returns the exit status.
pub async fn command(args: &[String]) -> i32 {
    let options = match parse(args) {
        Ok(options) => options,
        Err(error) => return usage_error(&error),
    };
    let overrides: Vec<(&str, String)> = options.max_in_flight.iter().map(|n| ("D365_MAX_IN_FLIGHT", n.clone())).collect();
    let (settings, secret_file) = crate::command_line::settings_with(&overrides);
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => return usage_error(&format!("configuration error: {error}")),
    };
    let (input, total): (Box<dyn Read + Send>, Option<u64>) = match options.file.as_deref() {
        None | Some("-") => (Box::new(std::io::stdin()), None),
        Some(path) => match File::open(path) {
            // The total is for the progress bar only: counted when there is one.
            Ok(file) => (Box::new(file), if std::io::stderr().is_terminal() { count_records(path) } else { None }),
            Err(error) => return usage_error(&format!("cannot read {path}: {error}")),
        },
    };
    let (done, out, report_name) = match open_report(&options) {
        Ok(opened) => opened,
        Err(error) => return usage_error(&error),
    };

    let mut clients = crate::startup::Clients::from_env().await;
    // `send` delivers inline: it neither enqueues nor backs records off in a queue.
    clients.sqs = None;
    let startup = crate::startup::Options {
        secret_file: secret_file.map(Into::into),
        dry_run: options.dry_run,
        rate: options.rate,
        metrics: false,
        record_lines: Default::default(),
    };
    let relay = crate::startup::relay(Ok(settings), clients, startup);
    if let Some(dynamics) = relay.dynamics() {
        dynamics.begin_invocation();
    }
    if let Err(error) = relay.ready(&Cutoffs::until(Instant::now() + READY_DEADLINE)).await {
        return usage_error(&match error {
            crate::secrets::SecretError::Config(error) => format!("configuration error: {error}"),
            unavailable => unavailable.to_string(),
        });
    }
    let relay = Arc::new(relay);
    let interrupt = interrupt_on_ctrl_c(&relay);
    let summary = run(relay, input::spawn_reader(input, WINDOW), total, &done, out, interrupt).await;
    summary.finish(&report_name)
}

/// What a run came to.
pub struct Summary {
    pub progress: Progress,
    pub interrupted: bool,
    /// A window's work failed as a whole (a bug): its records are not in the report.
    pub lost_windows: usize,
    /// The report could not be written.
    pub write_error: Option<std::io::Error>,
}

impl Summary {
    /// The summary line (standard error) and the exit status: 130 after Ctrl-C,
    /// 0 when every record succeeded, else 1.
    pub fn finish(&self, report: &str) -> i32 {
        if let Some(error) = &self.write_error {
            eprintln!("d365-trigger-relay: cannot write the report {report}: {error}");
        }
        self.progress.finish(self.interrupted, report);
        if self.interrupted {
            INTERRUPTED
        } else if self.progress.counts.all_succeeded() && self.lost_windows == 0 && self.write_error.is_none() {
            0
        } else {
            1
        }
    }
}

/// Delivers every item in windows and writes the report in input order.
/// `interrupt` turns true on Ctrl-C: no window starts any more (and the
/// relay's pacer, stopped, starts no call).
pub async fn run(
    relay: Arc<Relay>,
    mut items: mpsc::Receiver<Item>,
    total: Option<u64>,
    done: &Done,
    mut out: Box<dyn Write + Send>,
    mut interrupt: watch::Receiver<bool>,
) -> Summary {
    let mut summary = Summary { progress: Progress::new(total), interrupted: false, lost_windows: 0, write_error: None };
    let mut running: VecDeque<JoinHandle<Vec<RecordResult>>> = VecDeque::new();
    let mut input_done = false;
    loop {
        while running.len() < DEPTH && !input_done && !*interrupt.borrow() {
            let (records, skipped) = match next_window(&mut items, done, &mut interrupt).await {
                None => {
                    input_done = true;
                    continue;
                }
                Some(window) => window,
            };
            summary.progress.skipped(skipped);
            if records.is_empty() {
                summary.progress.update();
                continue;
            }
            if let Some(dynamics) = relay.dynamics() {
                dynamics.begin_invocation();
            }
            let relay = relay.clone();
            running.push_back(tokio::spawn(async move { relay.process_events(records, Cutoffs::unbounded()).await }));
        }
        let Some(window) = running.pop_front() else { break };
        let results = match window.await {
            Ok(results) => results,
            Err(error) => {
                tracing::error!(message = "A window of records failed; its records are not in the report.", error = %error);
                summary.lost_windows += 1;
                continue;
            }
        };
        let interrupted = *interrupt.borrow();
        for result in &results {
            if interrupted && never_started(result) {
                continue;
            }
            summary.progress.record(result);
            if summary.write_error.is_none() {
                if let Err(error) = writeln!(out, "{}", Line::of(result).to_json()) {
                    summary.write_error = Some(error);
                }
            }
        }
        if let Err(error) = out.flush() {
            summary.write_error.get_or_insert(error);
        }
        summary.progress.update();
    }
    summary.interrupted = *interrupt.borrow();
    summary
}

/// A record the interruption kept from its first attempt.
fn never_started(result: &RecordResult) -> bool {
    result.attempts == 0 && result.outcome == Outcome::Failed(DeliveryError::Deadline)
}

/// Up to [`WINDOW`] records (and how many lines the resumed report listed as
/// done); `None` at the end of the input or on Ctrl-C.
async fn next_window(items: &mut mpsc::Receiver<Item>, done: &Done, interrupt: &mut watch::Receiver<bool>) -> Option<(Vec<Incoming>, u64)> {
    let mut records = Vec::with_capacity(WINDOW);
    let mut skipped = 0;
    let mut fill_until: Option<Instant> = None;
    while records.len() < WINDOW {
        let next = async {
            match fill_until {
                None => items.recv().await,
                Some(until) => tokio::time::timeout_at(until.into(), items.recv()).await.ok().flatten(),
            }
        };
        let item = tokio::select! {
            item = next => item,
            _ = interrupt.wait_for(|i| *i) => return None,
        };
        let Some(item) = item else { break };
        fill_until.get_or_insert_with(|| Instant::now() + FILL_WAIT);
        if done.contains(item.line) {
            skipped += 1;
            continue;
        }
        let event = item.value.and_then(crate::envelope::unwrap);
        records.push(Incoming { index: item.line as usize, sqs_id: None, group: None, receive_count: None, event: crate::intake::Pending::Ready(event) });
    }
    if records.is_empty() && skipped == 0 {
        return None;
    }
    Some((records, skipped))
}

/// Ctrl-C stops the relay's pacer and turns the returned flag true; a second Ctrl-C quits at once.
fn interrupt_on_ctrl_c(relay: &Arc<Relay>) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    let pool = relay.pool().clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("d365-trigger-relay: interrupted: no new calls; finishing the calls in flight and writing the report (Ctrl-C again to quit at once)");
        pool.stop();
        sender.send_replace(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(INTERRUPTED);
        }
    });
    receiver
}

/// The report to write (standard output without `--report`/`--resume`), the
/// lines a resumed report lists as done, and the report's name for the summary.
fn open_report(options: &Options) -> Result<(Done, Box<dyn Write + Send>, String), String> {
    if let Some(path) = &options.resume {
        let file = File::open(path).map_err(|e| format!("--resume {path}: {e}"))?;
        let (done, ends_with_newline) = Done::read(file).map_err(|e| format!("--resume {path}: {e}"))?;
        let mut out = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| format!("--resume {path}: {e}"))?;
        if !ends_with_newline {
            // A line cut short by a crash stays on a line of its own.
            out.write_all(b"\n").map_err(|e| format!("--resume {path}: {e}"))?;
        }
        tracing::info!(message = "Resuming: lines already delivered are skipped.", report = %path, done = done.len());
        return Ok((done, Box::new(BufWriter::new(out)), path.clone()));
    }
    match &options.report {
        Some(path) => {
            let file = File::create(path).map_err(|e| format!("--report {path}: {e}"))?;
            Ok((Done::default(), Box::new(BufWriter::new(file)), path.clone()))
        }
        None => Ok((Done::default(), Box::new(BufWriter::new(std::io::stdout())), "standard output".into())),
    }
}

/// Records in an NDJSON file (lines that are not blank), for the progress bar; `None` for a JSON array.
fn count_records(path: &str) -> Option<u64> {
    let mut reader = BufReader::with_capacity(64 * 1024, File::open(path).ok()?);
    let mut line = Vec::new();
    let mut count = 0;
    let mut first = true;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return Some(count);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if first && line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return None;
        }
        first = false;
        count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_read_and_mistakes_named() {
        let options = parse(&args(&["events.ndjson", "--report", "r.ndjson", "--dry-run", "--rate", "40", "--max-in-flight", "16"])).unwrap();
        assert_eq!(
            options,
            Options {
                file: Some("events.ndjson".into()),
                report: Some("r.ndjson".into()),
                resume: None,
                dry_run: true,
                rate: Some(40.0),
                max_in_flight: Some("16".into()),
            }
        );
        assert_eq!(parse(&args(&["-"])).unwrap().file.as_deref(), Some("-"));
        assert_eq!(parse(&[]).unwrap(), Options::default());
        assert!(parse(&args(&["--rate", "0"])).unwrap_err().contains("--rate"));
        assert!(parse(&args(&["--rate", "fast"])).is_err());
        assert!(parse(&args(&["--report"])).unwrap_err().contains("needs a value"));
        assert!(parse(&args(&["a", "b"])).unwrap_err().contains("one FILE"));
        assert!(parse(&args(&["--bogus"])).unwrap_err().contains("unknown option"));
        assert!(parse(&args(&["--resume", "a", "--report", "b"])).is_err());
        assert!(parse(&args(&["--resume", "a", "--report", "a"])).is_ok());
    }

    #[test]
    fn only_records_the_interruption_kept_from_starting_are_left_out() {
        let result = |outcome, attempts| RecordResult {
            index: 1,
            sqs_id: None,
            message_id: None,
            event_name: None,
            trigger: None,
            outcome,
            attempts,
            throttled: 0,
            latency: None,
            trace: None,
        };
        assert!(never_started(&result(Outcome::Failed(DeliveryError::Deadline), 0)));
        assert!(!never_started(&result(Outcome::Failed(DeliveryError::Deadline), 1)));
        assert!(!never_started(&result(Outcome::Invalid { reason: "x".into() }, 0)));
        assert!(!never_started(&result(Outcome::Delivered, 1)));
    }
}
