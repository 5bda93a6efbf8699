//! CloudWatch dashboards (`spec/cloudwatch.md` §10.1–10.2): name and body
//! validation, and storage in the catalog. Dashboards are global per account.
//!
//! Writes are not applied here: [`Dashboards::put_changes`] and
//! [`Dashboards::delete_changes`] return the catalog changes, which the caller
//! commits together with the call's audit record (`AuditStore::commit`).
//!
//! # Catalog layout (version 1)
//! Table `dashboards`, key `{account}/{name}`, value JSON
//! `{"v":1,"body":<string>,"modified_ms":<i64>}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp};
use trailwatch_types::Timestamp;

const TABLE: &str = "dashboards";
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Dashboard failures; each is a modelled CloudWatch error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DashboardError {
    /// `InvalidParameterValue`.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// `InvalidParameterInput` with the validation messages `(DataPath, Message)`.
    #[error("{message}")]
    InvalidInput {
        /// The error message.
        message: String,
        /// `dashboardValidationMessages`.
        messages: Vec<(String, String)>,
    },
    /// `MissingParameter`.
    #[error("{0}")]
    MissingParameter(String),
    /// `ResourceNotFound` (DashboardNotFoundError).
    #[error("{0}")]
    NotFound(String),
    /// The catalog failed.
    #[error("dashboard storage failed: {0}")]
    Storage(String),
}

/// A stored dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dashboard {
    /// Format version.
    pub v: u8,
    /// The body exactly as put.
    pub body: String,
    /// Last modification, epoch ms.
    pub modified_ms: i64,
}

/// One ListDashboards entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardEntry {
    /// Name.
    pub name: String,
    /// Last modification.
    pub last_modified: Timestamp,
    /// Body size in bytes.
    pub size: u64,
}

/// Validates a dashboard name.
pub fn validate_name(name: &str) -> Result<(), DashboardError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(DashboardError::InvalidParameterValue(
            "The value for field DashboardName contains invalid characters. It can only contain alphanumerics, dash (-) and underscore (_).".to_owned(),
        ));
    }
    Ok(())
}

