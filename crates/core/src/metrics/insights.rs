//! Metrics Insights SQL (`spec/cloudwatch.md` §6.7): parsing and evaluation of
//! `SELECT FUNC(metric) FROM … [WHERE …] [GROUP BY …] [ORDER BY FUNC() …] [LIMIT n]`.

use std::collections::BTreeMap;

use super::model::MetricId;

/// Aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// Σ Sum / Σ SampleCount.
    Avg,
    /// Σ SampleCount.
    Count,
    /// Largest maximum.
    Max,
    /// Smallest minimum.
    Min,
    /// Σ Sum.
    Sum,
}

impl Func {
    fn parse(s: &str) -> Option<Func> {
        Some(match s.to_ascii_uppercase().as_str() {
            "AVG" => Func::Avg,
            "COUNT" => Func::Count,
            "MAX" => Func::Max,
            "MIN" => Func::Min,
            "SUM" => Func::Sum,
            _ => return None,
        })
    }

    /// Combines bucket statistics `(sum, count, min, max)`.
    pub fn apply(self, sum: f64, count: f64, min: f64, max: f64) -> f64 {
        match self {
            Func::Avg => sum / count,
            Func::Count => count,
            Func::Max => max,
            Func::Min => min,
            Func::Sum => sum,
        }
    }
}

/// A WHERE condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `key = 'v'` (`!=` when negated by `Not`).
    Eq(String, String),
    /// `key IN ('a', …)`.
    In(String, Vec<String>),
    /// `key LIKE 'pat'`.
    Like(String, String),
    /// Both.
    And(Box<Cond>, Box<Cond>),
    /// Either.
    Or(Box<Cond>, Box<Cond>),
    /// Not.
    Not(Box<Cond>),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Aggregation.
    pub func: Func,
    /// Metric name.
    pub metric: String,
    /// Namespace.
    pub namespace: String,
    /// `SCHEMA(ns, dims…)`: the exact dimension-name set (empty = dimensionless).
    pub schema: Option<Vec<String>>,
    /// WHERE.
    pub filter: Option<Cond>,
    /// GROUP BY keys.
    pub group_by: Vec<String>,
    /// ORDER BY FUNC() and descending?
    pub order: Option<(Func, bool)>,
    /// LIMIT.
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Sym(char),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quote".to_owned()),
                    Some('\\') => {
                        text.push(*chars.get(i + 1).ok_or("dangling escape")?);
                        i += 2;
                    }
                    Some(q) if *q == c => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        text.push(*other);
                        i += 1;
                    }
                }
            }
            out.push(if c == '"' {
                Tok::Quoted(text)
            } else {
                Tok::Str(text)
            });
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            out.push(Tok::Op("!="));
            i += 2;
        } else if c == '=' {
            out.push(Tok::Op("="));
            i += 1;
        } else if matches!(c, '(' | ')' | ',') {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || matches!(chars[i], '_' | '.' | '/' | '-' | ':' | '#'))
            {
                i += 1;
            }
            if start == i {
                return Err(format!("unexpected character '{c}'"));
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn keyword(&mut self, k: &str) -> bool {
        match self.t.get(self.i) {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k) => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }

    fn expect_keyword(&mut self, k: &str) -> Result<(), String> {
        self.keyword(k)
            .then_some(())
            .ok_or_else(|| format!("expected {k}"))
    }

    fn sym(&mut self, c: char) -> bool {
        if self.t.get(self.i) == Some(&Tok::Sym(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.t.get(self.i).cloned() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                self.i += 1;
                Ok(w)
            }
            _ => Err("expected a name".to_owned()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.t.get(self.i).cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(s)
            }
            _ => Err("expected a quoted value".to_owned()),
        }
    }

    fn or(&mut self) -> Result<Cond, String> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            left = Cond::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Cond, String> {
        if self.keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        if self.sym('(') {
            let inner = self.or()?;
            if !self.sym(')') {
                return Err("expected ')'".to_owned());
            }
            return Ok(inner);
        }
        let key = self.name()?;
        let negated = self.keyword("NOT");
        let cond = if self.keyword("IN") {
            if !self.sym('(') {
                return Err("expected '(' after IN".to_owned());
            }
            let mut values = vec![self.string()?];
            while self.sym(',') {
                values.push(self.string()?);
            }
            if !self.sym(')') {
                return Err("expected ')'".to_owned());
            }
            Cond::In(key, values)
        } else if self.keyword("LIKE") {
            Cond::Like(key, self.string()?)
        } else if negated {
            return Err("NOT must be followed by IN or LIKE here".to_owned());
        } else {
            match self.t.get(self.i).cloned() {
                Some(Tok::Op("=")) => {
                    self.i += 1;
                    Cond::Eq(key, self.string()?)
                }
                Some(Tok::Op("!=")) => {
                    self.i += 1;
                    return Ok(Cond::Not(Box::new(Cond::Eq(key, self.string()?))));
                }
                _ => return Err("expected =, !=, IN or LIKE".to_owned()),
            }
        };
        Ok(if negated {
            Cond::Not(Box::new(cond))
        } else {
            cond
        })
    }
}

