//! The DLQ and the replay target through SQS's own API (SPEC §22.3):
//! `ReceiveMessage` with every attribute, `SendMessageBatch`,
//! `DeleteMessageBatch` and `ChangeMessageVisibilityBatch` (and
//! `GetQueueAttributes`, best effort, for the progress bar's length and to say
//! when a FIFO scan stopped short). A scan holds what it receives until it
//! deletes it or, at the end, [`DeadLetterQueue::release`] makes it visible
//! again: nothing is deleted that SQS has not confirmed sent.

use std::collections::{HashMap, HashSet};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use futures_util::future::join_all;

use super::parked::{Parked, Received};

/// SQS takes at most 10 entries per batch call.
pub const BATCH_ENTRIES: usize = 10;
/// A `SendMessageBatch` stays under 256 KiB, the payload limit every queue accepts.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Long polling asks every SQS server, so an empty answer means an empty queue.
const WAIT_SECONDS: i32 = 1;
/// Visibility changes under way at once when a scan hands messages back.
const RELEASES_IN_FLIGHT: usize = 8;
/// Receives in a row that bring only messages already seen end the scan:
/// the queue's visibility timeout is shorter than the scan.
const REPEATS_TO_STOP: u32 = 3;

/// A message received from the DLQ: read, and its own (not `d365-`) attributes as SQS gave them.
#[derive(Debug, Clone)]
pub struct Message {
    pub parked: Parked,
    pub own_attributes: Vec<(String, MessageAttributeValue)>,
}

/// Why a scan stopped before the queue was empty.
#[derive(Debug)]
pub enum ReceiveError {
    /// SQS's limit on messages one consumer may hold.
    OverLimit(String),
    /// Messages already received keep coming back: the visibility timeout is shorter than the scan.
    ComingBack,
    Failed(String),
}

pub struct DeadLetterQueue {
    client: aws_sdk_sqs::Client,
    pub url: String,
    /// Received and not deleted: MessageId → its latest receipt handle.
    held: HashMap<String, String>,
    /// Every MessageId received in this scan.
    seen: HashSet<String>,
    /// Messages received a second time in this scan.
    pub came_back: u64,
    repeats: u32,
}

impl DeadLetterQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> DeadLetterQueue {
        DeadLetterQueue { client, url, held: HashMap::new(), seen: HashSet::new(), came_back: 0, repeats: 0 }
    }

    pub fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// Messages held (received, not deleted).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The next messages not seen before in this scan; `None` when the queue
    /// has nothing more to give. A message seen before (its visibility ran
    /// out) is held under its new receipt handle and not handed out again.
    pub async fn receive(&mut self) -> Result<Option<Vec<Message>>, ReceiveError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH_ENTRIES as i32)
            .wait_time_seconds(WAIT_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| match error.code() {
                Some(code) if code.contains("OverLimit") => ReceiveError::OverLimit(crate::aws_error(&error)),
                _ => ReceiveError::Failed(crate::aws_error(&error)),
            })?;
        let received = output.messages();
        if received.is_empty() {
            return Ok(None);
        }
        let mut fresh = Vec::new();
        for message in received {
            let (Some(id), Some(receipt)) = (message.message_id(), message.receipt_handle()) else { continue };
            self.held.insert(id.to_string(), receipt.to_string());
            if !self.seen.insert(id.to_string()) {
                self.came_back += 1;
                continue;
            }
            fresh.push(read(message));
        }
        self.repeats = if fresh.is_empty() { self.repeats + 1 } else { 0 };
        if self.repeats >= REPEATS_TO_STOP {
            return Err(ReceiveError::ComingBack);
        }
        Ok(Some(fresh))
    }

    /// `DeleteMessageBatch` of these MessageIds (held ones); the ones SQS confirmed.
    pub async fn delete(&mut self, ids: &[String]) -> Result<Vec<String>, String> {
        let mut deleted = Vec::new();
        let mut failure = None;
        for chunk in ids.chunks(BATCH_ENTRIES) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, id)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(self.held.get(id)?).build().ok())
                .collect();
            if entries.is_empty() {
                continue;
            }
            match self.client.delete_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await {
                Ok(output) => {
                    for ok in output.successful() {
                        if let Some(id) = ok.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                            self.held.remove(id);
                            deleted.push(id.clone());
                        }
                    }
                    if let Some(first) = output.failed().first() {
                        failure = Some(format!("{}: {}", first.code(), first.message().unwrap_or("")));
                    }
                }
                Err(error) => failure = Some(crate::aws_error(&error)),
            }
        }
        match failure {
            Some(error) if deleted.len() < ids.len() => Err(error),
            _ => Ok(deleted),
        }
    }

    /// Every message held made visible again (`ChangeMessageVisibilityBatch`
    /// to 0). Returns how many SQS did not take back: they come back when
    /// their visibility timeout ends.
    pub async fn release(&mut self) -> usize {
        let handles: Vec<String> = self.held.drain().map(|(_, receipt)| receipt).collect();
        let chunks: Vec<&[String]> = handles.chunks(BATCH_ENTRIES).collect();
        let (client, url) = (&self.client, &self.url);
        let mut refused = 0;
        for wave in chunks.chunks(RELEASES_IN_FLIGHT) {
            let calls = wave.iter().map(|chunk| async move {
                let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| {
                        ChangeMessageVisibilityBatchRequestEntry::builder().id(i.to_string()).receipt_handle(h).visibility_timeout(0).build().ok()
                    })
                    .collect();
                match client.change_message_visibility_batch().queue_url(url).set_entries(Some(entries)).send().await {
                    Ok(output) => output.failed().len(),
                    Err(_) => chunk.len(),
                }
            });
            refused += join_all(calls).await.into_iter().sum::<usize>();
        }
        refused
    }

    /// `ApproximateNumberOfMessages` and `…NotVisible`, when SQS answers.
    pub async fn depth(&self) -> Option<(u64, u64)> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .ok()?;
        let attributes = output.attributes()?;
        let count = |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse::<u64>().ok());
        Some((count(QueueAttributeName::ApproximateNumberOfMessages)?, count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible).unwrap_or(0)))
    }
}

