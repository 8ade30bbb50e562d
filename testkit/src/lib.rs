//! What the relay's integration tests (`tests/`) and its benches (`examples/`)
//! share, in one place rather than reached into with `#[path]`: moto's server
//! (an AWS emulator independent of the sandbox) and an SQS poller that drives
//! the handler as Lambda's event source mapping does. Never shipped: a
//! dev-dependency of the relay only.

pub mod moto;
pub mod sqs_poller;
