//! template.yaml and `scripts/local-invoke.sh --sam`: what `sam local` needs
//! must not be in force when the stack is deployed (SPEC §2.1, §21.3, README
//! "Local runtimes").
//!
//! SAM's local runtime passes the function only the variables the template
//! declares, so the template `sam local` runs (derived from template.yaml by
//! `scripts/sam-local-template.py`: the deploy template holds no parameter only
//! `sam local` uses) declares the sandbox's endpoint settings — under the
//! `IsSamLocal` condition, which CloudFormation resolves to `AWS::NoValue` with
//! the default `SamLocal=false`. These tests evaluate the function's environment
//! as CloudFormation would (Ref, Fn::If and the conditions, parameters at their
//! defaults unless given) and check what a deployment sees.

use std::collections::BTreeMap;

use serde_norway::Value;

use crate::helpers::ROOT;

/// A variable's value once CloudFormation has resolved it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    /// A literal (a parameter's value included).
    Text(String),
    /// Something only a deployment knows: a resource's id, a required parameter.
    Deployed(String),
}

pub(crate) struct Template {
    pub(crate) doc: Value,
    pub(crate) parameters: BTreeMap<String, String>,
}

/// The template `sam local` runs: template.yaml through `scripts/sam-local-template.py`.
pub(crate) fn sam_local_template() -> String {
    let out = std::process::Command::new("python3")
        .args([format!("{ROOT}/scripts/sam-local-template.py"), format!("{ROOT}/template.yaml")])
        .output()
        .expect("python3 runs scripts/sam-local-template.py");
    assert!(out.status.success(), "scripts/sam-local-template.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Template {
    fn load(overrides: &[(&str, &str)]) -> Template {
        Template::from_text(&sam_local_template(), overrides)
    }

    /// A template's text with its parameters at their defaults, `overrides` on top.
    pub(crate) fn from_text(text: &str, overrides: &[(&str, &str)]) -> Template {
        let doc: Value = serde_norway::from_str(text).expect("template.yaml is YAML");
        let mut parameters = BTreeMap::new();
        for (name, spec) in doc["Parameters"].as_mapping().expect("Parameters") {
            if let Some(default) = spec.get("Default").and_then(scalar) {
                parameters.insert(name.as_str().unwrap().to_string(), default);
            }
        }
        for (name, value) in overrides {
            assert!(doc["Parameters"].get(*name).is_some(), "no parameter {name}");
            parameters.insert(name.to_string(), value.to_string());
        }
        Template { doc, parameters }
    }

    /// RelayFunction's environment: variable → value, absent ones left out.
    pub(crate) fn environment(&self) -> BTreeMap<String, Resolved> {
        let variables = self.doc["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"].as_mapping().expect("Environment.Variables");
        variables.iter().filter_map(|(name, value)| Some((name.as_str().unwrap().to_string(), self.resolve(value)?))).collect()
    }

    /// A value, or None for `AWS::NoValue`.
    pub(crate) fn resolve(&self, value: &Value) -> Option<Resolved> {
        if let Some(text) = scalar(value) {
            return Some(Resolved::Text(text));
        }
        let (function, argument) = intrinsic(value).unwrap_or_else(|| panic!("cannot resolve {value:?}"));
        match function.as_str() {
            "Ref" => {
                let name = argument.as_str().expect("Ref names a string");
                match name {
                    "AWS::NoValue" => None,
                    _ => Some(match self.parameters.get(name) {
                        Some(value) => Resolved::Text(value.clone()),
                        None => Resolved::Deployed(name.to_string()),
                    }),
                }
            }
            "If" => {
                let [condition, then, otherwise] = argument.as_sequence().expect("Fn::If takes a list").as_slice() else { panic!("Fn::If takes 3 items") };
                self.resolve(if self.condition(condition.as_str().unwrap()) { then } else { otherwise })
            }
            "GetAtt" | "Sub" => Some(Resolved::Deployed(format!("{argument:?}"))),
            other => panic!("Fn::{other} is not evaluated by this test"),
        }
    }

    pub(crate) fn condition(&self, name: &str) -> bool {
        let definition = self.doc["Conditions"].get(name).unwrap_or_else(|| panic!("no condition {name}"));
        self.truth(definition)
    }

    fn truth(&self, value: &Value) -> bool {
        let (function, argument) = intrinsic(value).unwrap_or_else(|| panic!("not a condition: {value:?}"));
        let items = || argument.as_sequence().cloned().unwrap_or_default();
        match function.as_str() {
            "Equals" => {
                let [a, b] = items().try_into().expect("Fn::Equals takes 2 items");
                self.resolve(&a) == self.resolve(&b)
            }
            "Not" => !self.truth(&items()[0]),
            "And" => items().iter().all(|c| self.truth(c)),
            "Or" => items().iter().any(|c| self.truth(c)),
            "Condition" => self.condition(argument.as_str().unwrap()),
            other => panic!("Fn::{other} is not a condition function"),
        }
    }
}

pub(crate) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `!Ref x` / `{Ref: x}` and `!If [...]` / `{Fn::If: [...]}`: the function's short name and argument.
pub(crate) fn intrinsic(value: &Value) -> Option<(String, Value)> {
    match value {
        Value::Tagged(tagged) => Some((tagged.tag.to_string().trim_start_matches('!').to_string(), tagged.value.clone())),
        Value::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            let name = key.strip_prefix("Fn::").unwrap_or(key);
            (key == "Ref" || key == "Condition" || key.starts_with("Fn::")).then(|| (name.to_string(), argument.clone()))
        }
        _ => None,
    }
}

