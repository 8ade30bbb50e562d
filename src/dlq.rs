//! `d365-trigger-relay dlq` (SPEC §22.3): a queue of parked records (§18.3)
//! summed up, listed, replayed to the events queue or exported for `send`,
//! picking by reason — where `aws sqs start-message-move-task` moves all.
//!
//! One scan: receive (long polling, every attribute) until the queue has
//! nothing more to give, the `--limit` is reached or Ctrl-C; act on each
//! matching message as it arrives; at the end hand every message received
//! and not deleted back (visibility 0). `replay` deletes a message only once
//! SQS has confirmed its send, so an interrupted replay loses nothing and at
//! worst sends again what was in flight (idempotency absorbs it). SQS is the
//! only thing read: no secret, no mapping, no other setting.

pub mod parked;
pub mod queue;
pub mod report;

use std::io::{BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::command_line::usage_error;
use parked::Filters;
use queue::{DeadLetterQueue, Message, Outgoing, ReceiveError, Target, BATCH_BYTES, BATCH_ENTRIES};
use report::Tally;

/// The exit status of a command stopped by Ctrl-C.
pub const INTERRUPTED: i32 = 130;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Summary,
    List,
    Replay,
    Export,
}

/// The command line of `dlq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub action: Action,
    pub queue: Option<String>,
    pub filters: Filters,
    pub json: bool,
    pub to: Option<String>,
    pub out: Option<String>,
    pub dry_run: bool,
    pub rate: Option<f64>,
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let action = match args.first().map(String::as_str) {
        Some("summary") => Action::Summary,
        Some("list") => Action::List,
        Some("replay") => Action::Replay,
        Some("export") => Action::Export,
        Some(other) => return Err(format!("dlq takes summary, list, replay or export, not '{other}'")),
        None => return Err("dlq takes summary, list, replay or export".into()),
    };
    let mut options = Options { action, queue: None, filters: Filters::default(), json: false, to: None, out: None, dry_run: false, rate: None };
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let flag = arg.as_str();
        let mut value = || rest.next().cloned().filter(|v| !v.trim().is_empty()).ok_or_else(|| format!("{flag} needs a value"));
        if options.filters.take(flag, &mut value)? {
            continue;
        }
        match (flag, action) {
            ("--queue", _) => options.queue = Some(value()?),
            ("--json", Action::Summary | Action::List) => options.json = true,
            ("--to", Action::Replay) => options.to = Some(value()?),
            ("--dry-run", Action::Replay) => options.dry_run = true,
            ("--rate", Action::Replay) => {
                let rate = value()?;
                match rate.parse::<f64>() {
                    Ok(n) if n.is_finite() && n > 0.0 => options.rate = Some(n),
                    _ => return Err(format!("--rate must be a positive number of messages a second, not '{rate}'")),
                }
            }
            ("--out", Action::Export) => options.out = Some(value()?),
            (flag, _) if flag.starts_with("--") => return Err(format!("dlq {} takes no option {flag}", args[0])),
            (extra, _) => return Err(format!("dlq {} takes no argument '{extra}'", args[0])),
        }
    }
    match action {
        Action::Replay if options.to.is_none() => return Err("dlq replay needs --to URL (the events queue)".into()),
        Action::Export if options.out.is_none() => return Err("dlq export needs --out FILE".into()),
        _ => {}
    }
    if action == Action::Replay && options.filters.outcomes.is_empty() {
        // An invalid record fails again until the mapping changes: only on request.
        options.filters.outcomes = parked::OUTCOMES.iter().filter(|o| **o != "invalid").map(|o| o.to_string()).collect();
    }
    Ok(options)
}

/// Runs `dlq`; returns the exit status.
pub async fn command(args: &[String]) -> i32 {
    let mut options = match parse(args) {
        Ok(options) => options,
        Err(error) => return usage_error(&error),
    };
    let queue = options.queue.take().or_else(|| std::env::var("D365_DEAD_LETTER_QUEUE_URL").ok()).filter(|q| !q.trim().is_empty());
    let Some(queue) = queue else {
        return usage_error("dlq needs --queue URL or D365_DEAD_LETTER_QUEUE_URL");
    };
    if options.to.as_deref() == Some(queue.as_str()) {
        return usage_error("--to names the queue being read: give the events queue");
    }
    let out: Option<Box<dyn Write>> = match &options.out {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Some(Box::new(BufWriter::new(file))),
            Err(error) => return usage_error(&format!("cannot write {path}: {error}")),
        },
        None => None,
    };
    let client = crate::enqueue::sqs_client(&crate::aws_config_from_env().await);
    let target = options.to.clone().map(|url| Target::new(client.clone(), url));
    let dlq = DeadLetterQueue::new(client, queue);
    let interrupt = interrupt_on_ctrl_c();
    run(&options, dlq, target.as_ref(), out, interrupt).await
}

