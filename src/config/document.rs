//! The mapping document (SPEC §2.3): event names → triggers and attributes,
//! and the built-in Default preset.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::identity::{self, Consent, IdentitySpec, RawConsent, RawIdentity, RawWrite, WriteSpec};
use super::rows::RowSpec;
use super::{check_name, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Drop,
    Raise,
}

/// The mapping document (SPEC §2.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub trigger: Option<String>,
    pub events: BTreeMap<String, EventMapping>,
    pub default_action: DefaultAction,
    /// How a profile id is found from an e-mail or a customer number (SPEC §14).
    pub identity: Option<IdentitySpec>,
    /// How `identify` events update the profile (SPEC §14).
    pub identify: Option<WriteSpec>,
    /// Consent every mapped event needs, unless its entry has its own (SPEC §14).
    pub consent: Option<Consent>,
    /// Several Dynamics environments (SPEC §23.2); empty: the one the secret defines.
    pub destinations: Vec<super::routes::Route>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventMapping {
    pub trigger: Option<String>,
    /// Dataverse parameter → candidate paths (each split on '.'); the first present wins.
    pub attributes: Vec<(String, Vec<Vec<String>>)>,
    pub required: Vec<String>,
    /// This event's consent, over the document's.
    pub consent: Option<Consent>,
    /// Dataverse rows written before the trigger (SPEC §19).
    pub rows: Vec<RowSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    /// An editor's `"$schema"` line (SPEC §21.2): accepted and ignored.
    #[serde(rename = "$schema")]
    _schema: Option<serde::de::IgnoredAny>,
    trigger: Option<String>,
    #[serde(default)]
    events: BTreeMap<String, RawEventMapping>,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    identity: Option<RawIdentity>,
    identify: Option<RawWrite>,
    consent: Option<RawConsent>,
    #[serde(default)]
    destinations: BTreeMap<String, super::routes::RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventMapping {
    trigger: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
    #[serde(default)]
    required: Vec<String>,
    consent: Option<RawConsent>,
    #[serde(default)]
    rows: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    action: Option<String>,
}

/// The built-in Default preset. Attribute names are illustrative: rename them
/// to your trigger's attributes with a mapping document.
pub const DEFAULT_PRESET: &str = r#"{
  "events": {
    "Signed Up": {
      "attributes": { "msdynmkt_signupsource": "properties.source" }
    },
    "Lead Generated": {
      "attributes": {
        "msdynmkt_leadsource": "properties.source",
        "msdynmkt_leadcampaign": "properties.campaign"
      }
    },
    "Product Added": {
      "attributes": {
        "msdynmkt_productid": "properties.product_id",
        "msdynmkt_productname": "properties.name",
        "msdynmkt_price": "properties.price",
        "msdynmkt_currency": "properties.currency"
      }
    },
    "Order Completed": {
      "attributes": {
        "msdynmkt_orderid": "properties.order_id",
        "msdynmkt_ordertotal": ["properties.revenue", "properties.total"],
        "msdynmkt_currency": "properties.currency"
      },
      "required": ["msdynmkt_orderid"]
    }
  },
  "defaults": { "action": "drop" }
}"#;

impl Mapping {
    pub fn default_preset() -> Mapping {
        Mapping::parse(DEFAULT_PRESET).expect("the built-in preset is valid")
    }

