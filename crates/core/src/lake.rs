//! CloudTrail Lake (`spec/cloudtrail.md` §6): event data stores, channels,
//! and the validation of external audit events (PutAuditEvents).
//!
//! Writes are not applied here: the `*_change` functions return catalog
//! changes that the caller commits with the call's audit record.
//!
//! # Catalog layout (version 1)
//! - `lake_stores`, key `{account}/{region}/{id}`: JSON [`EventDataStore`].
//! - `lake_channels`, key `{account}/{region}/{id}`: JSON [`Channel`].
//!
//! Accepted external events become records of category `ActivityAuditLog`
//! in the audit store (never in trails or LookupEvents), shaped as §6.4's
//! stored record.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use trailwatch_storage::{Catalog, CatalogOp};

use crate::trails::{AdvancedSelector, FieldSelector, TrailError};

/// Event data stores.
pub const STORES: &str = "lake_stores";
/// Channels.
pub const CHANNELS: &str = "lake_channels";
/// Event data stores per region (§6.1).
pub const MAX_STORES: usize = 10;
/// Channels per region (§6.4).
pub const MAX_CHANNELS: usize = 25;

/// A stored event data store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDataStore {
    /// Format version.
    pub v: u8,
    /// The UUID of the ARN (the table name in SQL).
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner.
    pub account: String,
    /// Region.
    pub region: String,
    /// `AdvancedEventSelectors`.
    pub selectors: Vec<AdvancedSelector>,
    /// `MultiRegionEnabled`.
    pub multi_region: bool,
    /// `RetentionPeriod`, days.
    pub retention_days: i64,
    /// `TerminationProtectionEnabled`.
    pub termination_protection: bool,
    /// `BillingMode`.
    pub billing_mode: String,
    /// `Status`.
    pub status: String,
    /// Creation, epoch ms.
    pub created_ms: i64,
    /// Last update, epoch ms.
    pub updated_ms: i64,
}

impl EventDataStore {
    /// `arn:aws:cloudtrail:<region>:<account>:eventdatastore/<id>`.
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:cloudtrail:{}:{}:eventdatastore/{}",
            self.region, self.account, self.id
        )
    }

    /// The catalog key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.account, self.region, self.id)
    }

    /// Whether the store takes channel (external) events rather than
    /// CloudTrail's own.
    pub fn takes_activity(&self) -> bool {
        self.selectors.iter().any(|s| {
            s.field_selectors.iter().any(|f| {
                f.field == "eventCategory"
                    && f.equals
                        .as_ref()
                        .is_some_and(|v| v.iter().any(|c| c == "ActivityAuditLog"))
            })
        })
    }
}

/// A stored channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Format version.
    pub v: u8,
    /// The UUID of the ARN.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner.
    pub account: String,
    /// Region.
    pub region: String,
    /// `Source`.
    pub source: String,
    /// Event data store ARNs it delivers to.
    pub destinations: Vec<String>,
    /// Creation, epoch ms.
    pub created_ms: i64,
}

impl Channel {
    /// `arn:aws:cloudtrail:<region>:<account>:channel/<id>`.
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:cloudtrail:{}:{}:channel/{}",
            self.region, self.account, self.id
        )
    }

    /// The catalog key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.account, self.region, self.id)
    }
}

/// Store and channel names (§6.1, §6.4): 3–128 of `[a-zA-Z0-9._-]`.
pub fn validate_name(name: &str, what: &str) -> Result<(), TrailError> {
    let ok = (3..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TrailError::new(
            "InvalidParameterException",
            format!(
                "{what} name {name} is not valid: use 3 to 128 letters, digits, '.', '_' or '-'."
            ),
        ))
    }
}

/// The selectors of a store created without any: all management events.
pub fn default_selectors() -> Vec<AdvancedSelector> {
    vec![AdvancedSelector {
        name: Some("Default management events".into()),
        field_selectors: vec![FieldSelector {
            field: "eventCategory".into(),
            equals: Some(vec!["Management".into()]),
            ..FieldSelector::default()
        }],
    }]
}

