//! An SQS queue with a redrive policy to its DLQ, and a poller that drives the
//! handler as Lambda's event source mapping does: `ReceiveMessage` (all
//! attributes), the handler, `DeleteMessage` for what is not a batch item
//! failure. Against moto's SQS (tests, the burst bench).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use relay::Relay;
use serde_json::{json, Value};

pub struct Queues {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    pub arn: String,
    pub dlq_url: String,
}

impl Queues {
    /// A queue with a redrive policy to its own DLQ (`{name}-dlq`), on the SQS at `endpoint`.
    pub async fn create(endpoint: &str, name: &str, visibility: u32, max_receives: u32) -> Queues {
        let client = relay::enqueue::sqs_client_for_endpoint(endpoint);
        let dlq_url = client.create_queue().queue_name(format!("{name}-dlq")).send().await.unwrap().queue_url().unwrap().to_string();
        let dlq_arn = attribute(&client, &dlq_url, QueueAttributeName::QueueArn).await;
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string()}).to_string();
        let url = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string())
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        let arn = attribute(&client, &url, QueueAttributeName::QueueArn).await;
        Queues { client, url, arn, dlq_url }
    }
}

async fn attribute(client: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> String {
    let output = client.get_queue_attributes().queue_url(url).attribute_names(name.clone()).send().await.unwrap();
    output.attributes().unwrap()[&name].clone()
}

impl Queues {
    /// Up to 10 bodies in one `SendMessageBatch`.
    pub async fn send_batch(&self, bodies: &[String]) {
        let entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build().unwrap())
            .collect();
        let output = self.client.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await.unwrap();
        assert!(output.failed().is_empty(), "SQS took every message");
    }

    pub async fn send(&self, bodies: &[String]) {
        for body in bodies {
            let own = MessageAttributeValue::builder().data_type("String").string_value("shop").build().unwrap();
            self.client.send_message().queue_url(&self.url).message_body(body).message_attributes("origin", own).send().await.unwrap();
        }
    }

    /// One poll: up to 10 messages as Lambda hands them over, the handler's
    /// answer, and the deletes. Returns the answer and the messages received.
    pub async fn poll(&self, relay: &Relay) -> Option<(Value, Vec<Value>)> {
        self.poll_within(relay, 5.0).await
    }

    /// As [`Queues::poll`], with `seconds` before the invocation's deadline.
    pub async fn poll_within(&self, relay: &Relay, seconds: f64) -> Option<(Value, Vec<Value>)> {
        let r0 = Instant::now();
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let messages = received.messages();
        if messages.is_empty() {
            return None;
        }
        let records: Vec<Value> = messages.iter().map(|m| self.lambda_record(m)).collect();
        let t0 = Instant::now();
        let answer = relay.handle(json!({"Records": records}), Instant::now() + Duration::from_secs_f64(seconds)).await.unwrap();
        let failed: HashSet<&str> = answer["batchItemFailures"].as_array().into_iter().flatten().filter_map(|f| f["itemIdentifier"].as_str()).collect();
        let d0 = Instant::now();
        // As Lambda's poller does: the records not reported failed, deleted in one batch call.
        let done: Vec<_> = messages
            .iter()
            .filter(|m| !failed.contains(m.message_id().unwrap()))
            .enumerate()
            .map(|(i, m)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(m.receipt_handle().unwrap()).build().unwrap()
            })
            .collect();
        if !done.is_empty() {
            let deleted = self.client.delete_message_batch().queue_url(&self.url).set_entries(Some(done)).send().await.unwrap();
            assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
        }
        if std::env::var("BURST_DEBUG").is_ok() {
            eprintln!("poll: {} records, received in {:?}, handled in {:?}, deleted in {:?}", records.len(), t0 - r0, d0 - t0, d0.elapsed());
        }
        Some((answer, records))
    }

    /// Lambda's SQS record for a received message.
    pub fn lambda_record(&self, message: &aws_sdk_sqs::types::Message) -> Value {
        let attributes: serde_json::Map<String, Value> =
            message.attributes().map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect()).unwrap_or_default();
        let own: serde_json::Map<String, Value> = message
            .message_attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        (k.clone(), json!({"stringValue": v.string_value(), "dataType": v.data_type(), "stringListValues": [], "binaryListValues": []}))
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "messageId": message.message_id(),
            "receiptHandle": message.receipt_handle(),
            "body": message.body(),
            "attributes": attributes,
            "messageAttributes": own,
            "md5OfBody": message.md5_of_body(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": "us-east-1",
        })
    }

    /// Everything in the DLQ: body and message attributes.
    pub async fn dead_letters(&self) -> Vec<(String, HashMap<String, String>)> {
        let mut all = Vec::new();
        loop {
            let received =
                self.client.receive_message().queue_url(&self.dlq_url).max_number_of_messages(10).message_attribute_names("All").send().await.unwrap();
            if received.messages().is_empty() {
                return all;
            }
            for m in received.messages() {
                let attributes = m
                    .message_attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.clone(), v.string_value().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                all.push((m.body().unwrap().to_string(), attributes));
                self.client.delete_message().queue_url(&self.dlq_url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
            }
        }
    }
}
