//! Mapping (SPEC §3–4): one event + the mapping document → a trigger call, a
//! drop or an invalid record. Pure: the clock and the phone region come in.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::{DefaultAction, EventMapping, Mapping};
use crate::fields::{event_name, format_timestamp, id_field, lookup, strip_nulls};
use crate::outcome::NO_CONSENT;
use crate::plan::TriggerCall;
use crate::redact;

/// The inputs of mapping that are not in the event.
pub struct MapContext<'a> {
    pub mapping: &'a Mapping,
    /// The secret's `trigger_name`.
    pub default_trigger: Option<&'a str>,
    pub default_phone_region: Option<phonenumber::country::Id>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Raise {
        call: TriggerCall,
        warnings: Vec<String>,
    },
    /// Write the entry's rows, then raise its trigger when it names one (SPEC §19).
    Write {
        rows: Vec<crate::plan::PlannedRow>,
        call: Option<TriggerCall>,
        warnings: Vec<String>,
    },
    /// Not mapped: counted, never sent.
    Drop {
        reason: String,
    },
    /// Mapped but unusable: never sent.
    Invalid {
        reason: String,
    },
}

pub fn map_event(event: &Value, ctx: &MapContext<'_>) -> Decision {
    let Some(object) = event.as_object() else {
        return Decision::Invalid { reason: "the event is not a JSON object".into() };
    };
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("track");
    let name = if kind == "track" { event_name(event) } else { None };

    // Unmapped events are dropped before anything else is judged.
    let entry: Option<&EventMapping> = name.and_then(|n| ctx.mapping.events.get(n));
    if entry.is_none() {
        let raise_unmapped = ctx.mapping.default_action == DefaultAction::Raise && kind == "track";
        if !raise_unmapped {
            let reason = match name {
                Some(n) => format!("event '{n}' is not in the mapping"),
                None if kind != "track" => format!("'{kind}' events are not mapped"),
                None => "the event has no name".to_string(),
            };
            return Decision::Drop { reason };
        }
    }
    // Consent comes next: an event without it is dropped, whatever else is wrong with it (SPEC §14).
    if let Some(category) = consent_refused(event, entry, ctx.mapping) {
        return Decision::Drop { reason: format!("{NO_CONSENT}{category}") };
    }
    // An entry with rows: its rows, and its own trigger if it names one (SPEC §19).
    if let Some(entry) = entry.filter(|e| !e.rows.is_empty()) {
        let rows = match crate::rows::plan(event, &entry.rows) {
            Ok(rows) => rows,
            Err(reason) => return Decision::Invalid { reason },
        };
        let (call, warnings) = match entry.trigger.as_deref() {
            None => (None, Vec::new()),
            Some(trigger) => match raise(event, object, Some(entry), trigger, ctx) {
                Decision::Raise { call, warnings } => (Some(call), warnings),
                other => return other,
            },
        };
        return Decision::Write { rows, call, warnings };
    }
    let Some(trigger) = ctx.mapping.trigger_for(entry, ctx.default_trigger) else {
        return Decision::Invalid { reason: "no trigger: the mapping names none and the secret has no trigger_name".into() };
    };
    raise(event, object, entry, trigger, ctx)
}