/// Validates an event data store's selectors: the trail rules, plus the
/// `ActivityAuditLog` category for channel stores, which stands alone.
pub fn validate_store_selectors(list: &[AdvancedSelector]) -> Result<(), TrailError> {
    let activity = |s: &AdvancedSelector| {
        s.field_selectors.iter().any(|f| {
            f.field == "eventCategory"
                && f.equals
                    .as_ref()
                    .is_some_and(|v| v.iter().any(|c| c == "ActivityAuditLog"))
        })
    };
    if list.iter().any(activity) {
        let alone = list.len() == 1
            && list[0].field_selectors.iter().all(|f| {
                f.field == "eventCategory"
                    && f.equals.as_deref() == Some(&["ActivityAuditLog".to_owned()][..])
            });
        if !alone {
            return Err(TrailError::new(
                "InvalidEventSelectorsException",
                "An event data store for external events has one selector: eventCategory equals ActivityAuditLog.",
            ));
        }
        return Ok(());
    }
    crate::trails::validate_advanced(list)
}

/// Lake entries in the catalog.
#[derive(Debug, Clone)]
pub struct Lake {
    catalog: Arc<dyn Catalog>,
}

fn storage(e: impl std::fmt::Display) -> TrailError {
    TrailError::new("InternalFailure", format!("lake storage failed: {e}"))
}

impl Lake {
    /// Entries kept in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// Every store of (account, region).
    pub fn stores(&self, account: &str, region: &str) -> Result<Vec<EventDataStore>, TrailError> {
        self.catalog
            .list(STORES, &format!("{account}/{region}/"))
            .map_err(storage)?
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).map_err(storage))
            .collect()
    }

    /// Every channel of (account, region).
    pub fn channels(&self, account: &str, region: &str) -> Result<Vec<Channel>, TrailError> {
        self.catalog
            .list(CHANNELS, &format!("{account}/{region}/"))
            .map_err(storage)?
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).map_err(storage))
            .collect()
    }

    /// The store a name or ARN names.
    pub fn store(
        &self,
        account: &str,
        region: &str,
        value: &str,
    ) -> Result<EventDataStore, TrailError> {
        let id = if value.starts_with("arn:") {
            let prefix = format!("arn:aws:cloudtrail:{region}:{account}:eventdatastore/");
            match value.strip_prefix(&prefix) {
                Some(id) => id.to_owned(),
                None if value.contains(":eventdatastore/") => {
                    return Err(not_found_store(value));
                }
                None => {
                    return Err(TrailError::new(
                        "EventDataStoreARNInvalidException",
                        format!("The specified event data store ARN {value} is not valid."),
                    ))
                }
            }
        } else {
            value.to_owned()
        };
        self.stores(account, region)?
            .into_iter()
            .find(|s| s.id == id || s.name == id)
            .ok_or_else(|| not_found_store(value))
    }

    /// The channel a name or ARN (or id) names.
    pub fn channel(&self, account: &str, region: &str, value: &str) -> Result<Channel, TrailError> {
        let id = match value.strip_prefix("arn:") {
            Some(_) => match value.split_once(":channel/") {
                Some((_, id)) => id.to_owned(),
                None => {
                    return Err(TrailError::new(
                        "ChannelARNInvalidException",
                        format!("The specified channel ARN {value} is not valid."),
                    ))
                }
            },
            None => value.to_owned(),
        };
        self.channels(account, region)?
            .into_iter()
            .find(|c| c.id == id || c.name == id)
            .ok_or_else(|| {
                TrailError::new(
                    "ChannelNotFoundException",
                    format!("The channel {value} was not found."),
                )
            })
    }

    /// The change that stores `store`.
    pub fn put_store(store: &EventDataStore) -> CatalogOp {
        CatalogOp::put(
            STORES,
            store.key(),
            serde_json::to_vec(store).unwrap_or_default(),
        )
    }

    /// The change that deletes `store`.
    pub fn delete_store(store: &EventDataStore) -> CatalogOp {
        CatalogOp::delete(STORES, store.key())
    }

    /// The change that stores `channel`.
    pub fn put_channel(channel: &Channel) -> CatalogOp {
        CatalogOp::put(
            CHANNELS,
            channel.key(),
            serde_json::to_vec(channel).unwrap_or_default(),
        )
    }

    /// The change that deletes `channel`.
    pub fn delete_channel(channel: &Channel) -> CatalogOp {
        CatalogOp::delete(CHANNELS, channel.key())
    }
}

