//! Resource tags (`spec/cloudwatch.md` §11), kept in the catalog by ARN.
//! Like every catalog write, changes are returned to the caller, which commits
//! them with the call's audit record.
//!
//! # Catalog layout (version 1)
//! Table `tags`, key = resource ARN, value JSON `{"v":1,"tags":{key: value}}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp};

const TABLE: &str = "tags";
/// Most tags one resource may carry.
pub const MAX_TAGS: usize = 50;

/// Tagging failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// `InvalidParameterValue`.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// The catalog failed.
    #[error("tag storage failed: {0}")]
    Storage(String),
}

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    v: u8,
    tags: BTreeMap<String, String>,
}

/// Validates request tags (`Key` 1–128, `Value` 0–256, no `aws:` keys).
pub fn validate(
    tags: &[(Option<String>, Option<String>)],
    parameter: &str,
) -> Result<Vec<(String, String)>, TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::InvalidParameterValue(format!(
            "The collection {parameter} must not have a size greater than {MAX_TAGS}."
        )));
    }
    let mut out = Vec::with_capacity(tags.len());
    for (i, (key, value)) in tags.iter().enumerate() {
        let n = i + 1;
        let key = key.clone().ok_or_else(|| {
            TagError::InvalidParameterValue(format!(
                "The parameter {parameter}.member.{n}.Key is required."
            ))
        })?;
        let value = value.clone().unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(TagError::InvalidParameterValue(format!(
                "The value {key} for parameter {parameter}.member.{n}.Key is invalid."
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(TagError::InvalidParameterValue(format!(
                "The value {key} for parameter {parameter}.member.{n}.Key is invalid. Tag keys starting with aws: are reserved."
            )));
        }
        if value.chars().count() > 256 {
            return Err(TagError::InvalidParameterValue(format!(
                "The value for parameter {parameter}.member.{n}.Value is too long."
            )));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Tags of every resource, in the catalog.
#[derive(Debug, Clone)]
pub struct Tags {
    catalog: Arc<dyn Catalog>,
}

impl Tags {
    /// Tags stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// The tags of `arn`, sorted by key.
    pub fn get(&self, arn: &str) -> Result<BTreeMap<String, String>, TagError> {
        match self
            .catalog
            .get(TABLE, arn)
            .map_err(|e| TagError::Storage(e.to_string()))?
        {
            Some(bytes) => serde_json::from_slice::<Stored>(&bytes)
                .map(|s| s.tags)
                .map_err(|e| TagError::Storage(e.to_string())),
            None => Ok(BTreeMap::new()),
        }
    }

    fn write(arn: &str, tags: BTreeMap<String, String>) -> CatalogOp {
        if tags.is_empty() {
            CatalogOp::delete(TABLE, arn)
        } else {
            CatalogOp::put(
                TABLE,
                arn,
                serde_json::to_vec(&Stored { v: 1, tags }).unwrap_or_default(),
            )
        }
    }

    /// The change that adds or replaces `tags` on `arn`.
    pub fn tag_changes(
        &self,
        arn: &str,
        tags: &[(String, String)],
    ) -> Result<Vec<CatalogOp>, TagError> {
        let mut current = self.get(arn)?;
        for (k, v) in tags {
            current.insert(k.clone(), v.clone());
        }
        if current.len() > MAX_TAGS {
            return Err(TagError::InvalidParameterValue(format!(
                "A resource can have at most {MAX_TAGS} tags."
            )));
        }
        Ok(vec![Self::write(arn, current)])
    }

    /// The change that removes `keys` from `arn`.
    pub fn untag_changes(&self, arn: &str, keys: &[String]) -> Result<Vec<CatalogOp>, TagError> {
        let mut current = self.get(arn)?;
        for k in keys {
            current.remove(k);
        }
        Ok(vec![Self::write(arn, current)])
    }

    /// The change that forgets every tag of `arn` (its resource was deleted).
    pub fn delete_changes(arn: &str) -> Vec<CatalogOp> {
        vec![CatalogOp::delete(TABLE, arn)]
    }

    /// The change that sets exactly `tags` on a new resource.
    pub fn create_changes(arn: &str, tags: &[(String, String)]) -> Vec<CatalogOp> {
        vec![Self::write(arn, tags.iter().cloned().collect())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    #[test]
    fn tag_untag_and_limits() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let tags = Tags::new(catalog.clone());
        let arn = "arn:aws:cloudwatch::1:dashboard/d";
        catalog
            .commit(
                &tags
                    .tag_changes(arn, &[("b".into(), "2".into()), ("a".into(), "1".into())])
                    .unwrap(),
            )
            .unwrap();
        catalog
            .commit(
                &tags
                    .tag_changes(arn, &[("a".into(), "one".into())])
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            tags.get(arn).unwrap().into_iter().collect::<Vec<_>>(),
            vec![("a".into(), "one".into()), ("b".into(), "2".into())]
        );
        catalog
            .commit(&tags.untag_changes(arn, &["a".into(), "zz".into()]).unwrap())
            .unwrap();
        assert_eq!(tags.get(arn).unwrap().len(), 1);
        let many: Vec<(String, String)> =
            (0..50).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(tags.tag_changes(arn, &many).is_err(), "51 tags in all");
        assert!(validate(&[(Some("aws:x".into()), None)], "Tags").is_err());
        assert!(validate(&[(Some("".into()), None)], "Tags").is_err());
        assert!(validate(&[(None, None)], "Tags").is_err());
        assert!(validate(&[(Some("k".into()), Some("v".repeat(257)))], "Tags").is_err());
        assert_eq!(
            validate(&[(Some("k".into()), None)], "Tags").unwrap(),
            vec![("k".into(), String::new())]
        );
        catalog.commit(&Tags::delete_changes(arn)).unwrap();
        assert!(tags.get(arn).unwrap().is_empty());
    }
}
