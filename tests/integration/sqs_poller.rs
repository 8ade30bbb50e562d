//! The SQS queue and poller, shared with the burst bench: see `testkit/src/sqs_poller.rs`.

pub use testkit::sqs_poller::*;
