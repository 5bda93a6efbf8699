//! Logs Insights (`spec/logs.md` §10), first part: the query language's
//! lexer and parser for `fields`, `display`, `filter`, `stats` (count, sum,
//! avg, min, max, pct, `by` fields and `bin()`), `sort`, `limit`, `parse`
//! (glob) and `dedup`; records with their system and discovered JSON fields;
//! evaluation with three-valued logic; and the result formatting of §10.7.
//! Other commands and functions answer MalformedQueryException for now.

use std::collections::BTreeMap;

use trailwatch_types::Timestamp;

/// A query that does not parse: the message and the 0-based, end-exclusive
/// character offsets of the offending text (MalformedQueryException).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// `message`.
    pub message: String,
    /// `startCharOffset`.
    pub start: usize,
    /// `endCharOffset`.
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64, String),
    Duration(i64, String),
    Regex(String),
    Sym(&'static str),
}

fn lex(q: &str) -> Result<Vec<(Tok, usize, usize)>, Malformed> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let bad = |s: usize, e: usize, what: &str| Malformed {
        message: format!(
            "unexpected symbol found {what} at line 1 and position {}",
            s + 1
        ),
        start: s,
        end: e,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(bad(start, i, "end of string")),
                    Some('\\') => {
                        if let Some(n) = chars.get(i + 1) {
                            s.push(*n);
                        }
                        i += 2;
                    }
                    Some(q2) if *q2 == c => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        s.push(*other);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), start, i));
            continue;
        }
        if c == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == '`')
                .ok_or_else(|| bad(start, chars.len(), "`"))?;
            let name: String = chars[i + 1..i + 1 + end].iter().collect();
            i += end + 2;
            out.push((Tok::Ident(name), start, i));
            continue;
        }
        if c == '/'
            && matches!(out.last(), Some((Tok::Ident(k), _, _)) if k.eq_ignore_ascii_case("like"))
        {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == '/')
                .ok_or_else(|| bad(start, chars.len(), "/"))?;
            let re: String = chars[i + 1..i + 1 + end].iter().collect();
            i += end + 2;
            out.push((Tok::Regex(re), start, i));
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if let Ok(n) = text.parse::<f64>() {
                out.push((Tok::Num(n, text), start, i));
            } else {
                let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                let unit = &text[digits.len()..];
                let n: i64 = digits.parse().map_err(|_| bad(start, i, &text))?;
                let (ms, cap) = match unit {
                    "ms" => (1, 1000),
                    "s" | "sec" => (1000, 60),
                    "m" | "min" => (60_000, 60),
                    "h" | "hour" => (3_600_000, 24),
                    "d" | "day" => (86_400_000, i64::MAX),
                    "w" | "week" => (7 * 86_400_000, i64::MAX),
                    _ => return Err(bad(start, i, &text)),
                };
                if n < 1 || n > cap {
                    return Err(bad(start, i, &text));
                }
                out.push((Tok::Duration(n * ms, text), start, i));
            }
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '@' {
            while i < chars.len() && (chars[i].is_alphanumeric() || "_.@".contains(chars[i])) {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start, i));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = ["!=", "<=", ">=", "=~"]
            .into_iter()
            .find(|s| two == *s)
            .or_else(|| {
                [
                    "|", ",", "(", ")", "=", "<", ">", "+", "-", "*", "/", "%", "^", "[", "]",
                ]
                .into_iter()
                .find(|s| s.starts_with(c))
            });
        match sym {
            Some(s) => {
                i += s.chars().count();
                out.push((Tok::Sym(s), start, i));
            }
            None => return Err(bad(start, start + 1, &c.to_string())),
        }
    }
    Ok(out)
}

/// An expression.
#[derive(Debug, Clone)]
enum Expr {
    Field(String),
    Str(String),
    Num(f64),
    Duration(i64),
    Call(String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Like(Box<Expr>, String, bool),
    LikeRegex(Box<Expr>, regex::Regex, bool),
    In(Box<Expr>, Vec<Expr>, bool),
}

#[derive(Debug, Clone)]
enum Command {
    Fields(Vec<(Expr, String)>),
    Display(Vec<String>),
    Filter(Expr),
    Stats(Vec<(String, Vec<Expr>, String)>, Vec<(Expr, String)>),
    Sort(Vec<(String, bool)>),
    Limit(usize),
    Parse(String, String, Vec<String>),
    Dedup(Vec<String>),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    commands: Vec<Command>,
}

struct Parser<'a> {
    toks: &'a [(Tok, usize, usize)],
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn err(&self) -> Malformed {
        let (s, e) = self.toks.get(self.pos).map_or(
            (self.text.chars().count(), self.text.chars().count()),
            |t| (t.1, t.2),
        );
        let found: String = self.text.chars().skip(s).take(e - s).collect();
        Malformed {
            message: format!(
                "unexpected symbol found {found} at line 1 and position {}",
                s + 1
            ),
            start: s,
            end: e,
        }
    }

