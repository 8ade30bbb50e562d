//! A parked message as the `dlq` command reads it (SPEC §22.3): its reasons
//! from the `d365-` attributes the relay wrote (§18.3), or `moved` when SQS
//! moved it after `maxReceiveCount`; a Lambda on-failure record (a JSON object
//! with `requestPayload`) stands for its payload's records. Pure: built from
//! what `ReceiveMessage` answered, judged by [`Filters`] with `now` passed in.

use std::time::Duration;

use serde_json::Value;

/// The outcomes a parked message can have (`moved`: no `d365-` attributes).
pub const OUTCOMES: &[&str] = &["failed", "expired", "rejected", "invalid", "moved"];

/// A reason shown by `list` is cut to this many characters.
const REASON_CHARS: usize = 300;

/// What `ReceiveMessage` answered for one message, as plain text.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub sqs_id: String,
    pub body: String,
    /// System attributes by name (`SentTimestamp`, `MessageGroupId`, …).
    pub system: Vec<(String, String)>,
    /// Message attributes by name: their string value (binary ones: none).
    pub attributes: Vec<(String, Option<String>)>,
}

/// One event a parked message carries: what `replay` sends and `export` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The body to send: the message's own, unchanged; for an on-failure
    /// record, one of its payload's records as JSON.
    pub body: String,
    /// The event's name, once its envelopes are unwrapped.
    pub event: Option<String>,
    /// The event's key (its `messageId`), when it has one.
    pub key: Option<String>,
}

/// A message of the DLQ, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    /// The DLQ's own MessageId.
    pub sqs_id: String,
    pub outcome: String,
    pub status: Option<String>,
    pub code: Option<String>,
    pub destination: Option<String>,
    /// The reason in words, personal data masked.
    pub error: Option<String>,
    /// The record's key: `d365-message-id`, else the event's `messageId`,
    /// else (SQS keeps a message's id when it moves it) the DLQ's MessageId.
    pub key: String,
    pub receive_count: Option<u32>,
    /// When the message was sent (epoch milliseconds).
    pub sent_ms: Option<i64>,
    pub group: Option<String>,
    /// A Lambda on-failure record: `records` are its payload's.
    pub on_failure: bool,
    pub records: Vec<Record>,
}

impl Parked {
    pub fn read(received: &Received) -> Parked {
        let attribute = |name: &str| {
            received.attributes.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
        };
        let system = |name: &str| received.system.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
        let parsed: Option<Value> = serde_json::from_str(&received.body).ok();
        let on_failure = parsed.as_ref().and_then(|v| v.get("requestPayload"));
        let records = match on_failure {
            Some(payload) => payload_records(payload).iter().map(|value| record(value.to_string(), Some(value))).collect(),
            None => vec![record(received.body.clone(), parsed.as_ref())],
        };
        let error = attribute("d365-error").or_else(|| parsed.as_ref().filter(|_| on_failure.is_some()).and_then(failure_reason));
        let key =
            attribute("d365-message-id").or_else(|| (records.len() == 1).then(|| records[0].key.clone()).flatten()).unwrap_or_else(|| received.sqs_id.clone());
        Parked {
            sqs_id: received.sqs_id.clone(),
            outcome: attribute("d365-outcome").unwrap_or_else(|| "moved".into()),
            status: attribute("d365-status"),
            code: attribute("d365-code"),
            destination: attribute("d365-destination"),
            error: error.map(|e| cut(&crate::redact::scrub(&e), REASON_CHARS)),
            key,
            receive_count: attribute("d365-receive-count").and_then(|n| n.parse().ok()),
            sent_ms: system("SentTimestamp").and_then(|t| t.parse().ok()),
            group: system("MessageGroupId"),
            on_failure: on_failure.is_some(),
            records,
        }
    }

    /// How long the message has been in the queue, when SQS said when it was sent.
    pub fn age(&self, now_ms: i64) -> Option<Duration> {
        self.sent_ms.map(|sent| Duration::from_millis(now_ms.saturating_sub(sent).max(0) as u64))
    }

