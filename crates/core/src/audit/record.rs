//! The eventVersion 1.11 record of one API call (`spec/cloudtrail.md` §1), with
//! the field order of §1.1 and the size limits of §1.6.

use serde_json::{Map, Value as J};
use trailwatch_types::Timestamp;

use super::classify::EventCategory;

/// Limit on `requestParameters` and `responseElements`.
/// Serialized size above which requestParameters / responseElements are
/// recorded as a truncation marker.
pub const PAYLOAD_FIELD_LIMIT: usize = 100 * 1024;
/// Limit on `additionalEventData`.
const ADDITIONAL_DATA_LIMIT: usize = 28 * 1024;
/// Limit on one whole record.
const RECORD_LIMIT: usize = 256 * 1024;
/// Limit on `userAgent`, `errorCode`, `errorMessage`.
const SHORT_FIELD_LIMIT: usize = 1024;

/// A resource an operation targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// ARN.
    pub arn: String,
    /// Owning account; empty for resources AWS records without one (S3 objects).
    pub account_id: String,
    /// `AWS::Svc::Type`.
    pub resource_type: String,
    /// Friendly name (trail, alarm or log group name), for LookupEvents.
    pub name: String,
}

/// Everything known about one call, ready to become a record.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// When the response was produced.
    pub event_time: Timestamp,
    /// `monitoring.amazonaws.com`, ….
    pub event_source: String,
    /// Operation name.
    pub event_name: String,
    /// Region of the credential scope (or the default).
    pub aws_region: String,
    /// Caller address.
    pub source_ip_address: String,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// `userIdentity` object.
    pub user_identity: J,
    /// `(errorCode, errorMessage)` on failure.
    pub error: Option<(String, String)>,
    /// Request members, names lower-camel-cased; `None` when there are none.
    pub request_parameters: Option<J>,
    /// Output of a successful state-changing call.
    pub response_elements: Option<J>,
    /// Extra data not in request or response.
    pub additional_event_data: Option<J>,
    /// The request id returned to the caller.
    pub request_id: String,
    /// Unique id of this record.
    pub event_id: String,
    /// Static per-operation property.
    pub read_only: bool,
    /// Targeted resources.
    pub resources: Vec<Resource>,
    /// Management or data.
    pub category: EventCategory,
    /// API version of the service.
    pub api_version: Option<String>,
    /// The account that received the call.
    pub recipient_account_id: String,
}

fn truncate_text(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Replaces a JSON field over `limit` bytes with the truncation marker.
fn bounded(v: J, limit: usize) -> J {
    let size = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0);
    if size <= limit {
        v
    } else {
        serde_json::json!({"truncated": true, "originalSizeBytes": size})
    }
}

