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

use crate::lock;

pub mod actions;
pub mod budget;
pub mod pacer;
pub mod pool;
pub mod port;
pub mod retry;
pub mod scheduler;

pub use actions::ActionPlan;
pub use pacer::{Pacer, Slot, CONCURRENCY_LIMIT_CODE, MAX_PAUSE};
pub use pool::{PacerSettings, Pool, Principal};
pub use port::{DynamicsPort, ProfileUpdate, Request, RowWrite, Sent};
pub use retry::{class, outcome_of, with_retries, Attempts, RetryClass, MAX_THROTTLED_ATTEMPTS, MAX_TRANSIENT_ATTEMPTS};
pub use scheduler::{deliver, Budget, Job, Order, Report, Work};