    /// The event names of its records, without repeats, in order.
    pub fn events(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.records.iter().filter_map(|r| r.event.as_deref()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// The records of an on-failure record's payload: an SNS invocation's
/// notifications (each an SNS envelope the relay unwraps), a direct
/// invocation's events (an event, a list, `{"batch": […]}`), or the payload
/// itself (an EventBridge event).
pub fn payload_records(payload: &Value) -> Vec<Value> {
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        let notifications: Vec<Value> = records.iter().filter_map(|r| r.get("Sns").cloned()).collect();
        if !notifications.is_empty() {
            return notifications;
        }
    }
    crate::intake::event_list(payload.clone()).unwrap_or_else(|_| vec![payload.clone()])
}

fn record(body: String, value: Option<&Value>) -> Record {
    let event = value.and_then(|v| crate::envelope::unwrap(v.clone()).ok());
    Record { event: event.as_ref().and_then(crate::fields::event_name).map(str::to_string), key: event.as_ref().and_then(crate::fields::message_id), body }
}

/// An on-failure record's reason: Lambda's condition and the function's error.
fn failure_reason(record: &Value) -> Option<String> {
    let condition = record.pointer("/requestContext/condition").and_then(Value::as_str);
    let error = record.pointer("/responsePayload/errorMessage").and_then(Value::as_str);
    match (condition, error) {
        (Some(c), Some(e)) => Some(format!("{c}: {e}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_string()),
        (None, None) => None,
    }
}

/// `text` cut to at most `max` characters, marked with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The FILTERS of SPEC §22.3: several values of one filter are alternatives,
/// different filters all apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub outcomes: Vec<String>,
    pub codes: Vec<String>,
    pub statuses: Vec<String>,
    pub destinations: Vec<String>,
    pub events: Vec<String>,
    pub message_ids: Vec<String>,
    pub older_than: Option<Duration>,
    pub newer_than: Option<Duration>,
    pub limit: Option<u64>,
}

impl Filters {
    /// Takes `flag` (with its `value`) when it is a filter; `Ok(false)` when it is not one.
    pub fn take(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String> {
        let list = match flag {
            "--outcome" => &mut self.outcomes,
            "--code" => &mut self.codes,
            "--status" => &mut self.statuses,
            "--destination" => &mut self.destinations,
            "--event" => &mut self.events,
            "--message-id" => &mut self.message_ids,
            "--older-than" | "--newer-than" => {
                let text = value()?;
                let duration = parse_duration(&text).ok_or_else(|| format!("{flag} takes an integer and s, m, h or d (30s, 5m, 1h, 2d), not '{text}'"))?;
                let slot = if flag == "--older-than" { &mut self.older_than } else { &mut self.newer_than };
                if slot.replace(duration).is_some() {
                    return Err(format!("{flag} is given twice"));
                }
                return Ok(true);
            }
            "--limit" => {
                let text = value()?;
                match text.parse::<u64>() {
                    Ok(n) if n > 0 => self.limit = Some(n),
                    _ => return Err(format!("--limit takes a positive whole number, not '{text}'")),
                }
                return Ok(true);
            }
            _ => return Ok(false),
        };
        // `--outcome failed,expired` and `--outcome failed --outcome expired` alike.
        let text = value()?;
        let values: Vec<String> = if flag == "--event" { vec![text.trim().to_string()] } else { text.split(',').map(|v| v.trim().to_string()).collect() };
        if values.iter().any(String::is_empty) {
            return Err(format!("{flag} needs a value"));
        }
        if flag == "--outcome" {
            if let Some(unknown) = values.iter().find(|v| !OUTCOMES.contains(&v.as_str())) {
                return Err(format!("--outcome takes {}, not '{unknown}'", OUTCOMES.join(", ")));
            }
        }
        list.extend(values);
        Ok(true)
    }

    /// Whether `parked` passes every filter given (`--limit` aside).
    pub fn matches(&self, parked: &Parked, now_ms: i64) -> bool {
        let any = |wanted: &[String], value: Option<&str>| wanted.is_empty() || value.is_some_and(|v| wanted.iter().any(|w| w == v));
        let age = parked.age(now_ms);
        any(&self.outcomes, Some(&parked.outcome))
            && (self.codes.is_empty() || parked.code.as_deref().is_some_and(|c| self.codes.iter().any(|w| w.eq_ignore_ascii_case(c))))
            && any(&self.statuses, parked.status.as_deref())
            && any(&self.destinations, parked.destination.as_deref())
            && (self.events.is_empty() || parked.events().iter().any(|e| self.events.iter().any(|w| w == e)))
            && (self.message_ids.is_empty()
                || self
                    .message_ids
                    .iter()
                    .any(|w| *w == parked.sqs_id || *w == parked.key || parked.records.iter().any(|r| r.key.as_deref() == Some(w.as_str()))))
            && self.older_than.is_none_or(|d| age.is_some_and(|a| a > d))
            && self.newer_than.is_none_or(|d| age.is_some_and(|a| a < d))
    }
}

/// `30s`, `5m`, `1h`, `2d`: an integer and a unit.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

/// An age in its largest whole unit: `45s`, `12m`, `3h`, `2d`.
pub fn brief_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn received(body: &str, attributes: &[(&str, &str)]) -> Received {
        Received {
            sqs_id: "dlq-1".into(),
            body: body.into(),
            system: vec![("SentTimestamp".into(), "1000000".into())],
            attributes: attributes.iter().map(|(n, v)| (n.to_string(), Some(v.to_string()))).collect(),
        }
    }

    fn order(id: &str) -> String {
        json!({"type": "track", "event": "Order Completed", "messageId": id, "userId": "u"}).to_string()
    }

    #[test]
    fn reasons_come_from_the_relays_attributes_and_a_message_without_them_was_moved() {
        let parked = Parked::read(&received(
            &order("ord-1"),
            &[("d365-outcome", "failed"), ("d365-status", "503"), ("d365-code", "0x80072321"), ("d365-error", "jane@example.com refused")],
        ));
        assert_eq!((parked.outcome.as_str(), parked.status.as_deref(), parked.code.as_deref()), ("failed", Some("503"), Some("0x80072321")));
        assert_eq!(parked.key, "ord-1", "the event's messageId when d365-message-id is absent");
        assert_eq!(parked.events(), ["Order Completed"]);
        assert!(!parked.error.unwrap().contains("jane@example.com"), "masked again");
        let moved = Parked::read(&received("not json", &[("origin", "shop")]));
        assert_eq!((moved.outcome.as_str(), moved.key.as_str()), ("moved", "dlq-1"));
        assert_eq!(moved.records[0].body, "not json", "the body unchanged");
    }

    #[test]
    fn an_on_failure_record_stands_for_its_payloads_records() {
        let sns = |id: &str| json!({"EventSource": "aws:sns", "Sns": {"Type": "Notification", "MessageId": format!("sns-{id}"), "Message": order(id)}});
        let body = json!({
            "version": "1.0",
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": {"Records": [sns("a"), sns("b")]},
            "responsePayload": {"errorMessage": "1 of 2 records not delivered: +447700900123"}
        });
        let parked = Parked::read(&received(&body.to_string(), &[]));
        assert!(parked.on_failure);
        assert_eq!(parked.outcome, "moved");
        assert_eq!(parked.records.len(), 2);
        assert_eq!(parked.records[1].key.as_deref(), Some("b"));
        let notification: Value = serde_json::from_str(&parked.records[0].body).unwrap();
        assert_eq!(notification["Type"], "Notification", "each record is an SNS envelope the relay unwraps");
        let error = parked.error.unwrap();
        assert!(error.starts_with("RetriesExhausted: ") && !error.contains("+447700900123"), "{error}");

        let direct = json!({"requestPayload": {"batch": [json!({"event": "A"}), json!({"event": "B"})]}});
        assert_eq!(Parked::read(&received(&direct.to_string(), &[])).events(), ["A", "B"]);
        let rule = json!({"requestPayload": {"detail-type": "Signup", "id": "eb-1", "detail": {"userId": "u"}}});
        let parked = Parked::read(&received(&rule.to_string(), &[]));
        assert_eq!((parked.events(), parked.key.as_str()), (vec!["Signup"], "eb-1"));
    }

    #[test]
    fn values_of_one_filter_are_alternatives_and_filters_all_apply() {
        let mut filters = Filters::default();
        let mut take = |flag: &str, value: &str| filters.take(flag, &mut || Ok(value.to_string())).unwrap();
        assert!(take("--outcome", "failed,expired"));
        assert!(take("--code", "0X80072321"));
        assert!(!take("--json", ""));
        let failed = Parked::read(&received(&order("1"), &[("d365-outcome", "failed"), ("d365-code", "0x80072321")]));
        let expired = Parked::read(&received(&order("2"), &[("d365-outcome", "expired"), ("d365-code", "0x80072321")]));
        let rejected = Parked::read(&received(&order("3"), &[("d365-outcome", "rejected"), ("d365-code", "0x80072321")]));
        let other_code = Parked::read(&received(&order("4"), &[("d365-outcome", "failed"), ("d365-code", "0x1")]));
        let now = 1_000_000 + 3_600_000;
        let matched: Vec<bool> = [&failed, &expired, &rejected, &other_code].iter().map(|p| filters.matches(p, now)).collect();
        assert_eq!(matched, [true, true, false, false]);

        let by_id = Filters { message_ids: vec!["2".into(), "dlq-1".into()], ..Filters::default() };
        assert!(by_id.matches(&expired, now) && by_id.matches(&failed, now), "the record's key or the DLQ's MessageId");
        let older = Filters { older_than: Some(Duration::from_secs(1_800)), ..Filters::default() };
        let newer = Filters { newer_than: Some(Duration::from_secs(1_800)), ..Filters::default() };
        assert!(older.matches(&failed, now) && !newer.matches(&failed, now));
    }

    #[test]
    fn mistakes_in_filters_are_named() {
        let mut filters = Filters::default();
        let mut take = |flag: &str, value: &str| filters.take(flag, &mut || Ok(value.to_string()));
        assert!(take("--outcome", "lost").unwrap_err().contains("failed, expired, rejected, invalid, moved"));
        assert!(take("--older-than", "1w").unwrap_err().contains("30s, 5m, 1h, 2d"));
        assert!(take("--limit", "0").is_err());
        assert!(take("--older-than", "2d").unwrap());
        assert!(take("--older-than", "3d").unwrap_err().contains("twice"));
    }

    #[test]
    fn durations_and_ages_read_in_whole_units() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5h"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(brief_age(Duration::from_secs(7_300)), "2h");
        assert_eq!(brief_age(Duration::from_secs(59)), "59s");
    }
}
