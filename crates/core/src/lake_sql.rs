//! SQL over CloudTrail Lake event data stores (`spec/cloudtrail.md` §6.3),
//! planned and run by DataFusion.
//!
//! - Only queries: DDL, DML and other statements are refused
//!   (`InvalidQueryStatementException`), as is anything DataFusion cannot plan.
//! - A store is a table named by its id; the id may stand unquoted, as AWS
//!   writes it (`FROM 3f1c0f4e-…`): unquoted ids are quoted before parsing.
//! - Columns are the record fields, case-insensitive (DataFusion folds
//!   unquoted names to lower case, so every column and struct field is
//!   lower-case): `eventtime` is a timestamp (comparable with
//!   `'YYYY-MM-DD HH:MM:SS'`), `readonly`/`managementevent` booleans,
//!   `useridentity`, `tlsdetails`, `eventdata` and `metadata` structs
//!   (`userIdentity.arn`, `eventData.eventName`), and `requestparameters`,
//!   `responseelements`, `additionaleventdata`, `resources`, `insightdetails`
//!   JSON text, read with `element_at(requestParameters, 'name')` and the
//!   `json_*` functions; `eventjson` is the record as stored and
//!   `eventjsonchecksum` its SHA-256.
//! - Values come back as text; NULL as an empty string.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, RecordBatch, StringArray, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use sha2::Digest as _;

/// A query failure, with the CloudTrail error it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// Not a valid query (`InvalidQueryStatementException`).
    #[error("{0}")]
    Invalid(String),
    /// It failed while running (`QueryStatus` FAILED with this message).
    #[error("{0}")]
    Failed(String),
}

/// The answer of a query: column names in select order, rows of text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows; each value as text.
    pub rows: Vec<Vec<String>>,
}

/// A JSON-object column (kept as text).
const JSON_COLUMNS: [(&str, &str); 5] = [
    ("requestparameters", "requestParameters"),
    ("responseelements", "responseElements"),
    ("additionaleventdata", "additionalEventData"),
    ("resources", "resources"),
    ("insightdetails", "insightDetails"),
];

/// Plain text columns and the record field they read.
const TEXT_COLUMNS: [(&str, &str); 16] = [
    ("eventversion", "eventVersion"),
    ("eventsource", "eventSource"),
    ("eventname", "eventName"),
    ("awsregion", "awsRegion"),
    ("sourceipaddress", "sourceIPAddress"),
    ("useragent", "userAgent"),
    ("errorcode", "errorCode"),
    ("errormessage", "errorMessage"),
    ("requestid", "requestID"),
    ("eventid", "eventID"),
    ("eventtype", "eventType"),
    ("apiversion", "apiVersion"),
    ("recipientaccountid", "recipientAccountId"),
    ("sharedeventid", "sharedEventID"),
    ("eventcategory", "eventCategory"),
    ("vpcendpointid", "vpcEndpointId"),
];

/// Struct columns: (column, record field, [(field, record sub-field, json?)]).
type StructSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, bool)],
);

const STRUCT_COLUMNS: [StructSpec; 4] = [
    (
        "useridentity",
        "userIdentity",
        &[
            ("type", "type", false),
            ("principalid", "principalId", false),
            ("arn", "arn", false),
            ("accountid", "accountId", false),
            ("accesskeyid", "accessKeyId", false),
            ("username", "userName", false),
            ("invokedby", "invokedBy", false),
            ("sessioncontext", "sessionContext", true),
        ],
    ),
    (
        "tlsdetails",
        "tlsDetails",
        &[
            ("tlsversion", "tlsVersion", false),
            ("ciphersuite", "cipherSuite", false),
            (
                "clientprovidedhostheader",
                "clientProvidedHostHeader",
                false,
            ),
        ],
    ),
    (
        "metadata",
        "metadata",
        &[
            ("ingestiontime", "ingestionTime", false),
            ("channelarn", "channelARN", false),
        ],
    ),
    (
        "eventdata",
        "eventData",
        &[
            ("version", "version", false),
            ("useridentity", "userIdentity", true),
            ("useragent", "userAgent", false),
            ("eventsource", "eventSource", false),
            ("eventname", "eventName", false),
            ("eventtime", "eventTime", false),
            ("uid", "UID", false),
            ("requestparameters", "requestParameters", true),
            ("responseelements", "responseElements", true),
            ("errorcode", "errorCode", false),
            ("errormessage", "errorMessage", false),
            ("sourceipaddress", "sourceIPAddress", false),
            ("recipientaccountid", "recipientAccountId", false),
            ("additionaleventdata", "additionalEventData", true),
        ],
    ),
];

