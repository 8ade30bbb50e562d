//! Delivery (SPEC §6–7): runs trigger calls concurrently within an adaptive
//! limit, retries what may pass, honours Retry-After for the whole execution
//! environment, keeps FIFO order per message group, and finishes before the
//! invocation's deadline.
//!
//! Cut as Vector's sinks are: [`retry`] says what an error means (one
//! classifier) and runs the retry loop, [`pacer`] is the concurrency
//! controller, [`scheduler`] orders the work (FIFO runs, idempotency, budget),
//! [`actions`] is a record's plan (profile update, rows, trigger: each its own
//! request and key), and [`port`] is what delivery needs from Dynamics.

pub mod actions;
pub mod budget;
pub mod pacer;
pub mod pool;
pub mod port;
pub mod retry;
pub mod retry_class;
pub mod scheduler;

pub use actions::Tagging;
pub use pacer::{Pacer, Slot};
pub use pool::{PacerSettings, Pool};
pub use port::{Answer, DynamicsPort, Principal, Principals, Request, Sent};
pub use retry::{call, Attempts, DeliveryReport, MAX_TRANSIENT_ATTEMPTS};
pub use retry_class::{class, outcome_of, RetryClass, CONCURRENCY_LIMIT_CODE, MAX_PAUSE};
pub use scheduler::{deliver, Job, Order, Work};
