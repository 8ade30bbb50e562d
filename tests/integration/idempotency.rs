//! Against moto's server on loopback, an AWS emulator independent of ours:
//! cross-environment idempotency on DynamoDB, and the relay's secret fetch.

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::moto::{moto, Moto};
use relay::idempotency::{Claim, Idempotency};
use serde_json::json;

pub(crate) async fn table(moto: &Moto, name: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let client = relay::dynamodb_client_for_endpoint(&moto.url);
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap())
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
    client
}

/// One execution environment's store (its own memory, the shared table).
fn environment(client: &aws_sdk_dynamodb::Client, table: &str, expires_after: Duration) -> Idempotency {
    Idempotency::in_memory().with_table(client.clone(), table.to_string(), expires_after)
}

#[tokio::test]
async fn claim_complete_release_and_expiry_across_environments() {
    let moto = moto();
    let client = table(moto, "claims").await;
    let a = environment(&client, "claims", Duration::from_secs(3600));
    let b = environment(&client, "claims", Duration::from_secs(3600));
    let until = Instant::now() + Duration::from_secs(30);

    assert_eq!(a.claim("k1", until).await, Claim::Claimed);
    assert_eq!(b.claim("k1", until).await, Claim::InProgress, "a concurrent duplicate sees the claim");
    a.release("k1").await;
    assert_eq!(b.claim("k1", until).await, Claim::Claimed, "a failed call released the claim");
    b.complete("k1").await;
    assert_eq!(a.claim("k1", until).await, Claim::Done, "done in another environment");

    // A claim lapses at the invocation's cut-off (a crashed invocation does not block for ever).
    assert_eq!(a.claim("k2", Instant::now()).await, Claim::Claimed);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(b.claim("k2", until).await, Claim::Claimed);

    // A done key is forgotten after expires_after.
    let short = environment(&client, "claims", Duration::from_secs(1));
    assert_eq!(short.claim("k3", until).await, Claim::Claimed);
    short.complete("k3").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(b.claim("k3", until).await, Claim::Claimed);
}

#[tokio::test]
async fn concurrent_claims_of_one_key_admit_exactly_one() {
    let moto = moto();
    let client = table(moto, "concurrent-claims").await;
    let until = Instant::now() + Duration::from_secs(30);
    let environments: Vec<Idempotency> = (0..16).map(|_| environment(&client, "concurrent-claims", Duration::from_secs(3600))).collect();
    let claims = join_all(environments.iter().map(|e| e.claim("same", until)).collect()).await;
    assert_eq!(claims.iter().filter(|c| **c == Claim::Claimed).count(), 1, "{claims:?}");
    assert_eq!(claims.iter().filter(|c| **c == Claim::InProgress).count(), 15);
}

/// Polls every future together on this task, so the claims race.
pub(crate) async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_redelivered_batch_in_another_environment_raises_each_trigger_once() {
    let moto = moto();
    let client = table(moto, "redelivered-batch").await;
    let h = Harness::new(&[("D365_IDEMPOTENCY_TABLE", "redelivered-batch")]).await;
    let mapping = mapping_file();
    let first = crate::helpers::relay_with(
        &h.sandbox,
        &[("D365_MAPPING_FILE", &mapping), ("D365_IDEMPOTENCY_TABLE", "redelivered-batch")],
        |c| c.with_dynamodb(client.clone()),
        Default::default(),
    );
    let second = crate::helpers::relay_with(
        &h.sandbox,
        &[("D365_MAPPING_FILE", &mapping), ("D365_IDEMPOTENCY_TABLE", "redelivered-batch")],
        |c| c.with_dynamodb(client.clone()),
        Default::default(),
    );
    let bodies: Vec<String> = (0..10).map(|i| order(&format!("{i}")).to_string()).collect();
    let deadline = || Instant::now() + Duration::from_secs(30);

    let response = first.handle(sqs_batch(&bodies, None), deadline()).await.unwrap();
    assert_eq!(failures(&response), Vec::<String>::new());
    // The whole batch comes back (say the first invocation timed out) to another environment.
    let response = second.handle(sqs_batch(&bodies, None), deadline()).await.unwrap();
    assert_eq!(failures(&response), Vec::<String>::new(), "duplicates are successes for SQS");
    let response = second.handle(json!([order("0"), order("10")]), deadline()).await.unwrap();
    assert_eq!(response, json!({"delivered": 1, "dropped": 0, "duplicates": 1, "failed": []}));
    assert_eq!(h.sandbox.accepted().len(), 11, "each trigger raised exactly once");
}

#[tokio::test]
async fn a_failed_call_releases_its_claim_for_the_retry() {
    let moto = moto();
    let client = table(moto, "released-claims").await;
    let h = Harness::new(&[]).await;
    let mapping = mapping_file();
    let relay = crate::helpers::relay_with(
        &h.sandbox,
        &[("D365_MAPPING_FILE", &mapping), ("D365_IDEMPOTENCY_TABLE", "released-claims")],
        |c| c.with_dynamodb(client),
        Default::default(),
    );
    h.sandbox.set_faults(d365_sandbox::Faults { error_rate: 1.0, ..Default::default() });
    let batch = sqs_batch(&[order("a").to_string()], None);
    let response = relay.handle(batch.clone(), Instant::now() + Duration::from_secs(30)).await.unwrap();
    assert_eq!(failures(&response), ["sqs-0"]);
    h.sandbox.set_faults(d365_sandbox::Faults::default());
    let response = relay.handle(batch, Instant::now() + Duration::from_secs(30)).await.unwrap();
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(h.sandbox.accepted().len(), 1);
}

#[tokio::test]
async fn an_unreachable_table_fails_records_without_sending_them() {
    let moto = moto();
    let client = relay::dynamodb_client_for_endpoint(&moto.url);
    let h = Harness::new(&[]).await;
    let mapping = mapping_file();
    let relay = crate::helpers::relay_with(
        &h.sandbox,
        &[("D365_MAPPING_FILE", &mapping), ("D365_IDEMPOTENCY_TABLE", "no-such-table")],
        |c| c.with_dynamodb(client),
        Default::default(),
    );
    let response = relay.handle(sqs_batch(&[order("a").to_string()], None), Instant::now() + Duration::from_secs(30)).await.unwrap();
    assert_eq!(failures(&response), ["sqs-0"]);
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn the_relay_reads_its_secret_from_moto() {
    let moto = moto();
    let h = Harness::new(&[]).await;
    let secrets = relay::secrets_client_for_endpoint(&moto.url);
    let secret = sandbox_config().secrets["d365/relay-demo"].clone();
    secrets.create_secret().name("d365/from-moto").secret_string(secret.to_string()).send().await.unwrap();
    let settings = relay::sandbox_settings(&h.sandbox.url(), &[("D365_MAPPING_FILE", &mapping_file()), ("D365_SECRET_ID", "d365/from-moto")]);
    let clients = relay::startup::Clients { secrets, ..relay::startup::Clients::for_endpoint(&h.sandbox.url()) };
    let relay = relay::startup::relay(settings, clients, Default::default());
    let response = relay.handle(json!(order("m")), Instant::now() + Duration::from_secs(30)).await.unwrap();
    assert_eq!(response["delivered"], 1, "{response}");
    assert_eq!(h.sandbox.stats().secret_requests, 0, "the secret came from moto, not the sandbox");
}