    fn sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(k)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<String, Malformed> {
        match self.peek() {
            Some(Tok::Ident(x)) => {
                let x = x.clone();
                self.pos += 1;
                Ok(x)
            }
            _ => Err(self.err()),
        }
    }

    /// The source text of tokens `from..self.pos` (the default column name).
    fn text_since(&self, from: usize) -> String {
        let s = self.toks[from].1;
        let e = self.toks[self.pos - 1].2;
        self.text.chars().skip(s).take(e - s).collect()
    }

    fn expr(&mut self) -> Result<Expr, Malformed> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Malformed> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, Malformed> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, Malformed> {
        let left = self.additive()?;
        for op in ["=", "!=", "<=", ">=", "<", ">"] {
            if self.sym(op) {
                return Ok(Expr::Binary(op, Box::new(left), Box::new(self.additive()?)));
            }
        }
        let negate = self.keyword("not");
        if self.keyword("like") || (!negate && self.sym("=~")) {
            return match self.peek().cloned() {
                Some(Tok::Str(s)) => {
                    self.pos += 1;
                    Ok(Expr::Like(Box::new(left), s, negate))
                }
                Some(Tok::Regex(r)) => {
                    self.pos += 1;
                    let re = regex::Regex::new(&r).map_err(|_| self.err())?;
                    Ok(Expr::LikeRegex(Box::new(left), re, negate))
                }
                _ => Err(self.err()),
            };
        }
        if self.keyword("in") {
            if !self.sym("[") {
                return Err(self.err());
            }
            let mut items = vec![self.additive()?];
            while self.sym(",") {
                items.push(self.additive()?);
            }
            if !self.sym("]") {
                return Err(self.err());
            }
            return Ok(Expr::In(Box::new(left), items, negate));
        }
        if negate {
            return Err(self.err());
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, Malformed> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.sym("+") {
                "+"
            } else if self.sym("-") {
                "-"
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, Malformed> {
        let mut left = self.unary()?;
        loop {
            let op = ["*", "/", "%", "^"].into_iter().find(|op| self.sym(op));
            match op {
                Some(op) => left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?)),
                None => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, Malformed> {
        if self.sym("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.sym("(") {
            let e = self.expr()?;
            return if self.sym(")") {
                Ok(e)
            } else {
                Err(self.err())
            };
        }
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Num(n, _)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Duration(ms, _)) => {
                self.pos += 1;
                Ok(Expr::Duration(ms))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.sym("(") {
                    Ok(Expr::Call(name.to_ascii_lowercase(), self.call_args()?))
                } else {
                    Ok(Expr::Field(name))
                }
            }
            _ => Err(self.err()),
        }
    }

    /// Arguments after a call's `(`, through its `)`; `*` stands for itself.
    fn call_args(&mut self) -> Result<Vec<Expr>, Malformed> {
        let mut args = Vec::new();
        if self.sym(")") {
            return Ok(args);
        }
        loop {
            if self.sym("*") {
                args.push(Expr::Str("*".into()));
            } else {
                args.push(self.expr()?);
            }
            if self.sym(")") {
                return Ok(args);
            }
            if !self.sym(",") {
                return Err(self.err());
            }
        }
    }

    fn names(&mut self) -> Result<Vec<String>, Malformed> {
        let mut out = vec![self.ident()?];
        while self.sym(",") {
            out.push(self.ident()?);
        }
        Ok(out)
    }

    fn command(&mut self) -> Result<Command, Malformed> {
        let name = self.ident()?.to_ascii_lowercase();
        match name.as_str() {
            "fields" => {
                let mut items = Vec::new();
                loop {
                    let from = self.pos;
                    let e = self.expr()?;
                    let mut alias = self.text_since(from);
                    if self.keyword("as") {
                        alias = self.ident()?;
                    }
                    items.push((e, alias));
                    if !self.sym(",") {
                        break;
                    }
                }
                Ok(Command::Fields(items))
            }
            "display" => Ok(Command::Display(self.names()?)),
            "filter" => Ok(Command::Filter(self.expr()?)),
            "stats" => {
                let mut aggs = Vec::new();
                loop {
                    let from = self.pos;
                    let f = self.ident()?.to_ascii_lowercase();
                    if !["count", "sum", "avg", "min", "max", "pct"].contains(&f.as_str())
                        || !self.sym("(")
                    {
                        self.pos = from;
                        return Err(self.err());
                    }
                    let args = self.call_args()?;
                    let mut alias = self.text_since(from);
                    if self.keyword("as") {
                        alias = self.ident()?;
                    }
                    aggs.push((f, args, alias));
                    if !self.sym(",") {
                        break;
                    }
                }
                let mut by = Vec::new();
                if self.keyword("by") {
                    loop {
                        let from = self.pos;
                        let e = self.expr()?;
                        let mut alias = self.text_since(from);
                        if self.keyword("as") {
                            alias = self.ident()?;
                        }
                        by.push((e, alias));
                        if !self.sym(",") {
                            break;
                        }
                    }
                }
                Ok(Command::Stats(aggs, by))
            }
            "sort" => {
                let mut keys = Vec::new();
                loop {
                    let f = self.ident()?;
                    let desc = if self.keyword("desc") {
                        true
                    } else {
                        self.keyword("asc");
                        false
                    };
                    keys.push((f, desc));
                    if !self.sym(",") {
                        break;
                    }
                }
                Ok(Command::Sort(keys))
            }
            "limit" => match self.peek() {
                Some(Tok::Num(n, _)) if *n >= 1.0 && *n <= 10_000.0 && n.fract() == 0.0 => {
                    let n = *n as usize;
                    self.pos += 1;
                    Ok(Command::Limit(n))
                }
                _ => Err(self.err()),
            },
            "parse" => {
                let field = self.ident()?;
                let glob = match self.peek().cloned() {
                    Some(Tok::Str(s)) => {
                        self.pos += 1;
                        s
                    }
                    _ => return Err(self.err()),
                };
                if !self.keyword("as") {
                    return Err(self.err());
                }
                let names = self.names()?;
                if names.len() != glob.matches('*').count() {
                    return Err(self.err());
                }
                Ok(Command::Parse(field, glob, names))
            }
            "dedup" => Ok(Command::Dedup(self.names()?)),
            _ => {
                self.pos -= 1;
                Err(self.err())
            }
        }
    }
}

impl Query {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Query, Malformed> {
        let toks = lex(text)?;
        let mut p = Parser {
            toks: &toks,
            pos: 0,
            text,
        };
        let mut commands = Vec::new();
        while p.peek().is_some() {
            commands.push(p.command()?);
            if p.peek().is_some() && !p.sym("|") {
                return Err(p.err());
            }
            // A trailing `|` needs a command after it.
            if p.toks
                .get(p.pos.wrapping_sub(1))
                .is_some_and(|t| t.0 == Tok::Sym("|"))
                && p.peek().is_none()
            {
                return Err(p.err());
            }
        }
        Ok(Query { commands })
    }

    /// The row cap from the query's own `limit` commands, if any.
    pub fn limit(&self) -> Option<usize> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::Limit(n) => Some(*n),
                _ => None,
            })
            .min()
    }
}