/// The variables that point the relay at another Secrets Manager, Entra,
/// Dataverse or AWS endpoint than the real ones.
fn is_endpoint_setting(name: &str) -> bool {
    name.starts_with("AWS_ENDPOINT_URL") || name == "D365_AUTHORITY_HOST" || name == "D365_DATAVERSE_BASE_URL"
}

#[test]
fn a_deployment_with_the_defaults_has_no_endpoint_override() {
    let environment = Template::load(&[("SecretArn", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:d365-AbCdEf")]).environment();
    assert!(environment.contains_key("D365_SECRET_ID"), "{environment:?}");
    let overrides: Vec<_> = environment.keys().filter(|name| is_endpoint_setting(name)).collect();
    assert!(overrides.is_empty(), "deployed with the defaults, the function would have {overrides:?}");
    assert!(!environment.contains_key("AWS_SAM_LOCAL"), "only SAM's local runtime sets AWS_SAM_LOCAL");
    for (name, value) in &environment {
        assert!(!matches!(value, Resolved::Text(text) if text.starts_with("http://")), "{name} = {value:?}");
    }
}

#[test]
fn even_with_sam_local_true_a_deployment_gets_only_inert_empty_settings() {
    // Should someone deploy with SamLocal=true: declared, but empty, which the
    // relay and the AWS SDK read as unset (SPEC §2.1).
    let environment = Template::load(&[("SamLocal", "true")]).environment();
    for name in ["AWS_ENDPOINT_URL_SECRETS_MANAGER", "D365_AUTHORITY_HOST", "D365_DATAVERSE_BASE_URL"] {
        assert_eq!(environment.get(name), Some(&Resolved::Text(String::new())), "{name}");
    }
    for (name, value) in environment.iter().filter(|(name, _)| is_endpoint_setting(name)) {
        assert_eq!(value, &Resolved::Text(String::new()), "{name}");
    }
}

#[test]
fn sam_local_has_every_variable_the_sandbox_run_sets() {
    // scripts/local-invoke.sh --sam fills these through --env-vars; sam local
    // ignores a variable the template does not declare.
    let declared = Template::load(&[("SamLocal", "true")]).environment();
    let script = std::fs::read_to_string(format!("{ROOT}/scripts/local-invoke.sh")).unwrap();
    for name in ["AWS_ENDPOINT_URL_SECRETS_MANAGER", "D365_AUTHORITY_HOST", "D365_DATAVERSE_BASE_URL", "D365_SECRET_ID", "D365_WEBHOOK_AUTH", "D365_MAPPING"] {
        assert!(declared.contains_key(name), "template.yaml does not declare {name} under SamLocal=true");
        assert!(script.contains(name), "scripts/local-invoke.sh does not set {name}");
    }
}

#[test]
fn sam_local_gets_no_resource_id_where_a_deployment_gets_a_resource() {
    // sam local resolves `!Ref SomeResource` to the logical id ("EventsDeadLetterQueue"),
    // which the relay would refuse as a URL: the script blanks each such variable.
    let template = Template::load(&[("SamLocal", "true")]);
    let resources = template.doc["Resources"].as_mapping().unwrap();
    let script = std::fs::read_to_string(format!("{ROOT}/scripts/local-invoke.sh")).unwrap();
    for (name, value) in template.environment() {
        if let Resolved::Deployed(what) = value {
            if resources.contains_key(what.as_str()) {
                assert!(script.contains(&format!("{name}=")), "scripts/local-invoke.sh must set {name} (a deployment's {what})");
            }
        }
    }
}

#[test]
fn the_template_defaults_to_a_deployment() {
    let template = Template::load(&[]);
    assert_eq!(template.parameters.get("SamLocal").map(String::as_str), Some("false"));
    assert!(!template.condition("IsSamLocal"));
    assert_eq!(template.parameters.get("Architecture").map(String::as_str), Some("arm64"));
}
