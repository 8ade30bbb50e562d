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