fn not_found_store(value: &str) -> TrailError {
    TrailError::new(
        "EventDataStoreNotFoundException",
        format!("The specified event data store {value} was not found."),
    )
}

/// Why one audit event was refused (§6.4), as PutAuditEvents reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `errorCode`.
    pub code: &'static str,
    /// `errorMessage`.
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Checks one audit event for `owner`'s channel; returns its parsed `eventData`.
pub fn validate_event(
    event_data: &str,
    checksum: Option<&str>,
    owner: &str,
) -> Result<serde_json::Value, Refusal> {
    if let Some(sum) = checksum {
        let digest = sha2::Sha256::digest(event_data.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        if sum != b64 && !sum.eq_ignore_ascii_case(&hex::encode(digest)) {
            return Err(refuse(
                "InvalidChecksum",
                "The eventDataChecksum does not match the SHA-256 of eventData.",
            ));
        }
    }
    let data: serde_json::Value = serde_json::from_str(event_data)
        .map_err(|e| refuse("InvalidData", format!("eventData is not valid JSON: {e}")))?;
    if !data.is_object() {
        return Err(refuse("InvalidData", "eventData must be a JSON object."));
    }
    let text = |path: &[&str]| -> Option<&serde_json::Value> {
        path.iter().try_fold(&data, |v, k| v.get(k))
    };
    let required: [(&[&str], usize); 8] = [
        (&["version"], 256),
        (&["userIdentity", "type"], 128),
        (&["userIdentity", "principalId"], 1024),
        (&["eventSource"], 1024),
        (&["eventName"], 1024),
        (&["eventTime"], 64),
        (&["UID"], 1024),
        (&["recipientAccountId"], 12),
    ];
    for (path, limit) in required {
        let name = path.join(".");
        let value = text(path)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| refuse("FieldNotFound", format!("Field {name} is required.")))?;
        if value.chars().count() > limit {
            return Err(refuse(
                "FieldTooLong",
                format!("Field {name} is longer than {limit} characters."),
            ));
        }
    }
    let time = text(&["eventTime"])
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if !is_utc_second(time) {
        return Err(refuse(
            "InvalidData",
            "eventTime must be a UTC time as yyyy-MM-ddTHH:mm:ssZ.",
        ));
    }
    if text(&["recipientAccountId"]).and_then(serde_json::Value::as_str) != Some(owner) {
        return Err(refuse(
            "InvalidRecipient",
            "recipientAccountId must be the channel owner's account.",
        ));
    }
    for (field, limit) in [
        ("userAgent", 1024),
        ("errorCode", 256),
        ("errorMessage", 256),
    ] {
        if let Some(v) = data.get(field) {
            let Some(s) = v.as_str() else {
                return Err(refuse(
                    "InvalidData",
                    format!("Field {field} must be a string."),
                ));
            };
            if s.chars().count() > limit {
                return Err(refuse(
                    "FieldTooLong",
                    format!("Field {field} is longer than {limit} characters."),
                ));
            }
        }
    }
    for (field, limit) in [
        ("requestParameters", 100 * 1024),
        ("responseElements", 100 * 1024),
        ("additionalEventData", 28 * 1024),
    ] {
        if let Some(v) = data.get(field) {
            if !v.is_object() {
                return Err(refuse(
                    "InvalidData",
                    format!("Field {field} must be an object."),
                ));
            }
            if v.to_string().len() > limit {
                return Err(refuse(
                    "FieldTooLong",
                    format!("Field {field} is larger than {limit} bytes."),
                ));
            }
        }
    }
    if let Some(v) = data.get("sourceIPAddress") {
        let ok = v
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok());
        if !ok {
            return Err(refuse(
                "InvalidData",
                "sourceIPAddress must be an IPv4 or IPv6 address.",
            ));
        }
    }
    if data
        .get("userIdentity")
        .and_then(|u| u.get("details"))
        .is_some_and(|d| !d.is_object())
    {
        return Err(refuse(
            "InvalidData",
            "userIdentity.details must be an object.",
        ));
    }
    Ok(data)
}

