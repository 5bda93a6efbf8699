//! The CloudWatch agent's JSON configuration file, as users already have it:
//! the `agent`, `metrics` and `logs` sections, read into typed settings.
//!
//! Sections and keys the agent does not act on (statsd, collectd, procstat,
//! Windows event logs, credentials roles, …) are accepted and reported by
//! [`Config::ignored`], so an existing file still loads; what each one means
//! for the user is in docs/COMPATIBILITY.md.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};

use crate::host::{Options, Plugin};

/// The whole file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `agent.region`, when set: the region of every request.
    pub region: Option<String>,
    /// `agent.omit_hostname`: leave the `host` dimension out.
    pub omit_hostname: bool,
    /// The `metrics` section, when present.
    pub metrics: Option<MetricsConfig>,
    /// The `logs` section, when present.
    pub logs: Option<LogsConfig>,
    /// Dotted paths of what was accepted but is not acted on.
    pub ignored: Vec<String>,
}

/// The `metrics` section.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `namespace` (default `CWAgent`).
    pub namespace: String,
    /// `append_dimensions`, after placeholders were resolved.
    pub append_dimensions: BTreeMap<String, String>,
    /// Whether `append_dimensions` was given at all: the CloudWatch agent
    /// then leaves the `host` dimension out.
    pub append_set: bool,
    /// `aggregation_dimensions`: each list is a dimension set to roll up to.
    pub aggregation_dimensions: Vec<Vec<String>>,
    /// `endpoint_override`.
    pub endpoint_override: Option<String>,
    /// One entry per plugin of `metrics_collected`, in file order.
    pub plugins: Vec<PluginConfig>,
}

/// One plugin of `metrics_collected` (`cpu`, `mem`, …).
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The plugin.
    pub plugin: Plugin,
    /// `measurement`, in file order.
    pub measurements: Vec<Measurement>,
    /// Seconds between collections (the plugin's own, else the agent's, else 60).
    pub interval_secs: u64,
    /// `resources`, `totalcpu`, `ignore_file_system_types`, `drop_device`:
    /// what the collector reads.
    pub options: Options,
    /// The plugin's own `append_dimensions`.
    pub append_dimensions: BTreeMap<String, String>,
}

/// One `measurement` entry: a name, or `{name, rename, unit}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The field, without the plugin prefix (`usage_idle`).
    pub field: String,
    /// The metric name to publish under (`rename`, else `<plugin>_<field>`).
    pub metric_name: String,
    /// `unit`, when set: overrides the field's own unit.
    pub unit: Option<String>,
}

/// The `logs` section.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    /// `logs_collected.files.collect_list`, in file order.
    pub files: Vec<FileConfig>,
    /// Seconds a batch waits for more events before it is sent (default 5).
    pub force_flush_interval_secs: u64,
    /// `endpoint_override`.
    pub endpoint_override: Option<String>,
}

/// One entry of `collect_list`.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// `file_path`: a path or glob (`*`, `?`, `[...]`, `**`).
    pub file_path: String,
    /// `log_group_name` (default: the file path), placeholders resolved.
    pub log_group_name: String,
    /// `log_stream_name` (default: `logs.log_stream_name`, else the
    /// `{instance_id}` placeholder), placeholders resolved.
    pub log_stream_name: String,
    /// `timestamp_format`.
    pub timestamp_format: Option<String>,
    /// `timezone`: true for `UTC`, false for `Local` (the default).
    pub utc: bool,
    /// `multi_line_start_pattern`, with `{timestamp_format}` kept as is.
    pub multi_line_start_pattern: Option<String>,
    /// `encoding` (default `utf-8`).
    pub encoding: String,
    /// `retention_in_days`, when set to a positive value.
    pub retention_in_days: Option<i32>,
    /// `filters`: (include?, regex) in file order.
    pub filters: Vec<(bool, String)>,
    /// `trim_timestamp`: drop the matched timestamp text from the message.
    pub trim_timestamp: bool,
}