/// Ctrl-C turns the returned flag true (stop receiving, finish the sends in
/// flight, hand back what is held); a second Ctrl-C quits at once (messages
/// held come back when their visibility timeout ends; none is lost).
fn interrupt_on_ctrl_c() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("dlq: interrupted: no more receives; finishing the sends in flight and handing back what is held (Ctrl-C again to quit at once)");
        sender.send_replace(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(INTERRUPTED);
        }
    });
    receiver
}

/// What a scan came to.
#[derive(Debug, Default)]
pub struct Counts {
    pub scanned: u64,
    pub matched: u64,
    pub replayed: u64,
    pub exported: u64,
    /// Replay sends SQS refused (or that failed).
    pub send_failures: u64,
    /// Messages sent but not deleted from the DLQ.
    pub not_deleted: u64,
    /// Export: matched messages whose body is not JSON (left out of the file).
    pub not_json: u64,
}

/// The scan and what it does with each matching message.
pub async fn run(
    options: &Options,
    mut dlq: DeadLetterQueue,
    target: Option<&Target>,
    mut out: Option<Box<dyn Write>>,
    interrupt: watch::Receiver<bool>,
) -> i32 {
    let bar = progress_bar(&dlq).await;
    let mut counts = Counts::default();
    let mut tally = Tally::default();
    let mut pacer = Pacer::new(options.rate);
    let mut stopped_short: Option<String> = None;
    let mut problem: Option<String> = None;
    let mut first = true;
    // Whether the scan reached the queue's end (not a limit, Ctrl-C or a stop).
    let mut complete = false;
    let stdout = std::io::stdout();
    loop {
        if *interrupt.borrow() || options.filters.limit.is_some_and(|limit| counts.matched >= limit) {
            break;
        }
        let batch = match dlq.receive().await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                complete = true;
                break;
            }
            Err(ReceiveError::Failed(error)) if first => {
                bar.finish_and_clear();
                dlq.release().await;
                return usage_error(&format!("cannot read the queue {}: {error}", dlq.url));
            }
            Err(ReceiveError::Failed(error)) => {
                problem = Some(format!("a receive failed: {error}"));
                stopped_short = Some("a receive failed".into());
                break;
            }
            Err(ReceiveError::OverLimit(error)) => {
                stopped_short = Some(format!("SQS lets one consumer hold no more messages ({error})"));
                break;
            }
            Err(ReceiveError::ComingBack) => {
                stopped_short = Some("messages already received came back: the queue's visibility timeout is shorter than the scan".into());
                break;
            }
        };
        first = false;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut matched: Vec<Message> = Vec::new();
        for message in batch {
            counts.scanned += 1;
            let under_limit = options.filters.limit.is_none_or(|limit| counts.matched < limit);
            if under_limit && options.filters.matches(&message.parked, now_ms) {
                counts.matched += 1;
                matched.push(message);
            }
        }
        match options.action {
            Action::Summary => matched.iter().for_each(|m| tally.add(&m.parked, now_ms)),
            Action::List => {
                let mut lock = stdout.lock();
                for m in &matched {
                    let line = if options.json { report::list_json(&m.parked, now_ms).to_string() } else { report::list_line(&m.parked, now_ms) };
                    bar.suspend(|| writeln!(lock, "{line}")).ok();
                }
            }
            Action::Export => {
                if let Some(writer) = out.as_mut() {
                    if let Err(error) = export(writer, &matched, &mut counts) {
                        problem = Some(format!("cannot write {}: {error}", options.out.as_deref().unwrap_or("")));
                        break;
                    }
                }
            }
            Action::Replay if options.dry_run => {}
            Action::Replay => {
                let target = target.expect("replay has a target");
                if let Err(error) = replay(&mut dlq, target, &matched, &mut pacer, &interrupt, &mut counts).await {
                    problem.get_or_insert(error);
                }
            }
        }
        bar.set_position(counts.scanned);
        bar.set_message(match options.action {
            Action::Replay => format!("matched {}, replayed {}", counts.matched, counts.replayed),
            _ => format!("matched {}", counts.matched),
        });
    }
    bar.finish_and_clear();
    let interrupted = *interrupt.borrow();
    if stopped_short.is_none() && !interrupted && dlq.is_fifo() && options.filters.limit.is_none_or(|limit| counts.matched < limit) {
        if let Some((visible, _)) = dlq.depth().await.filter(|(visible, _)| *visible > 0) {
            stopped_short = Some(format!("about {visible} messages stayed hidden behind messages of their FIFO group held by the scan"));
        }
    }
    let held = dlq.held();
    let refused = dlq.release().await;
    if refused > 0 {
        problem.get_or_insert(format!("SQS did not take back {refused} of the {held} messages held: they come back when the queue's visibility timeout ends"));
    }
    if let Some(writer) = out.as_mut() {
        if let Err(error) = writer.flush() {
            problem.get_or_insert(format!("cannot write {}: {error}", options.out.as_deref().unwrap_or("")));
        }
    }
    let complete = complete && stopped_short.is_none();
    finish(options, &dlq, &Ending { counts, tally, stopped_short, problem, interrupted, complete })
}

