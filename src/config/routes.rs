//! Routing to several Dynamics environments (SPEC §23.2): the mapping
//! document's `destinations` section, and which destinations a record goes to.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::check_name;
use super::secret::check_destination_name;

/// One destination's entry in the mapping document.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Takes the records no plain destination took; has no `when` or `events`.
    pub fallback: bool,
    /// A mirror: its failures are logged and counted, and never decide a record's outcome.
    pub best_effort: bool,
    /// The event names it takes (`None`: every event).
    pub events: Option<Vec<String>>,
    /// Dotted paths and the values they must equal.
    pub when: Vec<(Vec<String>, Value)>,
    /// Trigger unique names renamed in this environment.
    pub triggers: BTreeMap<String, String>,
    /// Whether the entries' rows are written here (SPEC §19).
    pub rows: bool,
    /// Whether `identify` events update the profile here (SPEC §14).
    pub identify: bool,
}

impl Route {
    /// Whether the record matches: its `when` holds and its `events` name it.
    fn matches(&self, event: &Value, name: Option<&str>) -> bool {
        let events = self.events.as_ref().is_none_or(|list| name.is_some_and(|n| list.iter().any(|e| e == n)));
        events && self.when.iter().all(|(path, value)| crate::fields::lookup(event, path) == Some(value))
    }

    /// The trigger raised here for `trigger` (its `triggers` rename).
    pub fn trigger<'a>(&'a self, trigger: &'a str) -> &'a str {
        self.triggers.get(trigger).map_or(trigger, String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    fallback: bool,
    #[serde(default)]
    best_effort: bool,
    events: Option<Vec<String>>,
    #[serde(default)]
    when: BTreeMap<String, Value>,
    #[serde(default)]
    triggers: BTreeMap<String, String>,
    rows: Option<bool>,
    identify: Option<bool>,
}

/// Parses the `destinations` section; errors name the place.
pub(super) fn routes(raw: BTreeMap<String, RawRoute>) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for (name, raw) in raw {
        let at = |what: &str| if what.is_empty() { format!("destinations.{name}") } else { format!("destinations.{name}.{what}") };
        check_destination_name(&name).map_err(|e| format!("{}: {e}", at("")))?;
        if raw.fallback && (raw.events.is_some() || !raw.when.is_empty()) {
            return Err(format!("{}: a fallback takes no `when` or `events` (it takes what no other destination took)", at("fallback")));
        }
        let mut when = Vec::new();
        for (path, value) in raw.when {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!("{}: '{path}' is not a dotted path such as context.traits.brand", at("when")));
            }
            if value.is_object() || value.is_array() || value.is_null() {
                return Err(format!("{}: the value of '{path}' must be a string, a number or a boolean", at("when")));
            }
            when.push((path.split('.').map(str::to_string).collect(), value));
        }
        for (from, to) in &raw.triggers {
            check_name(from).map_err(|e| format!("{}: {e}", at("triggers")))?;
            check_name(to).map_err(|e| format!("{}: {e}", at("triggers")))?;
        }
        routes.push(Route {
            fallback: raw.fallback,
            best_effort: raw.best_effort,
            events: raw.events,
            when,
            triggers: raw.triggers,
            rows: raw.rows.unwrap_or(true),
            identify: raw.identify.unwrap_or(true),
            name,
        });
    }
    Ok(routes)
}

/// The destinations a mapped record goes to (SPEC §23.2): every matching one,
/// and the fallbacks when none of those is a plain (not `best_effort`) one.
pub fn route<'r>(routes: &'r [Route], event: &Value, name: Option<&str>) -> Vec<&'r Route> {
    let mut chosen: Vec<&Route> = routes.iter().filter(|r| !r.fallback && r.matches(event, name)).collect();
    if !chosen.iter().any(|r| !r.best_effort) {
        chosen.extend(routes.iter().filter(|r| r.fallback));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Vec<Route> {
        let raw: BTreeMap<String, RawRoute> = serde_json::from_value(json!({
            "prod": {"fallback": true},
            "uat": {"best_effort": true, "events": ["Order Completed", "Signed Up"]},
            "fabrikam": {"when": {"context.traits.brand": "fabrikam"}, "triggers": {"msdynmkt_OrderCompleted": "msdynmkt_OrderCompleted_fab"}}
        }))
        .unwrap();
        routes(raw).unwrap()
    }

    fn names(routes: Vec<&Route>) -> Vec<&str> {
        routes.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn the_specs_example_routes_as_it_says() {
        let routes = example();
        let contoso = json!({"event": "Order Completed", "context": {"traits": {"brand": "contoso"}}});
        let fabrikam = json!({"event": "Order Completed", "context": {"traits": {"brand": "fabrikam"}}});
        let page = json!({"event": "Page Viewed"});
        assert_eq!(names(route(&routes, &contoso, Some("Order Completed"))), ["uat", "prod"]);
        assert_eq!(names(route(&routes, &fabrikam, Some("Order Completed"))), ["fabrikam", "uat"]);
        assert_eq!(names(route(&routes, &page, Some("Page Viewed"))), ["prod"]);
        let fab = routes.iter().find(|r| r.name == "fabrikam").unwrap();
        assert_eq!(fab.trigger("msdynmkt_OrderCompleted"), "msdynmkt_OrderCompleted_fab");
        assert_eq!(fab.trigger("msdynmkt_Other"), "msdynmkt_Other");
    }

    #[test]
    fn a_fallback_with_when_or_events_is_refused() {
        for bad in [json!({"prod": {"fallback": true, "events": ["A"]}}), json!({"prod": {"fallback": true, "when": {"a": 1}}})] {
            let raw: BTreeMap<String, RawRoute> = serde_json::from_value(bad).unwrap();
            assert!(routes(raw).unwrap_err().contains("fallback takes no"));
        }
        let raw: BTreeMap<String, RawRoute> = serde_json::from_value(json!({"Prod": {}})).unwrap();
        assert!(routes(raw).unwrap_err().contains("destination name"));
    }
}
