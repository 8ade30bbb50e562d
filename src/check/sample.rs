//! What the check's parts share: a problem with its fix, and a sample event's
//! profile resolved as the function resolves it.

use std::time::Instant;

use serde_json::Value;

use crate::outcome::Outcome;
use crate::stages::Destination;

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub problem: String,
    pub fix: String,
}

/// The sample event's profile, resolved as the function resolves it
/// ([`crate::identity::Identities`] in a dry run: lookups only, nothing created
/// or cached). `Err((reason, problem))`: `problem` is false when the outcome is
/// fine (a row would be created).
pub(super) async fn resolve_sample(
    spec: &crate::config::identity::IdentitySpec,
    event: &Value,
    destination: &Destination,
    deadline: Instant,
) -> Result<Option<String>, (String, bool)> {
    use crate::identity::{Identities, NEW_ROW};
    let Some(plan) = crate::identity::plan(event, spec).map_err(|reason| (reason, true))? else { return Ok(None) };
    let budget = crate::deadline::Cutoffs::until(deadline);
    let identities = Identities::new(std::time::Duration::ZERO);
    match identities.resolve(destination, &plan, spec.create.as_ref(), budget, true).await {
        Ok(id) if id == NEW_ROW => {
            let tried: Vec<String> = plan.steps.iter().map(|s| format!("{} = {}", s.attribute, s.shown())).collect();
            let entity = spec.create.as_ref().map_or("", |c| c.entity.as_str());
            Err((format!("no match for {}: a row of {entity} would be created (nothing was created)", tried.join(" or ")), false))
        }
        Ok(id) => Ok(Some(id)),
        Err(Outcome::Invalid { reason }) => Err((reason, true)),
        Err(outcome) => Err((format!("the lookup failed: {}", outcome.detail().unwrap_or_default()), true)),
    }
}