/// What placeholders (`{hostname}`, `${aws:InstanceId}`, …) resolve to.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The host name.
    pub hostname: String,
    /// The host's first non-loopback IPv4 address, if any.
    pub ip_address: Option<String>,
}

impl HostFacts {
    /// `{instance_id}`: off EC2 there is no instance id, so the host name
    /// stands in (documented in COMPATIBILITY.md).
    fn placeholder(&self, name: &str) -> Option<String> {
        match name {
            "instance_id" | "hostname" | "local_hostname" => Some(self.hostname.clone()),
            "ip_address" => Some(
                self.ip_address
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".to_owned()),
            ),
            _ => None,
        }
    }

    /// Replaces `{hostname}`-style placeholders; unknown ones stay as written.
    pub fn resolve(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) if self.placeholder(&after[..close]).is_some() => {
                    out.push_str(&self.placeholder(&after[..close]).unwrap_or_default());
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

impl Config {
    /// Parses the file's text.
    pub fn parse(text: &str, host: &HostFacts) -> anyhow::Result<Config> {
        let root: Value = serde_json::from_str(text).context("the configuration is not JSON")?;
        let root = object(&root, "the configuration")?;
        let mut config = Config::default();
        let mut agent_interval = 60;
        for (key, value) in root {
            match key.as_str() {
                "agent" => {
                    for (k, v) in object(value, "agent")? {
                        match k.as_str() {
                            "metrics_collection_interval" => {
                                agent_interval = interval(v, "agent.metrics_collection_interval")?
                            }
                            "region" => config.region = Some(string(v, "agent.region")?),
                            "omit_hostname" => {
                                config.omit_hostname = boolean(v, "agent.omit_hostname")?
                            }
                            // Where and how the agent itself logs: ours logs to stderr.
                            "logfile" | "debug" | "quiet" | "run_as_user" | "usage_data"
                            | "aws_sdk_log_level" | "user_agent" | "internal" => {}
                            other => config.ignored.push(format!("agent.{other}")),
                        }
                    }
                }
                "metrics" => {}
                "logs" => {}
                other => config.ignored.push(other.to_owned()),
            }
        }
        if let Some(m) = root.get("metrics") {
            config.metrics = Some(parse_metrics(m, agent_interval, host, &mut config.ignored)?);
        }
        if let Some(l) = root.get("logs") {
            config.logs = Some(parse_logs(l, host, &mut config.ignored)?);
        }
        Ok(config)
    }
}

fn parse_metrics(
    value: &Value,
    agent_interval: u64,
    host: &HostFacts,
    ignored: &mut Vec<String>,
) -> anyhow::Result<MetricsConfig> {
    let section = object(value, "metrics")?;
    let mut m = MetricsConfig {
        namespace: "CWAgent".to_owned(),
        append_dimensions: BTreeMap::new(),
        append_set: false,
        aggregation_dimensions: Vec::new(),
        endpoint_override: None,
        plugins: Vec::new(),
    };
    for (key, v) in section {
        match key.as_str() {
            "namespace" => {
                m.namespace = string(v, "metrics.namespace")?;
                if m.namespace.is_empty() || m.namespace.len() > 255 {
                    bail!("metrics.namespace must have 1 to 255 characters");
                }
            }
            "append_dimensions" => {
                m.append_dimensions = dimensions(v, "metrics.append_dimensions", host)?;
                m.append_set = true;
            }
            "aggregation_dimensions" => {
                for (i, set) in array(v, "metrics.aggregation_dimensions")?
                    .iter()
                    .enumerate()
                {
                    let what = format!("metrics.aggregation_dimensions[{i}]");
                    let names = array(set, &what)?
                        .iter()
                        .map(|n| string(n, &what))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    m.aggregation_dimensions.push(names);
                }
            }
            "endpoint_override" => {
                m.endpoint_override = Some(string(v, "metrics.endpoint_override")?)
            }
            "metrics_collected" => {
                for (name, p) in object(v, "metrics.metrics_collected")? {
                    let Some(plugin) = Plugin::parse(name) else {
                        ignored.push(format!("metrics.metrics_collected.{name}"));
                        continue;
                    };
                    m.plugins
                        .push(parse_plugin(plugin, p, agent_interval, host)?);
                }
            }
            // Points are sent every collection: nothing waits to be flushed.
            "force_flush_interval" | "credentials" => {}
            other => ignored.push(format!("metrics.{other}")),
        }
    }
    Ok(m)
}

fn parse_plugin(
    plugin: Plugin,
    value: &Value,
    agent_interval: u64,
    host: &HostFacts,
) -> anyhow::Result<PluginConfig> {
    let name = plugin.name();
    let what = format!("metrics.metrics_collected.{name}");
    let section = object(value, &what)?;
    let mut p = PluginConfig {
        plugin,
        measurements: Vec::new(),
        interval_secs: agent_interval,
        options: Options::default(),
        append_dimensions: BTreeMap::new(),
    };
    for (key, v) in section {
        let at = format!("{what}.{key}");
        match key.as_str() {
            "measurement" => {
                for m in array(v, &at)? {
                    p.measurements.push(measurement(name, m, &at)?);
                }
            }
            "metrics_collection_interval" => p.interval_secs = interval(v, &at)?,
            "resources" => {
                p.options.resources = array(v, &at)?
                    .iter()
                    .map(|r| string(r, &at))
                    .collect::<anyhow::Result<_>>()?
            }
            "totalcpu" => p.options.totalcpu = boolean(v, &at)?,
            "ignore_file_system_types" => {
                p.options.ignore_file_system_types = array(v, &at)?
                    .iter()
                    .map(|r| string(r, &at))
                    .collect::<anyhow::Result<_>>()?
            }
            "drop_device" => p.options.drop_device = boolean(v, &at)?,
            "append_dimensions" => p.append_dimensions = dimensions(v, &at, host)?,
            _ => {}
        }
    }
    if p.measurements.is_empty() {
        bail!("{what}.measurement must list at least one measurement");
    }
    Ok(p)
}

/// A `measurement` entry: `"usage_idle"`, `"cpu_usage_idle"` or
/// `{"name": …, "rename": …, "unit": …}`.
fn measurement(plugin: &str, value: &Value, at: &str) -> anyhow::Result<Measurement> {
    let (name, rename, unit) = match value {
        Value::String(s) => (s.clone(), None, None),
        Value::Object(o) => {
            let name = o
                .get("name")
                .with_context(|| format!("{at}: an entry has no name"))?;
            let opt = |k: &str| o.get(k).map(|v| string(v, at)).transpose();
            (string(name, at)?, opt("rename")?, opt("unit")?)
        }
        _ => bail!("{at}: an entry must be a name or an object"),
    };
    let prefix = format!("{plugin}_");
    let field = name.strip_prefix(&prefix).unwrap_or(&name).to_owned();
    if field.is_empty() {
        bail!("{at}: an entry has an empty name");
    }
    if let Some(u) = &unit {
        // The SDK's own list of CloudWatch units.
        if !aws_sdk_cloudwatch::types::StandardUnit::values().contains(&u.as_str()) {
            bail!("{at}: unit {u} is not a CloudWatch unit");
        }
    }
    Ok(Measurement {
        metric_name: rename.unwrap_or_else(|| format!("{plugin}_{field}")),
        field,
        unit,
    })
}

/// `append_dimensions`: `${aws:…}` values need EC2 instance metadata, which
/// a host off EC2 does not have, so those dimensions are left out.
fn dimensions(
    value: &Value,
    at: &str,
    host: &HostFacts,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in object(value, at)? {
        let v = string(v, at)?;
        if v.starts_with("${aws:") {
            continue;
        }
        out.insert(k.clone(), host.resolve(&v));
    }
    Ok(out)
}

fn parse_logs(
    value: &Value,
    host: &HostFacts,
    ignored: &mut Vec<String>,
) -> anyhow::Result<LogsConfig> {
    let section = object(value, "logs")?;
    let default_stream = match section.get("log_stream_name") {
        Some(v) => string(v, "logs.log_stream_name")?,
        None => "{instance_id}".to_owned(),
    };
    let mut l = LogsConfig {
        files: Vec::new(),
        force_flush_interval_secs: 5,
        endpoint_override: None,
    };
    for (key, v) in section {
        match key.as_str() {
            "log_stream_name" => {}
            "force_flush_interval" => {
                l.force_flush_interval_secs = interval(v, "logs.force_flush_interval")?
            }
            "endpoint_override" => l.endpoint_override = Some(string(v, "logs.endpoint_override")?),
            "logs_collected" => {
                for (kind, c) in object(v, "logs.logs_collected")? {
                    if kind != "files" {
                        ignored.push(format!("logs.logs_collected.{kind}"));
                        continue;
                    }
                    let files = object(c, "logs.logs_collected.files")?;
                    let Some(list) = files.get("collect_list") else {
                        continue;
                    };
                    for (i, f) in array(list, "logs.logs_collected.files.collect_list")?
                        .iter()
                        .enumerate()
                    {
                        let at = format!("logs.logs_collected.files.collect_list[{i}]");
                        l.files
                            .push(parse_file(f, &at, &default_stream, host, ignored)?);
                    }
                }
            }
            "credentials" | "concurrency" => {}
            other => ignored.push(format!("logs.{other}")),
        }
    }
    Ok(l)
}

fn parse_file(
    value: &Value,
    at: &str,
    default_stream: &str,
    host: &HostFacts,
    ignored: &mut Vec<String>,
) -> anyhow::Result<FileConfig> {
    let o = object(value, at)?;
    let get = |k: &str| {
        o.get(k)
            .map(|v| string(v, &format!("{at}.{k}")))
            .transpose()
    };
    let file_path = get("file_path")?.with_context(|| format!("{at}.file_path is required"))?;
    if !file_path.starts_with('/') {
        bail!("{at}.file_path must be an absolute path");
    }
    glob::Pattern::new(&file_path).with_context(|| format!("{at}.file_path is not a glob"))?;
    let group = host.resolve(&get("log_group_name")?.unwrap_or_else(|| file_path.clone()));
    let stream =
        host.resolve(&get("log_stream_name")?.unwrap_or_else(|| default_stream.to_owned()));
    check_name(&group, at, "log_group_name")?;
    check_name(&stream, at, "log_stream_name")?;
    let utc = match get("timezone")?.as_deref() {
        None | Some("Local") => false,
        Some("UTC") => true,
        Some(other) => bail!("{at}.timezone must be Local or UTC, not {other}"),
    };
    let encoding = get("encoding")?.unwrap_or_else(|| "utf-8".to_owned());
    if encoding_rs::Encoding::for_label(encoding.as_bytes()).is_none() {
        bail!("{at}.encoding {encoding} is not an encoding the agent knows");
    }
    let timestamp_format = get("timestamp_format")?;
    if let Some(f) = &timestamp_format {
        crate::timestamp::TimestampFormat::new(f, utc)
            .with_context(|| format!("{at}.timestamp_format"))?;
    }
    let multi_line_start_pattern = get("multi_line_start_pattern")?;
    match multi_line_start_pattern.as_deref() {
        Some("{timestamp_format}") if timestamp_format.is_none() => {
            bail!("{at}.multi_line_start_pattern {{timestamp_format}} needs a timestamp_format")
        }
        Some("{timestamp_format}") | None => {}
        Some(p) => {
            regex::Regex::new(p)
                .with_context(|| format!("{at}.multi_line_start_pattern is not a regex"))?;
        }
    }
    let retention_in_days = match o.get("retention_in_days") {
        None => None,
        Some(v) => {
            let days = v
                .as_i64()
                .with_context(|| format!("{at}.retention_in_days must be a number"))?;
            match days {
                d if d <= 0 => None,
                d if RETENTION_DAYS.contains(&d) => Some(d as i32),
                d => bail!("{at}.retention_in_days {d} is not a CloudWatch Logs retention"),
            }
        }
    };
    let mut filters = Vec::new();
    if let Some(list) = o.get("filters") {
        for f in array(list, &format!("{at}.filters"))? {
            let f = object(f, &format!("{at}.filters"))?;
            let include = match f.get("type").and_then(Value::as_str) {
                Some("include") => true,
                Some("exclude") => false,
                _ => bail!("{at}.filters: type must be include or exclude"),
            };
            let expression = f
                .get("expression")
                .and_then(Value::as_str)
                .with_context(|| format!("{at}.filters: expression is required"))?;
            regex::Regex::new(expression)
                .with_context(|| format!("{at}.filters: {expression} is not a regex"))?;
            filters.push((include, expression.to_owned()));
        }
    }
    let trim_timestamp = match o.get("trim_timestamp") {
        Some(v) => boolean(v, &format!("{at}.trim_timestamp"))?,
        None => false,
    };
    for key in o.keys() {
        if !FILE_KEYS.contains(&key.as_str()) {
            ignored.push(format!("{at}.{key}"));
        }
    }
    Ok(FileConfig {
        file_path,
        log_group_name: group,
        log_stream_name: stream,
        timestamp_format,
        utc,
        multi_line_start_pattern,
        encoding,
        retention_in_days,
        filters,
        trim_timestamp,
    })
}

const FILE_KEYS: [&str; 11] = [
    "file_path",
    "log_group_name",
    "log_stream_name",
    "timestamp_format",
    "timezone",
    "multi_line_start_pattern",
    "encoding",
    "retention_in_days",
    "filters",
    "trim_timestamp",
    // Accepted as no-ops: the class is chosen at CreateLogGroup by default.
    "log_group_class",
];

/// PutRetentionPolicy's allowed values.
pub const RETENTION_DAYS: [i64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The names CloudWatch Logs would refuse: empty, over 512 characters, or
/// with `:` or `*`.
fn check_name(name: &str, at: &str, key: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 512 || name.contains(':') || name.contains('*') {
        bail!("{at}.{key} {name:?} is not a valid CloudWatch Logs name");
    }
    Ok(())
}

fn object<'a>(v: &'a Value, what: &str) -> anyhow::Result<&'a Map<String, Value>> {
    v.as_object()
        .with_context(|| format!("{what} must be an object"))
}

fn array<'a>(v: &'a Value, what: &str) -> anyhow::Result<&'a Vec<Value>> {
    v.as_array()
        .with_context(|| format!("{what} must be an array"))
}