/// The trigger call of a mapped event (SPEC §4).
fn raise(event: &Value, object: &Map<String, Value>, entry: Option<&EventMapping>, trigger: &str, ctx: &MapContext<'_>) -> Decision {
    // With an `identity` section the profile id is resolved after mapping; a `userId` is not needed.
    let user_id = id_field(event, "userId", "user_id");
    if user_id.is_none() && ctx.mapping.identity.is_none() {
        return Decision::Invalid { reason: "missing userId".into() };
    }

    let mut warnings = Vec::new();
    let mut body = Map::new();
    if let Some(user_id) = user_id {
        body.insert("msdynmkt_profileid".into(), Value::String(user_id.clone()));
        body.insert("msdynmkt_signaluserauthid".into(), Value::String(user_id));
    }
    body.insert("msdynmkt_signaltimestamp".into(), Value::String(signal_timestamp(object, ctx.now, &mut warnings)));
    body.insert("msdynmkt_signalingestiontimestamp".into(), Value::String(format_timestamp(ctx.now)));

    if let Some(raw) = trait_str(event, "email") {
        match normalize_email(raw) {
            Some(email) => {
                body.insert("contactpoint_email".into(), Value::String(email));
            }
            None => warnings.push(format!("email '{}' is not an address; omitted", redact::email(raw))),
        }
    }
    if let Some(raw) = trait_phone(event) {
        let region = ctx.default_phone_region.or_else(|| region_of(event));
        match normalize_phone(&raw, region) {
            Some(phone) => {
                body.insert("contactpoint_phone".into(), Value::String(phone));
            }
            None => warnings.push(format!("phone '{}' is not a possible number; omitted", redact::phone(&raw))),
        }
    }

    if let Some(entry) = entry {
        for (attribute, paths) in &entry.attributes {
            // Mapped values keep their JSON type; null and absent are omitted.
            let found = paths.iter().find_map(|path| lookup(event, path).filter(|v| !v.is_null()));
            if let Some(value) = found {
                body.insert(attribute.clone(), strip_nulls(value.clone()));
            }
        }
        let missing: Vec<&str> = entry.required.iter().map(String::as_str).filter(|r| !body.contains_key(*r)).collect();
        if !missing.is_empty() {
            return Decision::Invalid { reason: format!("missing required attribute {}", missing.join(", ")) };
        }
    }

    Decision::Raise { call: TriggerCall { trigger: trigger.to_string(), body }, warnings }
}

/// The first consent category the event does not grant: the entry's `consent`, else the document's.
pub fn consent_refused<'m>(event: &Value, entry: Option<&'m EventMapping>, mapping: &'m Mapping) -> Option<&'m str> {
    entry.and_then(|e| e.consent.as_ref()).or(mapping.consent.as_ref())?.refused(event)
}

/// A trait read from `context.traits`, then `traits`.
fn trait_value<'v>(event: &'v Value, name: &str) -> Option<&'v Value> {
    event.pointer(&format!("/context/traits/{name}")).filter(|v| !v.is_null()).or_else(|| event.pointer(&format!("/traits/{name}")).filter(|v| !v.is_null()))
}

fn trait_str<'v>(event: &'v Value, name: &str) -> Option<&'v str> {
    trait_value(event, name).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn trait_phone(event: &Value) -> Option<String> {
    match trait_value(event, "phone")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The region for national-format numbers: `context.location.country`, else `context.locale`'s region.
fn region_of(event: &Value) -> Option<phonenumber::country::Id> {
    let from_country = event.pointer("/context/location/country").and_then(Value::as_str).and_then(crate::config::parse_region);
    from_country.or_else(|| {
        let locale = event.pointer("/context/locale").and_then(Value::as_str)?;
        // en-GB, en_GB, zh-Hant-TW: the region is the last two-letter subtag.
        locale.split(['-', '_']).skip(1).filter(|t| t.len() == 2).last().and_then(crate::config::parse_region)
    })
}

/// Trimmed and lowercased; `None` if it is not an address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ';' || c == '<' || c == '>');
    ok.then_some(email)
}

