//! The services trailwatch serves on one endpoint and their many names
//! (`spec/protocols.md` §1): signing name, JSON target prefixes, query version
//! and XML namespace, and the CloudTrail `eventSource`.

/// A service reachable on the trailwatch endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// CloudWatch metrics, alarms and dashboards (`monitoring`).
    CloudWatch,
    /// CloudWatch Logs.
    Logs,
    /// CloudTrail control plane.
    CloudTrail,
    /// CloudTrail Lake ingestion (`PutAuditEvents`).
    CloudTrailData,
    /// SNS, for alarm actions.
    Sns,
    /// STS (`GetCallerIdentity`).
    Sts,
    /// IAM users, keys and policies.
    Iam,
    /// EventBridge.
    Events,
    /// The S3 REST facade over trailwatch's buckets (path-style).
    S3,
}

/// A wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `application/x-amz-json-1.0` (CloudWatch).
    AwsJson1_0,
    /// `application/x-amz-json-1.1` (Logs, CloudTrail, EventBridge).
    AwsJson1_1,
    /// Smithy RPC v2 CBOR (CloudWatch).
    RpcV2Cbor,
    /// Form-encoded request, XML response.
    AwsQuery,
    /// REST with JSON bodies (CloudTrail Data).
    RestJson1,
    /// REST with XML bodies (S3).
    RestXml,
}

impl Protocol {
    /// Short name used in logs and records.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::AwsJson1_0 => "awsJson1_0",
            Protocol::AwsJson1_1 => "awsJson1_1",
            Protocol::RpcV2Cbor => "rpcv2Cbor",
            Protocol::AwsQuery => "awsQuery",
            Protocol::RestJson1 => "restJson1",
            Protocol::RestXml => "restXml",
        }
    }

    /// Whether error `__type` values carry the absolute shape id.
    pub fn uses_absolute_error_type(self) -> bool {
        matches!(self, Protocol::AwsJson1_0 | Protocol::RpcV2Cbor)
    }
}

impl Service {
    /// Every service, for table-driven lookups.
    pub const ALL: [Service; 9] = [
        Service::CloudWatch,
        Service::Logs,
        Service::CloudTrail,
        Service::CloudTrailData,
        Service::Sns,
        Service::Sts,
        Service::Iam,
        Service::Events,
        Service::S3,
    ];

    /// SigV4 signing name (credential scope service).
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::CloudWatch => "monitoring",
            Service::Logs => "logs",
            Service::CloudTrail => "cloudtrail",
            Service::CloudTrailData => "cloudtrail-data",
            Service::Sns => "sns",
            Service::Sts => "sts",
            Service::Iam => "iam",
            Service::Events => "events",
            Service::S3 => "s3",
        }
    }

    /// The service whose signing name is `name`.
    pub fn from_signing_name(name: &str) -> Option<Service> {
        Self::ALL.into_iter().find(|s| s.signing_name() == name)
    }

    /// `eventSource` of this service's CloudTrail records.
    pub fn event_source(self) -> &'static str {
        match self {
            Service::CloudWatch => "monitoring.amazonaws.com",
            Service::Logs => "logs.amazonaws.com",
            Service::CloudTrail => "cloudtrail.amazonaws.com",
            Service::CloudTrailData => "cloudtrail-data.amazonaws.com",
            Service::Sns => "sns.amazonaws.com",
            Service::Sts => "sts.amazonaws.com",
            Service::Iam => "iam.amazonaws.com",
            Service::Events => "events.amazonaws.com",
            Service::S3 => "s3.amazonaws.com",
        }
    }

    /// API version string (the query `Version` parameter, CloudTrail `apiVersion`).
    pub fn api_version(self) -> &'static str {
        match self {
            Service::CloudWatch => "2010-08-01",
            Service::Logs => "2014-03-28",
            Service::CloudTrail => "2013-11-01",
            Service::CloudTrailData => "2021-08-11",
            Service::Sns => "2010-03-31",
            Service::Sts => "2011-06-15",
            Service::Iam => "2010-05-08",
            Service::Events => "2015-10-07",
            Service::S3 => "2006-03-01",
        }
    }

    /// XML namespace of query responses (and of S3's REST-XML bodies).
    pub fn xml_namespace(self) -> &'static str {
        match self {
            Service::CloudWatch => "http://monitoring.amazonaws.com/doc/2010-08-01/",
            Service::Sns => "http://sns.amazonaws.com/doc/2010-03-31/",
            Service::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
            Service::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
            Service::S3 => "http://s3.amazonaws.com/doc/2006-03-01/",
            _ => "",
        }
    }

    /// Namespace of absolute error shape ids (`com.amazonaws.cloudwatch#…`).
    pub fn shape_namespace(self) -> &'static str {
        match self {
            Service::CloudWatch => "com.amazonaws.cloudwatch",
            Service::Logs => "com.amazonaws.cloudwatchlogs",
            Service::CloudTrail => "com.amazonaws.cloudtrail",
            Service::CloudTrailData => "com.amazonaws.cloudtraildata",
            Service::Sns => "com.amazonaws.sns",
            Service::Sts => "com.amazonaws.sts",
            Service::Iam => "com.amazonaws.iam",
            Service::Events => "com.amazonaws.eventbridge",
            Service::S3 => "com.amazonaws.s3",
        }
    }

    /// JSON target prefixes this service answers to (several spellings may exist).
    pub fn json_target_prefixes(self) -> &'static [&'static str] {
        match self {
            Service::CloudWatch => &["GraniteServiceVersion20100801"],
            Service::Logs => &["Logs_20140328"],
            Service::CloudTrail => &[
                "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
                "CloudTrail_20131101",
            ],
            Service::Events => &["AWSEvents"],
            _ => &[],
        }
    }

    /// The JSON protocol version the service is defined with, if any.
    pub fn json_protocol(self) -> Option<Protocol> {
        match self {
            Service::CloudWatch => Some(Protocol::AwsJson1_0),
            Service::Logs | Service::CloudTrail | Service::Events => Some(Protocol::AwsJson1_1),
            _ => None,
        }
    }

    /// Whether this service speaks awsQuery.
    pub fn speaks_query(self) -> bool {
        matches!(
            self,
            Service::CloudWatch | Service::Sns | Service::Sts | Service::Iam
        )
    }

    /// Whether JSON/CBOR errors carry `x-amzn-query-error` (awsQueryCompatible services).
    pub fn is_query_compatible(self) -> bool {
        self == Service::CloudWatch
    }

    /// Service named by a JSON target prefix.
    pub fn from_json_target_prefix(prefix: &str) -> Option<Service> {
        Self::ALL
            .into_iter()
            .find(|s| s.json_target_prefixes().contains(&prefix))
    }

    /// Service named by a query `Version` value.
    pub fn from_query_version(version: &str) -> Option<Service> {
        Self::ALL
            .into_iter()
            .find(|s| s.speaks_query() && s.api_version() == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Service::ALL {
            assert_eq!(Service::from_signing_name(s.signing_name()), Some(s));
            for p in s.json_target_prefixes() {
                assert_eq!(Service::from_json_target_prefix(p), Some(s));
            }
        }
        assert_eq!(
            Service::from_query_version("2010-08-01"),
            Some(Service::CloudWatch)
        );
        assert_eq!(
            Service::from_query_version("2010-03-31"),
            Some(Service::Sns)
        );
    }
}
