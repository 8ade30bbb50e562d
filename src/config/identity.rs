//! The mapping document's `identity`, `identify` and `consent` sections (SPEC §14).

use serde::Deserialize;
use serde_json::Value;

use super::check_name;

/// How a profile id is found: ordered lookups, then an optional create.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySpec {
    pub lookups: Vec<LookupSpec>,
    pub create: Option<WriteSpec>,
}

/// `GET {entity}?$select={id}&$filter={attribute} eq '{value at from}'&$top=2`.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupSpec {
    pub entity: String,
    pub attribute: String,
    pub from: String,
}

/// A create or an update: the entity set and its attributes (column → dotted path).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSpec {
    pub entity: String,
    pub attributes: Vec<(String, String)>,
}

/// `consent`: every listed category must be granted; `missing` decides when
/// the event carries no `categoryPreferences`.
#[derive(Debug, Clone, PartialEq)]
pub struct Consent {
    pub categories: Vec<String>,
    pub allow_missing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    #[serde(default)]
    lookup: Vec<RawLookup>,
    create: Option<RawWrite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLookup {
    entity: String,
    attribute: String,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWrite {
    entity: String,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsent {
    #[serde(default)]
    categories: Vec<String>,
    missing: Option<String>,
}

/// An entity set name as Dataverse spells them: lowercase letters, digits, underscores.
fn check_entity(entity: &str) -> Result<(), String> {
    let ok = !entity.is_empty() && entity.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') && entity.ends_with('s');
    if ok {
        Ok(())
    } else {
        Err(format!("'{entity}' is not an entity set name such as contacts or leads"))
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("'{path}' is not a dotted path such as context.traits.email"));
    }
    Ok(())
}

/// The id column of an entity set: its singular + `id` (`contacts` → `contactid`).
pub fn id_column(entity: &str) -> String {
    let singular = entity.strip_suffix("ies").map(|s| format!("{s}y")).unwrap_or_else(|| entity.strip_suffix('s').unwrap_or(entity).to_string());
    format!("{singular}id")
}

fn write(raw: RawWrite, at: &str) -> Result<WriteSpec, String> {
    check_entity(&raw.entity).map_err(|e| format!("{at}.entity: {e}"))?;
    let mut attributes = Vec::new();
    for (column, path) in raw.attributes {
        check_name(&column).map_err(|e| format!("{at}.attributes: {e}"))?;
        check_path(&path).map_err(|e| format!("{at}.attributes.{column}: {e}"))?;
        attributes.push((column, path));
    }
    Ok(WriteSpec { entity: raw.entity, attributes })
}

pub(super) fn identity(raw: RawIdentity) -> Result<IdentitySpec, String> {
    let mut lookups = Vec::new();
    for (i, l) in raw.lookup.into_iter().enumerate() {
        let at = format!("identity.lookup[{i}]");
        check_entity(&l.entity).map_err(|e| format!("{at}.entity: {e}"))?;
        check_name(&l.attribute).map_err(|e| format!("{at}.attribute: {e}"))?;
        check_path(&l.from).map_err(|e| format!("{at}.from: {e}"))?;
        lookups.push(LookupSpec { entity: l.entity, attribute: l.attribute, from: l.from });
    }
    let create = raw.create.map(|c| write(c, "identity.create")).transpose()?;
    if lookups.is_empty() && create.is_none() {
        return Err("identity: give at least one lookup (or a create)".into());
    }
    Ok(IdentitySpec { lookups, create })
}

pub(super) fn identify(raw: RawWrite) -> Result<WriteSpec, String> {
    write(raw, "identify")
}

pub(super) fn consent(raw: RawConsent, at: &str) -> Result<Consent, String> {
    if raw.categories.is_empty() || raw.categories.iter().any(|c| c.trim().is_empty()) {
        return Err(format!("{at}.categories: list one or more category names, e.g. [\"Marketing\"]"));
    }
    let allow_missing = match raw.missing.as_deref() {
        None | Some("allow") => true,
        Some("deny") => false,
        Some(other) => return Err(format!("{at}.missing: '{other}' is not one of allow, deny")),
    };
    Ok(Consent { categories: raw.categories, allow_missing })
}

impl Consent {
    /// `None` when the event may go on, else the first category not granted.
    pub fn refused<'a>(&'a self, event: &Value) -> Option<&'a str> {
        let preferences = event.pointer("/context/consent/categoryPreferences").filter(|v| !v.is_null());
        match preferences {
            None => (!self.allow_missing).then(|| self.categories[0].as_str()),
            Some(p) => self.categories.iter().find(|c| p.get(c.as_str()) != Some(&Value::Bool(true))).map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_columns_are_the_singular_plus_id() {
        assert_eq!(id_column("contacts"), "contactid");
        assert_eq!(id_column("leads"), "leadid");
        assert_eq!(id_column("msdynci_customerprofiles"), "msdynci_customerprofileid");
        assert_eq!(id_column("new_companies"), "new_companyid");
    }

    #[test]
    fn consent_needs_true_for_every_category() {
        let c = Consent { categories: vec!["Marketing".into(), "Analytics".into()], allow_missing: true };
        let with = |p: Value| json!({"context": {"consent": {"categoryPreferences": p}}});
        assert_eq!(c.refused(&with(json!({"Marketing": true, "Analytics": true}))), None);
        assert_eq!(c.refused(&with(json!({"Marketing": true, "Analytics": false}))), Some("Analytics"));
        assert_eq!(c.refused(&with(json!({"Marketing": "true"}))), Some("Marketing"), "only JSON true grants");
        assert_eq!(c.refused(&with(json!({}))), Some("Marketing"), "present but empty: every category must be true");
        assert_eq!(c.refused(&with(Value::Null)), None, "null counts as missing");
        assert_eq!(c.refused(&json!({})), None);
        let deny = Consent { allow_missing: false, ..c };
        assert_eq!(deny.refused(&json!({})), Some("Marketing"));
    }
}