/// Validates a body (§10.2); returns warnings on success.
pub fn validate_body(body: &str) -> Result<Vec<(String, String)>, DashboardError> {
    let invalid_json = || DashboardError::InvalidInput {
        message: "The field DashboardBody must be a valid JSON object".to_owned(),
        messages: vec![(
            "".to_owned(),
            "The field DashboardBody must be a valid JSON object".to_owned(),
        )],
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(DashboardError::InvalidParameterValue(
            "The field DashboardBody must not be larger than 1 MiB.".to_owned(),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(body).map_err(|_| invalid_json())?;
    let object = value.as_object().ok_or_else(invalid_json)?;
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    match object.get("widgets") {
        None => errors.push((
            "".to_owned(),
            "should have required property 'widgets'".to_owned(),
        )),
        Some(serde_json::Value::Array(widgets)) => {
            if widgets.len() > 500 {
                errors.push((
                    "/widgets".to_owned(),
                    "Should NOT have more than 500 items".to_owned(),
                ));
            }
            for (i, widget) in widgets.iter().enumerate() {
                check_widget(&format!("/widgets/{i}"), widget, &mut errors, &mut warnings);
            }
        }
        Some(_) => errors.push(("/widgets".to_owned(), "should be array".to_owned())),
    }
    if let Some(p) = object.get("periodOverride") {
        if !matches!(p.as_str(), Some("auto" | "inherit")) {
            errors.push((
                "/periodOverride".to_owned(),
                "should be equal to one of the allowed values".to_owned(),
            ));
        }
    }
    if object.contains_key("end") && !object.contains_key("start") {
        errors.push((
            "".to_owned(),
            "should have property start when property end is present".to_owned(),
        ));
    }
    if errors.is_empty() {
        return Ok(warnings);
    }
    let listing: Vec<serde_json::Value> = errors
        .iter()
        .map(|(path, message)| serde_json::json!({"dataPath": path, "message": message}))
        .collect();
    let plural = if errors.len() == 1 { "error" } else { "errors" };
    Err(DashboardError::InvalidInput {
        message: format!(
            "The dashboard body is invalid, there are {} validation {plural}:\n{}",
            errors.len(),
            serde_json::to_string_pretty(&listing).unwrap_or_default()
        ),
        messages: errors,
    })
}

fn check_int(
    w: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    min: i64,
    max: i64,
    path: &str,
    errors: &mut Vec<(String, String)>,
) {
    if let Some(v) = w.get(key) {
        match v.as_i64() {
            None => errors.push((format!("{path}/{key}"), "should be integer".to_owned())),
            Some(n) if n < min => {
                errors.push((format!("{path}/{key}"), format!("should be >= {min}")))
            }
            Some(n) if n > max => {
                errors.push((format!("{path}/{key}"), format!("should be <= {max}")))
            }
            Some(_) => {}
        }
    }
}

fn check_widget(
    path: &str,
    widget: &serde_json::Value,
    errors: &mut Vec<(String, String)>,
    warnings: &mut Vec<(String, String)>,
) {
    let Some(w) = widget.as_object() else {
        errors.push((path.to_owned(), "should be object".to_owned()));
        return;
    };
    let kind = w.get("type").and_then(|t| t.as_str());
    match kind {
        None => errors.push((
            path.to_owned(),
            "should have required property 'type'".to_owned(),
        )),
        Some("metric" | "text" | "log" | "alarm" | "explorer" | "custom") => {}
        Some(other) => warnings.push((
            format!("{path}/type"),
            format!("Unknown widget type {other}"),
        )),
    }
    check_int(w, "x", 0, 23, path, errors);
    check_int(w, "y", 0, i64::MAX, path, errors);
    check_int(w, "width", 1, 24, path, errors);
    check_int(w, "height", 1, 1000, path, errors);
    let properties = w.get("properties").and_then(|p| p.as_object());
    if properties.is_none() && !matches!(kind, Some("explorer" | "custom")) {
        errors.push((
            path.to_owned(),
            "should have required property 'properties'".to_owned(),
        ));
        return;
    }
    let Some(props) = properties else { return };
    let ppath = format!("{path}/properties");
    match kind {
        Some("metric") => {
            if !props.contains_key("region") {
                errors.push((
                    ppath.clone(),
                    "should have required property 'region'".to_owned(),
                ));
            }
            if let Some(metrics) = props.get("metrics") {
                let Some(entries) = metrics.as_array() else {
                    errors.push((format!("{ppath}/metrics"), "should be array".to_owned()));
                    return;
                };
                for (j, entry) in entries.iter().enumerate() {
                    let epath = format!("{ppath}/metrics/{j}");
                    let Some(items) = entry.as_array() else {
                        errors.push((epath, "should be array".to_owned()));
                        continue;
                    };
                    // Strings, then at most one rendering object, last.
                    for (k, item) in items.iter().enumerate() {
                        let last = k + 1 == items.len();
                        if !(item.is_string() || (item.is_object() && last)) {
                            errors.push((
                                format!("{epath}/{k}"),
                                "Invalid metric field type, only \"String\" type is allowed"
                                    .to_owned(),
                            ));
                        }
                    }
                }
            } else if !props.contains_key("annotations") {
                errors.push((ppath, "should have required property 'metrics'".to_owned()));
            }
        }
        Some("text") if !props.contains_key("markdown") => {
            errors.push((ppath, "should have required property 'markdown'".to_owned()));
        }
        Some("log") => {
            for key in ["query", "region"] {
                if !props.contains_key(key) {
                    errors.push((
                        ppath.clone(),
                        format!("should have required property '{key}'"),
                    ));
                }
            }
        }
        Some("alarm") => match props.get("alarms").and_then(|a| a.as_array()) {
            None => errors.push((ppath, "should have required property 'alarms'".to_owned())),
            Some(a) if a.len() > 100 => errors.push((
                format!("{ppath}/alarms"),
                "Should NOT have more than 100 items".to_owned(),
            )),
            Some(_) => {}
        },
        _ => {}
    }
}

/// Dashboards of every account, in the catalog.
#[derive(Debug, Clone)]
pub struct Dashboards {
    catalog: Arc<dyn Catalog>,
}

fn key(account: &str, name: &str) -> String {
    format!("{account}/{name}")
}

impl Dashboards {
    /// Dashboards stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// The dashboard `name` of `account`.
    pub fn get(&self, account: &str, name: &str) -> Result<Dashboard, DashboardError> {
        let value = self
            .catalog
            .get(TABLE, &key(account, name))
            .map_err(|e| DashboardError::Storage(e.to_string()))?
            .ok_or_else(|| DashboardError::NotFound(format!("Dashboard {name} does not exist")))?;
        serde_json::from_slice(&value).map_err(|e| DashboardError::Storage(e.to_string()))
    }

    /// The change that creates or replaces a dashboard (validated by the caller).
    pub fn put_changes(
        &self,
        account: &str,
        name: &str,
        body: &str,
        now: Timestamp,
    ) -> Vec<CatalogOp> {
        let stored = Dashboard {
            v: 1,
            body: body.to_owned(),
            modified_ms: now.millis(),
        };
        vec![CatalogOp::put(
            TABLE,
            key(account, name),
            serde_json::to_vec(&stored).unwrap_or_default(),
        )]
    }

    /// The changes that delete the existing ones of `names`, and whether any was missing.
    pub fn delete_changes(
        &self,
        account: &str,
        names: &[String],
    ) -> Result<(Vec<CatalogOp>, bool), DashboardError> {
        let mut ops = Vec::new();
        let mut missing = false;
        for name in names {
            let exists = self
                .catalog
                .get(TABLE, &key(account, name))
                .map_err(|e| DashboardError::Storage(e.to_string()))?;
            match exists {
                Some(_) => ops.push(CatalogOp::delete(TABLE, key(account, name))),
                None => missing = true,
            }
        }
        Ok((ops, missing))
    }

    /// ListDashboards: names with `prefix`, sorted, after `after`, at most `limit`.
    pub fn list(
        &self,
        account: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<DashboardEntry>, bool), DashboardError> {
        let rows = self
            .catalog
            .list(TABLE, &key(account, prefix))
            .map_err(|e| DashboardError::Storage(e.to_string()))?;
        let mut out = Vec::new();
        let mut more = false;
        for (k, v) in rows {
            let name = k
                .split_once('/')
                .map(|(_, n)| n.to_owned())
                .unwrap_or_default();
            if after.is_some_and(|a| name.as_str() <= a) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            let d: Dashboard =
                serde_json::from_slice(&v).map_err(|e| DashboardError::Storage(e.to_string()))?;
            out.push(DashboardEntry {
                name,
                last_modified: Timestamp::from_millis(d.modified_ms),
                size: d.body.len() as u64,
            });
        }
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    #[test]
    fn names() {
        assert!(validate_name("Prod_Overview-1").is_ok());
        assert!(validate_name("bad name").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn bodies() {
        assert!(validate_body(r#"{"widgets":[]}"#).unwrap().is_empty());
        let ok = r#"{"widgets":[{"type":"metric","x":0,"y":0,"width":12,"height":6,"properties":{"region":"us-east-1","metrics":[["AWS/EC2","CPUUtilization","InstanceId","i-1"],["...","i-2"],[".","NetworkIn",".","i-1",{"stat":"Sum"}]]}},{"type":"text","properties":{"markdown":"hello"}}]}"#;
        assert!(validate_body(ok).unwrap().is_empty());
        assert!(
            matches!(validate_body("[1]"), Err(DashboardError::InvalidInput { message, .. }) if message == "The field DashboardBody must be a valid JSON object")
        );
        assert!(matches!(
            validate_body("{"),
            Err(DashboardError::InvalidInput { .. })
        ));
        let bad = r#"{"widgets":[{"type":"metric","properties":{"region":"r","metrics":[["A","B",{"x":1},"C"],[1]]}},{"type":"text","x":30,"properties":{}}]}"#;
        let Err(DashboardError::InvalidInput { message, messages }) = validate_body(bad) else {
            panic!("must fail")
        };
        let paths: Vec<&str> = messages.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/widgets/0/properties/metrics/0/2",
                "/widgets/0/properties/metrics/1/0",
                "/widgets/1/x",
                "/widgets/1/properties"
            ]
        );
        assert!(
            message.starts_with("The dashboard body is invalid, there are 4 validation errors:\n[")
        );
        let warnings =
            validate_body(r#"{"widgets":[{"type":"sparkles","properties":{}}]}"#).unwrap();
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn store_list_delete() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let d = Dashboards::new(catalog.clone());
        for name in ["b", "a", "c-1"] {
            catalog
                .commit(&d.put_changes(
                    "111122223333",
                    name,
                    r#"{"widgets":[]}"#,
                    Timestamp::from_secs(10),
                ))
                .unwrap();
        }
        catalog
            .commit(&d.put_changes("999999999999", "a", "{}", Timestamp::from_secs(10)))
            .unwrap();
        let (page, more) = d.list("111122223333", "", None, 2).unwrap();
        assert_eq!(
            page.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(more);
        let (rest, more) = d.list("111122223333", "", Some("b"), 2).unwrap();
        assert_eq!((rest.len(), more), (1, false));
        assert_eq!(d.list("111122223333", "c", None, 10).unwrap().0.len(), 1);
        assert_eq!(
            d.get("111122223333", "a").unwrap().body,
            r#"{"widgets":[]}"#
        );
        let (ops, missing) = d
            .delete_changes("111122223333", &["a".into(), "zzz".into()])
            .unwrap();
        assert!(missing);
        catalog.commit(&ops).unwrap();
        assert!(matches!(
            d.get("111122223333", "a"),
            Err(DashboardError::NotFound(_))
        ));
        assert!(d.get("999999999999", "a").is_ok(), "accounts are separate");
    }
}
