#![recursion_limit = "256"]
//! The Lambda function: wires the relay once per execution environment and
//! serves invocations from the Lambda Runtime API. Run from a shell (no
//! `AWS_LAMBDA_RUNTIME_API`) with arguments, or with `--help`, it runs one of
//! the commands of [`relay::cli`] instead.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    relay::forget_empty_endpoint_overrides();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if relay::cli::wanted(&args) {
        std::process::exit(relay::cli::run(args).await);
    }
    lambda_runtime::tracing::init_default_subscriber();
    // Only parsing and client construction happen before the first event; the
    // secret and token are fetched on first use. The phone metadata (~75 ms to
    // load) is parsed in the background meanwhile.
    std::thread::spawn(relay::mapping::warm_phone_metadata);
    let relay = relay::startup::lambda().await;
    let relay = &relay;
    // The payload is read into a `Value` whose SQS records keep only the fields read (intake::Payload).
    lambda_runtime::run(service_fn(move |event: LambdaEvent<relay::intake::Payload>| async move {
        // Local runtimes send durations or nothing here: see relay::deadline.
        let deadline = relay::deadline::instant_of(event.context.deadline);
        relay.handle(event.payload.0, deadline).await.map_err(Error::from)
    }))
    .await
}
