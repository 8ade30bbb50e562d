//! Stages: the steps of an invocation that read from Dataverse before the
//! scheduler delivers — the trigger and entity definition catalogs
//! ([`triggers`], [`entities`], over one [`catalog`]), the rows' fitting
//! ([`rows`]) and identity resolution ([`crate::identity`]). With the
//! scheduler they are the engine's only callers, through its one entry,
//! [`delivery::call`]: a read is made as any call is (a slot of the principal
//! with the most room, its pace and pauses, the one retry classifier).

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use crate::deadline::Cutoffs;
use crate::delivery::{self, Answer, Pool, Request};
use crate::dynamics::Dynamics;
use crate::outcome::DeliveryError;

pub mod catalog;
pub mod entities;
pub mod rows;
pub mod triggers;

/// One Dynamics environment as the stages reach it: its adapter and the pool
/// of its application users. (A destination of SPEC §23 is one of these.)
#[derive(Clone)]
pub struct Destination {
    pub dynamics: Arc<Dynamics>,
    pub pool: Arc<Pool>,
}

impl Destination {
    pub fn new(dynamics: Arc<Dynamics>, pool: Arc<Pool>) -> Destination {
        Destination { dynamics, pool }
    }

    /// A metadata read (`GET {path_and_query}`: definitions, `check`) through
    /// the engine, answered by `deadline`; a non-2xx answer is the classifier's error.
    pub async fn read(&self, path_and_query: &str, deadline: Instant) -> Result<Answer, DeliveryError> {
        delivery::call(&*self.dynamics, &self.pool, Request::Metadata(path_and_query), Cutoffs::at(deadline)).await.result
    }

    /// One request through the engine within `cutoffs` (identity lookups and creates).
    pub async fn call(&self, request: Request<'_>, cutoffs: Cutoffs) -> delivery::Attempts<Answer> {
        delivery::call(&*self.dynamics, &self.pool, request, cutoffs).await
    }
}

impl Deref for Destination {
    type Target = Dynamics;

    fn deref(&self) -> &Dynamics {
        &self.dynamics
    }
}