/// How a scan ended.
struct Ending {
    counts: Counts,
    tally: Tally,
    /// Why it ended before the queue's end, when SQS would not give more.
    stopped_short: Option<String>,
    problem: Option<String>,
    interrupted: bool,
    /// It reached the queue's end (not a limit, Ctrl-C or a stop).
    complete: bool,
}

/// The closing lines (standard error; the summary on standard output) and the exit status.
fn finish(options: &Options, dlq: &DeadLetterQueue, ending: &Ending) -> i32 {
    let Ending { counts, tally, stopped_short, problem, interrupted, complete } = ending;
    if options.action == Action::Summary {
        if options.json {
            println!("{}", serde_json::to_string_pretty(&tally.to_json()).expect("JSON serialises"));
        } else {
            print!("{}", tally.to_text());
        }
    }
    if dlq.came_back > 0 {
        eprintln!("dlq: {} messages came back during the scan (counted once): give the queue a visibility timeout longer than a scan", dlq.came_back);
    }
    if let Some(reason) = &stopped_short {
        eprintln!("dlq: the scan stopped short: {reason}; run the command again once this one has ended to see the rest");
    }
    if counts.not_json > 0 {
        eprintln!("dlq: {} matching messages are not JSON and were left out of the file (dlq list shows them)", counts.not_json);
    }
    if let Some(problem) = &problem {
        eprintln!("dlq: {problem}");
    }
    let left = counts.scanned - counts.replayed;
    match options.action {
        Action::Replay if options.dry_run => {
            eprintln!("dlq: dry run: {} messages would be replayed to {}; nothing was sent or deleted", counts.matched, options.to.as_deref().unwrap_or(""));
        }
        Action::Replay if counts.send_failures > 0 => {
            eprintln!("dlq: {} messages were not sent (refused or failed); they stay in the DLQ", counts.send_failures)
        }
        Action::Export => eprintln!("dlq: {} records written to {}; the messages stay in the DLQ", counts.exported, options.out.as_deref().unwrap_or("")),
        _ => {}
    }
    eprintln!(
        "{}scanned {}, matched {}, replayed {}, left {left}{}",
        if *interrupted { "interrupted: " } else { "" },
        counts.scanned,
        counts.matched,
        counts.replayed,
        if *complete { "" } else { " (and the messages not scanned)" }
    );
    if *interrupted {
        INTERRUPTED
    } else if problem.is_some() || counts.send_failures > 0 || counts.not_deleted > 0 {
        1
    } else {
        0
    }
}

/// Each matching message's records as NDJSON lines `send` reads (an event or an envelope a line).
fn export(writer: &mut Box<dyn Write>, matched: &[Message], counts: &mut Counts) -> std::io::Result<()> {
    for message in matched {
        for record in &message.parked.records {
            match serde_json::from_str::<serde_json::Value>(&record.body) {
                Ok(value) => {
                    writeln!(writer, "{value}")?;
                    counts.exported += 1;
                }
                Err(_) => counts.not_json += 1,
            }
        }
    }
    Ok(())
}