impl CallRecord {
    /// The record as a JSON object, keys in the order of `spec/cloudtrail.md` §1.1.
    pub fn to_json(&self) -> J {
        let mut m = Map::new();
        m.insert("eventVersion".into(), "1.11".into());
        m.insert("userIdentity".into(), self.user_identity.clone());
        m.insert(
            "eventTime".into(),
            self.event_time.to_iso8601_seconds().into(),
        );
        m.insert("eventSource".into(), self.event_source.clone().into());
        m.insert("eventName".into(), self.event_name.clone().into());
        m.insert("awsRegion".into(), self.aws_region.clone().into());
        m.insert(
            "sourceIPAddress".into(),
            self.source_ip_address.clone().into(),
        );
        if let Some(ua) = &self.user_agent {
            m.insert(
                "userAgent".into(),
                truncate_text(ua, SHORT_FIELD_LIMIT).into(),
            );
        }
        if let Some((code, message)) = &self.error {
            m.insert(
                "errorCode".into(),
                truncate_text(code, SHORT_FIELD_LIMIT).into(),
            );
            m.insert(
                "errorMessage".into(),
                truncate_text(message, SHORT_FIELD_LIMIT).into(),
            );
        }
        let request = self
            .request_parameters
            .clone()
            .map(|v| bounded(v, PAYLOAD_FIELD_LIMIT));
        m.insert("requestParameters".into(), request.unwrap_or(J::Null));
        let response = match (&self.error, &self.response_elements) {
            (None, Some(v)) if !self.read_only => bounded(v.clone(), PAYLOAD_FIELD_LIMIT),
            _ => J::Null,
        };
        m.insert("responseElements".into(), response);
        if let Some(extra) = &self.additional_event_data {
            m.insert(
                "additionalEventData".into(),
                bounded(extra.clone(), ADDITIONAL_DATA_LIMIT),
            );
        }
        m.insert(
            "requestID".into(),
            truncate_text(&self.request_id, SHORT_FIELD_LIMIT).into(),
        );
        m.insert("eventID".into(), self.event_id.clone().into());
        m.insert("readOnly".into(), self.read_only.into());
        if !self.resources.is_empty() {
            let resources: Vec<J> = self
                .resources
                .iter()
                .map(|r| match r.account_id.as_str() {
                    "" => serde_json::json!({"type": r.resource_type, "ARN": r.arn}),
                    account => serde_json::json!({"accountId": account, "type": r.resource_type, "ARN": r.arn}),
                })
                .collect();
            m.insert("resources".into(), J::Array(resources));
        }
        m.insert("eventType".into(), "AwsApiCall".into());
        if let Some(v) = &self.api_version {
            m.insert("apiVersion".into(), v.clone().into());
        }
        m.insert(
            "managementEvent".into(),
            (self.category == EventCategory::Management).into(),
        );
        m.insert(
            "recipientAccountId".into(),
            self.recipient_account_id.clone().into(),
        );
        m.insert("eventCategory".into(), self.category.as_str().into());
        let mut record = J::Object(m);
        // The whole record stays within AWS's per-event cap: shed the big fields in order.
        for field in [
            "responseElements",
            "requestParameters",
            "additionalEventData",
        ] {
            let size = serde_json::to_vec(&record).map(|b| b.len()).unwrap_or(0);
            if size <= RECORD_LIMIT {
                break;
            }
            if let Some(slot) = record.get_mut(field) {
                if !slot.is_null() {
                    let original = serde_json::to_vec(slot).map(|b| b.len()).unwrap_or(0);
                    *slot = serde_json::json!({"truncated": true, "originalSizeBytes": original});
                }
            }
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> CallRecord {
        CallRecord {
            event_time: Timestamp::from_millis(1_767_225_600_700),
            event_source: "cloudtrail.amazonaws.com".into(),
            event_name: "LookupEvents".into(),
            aws_region: "us-east-1".into(),
            source_ip_address: "127.0.0.1".into(),
            user_agent: Some("x".repeat(2000)),
            user_identity: serde_json::json!({"type": "Root"}),
            error: None,
            request_parameters: Some(serde_json::json!({"maxResults": 5})),
            response_elements: Some(serde_json::json!({"ignored": "for reads"})),
            additional_event_data: None,
            request_id: "rid".into(),
            event_id: "eid".into(),
            read_only: true,
            resources: vec![],
            category: EventCategory::Management,
            api_version: None,
            recipient_account_id: "123456789012".into(),
        }
    }

    #[test]
    fn fields_and_order() {
        let json = sample().to_json();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "eventVersion",
                "userIdentity",
                "eventTime",
                "eventSource",
                "eventName",
                "awsRegion",
                "sourceIPAddress",
                "userAgent",
                "requestParameters",
                "responseElements",
                "requestID",
                "eventID",
                "readOnly",
                "eventType",
                "managementEvent",
                "recipientAccountId",
                "eventCategory"
            ]
        );
        assert_eq!(json["eventTime"], "2026-01-01T00:00:00Z");
        assert_eq!(json["userAgent"].as_str().unwrap().len(), 1024);
        assert_eq!(
            json["responseElements"],
            J::Null,
            "reads carry no response elements"
        );
    }

    #[test]
    fn oversize_fields_are_marked_truncated() {
        let mut r = sample();
        r.read_only = false;
        r.request_parameters = Some(serde_json::json!({"big": "y".repeat(200 * 1024)}));
        let json = r.to_json();
        assert_eq!(json["requestParameters"]["truncated"], true);
        assert!(
            json["requestParameters"]["originalSizeBytes"]
                .as_u64()
                .unwrap()
                > 200 * 1024
        );
        assert_eq!(json["responseElements"]["ignored"], "for reads");
    }
}