    /// Parses and validates a mapping document; the error says where it is wrong.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let raw: RawMapping = serde_json::from_str(text).map_err(|e| format!("not a valid mapping document: {e}"))?;
        if let Some(t) = &raw.trigger {
            check_name(t).map_err(|e| format!("trigger: {e}"))?;
        }
        let default_action = match raw.defaults.and_then(|d| d.action).as_deref() {
            None | Some("drop") => DefaultAction::Drop,
            Some("raise") => DefaultAction::Raise,
            Some(other) => return Err(format!("defaults.action: '{other}' is not one of drop, raise")),
        };
        let mut events = BTreeMap::new();
        for (name, raw_event) in raw.events {
            let at = |what: &str| format!("events[\"{name}\"].{what}");
            if let Some(t) = &raw_event.trigger {
                check_name(t).map_err(|e| format!("{}: {e}", at("trigger")))?;
            }
            let mut attributes = Vec::new();
            for (attribute, spec) in raw_event.attributes {
                check_name(&attribute).map_err(|e| format!("{}: {e}", at("attributes")))?;
                let paths: Vec<String> = match spec {
                    Value::String(p) => vec![p],
                    Value::Array(items) => items
                        .into_iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("{}: a list of paths must hold strings only", at(&format!("attributes.{attribute}"))))?,
                    _ => return Err(format!("{}: must be a dotted path or a list of paths", at(&format!("attributes.{attribute}")))),
                };
                if paths.is_empty() || paths.iter().any(|p| p.is_empty() || p.split('.').any(str::is_empty)) {
                    return Err(format!("{}: paths must be non-empty dotted paths such as properties.order_id", at(&format!("attributes.{attribute}"))));
                }
                attributes.push((attribute, paths.iter().map(|p| p.split('.').map(str::to_string).collect()).collect()));
            }
            if attributes.len() > 30 {
                return Err(format!("{}: a trigger takes at most 30 attributes", at("attributes")));
            }
            for required in &raw_event.required {
                if !attributes.iter().any(|(a, _)| a == required) {
                    return Err(format!("{}: '{required}' is not one of the event's attributes", at("required")));
                }
            }
            let consent = raw_event.consent.map(|c| identity::consent(c, &at("consent"))).transpose()?;
            let rows = super::rows::rows(raw_event.rows, &name)?;
            events.insert(name, EventMapping { trigger: raw_event.trigger, attributes, required: raw_event.required, consent, rows });
        }
        let consent = raw.consent.map(|c| identity::consent(c, "consent")).transpose()?;
        let identify = raw.identify.map(identity::identify).transpose()?;
        let identity = raw.identity.map(identity::identity).transpose()?;
        let destinations = super::routes::routes(raw.destinations)?;
        Ok(Mapping { trigger: raw.trigger, events, default_action, identity, identify, consent, destinations })
    }

    /// The trigger an event raises: the event's own, else the document's, else
    /// the secret's. An entry with `rows` raises only a trigger it names itself (SPEC §19).
    pub fn trigger_for<'a>(&'a self, event: Option<&'a EventMapping>, secret_default: Option<&'a str>) -> Option<&'a str> {
        if let Some(event) = event.filter(|e| !e.rows.is_empty()) {
            return event.trigger.as_deref();
        }
        event.and_then(|e| e.trigger.as_deref()).or(self.trigger.as_deref()).or(secret_default)
    }

    /// Checks, once the secret is known, that every mapped event has a trigger.
    pub fn check_triggers(&self, secret_default: Option<&str>) -> Result<(), ConfigError> {
        for (name, event) in self.events.iter().filter(|(_, e)| e.rows.is_empty()) {
            if self.trigger_for(Some(event), secret_default).is_none() {
                return Err(ConfigError::new("secret.trigger_name", format!("is missing, and the mapping names no trigger for event '{name}'")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_document_is_validated() {
        let m = Mapping::parse(r#"{"trigger":"msdynmkt_A","events":{"Signed Up":{"trigger":"msdynmkt_SignedUp"}},"defaults":{"action":"raise"}}"#).unwrap();
        assert_eq!(m.default_action, DefaultAction::Raise);
        assert_eq!(m.trigger_for(m.events.get("Signed Up"), None), Some("msdynmkt_SignedUp"));
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"x":"p"},"required":["y"]}}}"#).unwrap_err().contains("required"));
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"bad-name":"p"}}}}"#).is_err());
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"x":"a..b"}}}}"#).is_err());
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"x":[1]}}}}"#).is_err());
        assert!(Mapping::parse(r#"{"defaults":{"action":"keep"}}"#).is_err());
        assert!(Mapping::parse(r#"{"evnts":{}}"#).is_err(), "unknown keys are typos, not ignored");
        let m = Mapping::parse(r#"{"identity":{"lookup":[{"entity":"contacts","attribute":"emailaddress1","from":"context.traits.email"}],"create":{"entity":"contacts","attributes":{"emailaddress1":"context.traits.email"}}},"identify":{"entity":"contacts","attributes":{"firstname":"traits.first_name"}},"consent":{"categories":["Marketing"],"missing":"deny"},"events":{"A":{"consent":{"categories":["Sales"]}}}}"#).unwrap();
        assert_eq!(m.identity.as_ref().unwrap().lookups[0].attribute, "emailaddress1");
        assert_eq!(m.identify.as_ref().unwrap().attributes, vec![("firstname".to_string(), "traits.first_name".to_string())]);
        assert!(!m.consent.as_ref().unwrap().allow_missing);
        assert!(m.events["A"].consent.as_ref().unwrap().allow_missing);
        for bad in [
            r#"{"identity":{}}"#,
            r#"{"identity":{"lookup":[{"entity":"Contacts","attribute":"x","from":"userId"}]}}"#,
            r#"{"identity":{"lookup":[{"entity":"contacts","attribute":"bad name","from":"userId"}]}}"#,
            r#"{"identity":{"lookup":[{"entity":"contacts","attribute":"x","from":"a..b"}]}}"#,
            r#"{"identity":{"lookup":[{"entity":"contacts","attribute":"x","from":"userId","extra":1}]}}"#,
            r#"{"consent":{"categories":[]}}"#,
            r#"{"consent":{"categories":["M"],"missing":"maybe"}}"#,
        ] {
            assert!(Mapping::parse(bad).is_err(), "{bad}");
        }
        let preset = Mapping::default_preset();
        assert!(preset.check_triggers(None).is_err());
        assert!(preset.check_triggers(Some("msdynmkt_OrderCompleted")).is_ok());
    }
}