/// A record: field name → string value (§10.3).
pub type Record = BTreeMap<String, String>;

/// Builds a record from an event, with JSON fields discovered (flattened).
pub fn record(
    account: &str,
    group: &str,
    stream: &str,
    timestamp: i64,
    ingestion: i64,
    message: &str,
) -> Record {
    let mut r = Record::new();
    r.insert("@timestamp".into(), timestamp.to_string());
    r.insert("@ingestionTime".into(), ingestion.to_string());
    r.insert("@message".into(), message.to_owned());
    r.insert("@logStream".into(), stream.to_owned());
    r.insert("@log".into(), format!("{account}:{group}"));
    if let Ok(serde_json::Value::Object(map)) =
        serde_json::from_str::<serde_json::Value>(message.trim())
    {
        fn flatten(prefix: &str, v: &serde_json::Value, r: &mut Record) {
            if r.len() >= 205 {
                return;
            }
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            if k.starts_with('@') {
                                format!("@{k}")
                            } else {
                                k.clone()
                            }
                        } else {
                            format!("{prefix}.{k}")
                        };
                        flatten(&key, v, r);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        flatten(&format!("{prefix}.{i}"), v, r);
                    }
                }
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => {
                    r.insert(prefix.to_owned(), s.clone());
                }
                other => {
                    r.insert(prefix.to_owned(), other.to_string());
                }
            }
        }
        flatten("", &serde_json::Value::Object(map), &mut r);
    }
    r
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// §10.7 number formatting: integral numbers without a decimal point.
fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn truth(b: bool) -> Option<String> {
    Some(if b { "1" } else { "0" }.to_owned())
}