/// Whether an expression is a Metrics Insights query.
pub fn is_sql(expression: &str) -> bool {
    expression
        .trim_start()
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("SELECT"))
}

/// Parses a query.
pub fn parse(sql: &str) -> Result<Query, String> {
    let mut p = P { t: lex(sql)?, i: 0 };
    p.expect_keyword("SELECT")?;
    let func = Func::parse(&p.name()?).ok_or("the function must be AVG, COUNT, MAX, MIN or SUM")?;
    if !p.sym('(') {
        return Err("expected '('".to_owned());
    }
    let metric = p.name()?;
    if !p.sym(')') {
        return Err("expected ')'".to_owned());
    }
    p.expect_keyword("FROM")?;
    let (namespace, schema) = if p.keyword("SCHEMA") {
        if !p.sym('(') {
            return Err("expected '(' after SCHEMA".to_owned());
        }
        let namespace = p.name()?;
        let mut dims = Vec::new();
        while p.sym(',') {
            dims.push(p.name()?);
        }
        if !p.sym(')') {
            return Err("expected ')'".to_owned());
        }
        (namespace, Some(dims))
    } else {
        (p.name()?, None)
    };
    let filter = if p.keyword("WHERE") {
        Some(p.or()?)
    } else {
        None
    };
    let mut group_by = Vec::new();
    if p.keyword("GROUP") {
        p.expect_keyword("BY")?;
        group_by.push(p.name()?);
        while p.sym(',') {
            group_by.push(p.name()?);
        }
    }
    let order = if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        let f = Func::parse(&p.name()?)
            .ok_or("ORDER BY needs AVG(), COUNT(), MAX(), MIN() or SUM()")?;
        if !(p.sym('(') && p.sym(')')) {
            return Err("expected '()' after the ORDER BY function".to_owned());
        }
        let descending = if p.keyword("DESC") {
            true
        } else {
            p.keyword("ASC");
            false
        };
        Some((f, descending))
    } else {
        None
    };
    let limit = if p.keyword("LIMIT") {
        let n: usize = p.name()?.parse().map_err(|_| "LIMIT takes a number")?;
        if n == 0 || n > 500 {
            return Err("LIMIT must be between 1 and 500".to_owned());
        }
        Some(n)
    } else {
        None
    };
    if p.i != p.t.len() {
        return Err("unexpected trailing input".to_owned());
    }
    Ok(Query {
        func,
        metric,
        namespace,
        schema,
        filter,
        group_by,
        order,
        limit,
    })
}

fn value_of<'a>(m: &'a MetricId, key: &str) -> Option<&'a str> {
    match key {
        "MetricName" => Some(&m.name),
        "Namespace" => Some(&m.namespace),
        _ => m
            .dimensions
            .iter()
            .find(|d| d.name == key)
            .map(|d| d.value.as_str()),
    }
}

fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|k| go(rest, &t[k..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(
        &pattern.chars().collect::<Vec<_>>(),
        &text.chars().collect::<Vec<_>>(),
    )
}

impl Cond {
    fn matches(&self, m: &MetricId) -> bool {
        match self {
            Cond::Eq(k, v) => value_of(m, k) == Some(v.as_str()),
            Cond::In(k, vs) => value_of(m, k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Cond::Like(k, p) => value_of(m, k).is_some_and(|x| like(p, x)),
            Cond::And(a, b) => a.matches(m) && b.matches(m),
            Cond::Or(a, b) => a.matches(m) || b.matches(m),
            Cond::Not(a) => !a.matches(m),
        }
    }
}

impl Query {
    /// Whether metric `m` is one the query aggregates.
    pub fn selects(&self, m: &MetricId) -> bool {
        if m.name != self.metric || m.namespace != self.namespace {
            return false;
        }
        if self
            .schema
            .as_ref()
            .is_some_and(|dims| !m.has_dimension_names(dims))
        {
            return false;
        }
        self.filter.as_ref().is_none_or(|c| c.matches(m))
    }

    /// The group of metric `m` (`Other` for a missing key).
    pub fn group_of(&self, m: &MetricId) -> Vec<String> {
        self.group_by
            .iter()
            .map(|k| value_of(m, k).unwrap_or("Other").to_owned())
            .collect()
    }
}

/// Per-bucket statistics `(sum, count, min, max)` of one series.
pub type Buckets = BTreeMap<i64, (f64, f64, f64, f64)>;

/// Aggregates matched series into one series per group, ordered and limited;
/// returns `(label, points)`.
pub fn aggregate(
    q: &Query,
    matched: Vec<(MetricId, Buckets)>,
) -> Vec<(String, BTreeMap<i64, f64>)> {
    let mut groups: BTreeMap<Vec<String>, Buckets> = BTreeMap::new();
    for (metric, buckets) in matched {
        let group = groups.entry(q.group_of(&metric)).or_default();
        for (t, (sum, count, min, max)) in buckets {
            let slot = group
                .entry(t)
                .or_insert((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
            slot.0 += sum;
            slot.1 += count;
            slot.2 = slot.2.min(min);
            slot.3 = slot.3.max(max);
        }
    }
    let mut out: Vec<(String, Buckets)> =
        groups.into_iter().map(|(k, v)| (k.join(" "), v)).collect();
    if let Some((f, descending)) = q.order {
        let score = |b: &Buckets| {
            let (sum, count, min, max) = b
                .values()
                .fold((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY), |a, x| {
                    (a.0 + x.0, a.1 + x.1, a.2.min(x.2), a.3.max(x.3))
                });
            f.apply(sum, count, min, max)
        };
        out.sort_by(|a, b| {
            let (x, y) = (score(&a.1), score(&b.1));
            if descending {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            }
        });
    }
    out.truncate(q.limit.unwrap_or(500).min(500));
    out.into_iter()
        .map(|(label, b)| {
            (
                label,
                b.into_iter()
                    .map(|(t, (s, c, mn, mx))| (t, q.func.apply(s, c, mn, mx)))
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::Dimension;

    fn m(lb: &str, az: Option<&str>) -> MetricId {
        let mut dimensions = vec![Dimension {
            name: "LoadBalancer".into(),
            value: lb.into(),
        }];
        if let Some(az) = az {
            dimensions.push(Dimension {
                name: "AvailabilityZone".into(),
                value: az.into(),
            });
        }
        dimensions.sort();
        MetricId {
            namespace: "AWS/ApplicationELB".into(),
            name: "RequestCount".into(),
            dimensions,
        }
    }

    #[test]
    fn parse_and_select() {
        let q = parse(r#"SELECT SUM(RequestCount) FROM SCHEMA("AWS/ApplicationELB", LoadBalancer, AvailabilityZone) WHERE LoadBalancer = 'app/lb-1' GROUP BY AvailabilityZone ORDER BY MAX() DESC LIMIT 5"#).unwrap();
        assert_eq!(
            (q.func, q.limit, q.order),
            (Func::Sum, Some(5), Some((Func::Max, true)))
        );
        assert!(q.selects(&m("app/lb-1", Some("us-east-1a"))));
        assert!(!q.selects(&m("app/lb-2", Some("us-east-1a"))));
        assert!(
            !q.selects(&m("app/lb-1", None)),
            "schema needs exactly both dimensions"
        );
        let q = parse(r#"select avg(RequestCount) from "AWS/ApplicationELB" where LoadBalancer LIKE 'app/%' AND NOT AvailabilityZone IN ('us-east-1b')"#).unwrap();
        assert!(q.selects(&m("app/lb-1", None)));
        assert!(!q.selects(&m("app/lb-1", Some("us-east-1b"))));
        assert!(q.selects(&m("app/lb-1", Some("us-east-1a"))));
        assert!(parse("SELECT MEDIAN(x) FROM ns").is_err());
        assert!(parse("SELECT SUM(x) FROM ns LIMIT 501").is_err());
        assert!(parse("SELECT SUM(x)").is_err());
        assert!(is_sql("  select SUM(x) FROM y") && !is_sql("SUM(METRICS())"));
    }

    #[test]
    fn aggregate_groups_order_limit() {
        let q = parse(r#"SELECT SUM(RequestCount) FROM "AWS/ApplicationELB" GROUP BY AvailabilityZone ORDER BY MAX() DESC LIMIT 2"#).unwrap();
        let b = |pairs: &[(i64, f64)]| {
            pairs
                .iter()
                .map(|(t, v)| (*t, (*v, 1.0, *v, *v)))
                .collect::<Buckets>()
        };
        let out = aggregate(
            &q,
            vec![
                (m("a", Some("z1")), b(&[(0, 1.0), (60, 2.0)])),
                (m("b", Some("z1")), b(&[(0, 10.0)])),
                (m("c", Some("z2")), b(&[(0, 50.0)])),
                (m("d", None), b(&[(0, 3.0)])),
            ],
        );
        assert_eq!(
            out.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
            ["z2", "z1"]
        );
        assert_eq!(out[1].1.get(&0), Some(&11.0));
        let all = parse(
            r#"SELECT COUNT(RequestCount) FROM "AWS/ApplicationELB" GROUP BY AvailabilityZone"#,
        )
        .unwrap();
        let out = aggregate(&all, vec![(m("d", None), b(&[(0, 3.0)]))]);
        assert_eq!(out[0].0, "Other");
    }
}