fn is_utc_second(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[19] == b'Z'
        && b[10] == b'T'
        && trailwatch_types::Timestamp::parse_iso8601(s).is_ok()
}

/// The stored record of an accepted event (§6.4).
pub fn activity_record(
    data: serde_json::Value,
    event_id: &str,
    account: &str,
    region: &str,
    channel_arn: &str,
    ingestion_iso: &str,
) -> serde_json::Value {
    let time = data
        .get("eventTime")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "eventVersion": "1.11",
        "eventCategory": "ActivityAuditLog",
        "eventType": "ActivityLog",
        "eventID": event_id,
        "eventTime": time,
        "awsRegion": region,
        "recipientAccountId": account,
        "metadata": {"ingestionTime": ingestion_iso, "channelARN": channel_arn},
        "eventData": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(extra: serde_json::Value) -> String {
        let mut v = serde_json::json!({
            "version": "1.0",
            "userIdentity": {"type": "CustomUser", "principalId": "alice"},
            "eventSource": "ci.example.com",
            "eventName": "Deploy",
            "eventTime": "2026-02-03T11:20:00Z",
            "UID": "req-1",
            "recipientAccountId": "111122223333",
        });
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                m.insert(k.clone(), x.clone());
            }
        }
        v.to_string()
    }

    #[test]
    fn event_rules() {
        let ok = event(serde_json::json!({}));
        assert!(validate_event(&ok, None, "111122223333").is_ok());
        let sum =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(ok.as_bytes()));
        assert!(validate_event(&ok, Some(&sum), "111122223333").is_ok());
        let code = |e: &str, sum: Option<&str>| {
            validate_event(e, sum, "111122223333")
                .map(|_| ())
                .map_err(|r| r.code)
        };
        assert_eq!(code(&ok, Some("AAAA")), Err("InvalidChecksum"));
        assert_eq!(code("{not json", None), Err("InvalidData"));
        assert_eq!(
            code(&event(serde_json::json!({"UID": null})), None),
            Err("FieldNotFound")
        );
        assert_eq!(
            code(
                &event(serde_json::json!({"eventName": "x".repeat(1025)})),
                None
            ),
            Err("FieldTooLong")
        );
        assert_eq!(
            code(
                &event(serde_json::json!({"eventTime": "2026-02-03 11:20:00"})),
                None
            ),
            Err("InvalidData")
        );
        assert_eq!(
            code(
                &event(serde_json::json!({"recipientAccountId": "999999999999"})),
                None
            ),
            Err("InvalidRecipient")
        );
        assert_eq!(
            code(
                &event(serde_json::json!({"sourceIPAddress": "not-an-ip"})),
                None
            ),
            Err("InvalidData")
        );
        assert_eq!(
            code(
                &event(serde_json::json!({"requestParameters": {"big": "x".repeat(102_400)}})),
                None
            ),
            Err("FieldTooLong")
        );
        assert_eq!(
            code(
                &event(serde_json::json!({"errorCode": "E".repeat(257)})),
                None
            ),
            Err("FieldTooLong")
        );
    }

    #[test]
    fn names_and_selectors() {
        assert!(validate_name("my.store-1", "Event data store").is_ok());
        assert!(validate_name("ab", "Event data store").is_err());
        assert!(validate_name("bad name", "Channel").is_err());
        let activity = vec![AdvancedSelector {
            name: None,
            field_selectors: vec![FieldSelector {
                field: "eventCategory".into(),
                equals: Some(vec!["ActivityAuditLog".into()]),
                ..FieldSelector::default()
            }],
        }];
        assert!(validate_store_selectors(&activity).is_ok());
        let mut mixed = activity.clone();
        mixed.extend(default_selectors());
        assert!(validate_store_selectors(&mixed).is_err());
        assert!(validate_store_selectors(&default_selectors()).is_ok());
    }
}