fn eval(e: &Expr, r: &Record) -> Option<String> {
    match e {
        Expr::Field(f) => r.get(f).cloned(),
        Expr::Str(s) => Some(s.clone()),
        Expr::Num(n) => Some(fmt_num(*n)),
        Expr::Duration(ms) => Some(ms.to_string()),
        Expr::Not(x) => truth(eval(x, r)? == "0"),
        Expr::Neg(x) => Some(fmt_num(-num(&eval(x, r)?)?)),
        Expr::And(a, b) => truth(eval(a, r)? == "1" && eval(b, r)? == "1"),
        Expr::Or(a, b) => {
            let (a, b) = (eval(a, r), eval(b, r));
            if a.as_deref() == Some("1") || b.as_deref() == Some("1") {
                truth(true)
            } else {
                // Three-valued: false when both sides are known, else absent.
                a.and(b).and(truth(false))
            }
        }
        Expr::Binary(op, a, b) => {
            let (a, b) = (eval(a, r)?, eval(b, r)?);
            let numbers = num(&a).zip(num(&b));
            match *op {
                "=" | "!=" | "<" | "<=" | ">" | ">=" => {
                    let ord = match numbers {
                        Some((x, y)) => x.partial_cmp(&y)?,
                        None => a.as_bytes().cmp(b.as_bytes()),
                    };
                    truth(match *op {
                        "=" => ord.is_eq(),
                        "!=" => ord.is_ne(),
                        "<" => ord.is_lt(),
                        "<=" => ord.is_le(),
                        ">" => ord.is_gt(),
                        _ => ord.is_ge(),
                    })
                }
                _ => {
                    let (x, y) = numbers?;
                    let v = match *op {
                        "+" => x + y,
                        "-" => x - y,
                        "*" => x * y,
                        "/" if y != 0.0 => x / y,
                        "%" if y != 0.0 => x % y,
                        "^" => x.powf(y),
                        _ => return None,
                    };
                    v.is_finite().then(|| fmt_num(v))
                }
            }
        }
        Expr::Like(x, s, negate) => truth(eval(x, r)?.contains(s.as_str()) != *negate),
        Expr::LikeRegex(x, re, negate) => truth(re.is_match(&eval(x, r)?) != *negate),
        Expr::In(x, items, negate) => {
            let v = eval(x, r)?;
            let hit = items
                .iter()
                .filter_map(|i| eval(i, r))
                .any(|i| match (num(&v), num(&i)) {
                    (Some(a), Some(b)) => a == b,
                    _ => v == i,
                });
            truth(hit != *negate)
        }
        Expr::Call(name, args) => call(name, args, r),
    }
}

fn call(name: &str, args: &[Expr], r: &Record) -> Option<String> {
    let arg = |i: usize| args.get(i).and_then(|a| eval(a, r));
    match name {
        "ispresent" => truth(arg(0).is_some()),
        "isempty" => truth(arg(0).is_none_or(|s| s.is_empty())),
        "bin" => {
            let period = match args.first() {
                Some(Expr::Duration(ms)) => *ms,
                _ => return None,
            };
            let t = num(r.get("@timestamp")?)? as i64;
            Some((t.div_euclid(period) * period).to_string())
        }
        "abs" => Some(fmt_num(num(&arg(0)?)?.abs())),
        "floor" => Some(fmt_num(num(&arg(0)?)?.floor())),
        "ceil" => Some(fmt_num(num(&arg(0)?)?.ceil())),
        "strlen" => Some(arg(0)?.chars().count().to_string()),
        "toupper" => Some(arg(0)?.to_uppercase()),
        "tolower" => Some(arg(0)?.to_lowercase()),
        "concat" => Some(args.iter().filter_map(|a| eval(a, r)).collect()),
        "coalesce" => args
            .iter()
            .filter_map(|a| eval(a, r))
            .find(|s| !s.is_empty()),
        "strcontains" => truth(arg(0)?.contains(arg(1)?.as_str())),
        _ => None,
    }
}

