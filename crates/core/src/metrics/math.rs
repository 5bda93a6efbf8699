//! Metric math (`spec/cloudwatch.md` §6.3–6.5): a parser for the expression
//! language and an evaluator over sparse series on the request's bucket grid.
//! SEARCH and ANOMALY_DETECTION_BAND are answered by the [`Context`], which
//! owns the metric store.

use std::collections::BTreeMap;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Number literal.
    Num(f64),
    /// Reference to another query.
    Id(String),
    /// `"string"` argument.
    Str(String),
    /// Upper-case keyword (`REPEAT`, `LINEAR`, `AVG`, `ASC`, …).
    Keyword(String),
    /// Unary minus.
    Neg(Box<Expr>),
    /// Binary operator.
    Bin(&'static str, Box<Expr>, Box<Expr>),
    /// Function call.
    Call(String, Vec<Expr>),
    /// `[a, b, …]`.
    Array(Vec<Expr>),
}

/// A sparse series: timestamp (epoch ms) → value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Label of the series.
    pub label: String,
    /// Points, ascending.
    pub points: BTreeMap<i64, f64>,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum MValue {
    /// S.
    Scalar(f64),
    /// TS.
    Series(Series),
    /// TS[].
    Array(Vec<Series>),
    /// A string argument.
    Str(String),
    /// A keyword argument.
    Keyword(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Ident(String),
    Str(String),
    Op(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Token::Num(
                text.parse().map_err(|_| format!("invalid number {text}"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".to_owned());
            }
            out.push(Token::Str(chars[start..i].iter().collect()));
            i += 1;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = ["==", "!=", "<=", ">=", "&&", "||"]
                .into_iter()
                .find(|o| *o == two);
            if let Some(op) = op {
                out.push(Token::Op(op));
                i += 2;
            } else {
                let op = ["+", "-", "*", "/", "^", "<", ">", "(", ")", "[", "]", ","]
                    .into_iter()
                    .find(|o| o.starts_with(c))
                    .ok_or_else(|| format!("unexpected character '{c}'"))?;
                out.push(Token::Op(op));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat_op(&mut self, ops: &[&'static str]) -> Option<&'static str> {
        match self.peek() {
            Some(Token::Op(o)) if ops.contains(o) => {
                let o = *o;
                self.pos += 1;
                Some(o)
            }
            Some(Token::Ident(w))
                if (w == "AND" && ops.contains(&"&&")) || (w == "OR" && ops.contains(&"||")) =>
            {
                let o = if w == "AND" { "&&" } else { "||" };
                self.pos += 1;
                Some(o)
            }
            _ => None,
        }
    }

    fn binary(&mut self, level: usize) -> Result<Expr, String> {
        const LEVELS: [&[&str]; 5] = [
            &["||"],
            &["&&"],
            &["==", "!=", "<=", ">=", "<", ">"],
            &["+", "-"],
            &["*", "/"],
        ];
        if level == LEVELS.len() {
            return self.power();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.eat_op(LEVELS[level]) {
            let right = self.binary(level + 1)?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
            if level == 2 {
                break; // comparisons do not chain
            }
        }
        Ok(left)
    }

    fn power(&mut self) -> Result<Expr, String> {
        let base = self.unary()?;
        if self.eat_op(&["^"]).is_some() {
            let exponent = self.power()?;
            return Ok(Expr::Bin("^", Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op(&["-"]).is_some() {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn list(&mut self, close: &'static str) -> Result<Vec<Expr>, String> {
        let mut items = Vec::new();
        if self.eat_op(&[close]).is_some() {
            return Ok(items);
        }
        loop {
            items.push(self.binary(0)?);
            if self.eat_op(&[close]).is_some() {
                return Ok(items);
            }
            if self.eat_op(&[","]).is_none() {
                return Err(format!("expected ',' or '{close}'"));
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self.peek().cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        match token {
            Token::Num(n) => Ok(Expr::Num(n)),
            Token::Str(s) => Ok(Expr::Str(s)),
            Token::Op("(") => {
                let inner = self.binary(0)?;
                self.eat_op(&[")"]).ok_or("expected ')'")?;
                Ok(inner)
            }
            Token::Op("[") => Ok(Expr::Array(self.list("]")?)),
            Token::Ident(name) => {
                if self.eat_op(&["("]).is_some() {
                    if !name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    {
                        return Err(format!("unknown function {name}"));
                    }
                    return Ok(Expr::Call(name, self.list(")")?));
                }
                if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                    Ok(Expr::Id(name))
                } else {
                    Ok(Expr::Keyword(name))
                }
            }
            Token::Op(o) => Err(format!("unexpected '{o}'")),
        }
    }
}

/// Parses an expression.
pub fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        tokens: tokenize(s)?,
        pos: 0,
    };
    let e = p.binary(0)?;
    if p.pos != p.tokens.len() {
        return Err("unexpected trailing input".to_owned());
    }
    Ok(e)
}

/// Ids an expression refers to.
pub fn references(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Id(id) => out.push(id.clone()),
        Expr::Neg(a) => references(a, out),
        Expr::Bin(_, a, b) => {
            references(a, out);
            references(b, out);
        }
        Expr::Call(_, args) | Expr::Array(args) => args.iter().for_each(|a| references(a, out)),
        _ => {}
    }
}

/// What evaluation can ask of the request.
pub trait Context {
    /// The value of query `id` (a MetricStat series or an evaluated expression).
    fn resolve(&mut self, id: &str) -> Result<MValue, String>;
    /// Every MetricStat query's series, in request order, as `(id, series)`.
    fn metrics(&mut self) -> Vec<(String, Series)>;
    /// The period of MetricStat query `id`.
    fn period(&self, id: &str) -> Option<i64>;
    /// Bucket timestamps of the request grid (epoch ms), ascending.
    fn grid(&self) -> &[i64];
    /// ANOMALY_DETECTION_BAND of MetricStat query `id`, `k` deviations wide:
    /// `[upper, lower]` on the query's grid (empty while untrained).
    fn band(&mut self, id: &str, k: f64) -> Result<MValue, String>;
    /// SEARCH: every matching metric as a series of `stat` at `period`.
    fn search(
        &mut self,
        query: &str,
        stat: &str,
        period: Option<i64>,
    ) -> Result<Vec<Series>, String>;
}

fn series_op(a: &Series, b: &Series, f: impl Fn(f64, f64) -> Option<f64>) -> Series {
    let mut keys: Vec<i64> = a.points.keys().chain(b.points.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let points = keys
        .into_iter()
        .filter_map(|t| {
            let x = a.points.get(&t).copied().unwrap_or(0.0);
            let y = b.points.get(&t).copied().unwrap_or(0.0);
            f(x, y).map(|v| (t, v))
        })
        .collect();
    Series {
        label: a.label.clone(),
        points,
    }
}

fn map_series(s: &Series, f: impl Fn(f64) -> f64) -> Series {
    Series {
        label: s.label.clone(),
        points: s.points.iter().map(|(t, v)| (*t, f(*v))).collect(),
    }
}

fn apply_op(op: &str, x: f64, y: f64) -> Option<f64> {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    Some(match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x * y,
        "/" if y == 0.0 => return None,
        "/" => x / y,
        "^" => x.powf(y),
        "==" => b(x == y),
        "!=" => b(x != y),
        "<" => b(x < y),
        ">" => b(x > y),
        "<=" => b(x <= y),
        ">=" => b(x >= y),
        "&&" => b(x != 0.0 && y != 0.0),
        "||" => b(x != 0.0 || y != 0.0),
        _ => return None,
    })
}

fn binary(op: &str, a: MValue, b: MValue) -> Result<MValue, String> {
    use MValue::*;
    Ok(match (a, b) {
        (Scalar(x), Scalar(y)) => Scalar(apply_op(op, x, y).unwrap_or(f64::NAN)),
        (Series(s), Scalar(y)) => Series(Series_from(
            s.points
                .iter()
                .filter_map(|(t, x)| apply_op(op, *x, y).map(|v| (*t, v))),
            &s.label,
        )),
        (Scalar(x), Series(s)) => Series(Series_from(
            s.points
                .iter()
                .filter_map(|(t, y)| apply_op(op, x, *y).map(|v| (*t, v))),
            &s.label,
        )),
        (Series(a), Series(b)) => Series(series_op(&a, &b, |x, y| apply_op(op, x, y))),
        (Array(items), other) => Array(
            items
                .into_iter()
                .map(|s| match binary(op, MValue::Series(s), other.clone())? {
                    MValue::Series(s) => Ok(s),
                    _ => Err("invalid operand".to_owned()),
                })
                .collect::<Result<_, String>>()?,
        ),
        (other, Array(items)) => Array(
            items
                .into_iter()
                .map(|s| match binary(op, other.clone(), MValue::Series(s))? {
                    MValue::Series(s) => Ok(s),
                    _ => Err("invalid operand".to_owned()),
                })
                .collect::<Result<_, String>>()?,
        ),
        _ => return Err(format!("invalid operands for {op}")),
    })
}

#[allow(non_snake_case)] // reads as a constructor
fn Series_from(points: impl Iterator<Item = (i64, f64)>, label: &str) -> Series {
    Series {
        label: label.to_owned(),
        points: points.collect(),
    }
}

fn as_series(v: MValue, what: &str) -> Result<Series, String> {
    match v {
        MValue::Series(s) => Ok(s),
        _ => Err(format!("{what} expects a time series")),
    }
}

fn as_scalar(v: &MValue, what: &str) -> Result<f64, String> {
    match v {
        MValue::Scalar(x) => Ok(*x),
        _ => Err(format!("{what} expects a scalar")),
    }
}

fn reduce(name: &str, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    Some(match name {
        "SUM" => values.iter().sum(),
        "AVG" => values.iter().sum::<f64>() / n,
        "MIN" => values.iter().copied().fold(f64::INFINITY, f64::min),
        "MAX" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "STDDEV" => {
            let mean = values.iter().sum::<f64>() / n;
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
        }
        "DATAPOINT_COUNT" => n,
        _ => return None,
    })
}

fn per_series(v: MValue, f: &dyn Fn(&Series) -> Series) -> Result<MValue, String> {
    match v {
        MValue::Series(s) => Ok(MValue::Series(f(&s))),
        MValue::Array(items) => Ok(MValue::Array(items.iter().map(f).collect())),
        _ => Err("expects a time series".to_owned()),
    }
}

/// Evaluates `e`.
pub fn eval(e: &Expr, cx: &mut dyn Context) -> Result<MValue, String> {
    match e {
        Expr::Num(n) => Ok(MValue::Scalar(*n)),
        Expr::Str(s) => Ok(MValue::Str(s.clone())),
        Expr::Keyword(k) => Ok(MValue::Keyword(k.clone())),
        Expr::Id(id) => cx.resolve(id),
        Expr::Neg(a) => binary("*", eval(a, cx)?, MValue::Scalar(-1.0)),
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, cx)?, eval(b, cx)?);
            binary(op, a, b)
        }
        Expr::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match eval(item, cx)? {
                    MValue::Series(s) => out.push(s),
                    MValue::Array(more) => out.extend(more),
                    _ => return Err("array members must be time series".to_owned()),
                }
            }
            Ok(MValue::Array(out))
        }
        Expr::Call(name, args) => call(name, args, cx),
    }
}

fn call(name: &str, args: &[Expr], cx: &mut dyn Context) -> Result<MValue, String> {
    let arity = |min: usize, max: usize| -> Result<(), String> {
        if args.len() < min || args.len() > max {
            Err(format!("{name} takes {min} to {max} arguments"))
        } else {
            Ok(())
        }
    };
    match name {
        "ABS" | "CEIL" | "FLOOR" | "LOG" | "LOG10" => {
            arity(1, 1)?;
            let f: fn(f64) -> f64 = match name {
                "ABS" => f64::abs,
                "CEIL" => f64::ceil,
                "FLOOR" => f64::floor,
                "LOG" => f64::ln,
                _ => f64::log10,
            };
            match eval(&args[0], cx)? {
                MValue::Scalar(x) => Ok(MValue::Scalar(f(x))),
                v => per_series(v, &|s| map_series(s, f)),
            }
        }
        "AVG" | "MIN" | "MAX" | "SUM" | "STDDEV" | "DATAPOINT_COUNT" => {
            arity(1, 1)?;
            match eval(&args[0], cx)? {
                MValue::Series(s) => {
                    let values: Vec<f64> = s.points.values().copied().collect();
                    Ok(MValue::Scalar(reduce(name, &values).unwrap_or(
                        if name == "DATAPOINT_COUNT" {
                            0.0
                        } else {
                            f64::NAN
                        },
                    )))
                }
                MValue::Array(items) => {
                    let mut times: Vec<i64> = items
                        .iter()
                        .flat_map(|s| s.points.keys().copied())
                        .collect();
                    times.sort_unstable();
                    times.dedup();
                    let zero_filled = matches!(name, "SUM" | "AVG");
                    let points = times
                        .into_iter()
                        .filter_map(|t| {
                            let values: Vec<f64> = items
                                .iter()
                                .filter_map(|s| {
                                    s.points.get(&t).copied().or(zero_filled.then_some(0.0))
                                })
                                .collect();
                            reduce(name, &values).map(|v| (t, v))
                        })
                        .collect();
                    Ok(MValue::Series(Series {
                        label: name.to_owned(),
                        points,
                    }))
                }
                _ => Err(format!("{name} expects a time series or an array")),
            }
        }
        "DIFF" | "DIFF_TIME" | "RATE" => {
            arity(1, 1)?;
            let kind = name.to_owned();
            per_series(eval(&args[0], cx)?, &move |s| {
                let pts: Vec<(i64, f64)> = s.points.iter().map(|(t, v)| (*t, *v)).collect();
                let points = pts
                    .windows(2)
                    .map(|w| {
                        let dt = (w[1].0 - w[0].0) as f64 / 1000.0;
                        let v = match kind.as_str() {
                            "DIFF" => w[1].1 - w[0].1,
                            "DIFF_TIME" => dt,
                            _ => (w[1].1 - w[0].1) / dt,
                        };
                        (w[1].0, v)
                    })
                    .collect();
                Series {
                    label: s.label.clone(),
                    points,
                }
            })
        }
        "RUNNING_SUM" => {
            arity(1, 1)?;
            per_series(eval(&args[0], cx)?, &|s| {
                let mut total = 0.0;
                Series {
                    label: s.label.clone(),
                    points: s
                        .points
                        .iter()
                        .map(|(t, v)| {
                            total += v;
                            (*t, total)
                        })
                        .collect(),
                }
            })
        }
        "FILL" => {
            arity(2, 2)?;
            let target = eval(&args[0], cx)?;
            let with = eval(&args[1], cx)?;
            let grid = cx.grid().to_vec();
            per_series(target, &|s| fill(s, &with, &grid))
        }
        "FIRST" | "LAST" => {
            arity(1, 1)?;
            match eval(&args[0], cx)? {
                MValue::Array(items) => {
                    let pick = if name == "FIRST" {
                        items.first()
                    } else {
                        items.last()
                    };
                    Ok(MValue::Series(pick.cloned().unwrap_or_default()))
                }
                _ => Err(format!("{name} expects an array")),
            }
        }
        "IF" => {
            arity(2, 3)?;
            let condition = eval(&args[0], cx)?;
            let yes = eval(&args[1], cx)?;
            let no = args.get(2).map(|a| eval(a, cx)).transpose()?;
            if_(condition, yes, no)
        }
        "METRICS" => {
            arity(0, 1)?;
            let filter = match args.first().map(|a| eval(a, cx)).transpose()? {
                None => None,
                Some(MValue::Str(s)) => Some(s),
                Some(_) => return Err("METRICS takes a string".to_owned()),
            };
            Ok(MValue::Array(
                cx.metrics()
                    .into_iter()
                    .filter(|(id, _)| filter.as_ref().is_none_or(|f| id.contains(f.as_str())))
                    .map(|(_, s)| s)
                    .collect(),
            ))
        }
        "METRIC_COUNT" => {
            arity(1, 1)?;
            match eval(&args[0], cx)? {
                MValue::Array(items) => Ok(MValue::Scalar(items.len() as f64)),
                _ => Err("METRIC_COUNT expects an array".to_owned()),
            }
        }
        "PERIOD" => {
            arity(1, 1)?;
            match &args[0] {
                Expr::Id(id) => cx
                    .period(id)
                    .map(|p| MValue::Scalar(p as f64))
                    .ok_or_else(|| format!("PERIOD needs a metric, not {id}")),
                _ => Err("PERIOD expects a metric id".to_owned()),
            }
        }
        "REMOVE_EMPTY" => {
            arity(1, 1)?;
            match eval(&args[0], cx)? {
                MValue::Array(items) => Ok(MValue::Array(
                    items.into_iter().filter(|s| !s.points.is_empty()).collect(),
                )),
                _ => Err("REMOVE_EMPTY expects an array".to_owned()),
            }
        }
        "SLICE" => {
            arity(2, 3)?;
            let MValue::Array(items) = eval(&args[0], cx)? else {
                return Err("SLICE expects an array".to_owned());
            };
            let from = as_scalar(&eval(&args[1], cx)?, "SLICE")? as usize;
            let to = match args.get(2) {
                Some(a) => as_scalar(&eval(a, cx)?, "SLICE")? as usize,
                None => items.len(),
            };
            let slice: Vec<Series> = items
                .into_iter()
                .skip(from)
                .take(to.saturating_sub(from))
                .collect();
            Ok(if slice.len() == 1 {
                MValue::Series(slice.into_iter().next().unwrap_or_default())
            } else {
                MValue::Array(slice)
            })
        }
        "SORT" => {
            arity(3, 4)?;
            let MValue::Array(items) = eval(&args[0], cx)? else {
                return Err("SORT expects an array".to_owned());
            };
            let Expr::Keyword(f) = &args[1] else {
                return Err("SORT needs AVG, MIN, MAX or SUM".to_owned());
            };
            let Expr::Keyword(order) = &args[2] else {
                return Err("SORT needs ASC or DESC".to_owned());
            };
            if !matches!(f.as_str(), "AVG" | "MIN" | "MAX" | "SUM")
                || !matches!(order.as_str(), "ASC" | "DESC")
            {
                return Err("SORT needs AVG, MIN, MAX or SUM and ASC or DESC".to_owned());
            }
            let keep = match args.get(3) {
                Some(a) => as_scalar(&eval(a, cx)?, "SORT")? as usize,
                None => items.len(),
            };
            let mut keyed: Vec<(f64, Series)> = items
                .into_iter()
                .map(|s| {
                    (
                        reduce(f, &s.points.values().copied().collect::<Vec<_>>())
                            .unwrap_or(f64::NAN),
                        s,
                    )
                })
                .collect();
            // A stable sort keeps the original order of ties.
            keyed.sort_by(|a, b| {
                if order == "ASC" {
                    a.0.total_cmp(&b.0)
                } else {
                    b.0.total_cmp(&a.0)
                }
            });
            Ok(MValue::Array(
                keyed.into_iter().take(keep).map(|(_, s)| s).collect(),
            ))
        }
        "TIME_SERIES" => {
            arity(1, 1)?;
            let v = as_scalar(&eval(&args[0], cx)?, "TIME_SERIES")?;
            Ok(MValue::Series(Series {
                label: "TIME_SERIES".to_owned(),
                points: cx.grid().iter().map(|t| (*t, v)).collect(),
            }))
        }
        "MINUTE" | "HOUR" | "DAY" | "DATE" | "MONTH" | "YEAR" | "EPOCH" => {
            arity(1, 1)?;
            let s = as_series(eval(&args[0], cx)?, name)?;
            let points = cx.grid().iter().map(|t| (*t, calendar(name, *t))).collect();
            Ok(MValue::Series(Series {
                label: s.label,
                points,
            }))
        }
        "SEARCH" => {
            arity(2, 3)?;
            let (MValue::Str(query), MValue::Str(stat)) =
                (eval(&args[0], cx)?, eval(&args[1], cx)?)
            else {
                return Err("SEARCH takes a search expression and a statistic in quotes".to_owned());
            };
            let period = match args.get(2) {
                Some(a) => Some(as_scalar(&eval(a, cx)?, "SEARCH")? as i64),
                None => None,
            };
            Ok(MValue::Array(cx.search(&query, &stat, period)?))
        }
        "ANOMALY_DETECTION_BAND" => {
            arity(1, 2)?;
            let Expr::Id(id) = &args[0] else {
                return Err(
                    "ANOMALY_DETECTION_BAND takes the id of a metric as its first argument"
                        .to_owned(),
                );
            };
            let k = match args.get(1) {
                Some(a) => as_scalar(&eval(a, cx)?, "ANOMALY_DETECTION_BAND")?,
                None => 2.0,
            };
            if !k.is_finite() || k < 0.0 {
                return Err("ANOMALY_DETECTION_BAND needs a band width of 0 or more".to_owned());
            }
            cx.band(id, k)
        }
        "INSIGHT_RULE_METRIC" | "SERVICE_QUOTA" | "LAMBDA" | "DB_PERF_INSIGHTS" => {
            Err(format!("{name} is not supported by trailwatch yet"))
        }
        other => Err(format!("unknown function {other}")),
    }
}

fn calendar(name: &str, t: i64) -> f64 {
    let secs = t.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (match name {
        "MINUTE" => secs.div_euclid(60).rem_euclid(60),
        "HOUR" => secs.div_euclid(3600).rem_euclid(24),
        "DAY" => (days + 3).rem_euclid(7) + 1, // 1970-01-01 was a Thursday; Monday = 1
        "DATE" => day,
        "MONTH" => month,
        "YEAR" => year,
        _ => secs,
    }) as f64
}

fn fill(s: &Series, with: &MValue, grid: &[i64]) -> Series {
    let mut points = s.points.clone();
    for (i, t) in grid.iter().enumerate() {
        if points.contains_key(t) {
            continue;
        }
        let value = match with {
            MValue::Scalar(v) => Some(*v),
            MValue::Series(other) => other.points.get(t).copied(),
            MValue::Keyword(k) if k == "REPEAT" => s.points.range(..t).next_back().map(|(_, v)| *v),
            MValue::Keyword(k) if k == "LINEAR" => {
                let before = s.points.range(..t).next_back();
                let after = s.points.range(t..).next();
                match (before, after) {
                    (Some((t0, v0)), Some((t1, v1))) => {
                        Some(v0 + (v1 - v0) * (*t - t0) as f64 / (t1 - t0) as f64)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let _ = i;
        if let Some(v) = value {
            points.insert(*t, v);
        }
    }
    Series {
        label: s.label.clone(),
        points,
    }
}

fn if_(condition: MValue, yes: MValue, no: Option<MValue>) -> Result<MValue, String> {
    match condition {
        MValue::Scalar(c) => Ok(if c != 0.0 {
            yes
        } else {
            no.unwrap_or(MValue::Series(Series::default()))
        }),
        MValue::Series(cond) => {
            let mut points = BTreeMap::new();
            for (t, c) in &cond.points {
                let value = if *c != 0.0 {
                    match &yes {
                        MValue::Scalar(v) => Some(*v),
                        MValue::Series(s) => Some(s.points.get(t).copied().unwrap_or(0.0)),
                        _ => return Err("IF branches must be scalars or time series".to_owned()),
                    }
                } else {
                    match &no {
                        None => None,
                        Some(MValue::Scalar(v)) => Some(*v),
                        Some(MValue::Series(s)) => s.points.get(t).copied(),
                        Some(_) => {
                            return Err("IF branches must be scalars or time series".to_owned())
                        }
                    }
                };
                if let Some(v) = value {
                    points.insert(*t, v);
                }
            }
            Ok(MValue::Series(Series {
                label: cond.label,
                points,
            }))
        }
        _ => Err("IF condition must be a scalar or a time series".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        series: Vec<(String, Series)>,
        grid: Vec<i64>,
    }

    impl Context for Fixed {
        fn resolve(&mut self, id: &str) -> Result<MValue, String> {
            self.series
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| MValue::Series(s.clone()))
                .ok_or_else(|| format!("Unrecognized metric id {id}"))
        }
        fn metrics(&mut self) -> Vec<(String, Series)> {
            self.series.clone()
        }
        fn period(&self, _: &str) -> Option<i64> {
            Some(60)
        }
        fn grid(&self) -> &[i64] {
            &self.grid
        }
        fn search(&mut self, _: &str, _: &str, _: Option<i64>) -> Result<Vec<Series>, String> {
            Err("no search in this test".to_owned())
        }
        fn band(&mut self, _: &str, _: f64) -> Result<MValue, String> {
            Err("no band in this test".to_owned())
        }
    }

    fn series(label: &str, values: &[Option<f64>]) -> Series {
        Series {
            label: label.to_owned(),
            points: values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as i64 * 60_000, v)))
                .collect(),
        }
    }

    fn run(expr: &str, cx: &mut Fixed) -> Vec<Option<f64>> {
        match eval(&parse(expr).unwrap(), cx).unwrap() {
            MValue::Series(s) => cx
                .grid
                .clone()
                .iter()
                .map(|t| s.points.get(t).copied())
                .collect(),
            other => panic!("{expr}: {other:?}"),
        }
    }

    fn truth_table() -> Fixed {
        Fixed {
            series: vec![
                (
                    "metric1".into(),
                    series("m1", &[Some(30.0), Some(20.0), Some(0.0), Some(0.0)]),
                ),
                (
                    "metric2".into(),
                    series("m2", &[Some(20.0), None, Some(20.0), None]),
                ),
            ],
            grid: (0..4).map(|i| i * 60_000).collect(),
        }
    }

    #[test]
    fn spec_truth_table_and_union_rule() {
        let mut cx = truth_table();
        let v = |x: &[f64]| x.iter().map(|v| Some(*v)).collect::<Vec<_>>();
        assert_eq!(run("metric1 < metric2", &mut cx), v(&[0.0, 0.0, 1.0, 0.0]));
        assert_eq!(
            run("metric1 >= 30", &mut cx),
            [Some(1.0), Some(0.0), Some(0.0), Some(0.0)]
        );
        assert_eq!(
            run("metric1 > 15 AND metric2 > 15", &mut cx),
            v(&[1.0, 0.0, 0.0, 0.0])
        );
        assert_eq!(
            run("metric1 + metric2", &mut cx),
            v(&[50.0, 20.0, 20.0, 0.0])
        );
        assert_eq!(
            run("metric2 / metric1", &mut cx),
            [Some(20.0 / 30.0), Some(0.0), None, None],
            "division by zero drops the point"
        );
        assert_eq!(run("-metric1 + 2 ^ 2 ^ 3", &mut cx)[0], Some(-30.0 + 256.0));
    }

    #[test]
    fn spec_if_table() {
        let mut cx = Fixed {
            series: vec![
                (
                    "metric1".into(),
                    series("a", &[Some(1.0), Some(1.0), Some(0.0), Some(0.0), None]),
                ),
                (
                    "metric2".into(),
                    series("b", &[Some(30.0), None, Some(0.0), Some(0.0), Some(30.0)]),
                ),
                (
                    "metric3".into(),
                    series("c", &[Some(0.0), Some(0.0), Some(20.0), None, Some(20.0)]),
                ),
            ],
            grid: (0..5).map(|i| i * 60_000).collect(),
        };
        assert_eq!(
            run("IF(metric1, metric2, metric3)", &mut cx),
            [Some(30.0), Some(0.0), Some(20.0), None, None]
        );
        assert_eq!(
            run("IF(metric1, 5, metric3)", &mut cx),
            [Some(5.0), Some(5.0), Some(20.0), None, None]
        );
        assert_eq!(
            run("IF(metric1, metric2, 5)", &mut cx),
            [Some(30.0), Some(0.0), Some(5.0), Some(5.0), None]
        );
    }

    #[test]
    fn functions() {
        let mut cx = truth_table();
        assert_eq!(
            run("SUM(METRICS())", &mut cx),
            [Some(50.0), Some(20.0), Some(20.0), Some(0.0)]
        );
        assert_eq!(
            run("MAX([metric1, metric2])", &mut cx),
            [Some(30.0), Some(20.0), Some(20.0), Some(0.0)]
        );
        assert_eq!(
            run("FILL(metric2, REPEAT)", &mut cx),
            [Some(20.0), Some(20.0), Some(20.0), Some(20.0)]
        );
        assert_eq!(
            run("FILL(metric2, 7)", &mut cx),
            [Some(20.0), Some(7.0), Some(20.0), Some(7.0)]
        );
        assert_eq!(
            run("DIFF(metric1)", &mut cx),
            [None, Some(-10.0), Some(-20.0), Some(0.0)]
        );
        assert_eq!(run("RATE(metric1)", &mut cx)[1], Some(-10.0 / 60.0));
        assert_eq!(
            run("RUNNING_SUM(metric1)", &mut cx),
            [Some(30.0), Some(50.0), Some(50.0), Some(50.0)]
        );
        assert_eq!(run("metric1 * 0 + AVG(metric1)", &mut cx)[0], Some(12.5));
        assert_eq!(
            run("TIME_SERIES(METRIC_COUNT(METRICS(\"2\")))", &mut cx),
            [Some(1.0); 4]
        );
        assert_eq!(
            run("FIRST(SORT(METRICS(), MAX, ASC))", &mut cx),
            [Some(20.0), None, Some(20.0), None]
        );
        assert_eq!(
            run("DAY(metric1)", &mut cx)[0],
            Some(4.0),
            "1970-01-01 was a Thursday"
        );
        assert_eq!(run("YEAR(metric1)", &mut cx)[0], Some(1970.0));
        assert!(parse("metric1 +").is_err());
        assert!(parse("foo(metric1)").is_err());
        assert!(eval(&parse("SEARCH('{AWS/EC2}', 'Average')").unwrap(), &mut cx).is_err());
        assert!(eval(&parse("nope + 1").unwrap(), &mut cx).is_err());
    }
}
