//! Entity definitions (SPEC §10, §19): `accounts`, `contacts`, `leads` and
//! `opportunities` as Dataverse describes them — columns and their types,
//! alternate keys only where defined (`accountnumber` on accounts,
//! `new_orderid` on opportunities), single-valued navigation properties — and
//! the `EntityDefinitions` query that reads them. The row handlers
//! ([`crate::rows`]) check writes against the same definitions.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{dataverse_error, json_response, Env, Reply};

/// A navigation property: the lookup column it writes and the set it points at.
pub(crate) struct Navigation {
    pub property: &'static str,
    pub column: &'static str,
    pub target: &'static str,
}

pub(crate) struct Definition {
    pub set: &'static str,
    pub logical: &'static str,
    pub primary_id: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
    pub keys: &'static [&'static [&'static str]],
    pub navigation: &'static [Navigation],
}

/// Columns every contact and lead has (identity's lookups read them).
const PERSON: &[(&str, &str)] = &[
    ("emailaddress1", "String"),
    ("emailaddress2", "String"),
    ("emailaddress3", "String"),
    ("firstname", "String"),
    ("lastname", "String"),
    ("fullname", "String"),
    ("mobilephone", "String"),
    ("telephone1", "String"),
    ("companyname", "String"),
];

const DEFINITIONS: &[Definition] = &[
    Definition {
        set: "accounts",
        logical: "account",
        primary_id: "accountid",
        columns: &[
            ("accountid", "Uniqueidentifier"),
            ("name", "String"),
            ("accountnumber", "String"),
            ("telephone1", "String"),
            ("emailaddress1", "String"),
            ("websiteurl", "String"),
            ("address1_city", "String"),
            ("description", "Memo"),
            ("revenue", "Money"),
            ("numberofemployees", "Integer"),
            ("industrycode", "Picklist"),
            ("creditonhold", "Boolean"),
            ("lastusedincampaign", "DateTime"),
            ("primarycontactid", "Lookup"),
            ("parentaccountid", "Lookup"),
            ("statecode", "State"),
            ("statuscode", "Status"),
        ],
        keys: &[&["accountnumber"]],
        navigation: &[
            Navigation { property: "primarycontactid", column: "primarycontactid", target: "contacts" },
            Navigation { property: "parentaccountid", column: "parentaccountid", target: "accounts" },
        ],
    },
    Definition {
        set: "contacts",
        logical: "contact",
        primary_id: "contactid",
        columns: &[("contactid", "Uniqueidentifier"), ("birthdate", "DateTime"), ("parentcustomerid", "Customer")],
        keys: &[],
        navigation: &[
            Navigation { property: "parentcustomerid_account", column: "parentcustomerid", target: "accounts" },
            Navigation { property: "parentcustomerid_contact", column: "parentcustomerid", target: "contacts" },
        ],
    },
    Definition {
        set: "leads",
        logical: "lead",
        primary_id: "leadid",
        columns: &[("leadid", "Uniqueidentifier"), ("subject", "String"), ("parentaccountid", "Lookup"), ("parentcontactid", "Lookup")],
        keys: &[],
        navigation: &[
            Navigation { property: "parentaccountid", column: "parentaccountid", target: "accounts" },
            Navigation { property: "parentcontactid", column: "parentcontactid", target: "contacts" },
        ],
    },
    Definition {
        set: "opportunities",
        logical: "opportunity",
        primary_id: "opportunityid",
        columns: &[
            ("opportunityid", "Uniqueidentifier"),
            ("name", "String"),
            ("new_orderid", "String"),
            ("description", "Memo"),
            ("estimatedvalue", "Money"),
            ("estimatedclosedate", "DateTime"),
            ("closeprobability", "Integer"),
            ("parentaccountid", "Lookup"),
            ("parentcontactid", "Lookup"),
            ("customerid", "Customer"),
            ("statecode", "State"),
            ("statuscode", "Status"),
        ],
        keys: &[&["new_orderid"]],
        navigation: &[
            Navigation { property: "parentaccountid", column: "parentaccountid", target: "accounts" },
            Navigation { property: "parentcontactid", column: "parentcontactid", target: "contacts" },
            Navigation { property: "customerid_account", column: "customerid", target: "accounts" },
            Navigation { property: "customerid_contact", column: "customerid", target: "contacts" },
        ],
    },
    // A custom table whose id column its set name does not give (`new_witnesses` → `new_witnessid`,
    // not `new_witnesseid`): only rows the config seeds route to it.
    Definition {
        set: "new_witnesses",
        logical: "new_witness",
        primary_id: "new_witnessid",
        columns: &[("new_witnessid", "Uniqueidentifier"), ("new_name", "String"), ("emailaddress1", "String")],
        keys: &[],
        navigation: &[],
    },
];

/// The definition of an entity set the sandbox describes.
pub(crate) fn definition(set: &str) -> Option<&'static Definition> {
    DEFINITIONS.iter().find(|d| d.set == set)
}

