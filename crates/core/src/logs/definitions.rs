//! Logs Insights query definitions (`spec/logs.md` §10.2): saved queries with
//! their log groups and `{{name}}` parameters, per account and region.
//!
//! [`validate`] checks a PutQueryDefinition against the service model's
//! constraints; [`QueryDefinitions::put`] applies the rules (update of an
//! existing id, clientToken idempotency, the per-region limit) and returns
//! catalog changes instead of applying them, so the edge commits them with
//! the call's audit record.
//!
//! # Catalog layout (version 1)
//! Table `log_query_definitions`, key `{account}:{region}:{id}`, JSON
//! [`QueryDefinition`]. Account ids are digits and region names have no `:`,
//! so one region's definitions are exactly the keys under `{account}:{region}:`.
//!
//! # Invariants
//! - At most [`MAX_PER_REGION`] definitions per account and region: checked by
//!   `put` under the caller's name lock, which it holds until the commit.
//! - The query string is stored as given and never parsed: it may hold
//!   `{{name}}` placeholders, or be SQL or PPL, which StartQuery refuses.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp};

use super::model::{constraint, validate_group_name, LogsError};

/// Catalog table of query definitions.
pub const TABLE: &str = "log_query_definitions";
/// Query definitions per account and region (§10.2).
pub const MAX_PER_REGION: usize = 1000;
/// `queryLanguage` values of the service model; CWLI is the default.
pub const LANGUAGES: [&str; 3] = ["CWLI", "SQL", "PPL"];
/// Parameters per definition.
pub const MAX_PARAMETERS: usize = 20;
const MAX_NAME_CHARS: usize = 255;
const MAX_QUERY_CHARS: usize = 10_000;

/// One `{{name}}` parameter of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryParameter {
    /// `name`: `[a-zA-Z_][a-zA-Z0-9_]*`, 1–128 characters.
    pub name: String,
    /// `defaultValue`, at most 1024 characters.
    pub default_value: Option<String>,
    /// `description`, at most 512 characters.
    pub description: Option<String>,
}

/// A stored query definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDefinition {
    /// Format version.
    pub v: u8,
    /// `queryDefinitionId` (a UUID we assign).
    pub id: String,
    /// `name`.
    pub name: String,
    /// `queryString`, as given.
    pub query_string: String,
    /// `queryLanguage`.
    pub language: String,
    /// `logGroupNames`; groups need not exist (they may be created later).
    pub log_group_names: Vec<String>,
    /// `parameters`.
    pub parameters: Vec<QueryParameter>,
    /// `lastModified`, epoch ms.
    pub last_modified_ms: i64,
    /// The `clientToken` of the put that wrote this version: a retried create
    /// carrying it gets this definition back instead of a second one.
    pub client_token: Option<String>,
}

/// A PutQueryDefinition request, before the rules are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutQueryDefinition {
    /// `queryDefinitionId`: update this definition instead of creating one.
    pub id: Option<String>,
    /// `name`.
    pub name: String,
    /// `queryString`.
    pub query_string: String,
    /// `queryLanguage`; `None` means CWLI.
    pub language: Option<String>,
    /// `logGroupNames`.
    pub log_group_names: Vec<String>,
    /// `parameters`.
    pub parameters: Vec<QueryParameter>,
    /// `clientToken`.
    pub client_token: Option<String>,
}