/// Names of functions this part of Insights evaluates.
const FUNCTIONS: [&str; 12] = [
    "ispresent",
    "isempty",
    "bin",
    "abs",
    "floor",
    "ceil",
    "strlen",
    "toupper",
    "tolower",
    "concat",
    "coalesce",
    "strcontains",
];

fn check_calls(e: &Expr) -> bool {
    match e {
        Expr::Call(n, args) => FUNCTIONS.contains(&n.as_str()) && args.iter().all(check_calls),
        Expr::Not(x) | Expr::Neg(x) | Expr::Like(x, _, _) | Expr::LikeRegex(x, _, _) => {
            check_calls(x)
        }
        Expr::Binary(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
            check_calls(a) && check_calls(b)
        }
        Expr::In(x, items, _) => check_calls(x) && items.iter().all(check_calls),
        _ => true,
    }
}

impl Query {
    /// Refuses functions this part of Insights does not evaluate.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.commands.iter().all(|c| match c {
            Command::Fields(items) => items.iter().all(|(e, _)| check_calls(e)),
            Command::Filter(e) => check_calls(e),
            Command::Stats(aggs, by) => {
                aggs.iter().all(|(_, a, _)| a.iter().all(check_calls))
                    && by.iter().all(|(e, _)| check_calls(e))
            }
            _ => true,
        });
        if ok {
            Ok(())
        } else {
            Err("unsupported function".into())
        }
    }
}

/// One result row: (field, value) in output order.
pub type Row = Vec<(String, String)>;

/// The outcome of running a query over records.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Result rows, formatted.
    pub rows: Vec<Row>,
    /// Records that survived every filter (fed to stats when there is one).
    pub matched: u64,
    /// Whether the rows are aggregates (no `@ptr`).
    pub aggregated: bool,
}

fn format_value(field: &str, v: &str, time_fields: &[String]) -> String {
    if field == "@timestamp" || field == "@ingestionTime" || time_fields.iter().any(|f| f == field)
    {
        if let Some(ms) = num(v) {
            let t = Timestamp::from_millis(ms as i64).to_iso8601_seconds();
            return format!(
                "{} {}.{:03}",
                &t[..10],
                &t[11..19],
                (ms as i64).rem_euclid(1000)
            );
        }
    }
    v.to_owned()
}