impl Definition {
    /// Every column: the defined ones, and for contacts and leads the person columns.
    pub fn all_columns(&self) -> Vec<(&'static str, &'static str)> {
        let person = matches!(self.set, "contacts" | "leads");
        self.columns.iter().copied().chain(if person { PERSON.iter().copied() } else { [].iter().copied() }).collect()
    }

    pub fn column_type(&self, column: &str) -> Option<&'static str> {
        self.all_columns().into_iter().find(|(c, _)| *c == column).map(|(_, t)| t)
    }

    pub fn navigation(&self, property: &str) -> Option<&'static Navigation> {
        self.navigation.iter().find(|n| n.property == property)
    }

    /// Whether `columns` (in any order) are an alternate key.
    pub fn is_key(&self, columns: &[&str]) -> bool {
        let mut wanted = columns.to_vec();
        wanted.sort_unstable();
        self.keys.iter().any(|k| {
            let mut have = k.to_vec();
            have.sort_unstable();
            have == wanted
        })
    }
}

/// `GET /api/data/v9.2/EntityDefinitions?$filter=EntitySetName eq '{set}'&$select=…&$expand=Attributes(…),Keys(…),ManyToOneRelationships(…)`.
/// Custom columns seeded rows carry (`new_customernumber`) are listed as String columns.
pub(crate) fn entity_definitions(env: &Env<'_>, query: &str, headers: &BTreeMap<String, String>) -> Reply {
    let dataverse = &*env.dataverse;
    dataverse.entity_requests.fetch_add(1, Ordering::SeqCst);
    let token = headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    if !env.is_valid(token) {
        return dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired.");
    }
    let limits = env.faults().lock().unwrap().limits.clone();
    let remaining = match dataverse.admit(&limits, &env.state.entra.holder(token), Instant::now(), Duration::ZERO) {
        Ok(remaining) => remaining,
        Err(reply) => return *reply,
    };
    crate::protection::with_headers(describe(env, query), remaining)
}

fn describe(env: &Env<'_>, query: &str) -> Reply {
    if let Some(status) = env.faults().lock().unwrap().entities_status {
        return match status {
            403 => dataverse_error(403, "0x80040220", "Principal user is missing prvReadEntity privilege (sandbox fault)."),
            s => dataverse_error(s, "0x80040216", &format!("Scripted metadata answer {s}.")),
        };
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim().to_string());
    let filter = get("$filter").unwrap_or_default();
    let Some(set) = filter.strip_prefix("EntitySetName eq '").and_then(|f| f.strip_suffix('\'')) else {
        return dataverse_error(400, "0x80060888", &format!("The query parameter $filter '{filter}' is not supported by this sandbox (EntitySetName eq '…')."));
    };
    let expand = get("$expand").unwrap_or_default();
    for part in ["Attributes(", "Keys(", "ManyToOneRelationships("] {
        if !expand.contains(part) {
            return dataverse_error(
                400,
                "0x80060888",
                &format!("This sandbox answers EntityDefinitions queries that $expand Attributes, Keys and ManyToOneRelationships ({part} missing)."),
            );
        }
    }
    let rows: Vec<Value> = definition(set)
        .map(|d| {
            let mut columns: Vec<(String, String)> = d.all_columns().into_iter().map(|(c, t)| (c.to_string(), t.to_string())).collect();
            let seeded = env.dataverse.tables.rows(set);
            for row in &seeded {
                for column in row.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !column.starts_with('_') && !columns.iter().any(|(c, _)| c == column) {
                        columns.push((column.clone(), "String".into()));
                    }
                }
            }
            json!({
                "LogicalName": d.logical,
                "EntitySetName": d.set,
                "PrimaryIdAttribute": d.primary_id,
                "Attributes": columns.iter().map(|(c, t)| json!({"LogicalName": c, "AttributeType": t})).collect::<Vec<_>>(),
                "Keys": d.keys.iter().map(|k| json!({"KeyAttributes": k, "EntityKeyIndexStatus": "Active"})).collect::<Vec<_>>(),
                "ManyToOneRelationships": d.navigation.iter().map(|n| json!({
                    "ReferencingEntityNavigationPropertyName": n.property,
                    "ReferencedEntity": definition(n.target).map_or(n.target, |t| t.logical),
                })).collect::<Vec<_>>(),
            })
        })
        .into_iter()
        .collect();
    json_response(200, &json!({"@odata.context": "$metadata#EntityDefinitions(LogicalName,EntitySetName,PrimaryIdAttribute)", "value": rows}))
}