fn string(v: &Value, what: &str) -> anyhow::Result<String> {
    v.as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what} must be a string"))
}

fn boolean(v: &Value, what: &str) -> anyhow::Result<bool> {
    v.as_bool()
        .with_context(|| format!("{what} must be true or false"))
}

/// A collection interval in seconds: a positive whole number.
fn interval(v: &Value, what: &str) -> anyhow::Result<u64> {
    match v.as_u64() {
        Some(n) if n >= 1 => Ok(n),
        _ => bail!("{what} must be a whole number of seconds, at least 1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            hostname: "web-1".into(),
            ip_address: Some("10.0.0.5".into()),
        }
    }

    #[test]
    fn reads_the_documented_example() {
        let text = r#"{
          "agent": {"metrics_collection_interval": 10, "logfile": "/x.log", "region": "eu-west-1"},
          "metrics": {
            "namespace": "MyHosts",
            "append_dimensions": {"InstanceId": "${aws:InstanceId}", "Team": "ops", "Box": "{hostname}"},
            "aggregation_dimensions": [["Team"], []],
            "metrics_collected": {
              "cpu": {"measurement": [{"name": "cpu_usage_idle", "rename": "IDLE", "unit": "Percent"}, "usage_user"],
                      "totalcpu": false, "resources": ["*"], "metrics_collection_interval": 1},
              "mem": {"measurement": ["mem_used_percent"]},
              "statsd": {}
            }
          },
          "logs": {
            "log_stream_name": "fallback",
            "force_flush_interval": 2,
            "logs_collected": {"files": {"collect_list": [
              {"file_path": "/var/log/app/*.log", "log_group_name": "app-{hostname}",
               "timestamp_format": "%Y-%m-%d %H:%M:%S", "multi_line_start_pattern": "{timestamp_format}",
               "retention_in_days": 7, "timezone": "UTC", "filters": [{"type": "exclude", "expression": "DEBUG"}]},
              {"file_path": "/var/log/other.log", "log_stream_name": "{ip_address}", "encoding": "gbk"}
            ]}}
          }
        }"#;
        let c = Config::parse(text, &host()).unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.ignored, vec!["metrics.metrics_collected.statsd"]);
        let m = c.metrics.unwrap();
        assert_eq!(m.namespace, "MyHosts");
        assert_eq!(
            m.append_dimensions.into_iter().collect::<Vec<_>>(),
            vec![
                ("Box".to_owned(), "web-1".to_owned()),
                ("Team".to_owned(), "ops".to_owned())
            ]
        );
        assert_eq!(
            m.aggregation_dimensions,
            vec![vec!["Team".to_owned()], vec![]]
        );
        let cpu = &m.plugins[0];
        assert_eq!(cpu.interval_secs, 1);
        assert!(!cpu.options.totalcpu);
        assert_eq!(
            cpu.measurements,
            vec![
                Measurement {
                    field: "usage_idle".into(),
                    metric_name: "IDLE".into(),
                    unit: Some("Percent".into())
                },
                Measurement {
                    field: "usage_user".into(),
                    metric_name: "cpu_usage_user".into(),
                    unit: None
                }
            ]
        );
        assert_eq!(m.plugins[1].interval_secs, 10);
        let l = c.logs.unwrap();
        assert_eq!(l.force_flush_interval_secs, 2);
        assert_eq!(l.files[0].log_group_name, "app-web-1");
        assert_eq!(l.files[0].log_stream_name, "fallback");
        assert_eq!(l.files[0].retention_in_days, Some(7));
        assert!(l.files[0].utc);
        assert_eq!(l.files[0].filters, vec![(false, "DEBUG".to_owned())]);
        assert_eq!(l.files[1].log_group_name, "/var/log/other.log");
        assert_eq!(l.files[1].log_stream_name, "10.0.0.5");
        assert_eq!(l.files[1].encoding, "gbk");
    }

    #[test]
    fn refuses_bad_values_with_their_path() {
        let cases = [
            (
                r#"{"metrics": {"metrics_collected": {"cpu": {"measurement": []}}}}"#,
                "measurement",
            ),
            (
                r#"{"agent": {"metrics_collection_interval": 0}}"#,
                "interval",
            ),
            (
                r#"{"metrics": {"metrics_collected": {"mem": {"measurement": [{"name": "used", "unit": "Furlongs"}]}}}}"#,
                "Furlongs",
            ),
            (
                r#"{"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "rel.log"}]}}}}"#,
                "absolute",
            ),
            (
                r#"{"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "/a", "retention_in_days": 8}]}}}}"#,
                "retention",
            ),
            (
                r#"{"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "/a", "multi_line_start_pattern": "("}]}}}}"#,
                "regex",
            ),
            (
                r#"{"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "/a", "encoding": "klingon"}]}}}}"#,
                "encoding",
            ),
            ("[1]", "object"),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", Config::parse(text, &host()).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn placeholders() {
        let h = host();
        assert_eq!(h.resolve("{instance_id}/{hostname}"), "web-1/web-1");
        assert_eq!(h.resolve("{unknown}-{ip_address}"), "{unknown}-10.0.0.5");
        assert_eq!(h.resolve("a{b"), "a{b");
    }
}