/// Sends the matching messages of one receive to the target, in order, and
/// deletes from the DLQ each one whose every record SQS confirmed. Ctrl-C
/// stops it between sends: the send in flight finishes and its confirmed
/// messages are deleted.
async fn replay(
    dlq: &mut DeadLetterQueue,
    target: &Target,
    matched: &[Message],
    pacer: &mut Pacer,
    interrupt: &watch::Receiver<bool>,
    counts: &mut Counts,
) -> Result<(), String> {
    let fifo = target.is_fifo();
    let outgoing: Vec<Outgoing> = matched.iter().flat_map(|m| queue::replay_messages(m, fifo)).collect();
    // A message is deleted once all its records are confirmed.
    let mut pending: Vec<(String, usize)> = matched.iter().map(|m| (m.parked.sqs_id.clone(), m.parked.records.len())).collect();
    let mut failed_messages: Vec<String> = Vec::new();
    let mut first_error = None;
    let mut at = 0;
    while at < outgoing.len() {
        if *interrupt.borrow() {
            break;
        }
        let end = chunk_end(&outgoing, at, pacer.chunk());
        if !pacer.wait(end - at, interrupt).await {
            break;
        }
        let chunk = &outgoing[at..end];
        let (confirmed, refusal) = target.send(chunk).await;
        if let Some(refusal) = refusal {
            first_error.get_or_insert(format!("the target refused sends: {refusal}"));
        }
        let mut complete = Vec::new();
        for (sent, ok) in chunk.iter().zip(confirmed) {
            if !ok {
                if !failed_messages.contains(&sent.from) {
                    failed_messages.push(sent.from.clone());
                    counts.send_failures += 1;
                }
                continue;
            }
            if let Some(slot) = pending.iter_mut().find(|(id, _)| *id == sent.from) {
                slot.1 -= 1;
                if slot.1 == 0 && !failed_messages.contains(&sent.from) {
                    complete.push(sent.from.clone());
                }
            }
        }
        if !complete.is_empty() {
            let deleted = match dlq.delete(&complete).await {
                Ok(deleted) => deleted,
                Err(error) => {
                    first_error.get_or_insert(format!("sent but not deleted from the DLQ (sent again by the next replay, idempotency absorbs it): {error}"));
                    Vec::new()
                }
            };
            counts.replayed += deleted.len() as u64;
            counts.not_deleted += (complete.len() - deleted.len()) as u64;
        }
        at = end;
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The end of the next `SendMessageBatch` from `at`: at most `limit` entries and [`BATCH_BYTES`].
fn chunk_end(outgoing: &[Outgoing], at: usize, limit: usize) -> usize {
    let mut bytes = 0;
    let mut end = at;
    while end < outgoing.len() && end - at < limit {
        let size = queue::entry_bytes(&outgoing[end].entry);
        if end > at && bytes + size > BATCH_BYTES {
            break;
        }
        bytes += size;
        end += 1;
    }
    end
}

/// `--rate N`: at most N messages a second, in sends of at most N (and 10).
struct Pacer {
    rate: Option<f64>,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Pacer {
        Pacer { rate, started: Instant::now(), sent: 0 }
    }

    fn chunk(&self) -> usize {
        self.rate.map_or(BATCH_ENTRIES, |rate| (rate.floor() as usize).clamp(1, BATCH_ENTRIES))
    }

    /// Waits until `n` more messages keep within the rate; false when Ctrl-C came first.
    async fn wait(&mut self, n: usize, interrupt: &watch::Receiver<bool>) -> bool {
        if let Some(rate) = self.rate {
            let at = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            let mut interrupt = interrupt.clone();
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                _ = interrupt.wait_for(|stop| *stop) => return false,
            }
        }
        self.sent += n as u64;
        true
    }
}

/// A bar on a terminal (messages scanned of the queue's approximate depth); hidden otherwise.
async fn progress_bar(dlq: &DeadLetterQueue) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total = dlq.depth().await.map(|(visible, hidden)| visible + hidden);
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4));
    let template = match total {
        Some(_) => "{bar:30} {human_pos}/~{human_len} scanned {per_sec}  {msg}",
        None => "{spinner} {human_pos} scanned {per_sec}  {msg}",
    };
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replay_takes_every_outcome_but_invalid_unless_asked() {
        let options = parse(&args(&["replay", "--to", "https://q/events", "--rate", "5", "--dry-run"])).unwrap();
        assert_eq!(options.filters.outcomes, ["failed", "expired", "rejected", "moved"]);
        assert_eq!((options.rate, options.dry_run), (Some(5.0), true));
        let invalid = parse(&args(&["replay", "--to", "u", "--outcome", "invalid"])).unwrap();
        assert_eq!(invalid.filters.outcomes, ["invalid"]);
        assert!(parse(&args(&["summary"])).unwrap().filters.outcomes.is_empty(), "summary counts every outcome");
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse(&args(&["replay"])).unwrap_err().contains("--to URL"));
        assert!(parse(&args(&["export"])).unwrap_err().contains("--out FILE"));
        assert!(parse(&args(&["list", "--to", "u"])).unwrap_err().contains("no option --to"));
        assert!(parse(&args(&["summary", "--queue"])).unwrap_err().contains("--queue needs a value"));
        assert!(parse(&args(&["replay", "--to", "u", "--rate", "0"])).unwrap_err().contains("--rate"));
        assert!(parse(&args(&["move"])).unwrap_err().contains("summary, list, replay or export"));
        let list = parse(&args(&["list", "--event", "Order Completed", "--older-than", "1h", "--limit", "5", "--json"])).unwrap();
        assert_eq!((list.filters.events.as_slice(), list.filters.limit, list.json), (&["Order Completed".to_string()][..], Some(5), true));
    }

    #[test]
    fn a_rate_below_ten_sends_fewer_at_once() {
        assert_eq!(Pacer::new(Some(2.5)).chunk(), 2);
        assert_eq!(Pacer::new(Some(0.2)).chunk(), 1);
        assert_eq!(Pacer::new(Some(500.0)).chunk(), 10);
        assert_eq!(Pacer::new(None).chunk(), 10);
    }
}