/// Runs the query over `records` (already time-ranged), capped at `cap` rows.
pub fn run(q: &Query, mut records: Vec<Record>, cap: usize) -> Outcome {
    // Records are read newest first: the order of rows nothing sorts (§10.6).
    records.sort_by(|a, b| {
        let t = |r: &Record| r.get("@timestamp").and_then(|t| num(t)).unwrap_or(0.0);
        t(b).partial_cmp(&t(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut columns: Vec<String> = Vec::new();
    let mut display: Option<Vec<String>> = None;
    let mut aggregated = false;
    let mut time_fields: Vec<String> = Vec::new();
    let mut matched = records.len() as u64;
    for c in &q.commands {
        match c {
            Command::Fields(items) => {
                for r in &mut records {
                    for (e, name) in items {
                        match eval(e, r) {
                            Some(v) => r.insert(name.clone(), v),
                            None => r.remove(name),
                        };
                    }
                }
                for (_, name) in items {
                    if !columns.contains(name) {
                        columns.push(name.clone());
                    }
                }
            }
            Command::Display(names) => display = Some(names.clone()),
            Command::Filter(e) => {
                records.retain(|r| eval(e, r).as_deref() == Some("1"));
                matched = records.len() as u64;
            }
            Command::Parse(field, glob, names) => {
                let parts: Vec<&str> = glob.split('*').collect();
                for r in &mut records {
                    let Some(value) = r.get(field).cloned() else {
                        continue;
                    };
                    let Some(start) = value.find(parts[0]) else {
                        continue;
                    };
                    let mut rest = &value[start + parts[0].len()..];
                    let mut captures = Vec::new();
                    let mut ok = true;
                    for (i, lit) in parts[1..].iter().enumerate() {
                        let last = i == parts.len() - 2;
                        if last && lit.is_empty() {
                            captures.push(rest.to_owned());
                            rest = "";
                        } else if let Some(at) = rest.find(lit) {
                            captures.push(rest[..at].to_owned());
                            rest = &rest[at + lit.len()..];
                        } else {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        for (n, v) in names.iter().zip(captures) {
                            r.insert(n.clone(), v);
                        }
                    }
                }
            }
            Command::Dedup(names) => {
                let mut seen = std::collections::HashSet::new();
                records.retain(|r| {
                    let key: Option<Vec<String>> =
                        names.iter().map(|n| r.get(n).cloned()).collect();
                    key.is_none_or(|k| seen.insert(k))
                });
            }
            Command::Sort(keys) => {
                records.sort_by(|a, b| {
                    for (k, desc) in keys {
                        let ord = match (a.get(k), b.get(k)) {
                            (None, None) => std::cmp::Ordering::Equal,
                            (None, Some(_)) => std::cmp::Ordering::Greater,
                            (Some(_), None) => std::cmp::Ordering::Less,
                            (Some(x), Some(y)) => {
                                let o = match num(x).zip(num(y)) {
                                    Some((x, y)) => {
                                        x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
                                    }
                                    None => x.cmp(y),
                                };
                                if *desc {
                                    o.reverse()
                                } else {
                                    o
                                }
                            }
                        };
                        if ord.is_ne() {
                            return ord;
                        }
                    }
                    std::cmp::Ordering::Equal
                });
            }
            Command::Limit(n) => records.truncate(*n),
            Command::Stats(aggs, by) => {
                aggregated = true;
                let mut groups: BTreeMap<Vec<Option<String>>, Vec<&Record>> = BTreeMap::new();
                for r in &records {
                    let key = by.iter().map(|(e, _)| eval(e, r)).collect();
                    groups.entry(key).or_default().push(r);
                }
                time_fields = by
                    .iter()
                    .filter(|(e, _)| matches!(e, Expr::Call(n, _) if n == "bin"))
                    .map(|(_, n)| n.clone())
                    .collect();
                let mut out = Vec::new();
                for (key, rows) in groups {
                    let mut rec = Record::new();
                    for ((_, name), v) in by.iter().zip(key) {
                        if let Some(v) = v {
                            rec.insert(name.clone(), v);
                        }
                    }
                    for (f, args, name) in aggs {
                        if let Some(v) = aggregate(f, args, &rows) {
                            rec.insert(name.clone(), v);
                        }
                    }
                    out.push(rec);
                }
                records = out;
                columns = by
                    .iter()
                    .map(|(_, n)| n.clone())
                    .chain(aggs.iter().map(|(_, _, n)| n.clone()))
                    .collect();
            }
        }
    }
    records.truncate(cap);
    let columns = display.unwrap_or_else(|| {
        if columns.is_empty() {
            vec!["@timestamp".into(), "@message".into()]
        } else {
            columns
        }
    });
    let rows = records
        .iter()
        .map(|r| {
            let mut row: Row = columns
                .iter()
                .filter_map(|c| {
                    r.get(c)
                        .map(|v| (c.clone(), format_value(c, v, &time_fields)))
                })
                .collect();
            if !aggregated {
                if let Some(ptr) = r.get("@ptr") {
                    row.push(("@ptr".into(), ptr.clone()));
                }
            }
            row
        })
        .collect();
    Outcome {
        rows,
        matched,
        aggregated,
    }
}

fn aggregate(f: &str, args: &[Expr], rows: &[&Record]) -> Option<String> {
    let values = || -> Vec<f64> {
        rows.iter()
            .filter_map(|r| args.first().and_then(|a| eval(a, r)).and_then(|v| num(&v)))
            .collect()
    };
    match f {
        "count" => match args.first() {
            None => Some(rows.len().to_string()),
            Some(Expr::Str(s)) if s == "*" => Some(rows.len().to_string()),
            Some(a) => Some(
                rows.iter()
                    .filter(|r| eval(a, r).is_some())
                    .count()
                    .to_string(),
            ),
        },
        "sum" => {
            let v = values();
            (!v.is_empty()).then(|| fmt_num(v.iter().sum()))
        }
        "avg" => {
            let v = values();
            (!v.is_empty()).then(|| fmt_num(v.iter().sum::<f64>() / v.len() as f64))
        }
        "min" => values().into_iter().reduce(f64::min).map(fmt_num),
        "max" => values().into_iter().reduce(f64::max).map(fmt_num),
        "pct" => {
            let mut v = values();
            let p = match args.get(1) {
                Some(Expr::Num(p)) => *p,
                _ => return None,
            };
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            if v.is_empty() {
                return None;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
            Some(fmt_num(v[rank.min(v.len()) - 1]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Record> {
        [
            (
                1_704_067_210_000,
                r#"{"level":"ERROR","latency":120,"user":{"id":"u1"}}"#,
            ),
            (
                1_704_067_220_000,
                r#"{"level":"INFO","latency":30,"user":{"id":"u2"}}"#,
            ),
            (
                1_704_067_265_000,
                r#"{"level":"ERROR","latency":300,"user":{"id":"u1"}}"#,
            ),
            (1_704_067_320_000, "plain text latency=50"),
        ]
        .iter()
        .map(|(t, m)| {
            let mut r = record("123456789012", "app", "s1", *t, *t + 5, m);
            r.insert("@ptr".into(), format!("ptr-{t}"));
            r
        })
        .collect()
    }

    fn rows(q: &str) -> Vec<Vec<(String, String)>> {
        let q = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        q.check().unwrap();
        run(&q, events(), 10_000)
            .rows
            .into_iter()
            .map(|r| r.into_iter().filter(|(k, _)| k != "@ptr").collect())
            .collect()
    }

    fn row(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The worked example of §10.8 (the regex-`like` row included).
    #[test]
    fn spec_worked_example() {
        assert_eq!(
            rows(r#"fields @timestamp, level | filter level = "ERROR" | sort @timestamp asc"#),
            [
                row(&[
                    ("@timestamp", "2024-01-01 00:00:10.000"),
                    ("level", "ERROR")
                ]),
                row(&[
                    ("@timestamp", "2024-01-01 00:01:05.000"),
                    ("level", "ERROR")
                ]),
            ]
        );
        assert_eq!(
            rows("stats count(*) as n, avg(latency) as a by level"),
            [
                row(&[("n", "1")]),
                row(&[("level", "ERROR"), ("n", "2"), ("a", "210")]),
                row(&[("level", "INFO"), ("n", "1"), ("a", "30")])
            ]
        );
        assert_eq!(
            rows("stats count(*) by bin(1m)"),
            [
                row(&[("bin(1m)", "2024-01-01 00:00:00.000"), ("count(*)", "2")]),
                row(&[("bin(1m)", "2024-01-01 00:01:00.000"), ("count(*)", "1")]),
                row(&[("bin(1m)", "2024-01-01 00:02:00.000"), ("count(*)", "1")]),
            ]
        );
        assert_eq!(
            rows(r#"parse @message "latency=*" as lat | filter ispresent(lat) | display lat"#),
            [row(&[("lat", "50")])]
        );
        assert_eq!(
            rows("filter latency > 100 | stats sum(latency) as s, pct(latency, 50) as p"),
            [row(&[("s", "420"), ("p", "120")])]
        );
        assert_eq!(
            rows("fields user.id as u | filter ispresent(u) | dedup u | sort u asc | display u"),
            [row(&[("u", "u1")]), row(&[("u", "u2")])]
        );
        assert_eq!(
            rows("filter @message like /(?i)PLAIN/ | display @message"),
            [row(&[("@message", "plain text latency=50")])]
        );
        // No fields, display or stats: @timestamp and @message, newest first.
        assert_eq!(
            rows("limit 1"),
            [row(&[
                ("@timestamp", "2024-01-01 00:02:00.000"),
                ("@message", "plain text latency=50")
            ])]
        );
    }

    #[test]
    fn malformed_queries_name_the_offending_text() {
        let e = Query::parse("bogus").unwrap_err();
        assert_eq!((e.start, e.end), (0, 5));
        assert!(e.message.starts_with("unexpected symbol found bogus"));
        for bad in [
            "stats count(*) by bin(300s)",
            "fields a |",
            "limit 0",
            "sort",
            "filter (a = 1",
            "parse @message \"a*b*\" as x",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
        assert!(Query::parse("fields jsonParse(x)")
            .unwrap()
            .check()
            .is_err());
    }
}
