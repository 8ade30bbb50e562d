//! An entity's definition as Dataverse describes it (SPEC §19): the answer of
//! `EntityDefinitions?$filter=EntitySetName eq '{set}'` with its columns
//! (`Attributes`), alternate keys (`Keys`) and single-valued navigation
//! properties (`ManyToOneRelationships`). Pure; reading it is
//! `dynamics::entities`' job.

use std::collections::BTreeMap;

use serde_json::Value;

/// The query of SPEC §19 for one entity set (after `/api/data/v9.2/`).
pub fn query(entity_set: &str) -> String {
    format!(
        "EntityDefinitions?$filter=EntitySetName eq '{}'&$select=LogicalName,EntitySetName,PrimaryIdAttribute&$expand=Attributes($select=LogicalName,AttributeType),Keys($select=KeyAttributes,EntityKeyIndexStatus),ManyToOneRelationships($select=ReferencingEntityNavigationPropertyName,ReferencedEntity)",
        entity_set.replace('\'', "''")
    )
}

/// An alternate key: its columns and the state of its index (`Active`, `Pending`, `InProgress`, `Failed`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlternateKey {
    pub columns: Vec<String>,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntityDef {
    /// `account`.
    pub logical_name: String,
    /// `accounts`.
    pub entity_set: String,
    /// `accountid`.
    pub primary_id: String,
    /// Column → `AttributeType` (`String`, `Money`, `Lookup`, …).
    pub columns: BTreeMap<String, String>,
    pub keys: Vec<AlternateKey>,
    /// Navigation property (case-sensitive) → the logical name of the entity it refers to.
    pub navigation: BTreeMap<String, String>,
}

/// Column types that are written with `@odata.bind`, never as values.
pub const LOOKUP_TYPES: &[&str] = &["Lookup", "Customer", "Owner"];

impl EntityDef {
    /// Reads the answer: `Ok(None)` when no entity has that set name.
    pub fn from_answer(answer: &Value) -> Result<Option<EntityDef>, String> {
        let rows = answer.get("value").and_then(Value::as_array).ok_or("the EntityDefinitions answer has no value list")?;
        let Some(row) = rows.first() else { return Ok(None) };
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let logical_name = text(row, "LogicalName").ok_or("an entity definition without LogicalName")?;
        let entity_set = text(row, "EntitySetName").unwrap_or_default();
        let primary_id = text(row, "PrimaryIdAttribute").unwrap_or_else(|| format!("{logical_name}id"));
        let list = |k: &str| row.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        let columns = list("Attributes").iter().filter_map(|a| Some((text(a, "LogicalName")?, text(a, "AttributeType").unwrap_or_default()))).collect();
        let keys = list("Keys")
            .iter()
            .map(|k| AlternateKey {
                columns: k
                    .get("KeyAttributes")
                    .and_then(Value::as_array)
                    .map(|c| c.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default(),
                status: text(k, "EntityKeyIndexStatus").unwrap_or_default(),
            })
            .collect();
        let navigation = list("ManyToOneRelationships")
            .iter()
            .filter_map(|r| Some((text(r, "ReferencingEntityNavigationPropertyName")?, text(r, "ReferencedEntity").unwrap_or_default())))
            .collect();
        Ok(Some(EntityDef { logical_name, entity_set, primary_id, columns, keys, navigation }))
    }

    pub fn column_type(&self, column: &str) -> Option<&str> {
        self.columns.get(column).map(String::as_str)
    }

    /// The alternate key whose columns are exactly `columns` (in any order).
    pub fn key_for(&self, columns: &[&str]) -> Option<&AlternateKey> {
        let mut wanted: Vec<&str> = columns.to_vec();
        wanted.sort_unstable();
        self.keys.iter().find(|k| {
            let mut have: Vec<&str> = k.columns.iter().map(String::as_str).collect();
            have.sort_unstable();
            have == wanted
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_answer_is_read_with_columns_keys_and_navigation() {
        let answer = json!({"value": [{
            "LogicalName": "account", "EntitySetName": "accounts", "PrimaryIdAttribute": "accountid",
            "Attributes": [{"LogicalName": "name", "AttributeType": "String"}, {"LogicalName": "primarycontactid", "AttributeType": "Lookup"}],
            "Keys": [{"KeyAttributes": ["accountnumber"], "EntityKeyIndexStatus": "Active"}],
            "ManyToOneRelationships": [{"ReferencingEntityNavigationPropertyName": "primarycontactid", "ReferencedEntity": "contact"}]
        }]});
        let d = EntityDef::from_answer(&answer).unwrap().unwrap();
        assert_eq!((d.logical_name.as_str(), d.primary_id.as_str()), ("account", "accountid"));
        assert_eq!(d.column_type("primarycontactid"), Some("Lookup"));
        assert_eq!(d.key_for(&["accountnumber"]).unwrap().status, "Active");
        assert!(d.key_for(&["name"]).is_none());
        assert_eq!(d.navigation["primarycontactid"], "contact");
        assert_eq!(EntityDef::from_answer(&json!({"value": []})), Ok(None));
        assert!(EntityDef::from_answer(&json!({})).is_err());
        assert!(query("accounts")
            .starts_with("EntityDefinitions?$filter=EntitySetName eq 'accounts'&$select=LogicalName,EntitySetName,PrimaryIdAttribute&$expand=Attributes("));
    }
}