fn read(message: &aws_sdk_sqs::types::Message) -> Message {
    let system = message.attributes().map(|a| a.iter().map(|(name, value)| (name.as_str().to_string(), value.clone())).collect()).unwrap_or_default();
    let all: Vec<(String, MessageAttributeValue)> =
        message.message_attributes().map(|a| a.iter().map(|(n, v)| (n.clone(), v.clone())).collect()).unwrap_or_default();
    let received = Received {
        sqs_id: message.message_id().unwrap_or_default().to_string(),
        body: message.body().unwrap_or_default().to_string(),
        system,
        attributes: all.iter().map(|(n, v)| (n.clone(), v.string_value().map(str::to_string))).collect(),
    };
    let mut own_attributes: Vec<(String, MessageAttributeValue)> = all.into_iter().filter(|(n, _)| !n.starts_with("d365-")).collect();
    own_attributes.sort_by(|a, b| a.0.cmp(&b.0));
    Message { parked: Parked::read(&received), own_attributes }
}

/// One message to send to the target.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The DLQ message it comes from.
    pub from: String,
    pub entry: SendMessageBatchRequestEntry,
}

/// The messages `replay` sends for one DLQ message (one per record): body
/// unchanged, its own attributes, on a FIFO target the same group and the
/// deduplication id `replay-{DLQ MessageId}` (`-{n}` after the first record
/// of an on-failure record).
pub fn replay_messages(message: &Message, fifo: bool) -> Vec<Outgoing> {
    let parked = &message.parked;
    parked
        .records
        .iter()
        .enumerate()
        .filter_map(|(n, record)| {
            let mut builder = SendMessageBatchRequestEntry::builder().id("0").message_body(&record.body);
            for (name, value) in &message.own_attributes {
                builder = builder.message_attributes(name, value.clone());
            }
            if fifo {
                let group = parked.group.clone().or_else(|| group_of(&record.body)).unwrap_or_else(|| crate::enqueue::DEFAULT_GROUP.to_string());
                let dedup = if n == 0 { format!("replay-{}", parked.sqs_id) } else { format!("replay-{}-{n}", parked.sqs_id) };
                builder = builder.message_group_id(crate::enqueue::sqs_id(group)).message_deduplication_id(crate::enqueue::sqs_id(dedup));
            }
            Some(Outgoing { from: parked.sqs_id.clone(), entry: builder.build().ok()? })
        })
        .collect()
}

/// A FIFO group for a message from a standard DLQ: as enqueue gives one (`userId`, else `anonymousId`).
fn group_of(body: &str) -> Option<String> {
    let event = crate::envelope::unwrap(serde_json::from_str(body).ok()?).ok()?;
    crate::fields::id_field(&event, "userId", "user_id").or_else(|| crate::fields::id_field(&event, "anonymousId", "anonymous_id"))
}

/// The replay target.
pub struct Target {
    client: aws_sdk_sqs::Client,
    pub url: String,
}

impl Target {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Target {
        Target { client, url }
    }

    pub fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// One `SendMessageBatch` (at most 10 entries); for each entry, whether
    /// SQS confirmed it, and the first refusal in words.
    pub async fn send(&self, batch: &[Outgoing]) -> (Vec<bool>, Option<String>) {
        let entries: Vec<SendMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut entry = o.entry.clone();
                entry.id = i.to_string();
                entry
            })
            .collect();
        match self.client.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await {
            Ok(output) => {
                let mut confirmed = vec![false; batch.len()];
                for ok in output.successful() {
                    if let Some(slot) = ok.id().parse::<usize>().ok().and_then(|i| confirmed.get_mut(i)) {
                        *slot = true;
                    }
                }
                let refusal = output.failed().first().map(|f| format!("{}: {}", f.code(), f.message().unwrap_or("")));
                (confirmed, refusal)
            }
            Err(error) => (vec![false; batch.len()], Some(crate::aws_error(&error))),
        }
    }
}

/// The size SQS counts for an entry: its body and its attributes' names and values.
pub fn entry_bytes(entry: &SendMessageBatchRequestEntry) -> usize {
    let attributes: usize = entry
        .message_attributes()
        .map(|a| {
            a.iter().map(|(n, v)| n.len() + v.data_type().len() + v.string_value().map_or(0, str::len) + v.binary_value().map_or(0, |b| b.as_ref().len())).sum()
        })
        .unwrap_or(0);
    entry.message_body().len() + attributes
}
