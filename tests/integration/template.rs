//! The SAM template (template.yaml) as a deployment sees it: the dashboard
//! names only metrics that exist, and the queues are set for backlogs (SPEC §18).

use serde_json::Value;

use crate::helpers::ROOT;

fn template() -> String {
    std::fs::read_to_string(format!("{ROOT}/template.yaml")).unwrap()
}

/// The dashboard's JSON body (`DashboardBody: !Sub |`), every `${…}` replaced by a placeholder.
fn dashboard_body(template: &str) -> Value {
    let start = template.find("DashboardBody: !Sub |").expect("a dashboard");
    let mut lines = template[start..].lines().skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    let mut body = first.to_string();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        body.push('\n');
        body.push_str(line);
    }
    let mut substituted = String::new();
    let mut rest = body.as_str();
    while let Some(open) = rest.find("${") {
        substituted.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("a closed ${…}") + open;
        let name = &rest[open + 2..close];
        substituted.push_str(if name == "MetricsNamespace" { "RELAY" } else { "X" });
        rest = &rest[close + 1..];
    }
    substituted.push_str(rest);
    serde_json::from_str(&substituted).expect("the dashboard body is JSON")
}

/// Metrics AWS publishes that the dashboard may name.
const AWS_METRICS: &[(&str, &[&str])] = &[
    ("AWS/SQS", &["ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible", "ApproximateAgeOfOldestMessage", "NumberOfMessagesSent"]),
    ("AWS/Lambda", &["Duration", "Errors", "Throttles", "Invocations", "ConcurrentExecutions"]),
];

#[test]
fn every_dashboard_widget_names_a_metric_the_relay_emits_or_aws_publishes() {
    let body = dashboard_body(&template());
    let widgets = body["widgets"].as_array().unwrap();
    assert!(widgets.len() >= 6, "triggers, outcomes, throttles, queue, DLQ, duration");
    let mut named = 0;
    for widget in widgets {
        for metric in widget["properties"]["metrics"].as_array().expect("a metric widget") {
            let (namespace, name) = (metric[0].as_str().unwrap(), metric[1].as_str().unwrap());
            let known = match namespace {
                "RELAY" => relay::metrics::METRIC_NAMES.contains(&name),
                aws => AWS_METRICS.iter().any(|(ns, names)| *ns == aws && names.contains(&name)),
            };
            assert!(known, "{namespace} {name} is not a metric the relay emits or AWS publishes");
            named += 1;
        }
    }
    assert!(named >= 12);
}

#[test]
fn the_queues_are_set_for_backlogs_and_the_relay_parks_in_the_dlq_alone() {
    let template = template();
    assert_eq!(template.matches("MessageRetentionPeriod: 1209600").count(), 2, "14 days on both queues");
    assert!(template.contains("maxReceiveCount: !Ref MaxReceiveCount"));
    let parameter = &template[template.find("  MaxReceiveCount:").unwrap()..];
    assert!(parameter.lines().take(4).any(|l| l.trim() == "Default: 100"), "a safety net of 100 receives");
    assert!(template.contains("D365_DEAD_LETTER_QUEUE_URL: !Ref EventsDeadLetterQueue"));
    assert!(template.contains("D365_MAX_RETRY_AGE_SECONDS: !Ref MaxRetryAgeSeconds"));
    let statement = &template[template.find("Sid: ParkInTheDeadLetterQueue").unwrap()..];
    let statement: Vec<&str> = statement.lines().take(4).map(str::trim).collect();
    assert_eq!(statement[1..], ["Effect: Allow", "Action: sqs:SendMessage", "Resource: !GetAtt EventsDeadLetterQueue.Arn"]);
    let lag = &template[template.find("QueueLagAlarm:").unwrap()..];
    assert!(lag.contains("MetricName: ApproximateAgeOfOldestMessage") && lag.contains("Threshold: !Ref LagAlarmSeconds"));
}

// ── SPEC §21: the mapping ships as a file; the template a deployer meets ──

use crate::sam_local::{intrinsic, scalar, Resolved, Template};
use serde_norway::Value as Yaml;

fn deploy_template(overrides: &[(&str, &str)]) -> Template {
    Template::from_text(&template(), overrides)
}

/// Lambda's cap on a function's environment variables, keys and values together.
const ENVIRONMENT_CAP: usize = 4096;

