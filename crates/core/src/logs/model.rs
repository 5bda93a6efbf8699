//! Log group and stream names, ARNs, retention values (`spec/logs.md` §1.4,
//! §2.4) and the errors of the Logs API (§1.2).

/// A Logs API failure; [`LogsError::code`] is the `__type` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogsError {
    /// `InvalidParameterException`.
    #[error("{0}")]
    InvalidParameter(String),
    /// `ResourceNotFoundException`.
    #[error("{0}")]
    NotFound(String),
    /// `ResourceAlreadyExistsException`.
    #[error("{0}")]
    AlreadyExists(String),
    /// `ValidationException`.
    #[error("{0}")]
    Validation(String),
    /// `LimitExceededException`.
    #[error("{0}")]
    LimitExceeded(String),
    /// `InvalidOperationException`.
    #[error("{0}")]
    InvalidOperation(String),
    /// `MalformedQueryException`, with the offending character offsets.
    #[error("{message}")]
    Malformed {
        /// The message.
        message: String,
        /// `startCharOffset`.
        start: usize,
        /// `endCharOffset`.
        end: usize,
    },
    /// `TooManyTagsException`, naming the resource.
    #[error("{message}")]
    TooManyTags {
        /// The message.
        message: String,
        /// `resourceName`.
        resource: String,
    },
    /// Storage failed; answered as a service fault.
    #[error("logs storage failed: {0}")]
    Storage(String),
}

impl LogsError {
    /// The error shape name (`__type`).
    pub fn code(&self) -> &'static str {
        match self {
            LogsError::InvalidParameter(_) => "InvalidParameterException",
            LogsError::NotFound(_) => "ResourceNotFoundException",
            LogsError::AlreadyExists(_) => "ResourceAlreadyExistsException",
            LogsError::Validation(_) => "ValidationException",
            LogsError::LimitExceeded(_) => "LimitExceededException",
            LogsError::InvalidOperation(_) => "InvalidOperationException",
            LogsError::Malformed { .. } => "MalformedQueryException",
            LogsError::TooManyTags { .. } => "TooManyTagsException",
            LogsError::Storage(_) => "ServiceUnavailableException",
        }
    }

    /// `The specified log group does not exist.`
    pub fn group_not_found() -> Self {
        LogsError::NotFound("The specified log group does not exist.".to_owned())
    }

    /// `The specified log stream does not exist.`
    pub fn stream_not_found() -> Self {
        LogsError::NotFound("The specified log stream does not exist.".to_owned())
    }
}

/// The AWS form of a constraint failure.
pub fn constraint(value: &str, member: &str, rule: &str) -> LogsError {
    LogsError::InvalidParameter(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

/// Validates a log group name (§1.4).
pub fn validate_group_name(name: &str, member: &str) -> Result<(), LogsError> {
    if name.is_empty() || name.len() > 512 {
        return Err(constraint(
            name,
            member,
            "Member must have length less than or equal to 512",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_/#".contains(&b))
    {
        return Err(constraint(
            name,
            member,
            "Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+",
        ));
    }
    Ok(())
}

/// Validates a log stream name (§1.4).
pub fn validate_stream_name(name: &str, member: &str) -> Result<(), LogsError> {
    if name.is_empty() || name.chars().count() > 512 {
        return Err(constraint(
            name,
            member,
            "Member must have length less than or equal to 512",
        ));
    }
    if name.contains([':', '*']) {
        return Err(constraint(
            name,
            member,
            "Member must satisfy regular expression pattern: [^:*]*",
        ));
    }
    Ok(())
}

/// Validates tags (§12): keys 1–128 and values 0–256 of letters, spaces,
/// digits and `_ . : / = + - @`; `aws:` keys are reserved.
pub fn validate_tags(tags: &[(String, String)]) -> Result<(), LogsError> {
    let allowed = |s: &str| {
        s.chars().all(|c| {
            c.is_alphabetic() || c.is_whitespace() || c.is_numeric() || "_.:/=+-@".contains(c)
        })
    };
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || !allowed(k) {
            return Err(constraint(
                k,
                "tags",
                "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+)$]",
            ));
        }
        if k.starts_with("aws:") {
            return Err(LogsError::InvalidParameter(format!(
                "Tag keys starting with aws: are reserved: {k}"
            )));
        }
        if v.chars().count() > 256 || !allowed(v) {
            return Err(constraint(
                v,
                "tags",
                "Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$]",
            ));
        }
    }
    Ok(())
}

/// The day counts PutRetentionPolicy accepts (§2.4).
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Validates `retentionInDays`.
pub fn validate_retention(days: i64) -> Result<u32, LogsError> {
    match u32::try_from(days) {
        Ok(d) if RETENTION_DAYS.contains(&d) => Ok(d),
        _ => Err(constraint(
            &days.to_string(),
            "retentionInDays",
            &format!(
                "Member must satisfy enum value set: [{}]",
                RETENTION_DAYS
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Log group classes (§2.1).
pub const GROUP_CLASSES: [&str; 4] = ["STANDARD", "INFREQUENT_ACCESS", "DELIVERY", "ESSENTIALS"];

/// `arn:aws:logs:<region>:<account>:log-group:<name>` (tagging, identifiers).
pub fn group_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{name}")
}

/// `arn:aws:logs:<region>:<account>:log-group:<group>:log-stream:<stream>`.
pub fn stream_arn(region: &str, account: &str, group: &str, stream: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}")
}

/// The group name of a `logGroupIdentifier`: a name, or a log group ARN with or
/// without the trailing `:*`.
pub fn group_from_identifier(identifier: &str) -> Result<String, LogsError> {
    match identifier.strip_prefix("arn:") {
        None => Ok(identifier.to_owned()),
        Some(_) => {
            let rest = identifier.split_once(":log-group:").map(|(_, r)| r);
            let name = rest.map(|r| r.strip_suffix(":*").unwrap_or(r));
            match name {
                Some(n) if !n.is_empty() && !n.contains(':') => Ok(n.to_owned()),
                _ => Err(LogsError::InvalidParameter(format!(
                    "The specified logGroupIdentifier {identifier} is invalid."
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_group_name("/aws/lambda/f", "logGroupName").is_ok());
        assert!(validate_group_name("a b", "logGroupName").is_err());
        assert!(validate_group_name(&"a".repeat(513), "logGroupName").is_err());
        assert!(validate_stream_name("2024/06/15/[$LATEST]abc", "logStreamName").is_ok());
        assert!(validate_stream_name("a:b", "logStreamName").is_err());
        assert!(validate_stream_name("a*", "logStreamName").is_err());
        assert_eq!(
            validate_retention(2).unwrap_err().to_string(),
            "1 validation error detected: Value '2' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]"
        );
        assert_eq!(validate_retention(3653), Ok(3653));
        assert_eq!(
            group_from_identifier("arn:aws:logs:us-east-1:123456789012:log-group:/a/b:*").unwrap(),
            "/a/b"
        );
        assert_eq!(group_from_identifier("/a/b").unwrap(), "/a/b");
        assert!(group_from_identifier("arn:aws:logs:us-east-1:1:destination:d").is_err());
    }
}
