//! The resources a call targets, read from its input, for the `resources` field
//! of its audit record (`spec/cloudtrail.md` §1.9, §8). Derived from the request,
//! not the handler, so failed and denied calls name their targets too.

use trailwatch_core::audit::Resource;
use trailwatch_protocol::{Service, Value};

fn names<'a>(input: &'a Value, single: &str, plural: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = input
        .get(single)
        .and_then(Value::as_str)
        .into_iter()
        .collect();
    if let Some(list) = input.get(plural).and_then(Value::as_list) {
        out.extend(list.iter().filter_map(Value::as_str));
    }
    out
}

/// Resources named by `input` of `operation`.
pub(crate) fn resources_for(
    service: Service,
    operation: &str,
    input: &Value,
    account: &str,
    region: &str,
) -> Vec<Resource> {
    let resource = |arn: String, resource_type: &str, name: &str| Resource {
        arn,
        account_id: account.to_owned(),
        resource_type: resource_type.to_owned(),
        name: name.to_owned(),
    };
    let mut out = Vec::new();
    match service {
        Service::CloudWatch => {
            for name in names(input, "AlarmName", "AlarmNames") {
                out.push(resource(
                    format!("arn:aws:cloudwatch:{region}:{account}:alarm:{name}"),
                    "AWS::CloudWatch::Alarm",
                    name,
                ));
            }
            for name in names(input, "DashboardName", "DashboardNames") {
                out.push(resource(
                    format!("arn:aws:cloudwatch::{account}:dashboard/{name}"),
                    "AWS::CloudWatch::Dashboard",
                    name,
                ));
            }
        }
        Service::Logs => {
            if let Some(group) = input.get("logGroupName").and_then(Value::as_str) {
                let group_arn = format!("arn:aws:logs:{region}:{account}:log-group:{group}");
                let stream = input.get("logStreamName").and_then(Value::as_str);
                match (operation, stream) {
                    ("CreateLogStream" | "DeleteLogStream", Some(stream)) => out.push(resource(
                        format!("{group_arn}:log-stream:{stream}"),
                        "AWS::Logs::LogStream",
                        stream,
                    )),
                    _ => out.push(resource(group_arn, "AWS::Logs::LogGroup", group)),
                }
            }
        }
        Service::CloudTrail => {
            for key in ["Name", "TrailName"] {
                let Some(name) = input.get(key).and_then(Value::as_str) else {
                    continue;
                };
                let is_trail_op = operation.contains("Trail")
                    || operation.contains("Logging")
                    || operation.contains("Selectors");
                if !is_trail_op {
                    continue;
                }
                let (arn, short) = match name.strip_prefix("arn:") {
                    Some(_) => (name.to_owned(), name.rsplit('/').next().unwrap_or(name)),
                    None => (
                        format!("arn:aws:cloudtrail:{region}:{account}:trail/{name}"),
                        name,
                    ),
                };
                out.push(resource(arn, "AWS::CloudTrail::Trail", short));
            }
            for (key, kind) in [
                ("EventDataStore", "AWS::CloudTrail::EventDataStore"),
                ("Channel", "AWS::CloudTrail::Channel"),
            ] {
                if let Some(arn) = input
                    .get(key)
                    .and_then(Value::as_str)
                    .filter(|a| a.starts_with("arn:"))
                {
                    out.push(resource(
                        arn.to_owned(),
                        kind,
                        arn.rsplit('/').next().unwrap_or(arn),
                    ));
                }
            }
        }
        Service::CloudTrailData => {
            if let Some(arn) = input.get("channelArn").and_then(Value::as_str) {
                out.push(resource(
                    arn.to_owned(),
                    "AWS::CloudTrail::Channel",
                    arn.rsplit('/').next().unwrap_or(arn),
                ));
            }
        }
        Service::Sns => {
            // CreateTopic names the topic; the others carry its ARN, a
            // subscription's ARN being the topic's plus an id.
            let topic = match (operation, input.get("Name").and_then(Value::as_str)) {
                ("CreateTopic", Some(name)) => {
                    Some(format!("arn:aws:sns:{region}:{account}:{name}"))
                }
                _ => input
                    .get("TopicArn")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        let arn = input.get("SubscriptionArn").and_then(Value::as_str)?;
                        arn.rsplit_once(':').map(|(topic, _)| topic.to_owned())
                    }),
            };
            if let Some(arn) = topic.filter(|a| a.starts_with("arn:aws:sns:")) {
                let name = arn.rsplit(':').next().unwrap_or_default().to_owned();
                out.push(resource(arn, "AWS::SNS::Topic", &name));
            }
        }
        // S3 resources come from the path, not an input tree (`s3::record_input`).
        Service::Sts | Service::Iam | Service::Events | Service::S3 => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_groups_and_trails() {
        let input = Value::structure([(
            "AlarmNames",
            Value::List(vec![Value::string("a"), Value::string("b")]),
        )]);
        let r = resources_for(
            Service::CloudWatch,
            "DeleteAlarms",
            &input,
            "123456789012",
            "eu-west-1",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1].arn,
            "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:b"
        );
        let input = Value::structure([
            ("logGroupName", Value::string("/app")),
            ("logStreamName", Value::string("s1")),
        ]);
        let r = resources_for(Service::Logs, "CreateLogStream", &input, "1", "r");
        assert_eq!(
            (r[0].resource_type.as_str(), r[0].name.as_str()),
            ("AWS::Logs::LogStream", "s1")
        );
        let r = resources_for(Service::Logs, "PutLogEvents", &input, "1", "r");
        assert_eq!(
            (r[0].resource_type.as_str(), r[0].name.as_str()),
            ("AWS::Logs::LogGroup", "/app")
        );
        let input = Value::structure([("Name", Value::string("audit"))]);
        let r = resources_for(Service::CloudTrail, "CreateTrail", &input, "1", "r");
        assert_eq!(r[0].arn, "arn:aws:cloudtrail:r:1:trail/audit");
        assert!(resources_for(Service::CloudTrail, "LookupEvents", &input, "1", "r").is_empty());
        let r = resources_for(Service::Sns, "CreateTopic", &input_named("ops"), "1", "r");
        assert_eq!(
            (
                r[0].arn.as_str(),
                r[0].resource_type.as_str(),
                r[0].name.as_str()
            ),
            ("arn:aws:sns:r:1:ops", "AWS::SNS::Topic", "ops")
        );
        let input = Value::structure([(
            "SubscriptionArn",
            Value::string("arn:aws:sns:r:111122223333:ops:1f2e"),
        )]);
        let r = resources_for(Service::Sns, "Unsubscribe", &input, "1", "r");
        assert_eq!(r[0].arn, "arn:aws:sns:r:111122223333:ops");
        let input = Value::structure([("SubscriptionArn", Value::string("pending"))]);
        assert!(resources_for(Service::Sns, "Unsubscribe", &input, "1", "r").is_empty());
    }

    fn input_named(name: &str) -> Value {
        Value::structure([("Name", Value::string(name))])
    }
}