/// The longest real value of the parameters whose length no `MaxLength` states.
/// A secret's name is at most 512 characters, and Secrets Manager adds `-` and 6
/// characters; partitions and regions are the longest AWS has.
fn realistic_maximum(name: &str) -> Option<String> {
    match name {
        "SecretArn" => Some(format!("arn:aws-us-gov:secretsmanager:us-isob-east-1:123456789012:secret:{}-AbCdEf", "s".repeat(512))),
        _ => None,
    }
}

/// A resource's `Ref` at its longest: queue URLs (a queue name is at most 80
/// characters, the longest SQS endpoint host is the ISO-B one) and a table name (255).
fn resource_maximum(name: &str) -> String {
    let queue_url = format!("https://sqs.us-isob-east-1.sc2s.sgov.gov/123456789012/{}", "q".repeat(80));
    match name {
        "EventsQueue" | "EventsDeadLetterQueue" => queue_url,
        "IdempotencyTable" => "t".repeat(255),
        other => panic!("the environment names resource {other}: give this test its longest Ref"),
    }
}

/// A parameter at its realistic maximum: the longest allowed value, the largest
/// number, a free text at its `MaxLength`, an ARN at its longest real length.
fn parameter_maximum(template: &Template, name: &str) -> String {
    let spec = &template.doc["Parameters"][name];
    if let Some(allowed) = spec.get("AllowedValues").and_then(Yaml::as_sequence) {
        return allowed.iter().filter_map(scalar).max_by_key(String::len).unwrap();
    }
    if let Some(longest) = realistic_maximum(name) {
        return longest;
    }
    match spec["Type"].as_str() {
        Some("Number") => {
            let max = spec.get("MaxValue").and_then(scalar).unwrap_or_else(|| panic!("{name} reaches the environment without a MaxValue"));
            let min = spec.get("MinValue").and_then(scalar).unwrap_or_default();
            if min.len() > max.len() {
                min
            } else {
                max
            }
        }
        _ => {
            let max = spec.get("MaxLength").and_then(Yaml::as_u64).unwrap_or_else(|| panic!("{name} reaches the environment without a MaxLength"));
            "x".repeat(max as usize)
        }
    }
}

/// A variable's longest value: `!If` takes its longer branch, `AWS::NoValue` none.
fn longest(template: &Template, value: &Yaml) -> Option<String> {
    if let Some(text) = scalar(value) {
        return Some(text);
    }
    let (function, argument) = intrinsic(value).unwrap_or_else(|| panic!("cannot size {value:?}"));
    match function.as_str() {
        "Ref" => match argument.as_str().unwrap() {
            "AWS::NoValue" => None,
            name if template.doc["Parameters"].get(name).is_some() => Some(parameter_maximum(template, name)),
            resource => Some(resource_maximum(resource)),
        },
        "If" => {
            let branches = argument.as_sequence().unwrap();
            branches[1..].iter().filter_map(|b| longest(template, b)).max_by_key(String::len)
        }
        other => panic!("Fn::{other} in the environment: give this test its longest value"),
    }
}

#[test]
fn the_environment_stays_under_4_kb_with_every_parameter_at_its_realistic_maximum() {
    let template = deploy_template(&[]);
    let variables = template.doc["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"].as_mapping().unwrap();
    let mut total = 0;
    let mut sizes = Vec::new();
    for (name, value) in variables {
        let name = name.as_str().unwrap();
        if let Some(value) = longest(&template, value) {
            total += name.len() + value.len();
            sizes.push(format!("{name}={}", value.len()));
        }
    }
    println!("environment at its largest: {total} of {ENVIRONMENT_CAP} bytes ({})", sizes.join(", "));
    assert!(total < ENVIRONMENT_CAP, "{total} bytes: {sizes:?}");
    assert!(total < ENVIRONMENT_CAP - 1024, "keep a kilobyte for what Lambda and later settings add: {total} bytes");
    let names: Vec<&str> = variables.keys().map(|k| k.as_str().unwrap()).collect();
    assert!(!names.contains(&"D365_MAPPING"), "the mapping document ships in a layer, not in the environment");
    assert!(template.doc["Parameters"].get("MappingDocument").is_none());
}