/// E.164, or `None` if the number does not parse or is not *possible* for its region.
pub fn normalize_phone(raw: &str, region: Option<phonenumber::country::Id>) -> Option<String> {
    let raw = raw.trim();
    let international = raw.starts_with('+') || raw.starts_with("00");
    let number = phonenumber::parse(if international { None } else { Some(region?) }, raw).ok()?;
    if !is_possible(&number, region) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// libphonenumber's "possible number" test: the national number's length is one
/// the region uses for some kind of number. (The crate exposes `is_valid` only;
/// "valid" would reject reserved ranges such as 07700 900123 that SPEC keeps.)
fn is_possible(number: &phonenumber::PhoneNumber, region: Option<phonenumber::country::Id>) -> bool {
    use phonenumber::Type;
    let db = &*phonenumber::metadata::DATABASE;
    // The number's own region, else the region it was read in, else its code's main region.
    let meta = number
        .metadata(db)
        .or_else(|| region.and_then(|r| db.by_id(r.as_ref())).filter(|m| m.country_code() == number.code().value()))
        .or_else(|| db.by_code(&number.code().value()).and_then(|m| m.into_iter().next()));
    let Some(meta) = meta else { return false };
    let length = number.national().to_string().len() as u16;
    let kinds = [
        Type::FixedLine,
        Type::Mobile,
        Type::TollFree,
        Type::PremiumRate,
        Type::SharedCost,
        Type::PersonalNumber,
        Type::Voip,
        Type::Pager,
        Type::Uan,
        Type::Voicemail,
    ];
    kinds.iter().filter_map(|k| meta.descriptors().get(*k)).any(|d| d.possible_length().contains(&length))
}

/// Parses the phone library's metadata now, so the first event does not pay for it.
pub fn warm_phone_metadata() {
    let _ = normalize_phone("+447700900123", None);
}

/// The first parseable of `timestamp`, `originalTimestamp`, `sentAt`, `receivedAt`, else now.
fn signal_timestamp(event: &Map<String, Value>, now: DateTime<Utc>, warnings: &mut Vec<String>) -> String {
    for field in ["timestamp", "originalTimestamp", "sentAt", "receivedAt"] {
        let Some(value) = event.get(field).filter(|v| !v.is_null()) else { continue };
        match value.as_str().and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok()) {
            Some(t) => return format_timestamp(t.with_timezone(&Utc)),
            None => warnings.push(format!("{field} is not an RFC 3339 time; skipped")),
        }
    }
    format_timestamp(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-06T15:00:00.123Z").unwrap().with_timezone(&Utc)
    }

    fn map_with(mapping: &Mapping, region: Option<&str>, event: Value) -> Decision {
        let ctx = MapContext {
            mapping,
            default_trigger: Some("msdynmkt_OrderCompleted"),
            default_phone_region: region.and_then(crate::config::parse_region),
            now: now(),
        };
        map_event(&event, &ctx)
    }

    fn spec_event() -> Value {
        json!({
          "type": "track",
          "event": "Order Completed",
          "messageId": "msg-1",
          "userId": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
          "timestamp": "2026-06-06T15:30:00+01:00",
          "properties": { "order_id": "ORD-10231", "revenue": 129.00, "currency": "GBP" },
          "context": { "traits": { "email": "Jane@Example.com", "phone": "07700 900123" }, "locale": "en-GB" }
        })
    }

    #[test]
    fn the_spec_event_gives_the_spec_body() {
        let Decision::Raise { call, warnings } = map_with(&Mapping::default_preset(), None, spec_event()) else { panic!() };
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(call.trigger, "msdynmkt_OrderCompleted");
        assert_eq!(
            Value::Object(call.body),
            json!({
              "msdynmkt_profileid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
              "msdynmkt_signaluserauthid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
              "msdynmkt_signaltimestamp": "2026-06-06T14:30:00Z",
              "msdynmkt_signalingestiontimestamp": "2026-06-06T15:00:00.123Z",
              "contactpoint_email": "jane@example.com",
              "contactpoint_phone": "+447700900123",
              "msdynmkt_orderid": "ORD-10231",
              "msdynmkt_ordertotal": 129.0,
              "msdynmkt_currency": "GBP"
            })
        );
    }

    #[test]
    fn unmapped_is_dropped_before_validation() {
        let d = map_with(&Mapping::default_preset(), None, json!({"event": "Page Viewed"}));
        assert!(matches!(d, Decision::Drop { .. }), "{d:?}");
        let d = map_with(&Mapping::default_preset(), None, json!({"type": "identify", "userId": "u"}));
        assert!(matches!(d, Decision::Drop { .. }), "{d:?}");
        let d = map_with(&Mapping::default_preset(), None, json!({"type": "page", "event": "Order Completed", "userId": "u"}));
        assert!(matches!(d, Decision::Drop { .. }), "only track events match by name: {d:?}");
    }

    #[test]
    fn mapped_events_are_validated() {
        let mut e = spec_event();
        e.as_object_mut().unwrap().remove("userId");
        assert_eq!(map_with(&Mapping::default_preset(), None, e), Decision::Invalid { reason: "missing userId".into() });
        let mut e = spec_event();
        e["userId"] = json!("");
        assert!(matches!(map_with(&Mapping::default_preset(), None, e), Decision::Invalid { .. }));
        let mut e = spec_event();
        e["properties"]["order_id"] = Value::Null;
        assert_eq!(map_with(&Mapping::default_preset(), None, e), Decision::Invalid { reason: "missing required attribute msdynmkt_orderid".into() });
        assert!(matches!(map_with(&Mapping::default_preset(), None, json!([1])), Decision::Invalid { .. }));
    }

    #[test]
    fn snake_case_numeric_ids_and_fallback_paths() {
        let mut e = spec_event();
        let o = e.as_object_mut().unwrap();
        o.remove("userId");
        o.insert("user_id".into(), json!(42));
        o.insert("properties".into(), json!({"order_id": "A", "revenue": null, "total": 10}));
        let Decision::Raise { call, .. } = map_with(&Mapping::default_preset(), None, e) else { panic!() };
        assert_eq!(call.body["msdynmkt_profileid"], json!("42"));
        assert_eq!(call.body["msdynmkt_ordertotal"], json!(10), "first present path wins; null counts as absent");
        assert!(!call.body.contains_key("msdynmkt_currency"));
    }

    #[test]
    fn no_value_is_ever_null() {
        let mapping = Mapping::parse(r#"{"events":{"E":{"attributes":{"a":"properties.a","b":"properties.b"}}}}"#).unwrap();
        let e = json!({"event":"E","userId":"u","properties":{"a":{"x":null,"y":[1,null]},"b":null},"context":{"traits":{"email":null}}});
        let Decision::Raise { call, .. } = map_with(&mapping, None, e) else { panic!() };
        assert_eq!(call.body["a"], json!({"y":[1]}));
        assert!(!call.body.contains_key("b"));
        assert!(!call.body.contains_key("contactpoint_email"));
    }

    #[test]
    fn raise_default_sends_system_fields_only() {
        let mapping = Mapping::parse(r#"{"defaults":{"action":"raise"}}"#).unwrap();
        let Decision::Raise { call, .. } = map_with(&mapping, None, json!({"event":"Anything","userId":"u","timestamp":"2026-01-01T00:00:00Z"})) else {
            panic!()
        };
        assert_eq!(call.trigger, "msdynmkt_OrderCompleted");
        assert_eq!(call.body.len(), 4);
    }

    #[test]
    fn email_normalisation() {
        assert_eq!(normalize_email("  Jane@Example.COM "), Some("jane@example.com".into()));
        for bad in ["jane", "jane@", "@example.com", "jane@example", "ja ne@example.com", "a@b@c.com", "jane@.com"] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn phone_normalisation() {
        let gb = crate::config::parse_region("GB");
        let us = crate::config::parse_region("US");
        assert_eq!(normalize_phone("07700 900123", gb).as_deref(), Some("+447700900123"));
        assert_eq!(normalize_phone("+44 7700 900123", None).as_deref(), Some("+447700900123"));
        assert_eq!(normalize_phone("(415) 555-2671", us).as_deref(), Some("+14155552671"));
        assert_eq!(normalize_phone("07700 900123", None), None, "no region, no guess");
        assert_eq!(normalize_phone("12", gb), None);
        assert_eq!(normalize_phone("not a number", gb), None);
        assert_eq!(normalize_phone("+44 7700 900123 999 999", None), None);
    }

    #[test]
    fn phone_region_comes_from_setting_then_country_then_locale() {
        let mut e = spec_event();
        e["context"]["locale"] = json!("en-US");
        e["context"]["location"] = json!({"country": "GB"});
        let Decision::Raise { call, .. } = map_with(&Mapping::default_preset(), None, e.clone()) else { panic!() };
        assert_eq!(call.body["contactpoint_phone"], json!("+447700900123"));
        e["context"]["location"] = json!({});
        e["context"]["traits"]["phone"] = json!("415 555 2671");
        let Decision::Raise { call, .. } = map_with(&Mapping::default_preset(), None, e.clone()) else { panic!() };
        assert_eq!(call.body["contactpoint_phone"], json!("+14155552671"));
        let Decision::Raise { call, .. } = map_with(&Mapping::default_preset(), Some("GB"), e.clone()) else { panic!() };
        assert_eq!(call.body["contactpoint_phone"], json!("+444155552671"), "the setting wins over the locale");
        e["context"]["traits"]["phone"] = json!("555 2671");
        let Decision::Raise { call, warnings } = map_with(&Mapping::default_preset(), None, e) else { panic!() };
        assert!(!call.body.contains_key("contactpoint_phone"), "too short to be a possible US number");
        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].contains("555 2671"), "{warnings:?}");
    }

    #[test]
    fn timestamps_fall_back_and_keep_milliseconds() {
        let e = json!({"event":"Signed Up","userId":"u","timestamp":"yesterday","originalTimestamp":"2026-06-06T14:30:00.25-02:00"});
        let Decision::Raise { call, warnings } = map_with(&Mapping::default_preset(), None, e) else { panic!() };
        assert_eq!(call.body["msdynmkt_signaltimestamp"], json!("2026-06-06T16:30:00.250Z"));
        assert_eq!(warnings.len(), 1);
        let e = json!({"event":"Signed Up","userId":"u"});
        let Decision::Raise { call, .. } = map_with(&Mapping::default_preset(), None, e) else { panic!() };
        assert_eq!(call.body["msdynmkt_signaltimestamp"], json!("2026-06-06T15:00:00.123Z"));
    }

    #[test]
    fn consent_is_judged_after_mapping_and_before_validity() {
        let mapping = Mapping::parse(r#"{"consent":{"categories":["Marketing"]},"events":{"E":{"attributes":{"a":"properties.a"},"required":["a"]},"F":{"consent":{"categories":["Sales"],"missing":"deny"}}}}"#).unwrap();
        let granted = json!({"categoryPreferences": {"Marketing": true}});
        // Denied: dropped, even though the event lacks userId and a required attribute.
        let e = json!({"event":"E","context":{"consent":{"categoryPreferences":{"Marketing":false}}}});
        assert_eq!(map_with(&mapping, None, e), Decision::Drop { reason: "no consent: Marketing".into() });
        // Unmapped comes first.
        let e = json!({"event":"Z","context":{"consent":{"categoryPreferences":{}}}});
        assert_eq!(map_with(&mapping, None, e), Decision::Drop { reason: "event 'Z' is not in the mapping".into() });
        // Granted: validated as usual.
        let e = json!({"event":"E","userId":"u","context":{"consent": granted}});
        assert_eq!(map_with(&mapping, None, e), Decision::Invalid { reason: "missing required attribute a".into() });
        // Missing preferences: allowed by default, denied where the entry says so.
        assert!(matches!(map_with(&mapping, None, json!({"event":"E","userId":"u","properties":{"a":1}})), Decision::Raise { .. }));
        assert_eq!(map_with(&mapping, None, json!({"event":"F","userId":"u"})), Decision::Drop { reason: "no consent: Sales".into() });
    }

    #[test]
    fn with_an_identity_section_no_user_id_is_needed() {
        let mapping =
            Mapping::parse(r#"{"identity":{"lookup":[{"entity":"contacts","attribute":"emailaddress1","from":"context.traits.email"}]},"events":{"E":{}}}"#)
                .unwrap();
        let Decision::Raise { call, .. } = map_with(&mapping, None, json!({"event":"E","context":{"traits":{"email":"a@b.io"}}})) else { panic!() };
        assert!(!call.body.contains_key("msdynmkt_profileid"), "filled by identity resolution");
        let Decision::Raise { call, .. } = map_with(&mapping, None, json!({"event":"E","userId":"x"})) else { panic!() };
        assert_eq!(call.body["msdynmkt_profileid"], json!("x"));
    }

    #[test]
    fn traits_fall_back_to_top_level() {
        let e = json!({"event":"Signed Up","userId":"u","traits":{"email":"A@B.io"}});
        let Decision::Raise { call, .. } = map_with(&Mapping::default_preset(), None, e) else { panic!() };
        assert_eq!(call.body["contactpoint_email"], json!("a@b.io"));
    }
}
