//! Subscription filters and destinations (`spec/logs.md` §8): their records
//! and the delivery payload. Delivery itself (to a log group, or over HTTP to
//! a registered destination) is the server's.
//!
//! # Catalog layout (version 1)
//! - `log_subscription_filters`, key `{account}:{region}:{group}:{filter}`,
//!   JSON [`SubscriptionRecord`];
//! - `log_destinations`, key `{account}:{region}:{name}`, JSON
//!   [`DestinationRecord`].

use std::io::Write as _;

use serde::{Deserialize, Serialize};
use trailwatch_storage::CatalogOp;

/// Catalog table of subscription filters.
pub const FILTERS: &str = "log_subscription_filters";
/// Catalog table of destinations.
pub const DESTINATIONS: &str = "log_destinations";
/// Subscription filters per log group (§8.1).
pub const MAX_PER_GROUP: usize = 2;

/// A stored subscription filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Format version.
    pub v: u8,
    /// `filterPattern`.
    pub pattern: String,
    /// `destinationArn`.
    pub destination_arn: String,
    /// `roleArn` (stored).
    pub role_arn: Option<String>,
    /// `distribution`.
    pub distribution: String,
    /// Creation time, epoch ms.
    pub created_ms: i64,
}

/// A stored destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRecord {
    /// Format version.
    pub v: u8,
    /// `targetArn`: a log group ARN, or an `http://` / `https://` URL.
    pub target_arn: String,
    /// `roleArn` (stored).
    pub role_arn: String,
    /// `accessPolicy` (stored, not enforced).
    pub access_policy: Option<String>,
    /// Creation time, epoch ms.
    pub created_ms: i64,
}

/// Key of a subscription filter.
pub fn filter_key(account: &str, region: &str, group: &str, name: &str) -> String {
    format!("{account}:{region}:{group}:{name}")
}

/// Key of a destination.
pub fn destination_key(account: &str, region: &str, name: &str) -> String {
    format!("{account}:{region}:{name}")
}

/// The catalog change storing a subscription filter.
pub fn put_filter(key: String, record: &SubscriptionRecord) -> CatalogOp {
    CatalogOp::put(FILTERS, key, serde_json::to_vec(record).unwrap_or_default())
}

/// The catalog change storing a destination.
pub fn put_destination(key: String, record: &DestinationRecord) -> CatalogOp {
    CatalogOp::put(
        DESTINATIONS,
        key,
        serde_json::to_vec(record).unwrap_or_default(),
    )
}

/// The §8.2 record: `events` are (eventId, timestamp, message).
pub fn payload(
    owner: &str,
    group: &str,
    stream: &str,
    filters: &[String],
    events: &[(String, i64, String)],
) -> serde_json::Value {
    serde_json::json!({
        "messageType": "DATA_MESSAGE",
        "owner": owner,
        "logGroup": group,
        "logStream": stream,
        "subscriptionFilters": filters,
        "logEvents": events
            .iter()
            .map(|(id, t, m)| serde_json::json!({"id": id, "timestamp": t, "message": m}))
            .collect::<Vec<_>>(),
    })
}

/// The health check sent when a filter is put (§8.2).
pub fn control_payload(owner: &str, filter: &str, now_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "messageType": "CONTROL_MESSAGE",
        "owner": owner,
        "logGroup": "",
        "logStream": "",
        "subscriptionFilters": [filter],
        "logEvents": [{
            "id": "",
            "timestamp": now_ms,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream.",
        }],
    })
}

/// Gzip of the payload's JSON text.
pub fn gzip(payload: &serde_json::Value) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(payload.to_string().as_bytes());
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn payload_round_trips_through_gzip() {
        let p = payload(
            "123456789012",
            "/app/web",
            "i-1",
            &["to-http".into()],
            &[("1".repeat(56), 1_700_000_000_000, "ERROR x".into())],
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzip(&p)[..])
            .read_to_string(&mut text)
            .unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["messageType"], "DATA_MESSAGE");
        assert_eq!(back["logEvents"][0]["message"], "ERROR x");
        assert_eq!(back["subscriptionFilters"][0], "to-http");
        let c = control_payload("1", "f", 5);
        assert_eq!(c["logGroup"], "");
        assert_eq!(
            c["logEvents"][0]["message"],
            "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."
        );
    }
}