#[test]
fn the_mapping_ships_in_a_layer_at_the_path_the_function_reads() {
    let template = deploy_template(&[("SecretArn", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:d365-AbCdEf")]);
    let resources = &template.doc["Resources"];
    let layer = &resources["MappingLayer"];
    assert_eq!(layer["Type"].as_str(), Some("AWS::Serverless::LayerVersion"));
    let folder = layer["Properties"]["ContentUri"].as_str().unwrap().trim_end_matches('/');
    let layers = resources["RelayFunction"]["Properties"]["Layers"].as_sequence().expect("the function's Layers");
    assert!(layers.iter().any(|l| intrinsic(l).is_some_and(|(f, a)| f == "Ref" && a.as_str() == Some("MappingLayer"))), "{layers:?}");
    let environment = template.environment();
    let Some(Resolved::Text(path)) = environment.get("D365_MAPPING_FILE") else { panic!("D365_MAPPING_FILE: {environment:?}") };
    // A layer's files land under /opt.
    let file = path.strip_prefix("/opt/").expect("under /opt");
    let shipped = std::fs::read_to_string(format!("{ROOT}/{folder}/{file}")).unwrap_or_else(|e| panic!("{folder}/{file}: {e}"));
    relay::config::Mapping::parse(&shipped).expect("the shipped mapping parses");
    assert!(!environment.contains_key("D365_MAPPING"));
}

#[test]
fn the_deploy_template_holds_no_sam_local_parameter_and_no_endpoint_setting() {
    let text = template();
    assert!(!text.contains("SamLocal"), "sam deploy --guided asks every parameter: make sam-local derives its template");
    let template = deploy_template(&[]);
    let variables = template.doc["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"].as_mapping().unwrap();
    for name in variables.keys().map(|k| k.as_str().unwrap()) {
        assert!(!name.starts_with("AWS_ENDPOINT_URL") && name != "D365_AUTHORITY_HOST" && name != "D365_DATAVERSE_BASE_URL", "{name}");
    }
    assert!(variables.keys().any(|k| k.as_str() == Some("D365_EXECUTION_ENVIRONMENTS")));
    assert!(!variables.keys().any(|k| k.as_str() == Some("D365_ENVIRONMENTS")));
}

#[test]
fn every_parameter_is_in_one_labelled_group() {
    let template = deploy_template(&[]);
    let interface = &template.doc["Metadata"]["AWS::CloudFormation::Interface"];
    let groups = interface["ParameterGroups"].as_sequence().expect("ParameterGroups");
    let labels: Vec<&str> = groups.iter().map(|g| g["Label"]["default"].as_str().unwrap()).collect();
    for (i, word) in ["Dynamics", "Sources", "Volume", "Operations"].iter().enumerate() {
        assert!(labels[i].starts_with(word), "{labels:?}");
    }
    let grouped: Vec<&str> = groups.iter().flat_map(|g| g["Parameters"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap())).collect();
    for name in template.doc["Parameters"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()) {
        assert_eq!(grouped.iter().filter(|g| **g == name).count(), 1, "{name} must be in exactly one group");
        assert!(interface["ParameterLabels"][name]["default"].as_str().is_some_and(|l| !l.is_empty()), "{name} has no label");
    }
    assert_eq!(grouped.len(), template.doc["Parameters"].as_mapping().unwrap().len(), "a group names no parameter the template lacks");
}

#[test]
fn producers_off_creates_no_subscription_and_a_disabled_rule() {
    let topic = "arn:aws:sns:eu-west-1:123456789012:orders";
    let pattern = r#"{"source": ["com.example.shop"]}"#;
    let state = |template: &Template| template.resolve(&template.doc["Resources"]["EventsRule"]["Properties"]["State"]);
    let off = deploy_template(&[("ProducersEnabled", "false"), ("SnsTopicArn", topic), ("EventBridgeRulePattern", pattern)]);
    assert_eq!(off.doc["Resources"]["EventsTopicSubscription"]["Condition"].as_str(), Some("SubscribeSnsTopic"));
    assert!(!off.condition("SubscribeSnsTopic"), "no SNS subscription while producers are off");
    assert_eq!(state(&off), Some(Resolved::Text("DISABLED".into())));
    let on = deploy_template(&[("ProducersEnabled", "true"), ("SnsTopicArn", topic), ("EventBridgeRulePattern", pattern)]);
    assert!(on.condition("SubscribeSnsTopic"));
    assert_eq!(state(&on), Some(Resolved::Text("ENABLED".into())));
}

#[test]
fn samconfig_has_a_first_deployment_and_a_production_profile() {
    let config = std::fs::read_to_string(format!("{ROOT}/samconfig.toml")).expect("samconfig.toml");
    let profile = |name: &str| -> String {
        let start = config.find(&format!("[{name}.deploy.parameters]")).unwrap_or_else(|| panic!("no [{name}.deploy.parameters]"));
        let rest = &config[start + 1..];
        let end = rest.find("\n[").map(|e| e + 1).unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let parameters = |name: &str| -> Vec<String> {
        let section = profile(name);
        let line = section.lines().find(|l| l.trim_start().starts_with("parameter_overrides")).unwrap_or_else(|| panic!("{name}: no parameter_overrides"));
        let template = deploy_template(&[]);
        let pairs: Vec<String> = line.split('"').nth(1).unwrap().split_whitespace().map(str::to_string).collect();
        for pair in &pairs {
            let key = pair.split('=').next().unwrap();
            assert!(template.doc["Parameters"].get(key).is_some(), "{name}: {key} is not a parameter of template.yaml");
        }
        pairs
    };
    let first = parameters("default");
    assert!(first.contains(&"ProducersEnabled=false".to_string()), "a first deployment starts with producers off: {first:?}");
    let prod = parameters("prod");
    for wanted in ["WebhookMode=enqueue", "EnableIdempotencyTable=true"] {
        assert!(prod.contains(&wanted.to_string()), "prod: {wanted} in {prod:?}");
    }
    assert!(prod.iter().any(|p| p.starts_with("AlarmTopicArn=arn:aws:sns:")), "prod sends alarms to a topic: {prod:?}");
}

/// `sam` on the PATH, or None (the test then says it skipped).
fn sam_cli() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("sam")).find(|p| p.is_file()))
}

#[test]
fn after_sam_build_the_built_layer_holds_the_mapping_at_the_path_the_function_reads() {
    // The function's build (cargo lambda, release) is CI's `make sam-build`, which runs the same
    // check; here SAM builds the template without it: the layer and the environment are the same.
    let Some(sam) = sam_cli() else {
        eprintln!("skipped: no sam on the PATH (CI runs scripts/check-mapping-layer.py after make sam-build)");
        return;
    };
    let build_dir = std::env::temp_dir().join(format!("relay-sam-build-{}", std::process::id()));
    let out = std::process::Command::new(sam)
        .args(["build", "--exclude", "RelayFunction", "--build-dir"])
        .arg(&build_dir)
        .current_dir(ROOT)
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .expect("sam runs");
    assert!(out.status.success(), "sam build: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let check = std::process::Command::new("python3")
        .arg(format!("{ROOT}/scripts/check-mapping-layer.py"))
        .arg(&build_dir)
        .arg(format!("{ROOT}/config/mapping.json"))
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_dir_all(&build_dir);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("lands at /opt/mapping.json"));
}

#[test]
fn four_saved_queries_read_the_record_lines_of_the_functions_log_group() {
    use serde_norway::Value as Yaml;
    let doc: Yaml = serde_norway::from_str(&template()).unwrap();
    let reference = |value: &Yaml| match value {
        Yaml::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str().map(str::to_string),
        other => other.get("Ref").and_then(Yaml::as_str).map(str::to_string),
    };
    let resources = doc["Resources"].as_mapping().unwrap();
    let log_group = reference(&doc["Resources"]["RelayFunction"]["Properties"]["LoggingConfig"]["LogGroup"]).expect("the function names its log group");
    assert_eq!(resources[log_group.as_str()]["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    let queries: Vec<String> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Logs::QueryDefinition"))
        .map(|r| {
            let groups = r["Properties"]["LogGroupNames"].as_sequence().expect("LogGroupNames");
            assert_eq!(groups.iter().map(&reference).collect::<Vec<_>>(), [Some(log_group.clone())], "on the function's log group");
            r["Properties"]["QueryString"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(queries.len(), 4, "{queries:?}");
    assert!(queries.iter().all(|q| q.contains("filter message = \"record\"")), "each reads record lines");
    let find = |needles: &[&str]| queries.iter().filter(|q| needles.iter().all(|n| q.contains(n))).count();
    assert_eq!(find(&["messageId = \"ORD-10231\"", "\"ids\":"]), 1, "one record by messageId or any value under ids");
    assert_eq!(find(&["outcome not in", "action.status", "action.code", "by outcome, status, code"]), 1, "failures by outcome, status and code");
    assert_eq!(find(&["action.kind = \"trigger\"", "bin(1m)", "action.target as trigger", "action.destination as destination"]), 1, "triggers per minute");
    assert_eq!(find(&["sort ms desc"]), 1, "the slowest records");
}