fn length(value: &str, member: &str, min: usize, max: usize) -> Result<(), LogsError> {
    let chars = value.chars().count();
    if chars < min {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if chars > max {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// Validates `queryLanguage` against the model's enum.
pub fn validate_language(language: &str) -> Result<(), LogsError> {
    if LANGUAGES.contains(&language) {
        return Ok(());
    }
    Err(constraint(
        language,
        "queryLanguage",
        &format!(
            "Member must satisfy enum value set: [{}]",
            LANGUAGES.join(", ")
        ),
    ))
}

/// Validates a `queryDefinitionId` (1–256 characters).
pub fn validate_id(id: &str) -> Result<(), LogsError> {
    length(id, "queryDefinitionId", 1, 256)
}

/// Validates a `queryDefinitionNamePrefix` (1–255 characters).
pub fn validate_name_prefix(prefix: &str) -> Result<(), LogsError> {
    length(prefix, "queryDefinitionNamePrefix", 1, MAX_NAME_CHARS)
}

fn validate_parameter(p: &QueryParameter, index: usize) -> Result<(), LogsError> {
    let member = |m: &str| format!("parameters.{index}.member.{m}");
    length(&p.name, &member("name"), 1, 128)?;
    let mut chars = p.name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(constraint(
            &p.name,
            &member("name"),
            "Member must satisfy regular expression pattern: ^[a-zA-Z_][a-zA-Z0-9_]*",
        ));
    }
    if let Some(d) = &p.default_value {
        length(d, &member("defaultValue"), 0, 1024)?;
    }
    if let Some(d) = &p.description {
        length(d, &member("description"), 0, 512)?;
    }
    Ok(())
}

/// Checks a PutQueryDefinition against the service model (§10.2); the first
/// violation is reported, in member order.
pub fn validate(put: &PutQueryDefinition) -> Result<(), LogsError> {
    if let Some(language) = &put.language {
        validate_language(language)?;
    }
    length(&put.name, "name", 1, MAX_NAME_CHARS)?;
    if let Some(id) = &put.id {
        validate_id(id)?;
    }
    for (i, group) in put.log_group_names.iter().enumerate() {
        validate_group_name(group, &format!("logGroupNames.{}.member", i + 1))?;
    }
    length(&put.query_string, "queryString", 1, MAX_QUERY_CHARS)?;
    if let Some(token) = &put.client_token {
        length(token, "clientToken", 36, 128)?;
        if token.chars().any(char::is_whitespace) {
            return Err(constraint(
                token,
                "clientToken",
                "Member must satisfy regular expression pattern: \\S{36,128}",
            ));
        }
    }
    if put.parameters.len() > MAX_PARAMETERS {
        return Err(LogsError::InvalidParameter(format!(
            "1 validation error detected: Value at 'parameters' failed to satisfy constraint: Member must have length less than or equal to {MAX_PARAMETERS}"
        )));
    }
    for (i, p) in put.parameters.iter().enumerate() {
        validate_parameter(p, i + 1)?;
        // Two parameters of one name would make `{{name}}` ambiguous.
        if put.parameters[..i].iter().any(|q| q.name == p.name) {
            return Err(LogsError::InvalidParameter(format!(
                "Duplicate query parameter name: {}",
                p.name
            )));
        }
    }
    Ok(())
}

/// What a put does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The `queryDefinitionId` answered.
    pub id: String,
    /// Catalog changes to commit with the call's record (none for a retried create).
    pub changes: Vec<CatalogOp>,
}

fn not_found() -> LogsError {
    LogsError::NotFound("The specified query definition does not exist.".to_owned())
}

fn storage(e: impl std::fmt::Display) -> LogsError {
    LogsError::Storage(e.to_string())
}

fn key(account: &str, region: &str, id: &str) -> String {
    format!("{account}:{region}:{id}")
}

/// Query definitions in the catalog.
#[derive(Debug, Clone)]
pub struct QueryDefinitions {
    catalog: Arc<dyn Catalog>,
}

impl QueryDefinitions {
    /// Definitions stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// Every definition of (account, region), in id order.
    pub fn list(&self, account: &str, region: &str) -> Result<Vec<QueryDefinition>, LogsError> {
        self.catalog
            .list(TABLE, &key(account, region, ""))
            .map_err(storage)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(storage))
            .collect()
    }

    /// The definition `id` of (account, region).
    pub fn get(
        &self,
        account: &str,
        region: &str,
        id: &str,
    ) -> Result<Option<QueryDefinition>, LogsError> {
        self.catalog
            .get(TABLE, &key(account, region, id))
            .map_err(storage)?
            .map(|v| serde_json::from_slice(&v).map_err(storage))
            .transpose()
    }

    /// Applies PutQueryDefinition's rules to a validated request at `now_ms`:
    /// an update replaces every field of definition `put.id` (which must
    /// exist); a create whose clientToken matches a stored definition answers
    /// that definition's id and changes nothing; a create beyond
    /// [`MAX_PER_REGION`] fails. The caller holds a lock from here until the
    /// changes commit, so the limit and the token check stay true.
    pub fn put(
        &self,
        account: &str,
        region: &str,
        put: PutQueryDefinition,
        now_ms: i64,
    ) -> Result<PutOutcome, LogsError> {
        let id = match &put.id {
            Some(id) => {
                self.get(account, region, id)?.ok_or_else(not_found)?;
                id.clone()
            }
            None => {
                let existing = self.list(account, region)?;
                if let Some(token) = &put.client_token {
                    if let Some(same) = existing
                        .iter()
                        .find(|d| d.client_token.as_ref() == Some(token))
                    {
                        return Ok(PutOutcome {
                            id: same.id.clone(),
                            changes: Vec::new(),
                        });
                    }
                }
                if existing.len() >= MAX_PER_REGION {
                    return Err(LogsError::LimitExceeded(format!(
                        "Account maximum query definition limit of [{MAX_PER_REGION}] reached."
                    )));
                }
                uuid::Uuid::new_v4().to_string()
            }
        };
        let record = QueryDefinition {
            v: 1,
            id: id.clone(),
            name: put.name,
            query_string: put.query_string,
            language: put.language.unwrap_or_else(|| "CWLI".to_owned()),
            log_group_names: put.log_group_names,
            parameters: put.parameters,
            last_modified_ms: now_ms,
            client_token: put.client_token,
        };
        let value = serde_json::to_vec(&record).map_err(storage)?;
        Ok(PutOutcome {
            changes: vec![CatalogOp::put(TABLE, key(account, region, &id), value)],
            id,
        })
    }

    /// The changes that delete definition `id`; ResourceNotFoundException
    /// when there is none.
    pub fn delete_changes(
        &self,
        account: &str,
        region: &str,
        id: &str,
    ) -> Result<Vec<CatalogOp>, LogsError> {
        self.get(account, region, id)?.ok_or_else(not_found)?;
        Ok(vec![CatalogOp::delete(TABLE, key(account, region, id))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    fn put(name: &str) -> PutQueryDefinition {
        PutQueryDefinition {
            name: name.into(),
            query_string: "fields @message | limit 5".into(),
            ..PutQueryDefinition::default()
        }
    }

    fn message(err: LogsError) -> String {
        err.to_string()
    }

    #[test]
    fn validation_follows_the_model() {
        assert!(validate(&put("ok")).is_ok());
        assert_eq!(
            message(validate(&put("")).unwrap_err()),
            "1 validation error detected: Value '' at 'name' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        assert!(validate(&put(&"n".repeat(255))).is_ok());
        assert!(validate(&put(&"n".repeat(256))).is_err());
        let mut p = put("q");
        p.query_string = "x".repeat(10_001);
        assert!(message(validate(&p).unwrap_err()).contains("at 'queryString'"));
        p.query_string = "x".repeat(10_000);
        assert!(validate(&p).is_ok());
        p.language = Some("KQL".into());
        assert!(message(validate(&p).unwrap_err()).contains("[CWLI, SQL, PPL]"));
        p.language = Some("PPL".into());
        assert!(validate(&p).is_ok());
        p.log_group_names = vec!["/ok".into(), "bad group".into()];
        assert!(message(validate(&p).unwrap_err()).contains("at 'logGroupNames.2.member'"));
        p.log_group_names.clear();
        p.client_token = Some("short".into());
        assert!(message(validate(&p).unwrap_err()).contains("greater than or equal to 36"));
        p.client_token = Some(format!("{} x", "t".repeat(40)));
        assert!(message(validate(&p).unwrap_err()).contains("\\S{36,128}"));
        p.client_token = Some("t".repeat(36));
        assert!(validate(&p).is_ok());
    }

    #[test]
    fn parameters_are_checked() {
        let param = |name: &str| QueryParameter {
            name: name.into(),
            default_value: None,
            description: None,
        };
        let mut p = put("q");
        p.parameters = (0..20).map(|i| param(&format!("p{i}"))).collect();
        assert!(validate(&p).is_ok());
        p.parameters.push(param("p20"));
        assert!(message(validate(&p).unwrap_err()).contains("at 'parameters'"));
        p.parameters = vec![param("ok"), param("1bad")];
        assert!(message(validate(&p).unwrap_err()).contains("at 'parameters.2.member.name'"));
        p.parameters = vec![param("a"), param("a")];
        assert!(matches!(
            validate(&p).unwrap_err(),
            LogsError::InvalidParameter(_)
        ));
        let mut long = param("a");
        long.default_value = Some("d".repeat(1025));
        p.parameters = vec![long];
        assert!(message(validate(&p).unwrap_err()).contains("parameters.1.member.defaultValue"));
    }

    fn commit(catalog: &MemoryCatalog, outcome: &PutOutcome) {
        catalog.commit(&outcome.changes).unwrap();
    }

    #[test]
    fn create_update_idempotency_and_delete() {
        let catalog = Arc::new(MemoryCatalog::default());
        let defs = QueryDefinitions::new(catalog.clone());
        let mut first = put("errors");
        first.log_group_names = vec!["app".into()];
        first.client_token = Some("c".repeat(36));
        let created = defs.put("1", "r", first.clone(), 10).unwrap();
        commit(&catalog, &created);
        // The same create retried: same id, nothing written.
        let retried = defs.put("1", "r", first, 11).unwrap();
        assert_eq!(retried.id, created.id);
        assert!(retried.changes.is_empty());
        // An update replaces every field, groups included.
        let mut update = put("renamed");
        update.id = Some(created.id.clone());
        commit(&catalog, &defs.put("1", "r", update, 12).unwrap());
        let stored = defs.get("1", "r", &created.id).unwrap().unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.log_group_names.len()),
            ("renamed", 0)
        );
        assert_eq!(
            (stored.last_modified_ms, stored.language.as_str()),
            (12, "CWLI")
        );
        // Other regions and accounts see nothing.
        assert!(defs.list("1", "r2").unwrap().is_empty());
        assert!(defs.get("2", "r", &created.id).unwrap().is_none());
        let mut unknown = put("x");
        unknown.id = Some("nope".into());
        assert!(matches!(
            defs.put("1", "r", unknown, 13).unwrap_err(),
            LogsError::NotFound(_)
        ));
        assert!(matches!(
            defs.delete_changes("1", "r2", &created.id).unwrap_err(),
            LogsError::NotFound(_)
        ));
        catalog
            .commit(&defs.delete_changes("1", "r", &created.id).unwrap())
            .unwrap();
        assert!(defs.list("1", "r").unwrap().is_empty());
    }

    #[test]
    fn the_regional_limit_applies_to_creates_only() {
        let catalog = Arc::new(MemoryCatalog::default());
        let defs = QueryDefinitions::new(catalog.clone());
        let mut last = None;
        for i in 0..MAX_PER_REGION {
            let out = defs.put("1", "r", put(&format!("q{i}")), 1).unwrap();
            commit(&catalog, &out);
            last = Some(out.id);
        }
        assert!(matches!(
            defs.put("1", "r", put("one more"), 2).unwrap_err(),
            LogsError::LimitExceeded(_)
        ));
        assert!(defs.put("1", "other", put("elsewhere"), 2).is_ok());
        let mut update = put("still fine");
        update.id = last;
        assert!(defs.put("1", "r", update, 3).is_ok());
    }
}