fn text_of(v: Option<&serde_json::Value>, json: bool) -> Option<String> {
    match v? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if !json => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn struct_fields(spec: &StructSpec) -> Fields {
    spec.2
        .iter()
        .map(|(name, _, _)| Field::new(*name, DataType::Utf8, true))
        .collect()
}

/// The table schema every store shares.
pub fn schema() -> Arc<Schema> {
    let mut fields = vec![Field::new(
        "eventtime",
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    )];
    fields.extend(
        TEXT_COLUMNS
            .iter()
            .map(|(c, _)| Field::new(*c, DataType::Utf8, true)),
    );
    fields.extend(
        JSON_COLUMNS
            .iter()
            .map(|(c, _)| Field::new(*c, DataType::Utf8, true)),
    );
    fields.push(Field::new("readonly", DataType::Boolean, true));
    fields.push(Field::new("managementevent", DataType::Boolean, true));
    for spec in &STRUCT_COLUMNS {
        fields.push(Field::new(
            spec.0,
            DataType::Struct(struct_fields(spec)),
            true,
        ));
    }
    fields.push(Field::new("eventjson", DataType::Utf8, true));
    fields.push(Field::new("eventjsonchecksum", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// A stored record: its text as stored, and that text parsed (callers
/// that select records have parsed them already).
pub type StoredRecord = (Arc<str>, serde_json::Value);

/// Parses stored record texts (unparsable ones become JSON null).
pub fn parse_records(texts: Vec<Arc<str>>) -> Vec<StoredRecord> {
    texts
        .into_iter()
        .map(|t| {
            let v = serde_json::from_str(&t).unwrap_or(serde_json::Value::Null);
            (t, v)
        })
        .collect()
}

/// One store's records as a batch of the shared schema.
pub fn batch(records: &[StoredRecord]) -> Result<RecordBatch, SqlError> {
    let parsed: Vec<&serde_json::Value> = records.iter().map(|(_, v)| v).collect();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut time = TimestampMillisecondBuilder::new();
    for r in &parsed {
        let at = r
            .get("eventTime")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| trailwatch_types::Timestamp::parse_iso8601(t).ok());
        time.append_option(at.map(trailwatch_types::Timestamp::millis));
    }
    columns.push(Arc::new(time.finish()));
    let text = |field: &str, json: bool| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in &parsed {
            b.append_option(text_of(r.get(field), json));
        }
        Arc::new(b.finish())
    };
    for (_, field) in &TEXT_COLUMNS {
        columns.push(text(field, false));
    }
    for (_, field) in &JSON_COLUMNS {
        columns.push(text(field, true));
    }
    for field in ["readOnly", "managementEvent"] {
        let mut b = BooleanBuilder::new();
        for r in &parsed {
            b.append_option(r.get(field).and_then(serde_json::Value::as_bool));
        }
        columns.push(Arc::new(b.finish()));
    }
    for spec in &STRUCT_COLUMNS {
        let children: Vec<ArrayRef> = spec
            .2
            .iter()
            .map(|(_, sub, json)| {
                let mut b = StringBuilder::new();
                for r in &parsed {
                    b.append_option(text_of(r.get(spec.1).and_then(|o| o.get(sub)), *json));
                }
                Arc::new(b.finish()) as ArrayRef
            })
            .collect();
        let nulls: Vec<bool> = parsed
            .iter()
            .map(|r| r.get(spec.1).is_some_and(|v| !v.is_null()))
            .collect();
        let array = StructArray::try_new(struct_fields(spec), children, Some(nulls.into()))
            .map_err(|e| SqlError::Failed(e.to_string()))?;
        columns.push(Arc::new(array));
    }
    let mut json = StringBuilder::new();
    let mut sums = StringBuilder::new();
    for (r, _) in records {
        json.append_value(r);
        sums.append_value(hex::encode(sha2::Sha256::digest(r.as_bytes())));
    }
    columns.push(Arc::new(json.finish()));
    columns.push(Arc::new(sums.finish()));
    RecordBatch::try_new(schema(), columns).map_err(|e| SqlError::Failed(e.to_string()))
}

/// The ids of stores a statement names (UUID-shaped words).
pub fn table_ids(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (start, _) in sql.char_indices() {
        if let Some(id) = uuid_at(sql, start) {
            let before_ok = start == 0
                || !sql[..start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
            if before_ok && !out.iter().any(|o| o.eq_ignore_ascii_case(id)) {
                out.push(id.to_ascii_lowercase());
            }
        }
    }
    out
}

fn uuid_at(sql: &str, start: usize) -> Option<&str> {
    let candidate = sql.get(start..start + 36)?;
    let ok = candidate.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    let after_ok = !sql[start + 36..]
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    (ok && after_ok).then_some(candidate)
}

/// Quotes unquoted store ids outside string literals, so the Trino-style
/// `FROM 3f1c0f4e-…` parses.
pub fn quote_ids(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i..].chars().next().unwrap_or(' ');
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {
                let prev_ok = !out
                    .chars()
                    .next_back()
                    .is_some_and(|p: char| p.is_ascii_alphanumeric() || p == '-');
                if prev_ok {
                    if let Some(id) = uuid_at(sql, i) {
                        out.push('"');
                        out.push_str(&id.to_ascii_lowercase());
                        out.push('"');
                        i += 36;
                        continue;
                    }
                }
            }
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let path = path.trim();
    let rest = path.strip_prefix('$')?;
    let mut cur = v;
    let mut chars = rest;
    while !chars.is_empty() {
        if let Some(r) = chars.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            chars = &r[end..];
        } else if let Some(r) = chars.strip_prefix('[') {
            let end = r.find(']')?;
            let key = r[..end].trim_matches(|c| c == '\'' || c == '"');
            cur = match key.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(key)?,
            };
            chars = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

/// A text function of two text arguments, NULL-in NULL-out.
fn text2(
    name: &str,
    f: impl Fn(&str, &str) -> Option<String> + Send + Sync + 'static,
) -> datafusion::logical_expr::ScalarUDF {
    let f = Arc::new(f);
    create_udf(
        name,
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let n = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let arrays: Vec<ArrayRef> = args
                .iter()
                .map(|a| a.clone().into_array(n))
                .collect::<Result<_, _>>()?;
            let as_text = |a: &ArrayRef| -> Option<StringArray> {
                a.as_any().downcast_ref::<StringArray>().cloned()
            };
            let (Some(x), Some(y)) = (as_text(&arrays[0]), as_text(&arrays[1])) else {
                return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
            };
            let mut b = StringBuilder::new();
            for i in 0..n {
                if x.is_null(i) || y.is_null(i) {
                    b.append_null();
                } else {
                    b.append_option(f(x.value(i), y.value(i)));
                }
            }
            Ok(ColumnarValue::Array(Arc::new(b.finish())))
        }),
    )
}

fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

fn register_functions(ctx: &SessionContext) {
    // Maps are JSON objects here: element_at reads one member.
    ctx.register_udf(text2("element_at", |json, key| {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        match v.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }));
    ctx.register_udf(text2("json_extract_scalar", |json, path| {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        scalar_text(json_path(&v, path)?)
    }));
    ctx.register_udf(text2("json_extract", |json, path| {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        Some(json_path(&v, path)?.to_string())
    }));
    ctx.register_udf(text2("json_array_get", |json, index| {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        let i: i64 = index.parse().ok()?;
        let list = v.as_array()?;
        let at = if i < 0 { list.len() as i64 + i } else { i };
        Some(list.get(usize::try_from(at).ok()?)?.to_string())
    }));
    ctx.register_udf(text2("json_array_contains", |json, value| {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        Some(
            v.as_array()?
                .iter()
                .any(|x| scalar_text(x).as_deref() == Some(value))
                .to_string(),
        )
    }));
}

/// The name a result column is reported under: the field of a struct
/// access (`userIdentity.arn` → `arn`), as Trino names it, without table
/// qualifiers.
fn column_label(name: &str) -> String {
    if let (Some(open), true) = (name.rfind('['), name.ends_with(']')) {
        return name[open + 1..name.len() - 1]
            .trim_matches(|c| c == '\'' || c == '"')
            .to_owned();
    }
    // A qualified plain column (`store.eventname`): the column. Only a
    // UUID-shaped qualifier is a store, so dotted aliases stay whole.
    match name.rsplit_once('.') {
        Some((qualifier, column)) if table_ids(qualifier).len() == 1 => column.to_owned(),
        _ => name.to_owned(),
    }
}

/// A planned query, ready to run.
pub struct Prepared {
    frame: datafusion::dataframe::DataFrame,
    columns: Vec<String>,
    /// Records the query may read.
    pub events_scanned: u64,
    /// Bytes of those records.
    pub bytes_scanned: u64,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// Validates and plans `sql` against `tables` (store id → records).
pub async fn prepare(
    sql: &str,
    tables: BTreeMap<String, Vec<StoredRecord>>,
) -> Result<Prepared, SqlError> {
    if sql.len() > 10_000 {
        return Err(SqlError::Invalid(
            "The query statement is longer than 10,000 characters.".into(),
        ));
    }
    let ctx = SessionContext::new();
    register_functions(&ctx);
    let (mut events, mut bytes) = (0u64, 0u64);
    for (id, records) in &tables {
        events += records.len() as u64;
        bytes += records.iter().map(|(r, _)| r.len() as u64).sum::<u64>();
        let batch = batch(records)?;
        let table = MemTable::try_new(schema(), vec![vec![batch]])
            .map_err(|e| SqlError::Failed(e.to_string()))?;
        ctx.register_table(id.as_str(), Arc::new(table))
            .map_err(|e| SqlError::Failed(e.to_string()))?;
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx
        .sql_with_options(&quote_ids(sql), options)
        .await
        .map_err(|e| SqlError::Invalid(format!("Query statement is invalid: {e}")))?;
    let columns: Vec<String> = frame
        .schema()
        .fields()
        .iter()
        .map(|f| column_label(f.name()))
        .collect();
    Ok(Prepared {
        frame,
        columns,
        events_scanned: events,
        bytes_scanned: bytes,
    })
}

impl Prepared {
    /// Runs the query.
    pub async fn execute(self) -> Result<SqlResult, SqlError> {
        let batches = self
            .frame
            .collect()
            .await
            .map_err(|e| SqlError::Failed(e.to_string()))?;
        // Times as Trino prints them.
        let options = FormatOptions::default()
            .with_null("")
            .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"));
        let mut rows = Vec::new();
        for b in &batches {
            let formatters: Vec<ArrayFormatter<'_>> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<_, _>>()
                .map_err(|e| SqlError::Failed(e.to_string()))?;
            for i in 0..b.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
            }
        }
        Ok(SqlResult {
            columns: self.columns,
            rows,
        })
    }
}

/// Plans and runs `sql` against `tables`.
pub async fn run(
    sql: &str,
    tables: BTreeMap<String, Vec<StoredRecord>>,
) -> Result<SqlResult, SqlError> {
    prepare(sql, tables).await?.execute().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c0f4e-2b7a-4d1e-9f33-0a6b5c4d3e21";

    fn records() -> Vec<Arc<str>> {
        let mut out = Vec::new();
        for (i, (name, error)) in [
            ("CreateTrail", None),
            ("CreateTrail", None),
            ("DescribeTrails", None),
            ("PutMetricAlarm", Some("AccessDenied")),
        ]
        .iter()
        .enumerate()
        {
            let mut r = serde_json::json!({
                "eventVersion": "1.11",
                "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/u{i}")},
                "eventTime": format!("2026-02-0{}T10:00:00Z", i + 1),
                "eventSource": if i < 3 { "cloudtrail.amazonaws.com" } else { "monitoring.amazonaws.com" },
                "eventName": name,
                "awsRegion": "eu-west-1",
                "requestParameters": {"name": format!("t{i}")},
                "readOnly": *name == "DescribeTrails",
                "eventCategory": "Management",
                "managementEvent": true,
            });
            if let Some(e) = error {
                r["errorCode"] = serde_json::json!(e);
            }
            out.push(Arc::from(r.to_string()));
        }
        out
    }

    async fn query(sql: &str) -> Result<SqlResult, SqlError> {
        let mut tables = BTreeMap::new();
        tables.insert(ID.to_owned(), parse_records(records()));
        run(sql, tables).await
    }

    #[tokio::test]
    async fn group_by_order_and_limit() {
        let r = query(&format!(
            "SELECT eventName, COUNT(*) AS calls FROM {ID} WHERE eventSource = 'cloudtrail.amazonaws.com' \
             AND eventTime >= '2026-02-01 00:00:00' GROUP BY eventName ORDER BY calls DESC LIMIT 20"
        ))
        .await
        .expect("runs");
        assert_eq!(r.columns, vec!["eventname", "calls"]);
        let labels = query(&format!(
            "SELECT userIdentity.arn, eventTime FROM {ID} WHERE eventName = 'PutMetricAlarm'"
        ))
        .await
        .expect("runs");
        assert_eq!(labels.columns, vec!["arn", "eventtime"]);
        assert_eq!(labels.rows[0][1], "2026-02-04 10:00:00.000");
        assert_eq!(
            r.rows,
            vec![
                vec!["CreateTrail".to_owned(), "2".to_owned()],
                vec!["DescribeTrails".to_owned(), "1".to_owned()]
            ]
        );
    }

    #[tokio::test]
    async fn structs_maps_and_errors() {
        let r = query(&format!(
            "SELECT userIdentity.arn, element_at(requestParameters, 'name') AS n, errorCode FROM {ID} \
             WHERE errorCode IN ('AccessDenied','AccessDeniedException') ORDER BY eventTime DESC"
        ))
        .await
        .expect("runs");
        assert_eq!(
            r.rows,
            vec![vec![
                "arn:aws:iam::111122223333:user/u3".to_owned(),
                "t3".to_owned(),
                "AccessDenied".to_owned()
            ]]
        );
        let r = query(&format!(
            "SELECT count(*) FROM {ID} WHERE readOnly AND errorCode IS NULL"
        ))
        .await
        .expect("runs");
        assert_eq!(r.rows, vec![vec!["1".to_owned()]]);
    }

    #[tokio::test]
    async fn only_queries() {
        for bad in [
            format!("DROP TABLE \"{ID}\""),
            format!("INSERT INTO \"{ID}\" VALUES (1)"),
            "CREATE TABLE x (a int)".to_owned(),
            format!("SELECT nope FROM {ID}"),
            "SELECT * FROM missing_table".to_owned(),
            "SELEC 1".to_owned(),
        ] {
            assert!(
                matches!(query(&bad).await, Err(SqlError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_found_and_quoted_outside_strings() {
        let sql = format!("SELECT '{ID}' FROM {ID} JOIN \"{ID}\" x ON true");
        assert_eq!(table_ids(&sql), vec![ID.to_owned()]);
        assert_eq!(
            quote_ids(&sql),
            format!("SELECT '{ID}' FROM \"{ID}\" JOIN \"{ID}\" x ON true")
        );
    }
}
