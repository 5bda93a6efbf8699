//! Logs Insights (`spec/logs.md` §10): the query language's lexer and parser,
//! records with their system and discovered fields (JSON, and Lambda's
//! embedded JSON and platform lines, §10.3), evaluation with three-valued
//! logic, and the result formatting of §10.7.
//!
//! Commands (§10.6): `fields`, `display`, `filter`, `filterIndex` (a plain
//! filter: there are no field indexes), `stats` (count, count_distinct, sum,
//! avg, min, max, stddev, pct, earliest, latest, sortsFirst, sortsLast; `by`
//! expressions such as `bin()`), `sort`, `limit`, `parse` (glob and regex with
//! named groups), `dedup`, `unnest`, `unmask` (a no-op), `fillmissing`,
//! `pattern`, `diff`, `anomaly`, and a leading `SOURCE logGroups(…)`, which is
//! only parsed here ([`Query::source`]): selecting the groups is the caller's.
//! `lookup`, `join` and subqueries answer MalformedQueryException, and so does
//! any unknown function or a call with the wrong number of arguments: every
//! call is checked when the query is parsed.
//!
//! Values are strings, as §10.5 has it, with one exception: `jsonParse` makes
//! maps and lists. A record keeps such a value as its compact JSON text (which
//! is also how it is displayed) and remembers which of its fields hold one
//! (`Rec::json`); a dot path (`j.a.b`, `j.items.0`) that is not itself a
//! field resolves into the longest such field that prefixes it. This keeps the
//! common case — plain strings — exactly as it was, while `unnest` and
//! `jsonStringify` can still tell a list or map from a string that merely
//! looks like JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// `SOURCE logGroups(namePrefix: […], class: '…')`: the groups a query
/// selects by itself when StartQuery names none (§10.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `namePrefix`: at most 5 prefixes; empty when not given (any name).
    pub prefixes: Vec<String>,
    /// `class`: `STANDARD`, `INFREQUENT_ACCESS` or `DELIVERY`, when given.
    pub class: Option<String>,
}

/// A time period literal (§10.4): a fixed length, or calendar months
/// (`mo`, `q`, `y`), which have no fixed length and so are kept apart.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Period {
    Millis(i64),
    Months(i64),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64, String),
    Duration(Period, String),
    Regex(String),
    Sym(&'static str),
}

/// Whether a `/` at this point opens a regex rather than dividing: after
/// `like` or `=~`, and after `parse <field>` at the start of a command.
fn regex_follows(out: &[(Tok, usize, usize)]) -> bool {
    match out {
        [.., (Tok::Ident(k), _, _)] if k.eq_ignore_ascii_case("like") => true,
        [.., (Tok::Sym("=~"), _, _)] => true,
        [before @ .., (Tok::Ident(p), _, _), (Tok::Ident(_), _, _)]
            if p.eq_ignore_ascii_case("parse") =>
        {
            matches!(before.last(), None | Some((Tok::Sym("|"), _, _)))
        }
        _ => false,
    }
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
        if c == '/' && regex_follows(&out) {
            // `\/` stands for a slash inside the regex; other escapes are
            // the regex's own.
            let mut re = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(bad(start, chars.len(), "/")),
                    Some('\\') if chars.get(i + 1) == Some(&'/') => {
                        re.push('/');
                        i += 2;
                    }
                    Some('\\') => {
                        re.push('\\');
                        if let Some(n) = chars.get(i + 1) {
                            re.push(*n);
                        }
                        i += 2;
                    }
                    Some('/') => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        re.push(*other);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Regex(re), start, i.min(chars.len())));
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
                // Caps are bin()'s (§10.7): `bin(300s)` is refused, `bin(5m)`
                // is how that period is written.
                let (unit, cap) = match unit {
                    "ms" => (Period::Millis(1), 1000),
                    "s" | "sec" => (Period::Millis(1000), 60),
                    "m" | "min" => (Period::Millis(60_000), 60),
                    "h" | "hour" => (Period::Millis(3_600_000), 24),
                    "d" | "day" => (Period::Millis(86_400_000), i64::MAX),
                    "w" | "week" => (Period::Millis(7 * 86_400_000), i64::MAX),
                    "mo" | "month" => (Period::Months(1), i64::MAX),
                    "q" => (Period::Months(3), i64::MAX),
                    "y" | "year" => (Period::Months(12), i64::MAX),
                    _ => return Err(bad(start, i, &text)),
                };
                let period = match unit {
                    Period::Millis(ms) => n.checked_mul(ms).map(Period::Millis),
                    Period::Months(k) => n.checked_mul(k).map(Period::Months),
                };
                match period {
                    Some(p) if n >= 1 && n <= cap => out.push((Tok::Duration(p, text), start, i)),
                    _ => return Err(bad(start, i, &text)),
                }
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
                    "|", ",", "(", ")", "=", "<", ">", "+", "-", "*", "/", "%", "^", "[", "]", ":",
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
    Duration(Period),
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

/// What `fillmissing` needs of the `stats` it follows, and its constants.
#[derive(Debug, Clone, Default)]
struct Fill {
    /// The `bin()` column and its period.
    bin: String,
    period: Option<Period>,
    /// Every `by` column, in order (the rows' sort key).
    by: Vec<String>,
    /// Columns of `count`/`count_distinct`: 0 in an empty bin.
    counts: Vec<String>,
    /// `with v for f`: (f, v).
    with: Vec<(String, String)>,
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
    ParseRegex(String, regex::Regex),
    Dedup(Vec<String>),
    Unnest(String, String),
    Unmask,
    FillMissing(Fill),
    Pattern(String),
    Diff,
    Anomaly,
    Source(Source),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    commands: Vec<Command>,
    source: Option<Source>,
}

/// Any number of arguments.
const MANY: usize = usize::MAX;

/// Scalar functions (§10.7): lower-case name, fewest and most arguments.
const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("ispresent", 1, 1),
    ("isempty", 1, 1),
    ("isblank", 1, 1),
    ("coalesce", 1, MANY),
    ("abs", 1, 1),
    ("ceil", 1, 1),
    ("floor", 1, 1),
    ("greatest", 1, MANY),
    ("least", 1, MANY),
    ("log", 1, 1),
    ("sqrt", 1, 1),
    ("concat", 1, MANY),
    ("strlen", 1, 1),
    ("toupper", 1, 1),
    ("tolower", 1, 1),
    ("ltrim", 1, 2),
    ("rtrim", 1, 2),
    ("trim", 1, 2),
    ("substr", 2, 3),
    ("replace", 3, 3),
    ("strcontains", 2, 2),
    ("bin", 1, 1),
    ("datefloor", 2, 2),
    ("dateceil", 2, 2),
    ("frommillis", 1, 1),
    ("tomillis", 1, 1),
    ("now", 0, 0),
    ("isvalidip", 1, 1),
    ("isvalidipv4", 1, 1),
    ("isvalidipv6", 1, 1),
    ("isipinsubnet", 2, 2),
    ("isipv4insubnet", 2, 2),
    ("isipv6insubnet", 2, 2),
    ("jsonparse", 1, 1),
    ("jsonstringify", 1, 1),
];

/// Aggregation and non-aggregation functions of `stats` (§10.7).
const AGGREGATES: &[(&str, usize, usize)] = &[
    ("count", 0, 1),
    ("count_distinct", 1, 1),
    ("sum", 1, 1),
    ("avg", 1, 1),
    ("min", 1, 1),
    ("max", 1, 1),
    ("stddev", 1, 1),
    ("pct", 2, 2),
    ("earliest", 1, 1),
    ("latest", 1, 1),
    ("sortsfirst", 1, 1),
    ("sortslast", 1, 1),
];

/// Compiles a query's regex with size limits, so no pattern can make the
/// compiler take unbounded memory.
fn compile_regex(re: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .ok()
}

/// Deepest expression nesting accepted: parsing, evaluating and dropping an
/// expression all recurse, so a query of 10,000 `(` must not reach the stack.
const MAX_DEPTH: usize = 100;

struct Parser<'a> {
    toks: &'a [(Tok, usize, usize)],
    pos: usize,
    text: &'a str,
    /// Nesting of the expression being parsed (see [`MAX_DEPTH`]).
    depth: usize,
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

    /// An error about tokens `from..=to` (indexes), with its own message.
    fn err_span(&self, from: usize, to: usize, message: String) -> Malformed {
        let last = self.toks.len().saturating_sub(1);
        let start = self.toks.get(from.min(last)).map_or(0, |t| t.1);
        let end = self
            .toks
            .get(to.min(last))
            .map_or(start, |t| t.2)
            .max(start);
        Malformed {
            message: format!("{message} at line 1 and position {}", start + 1),
            start,
            end,
        }
    }

    /// One level deeper into an expression; too deep is malformed.
    fn deeper(&mut self) -> Result<(), Malformed> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let at = self.pos.saturating_sub(1);
            return Err(self.err_span(at, at, "expression nested too deeply".into()));
        }
        Ok(())
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

    fn string(&mut self) -> Result<String, Malformed> {
        match self.peek() {
            Some(Tok::Str(x)) => {
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

    /// Checks a call whose name is token `from` and whose `)` was the last
    /// token read: known in `table`, right number of arguments, and the
    /// arguments that must be literals are.
    fn check_call(
        &self,
        name: &str,
        args: &[Expr],
        from: usize,
        aggregate: bool,
    ) -> Result<(), Malformed> {
        let table = if aggregate { AGGREGATES } else { FUNCTIONS };
        let written: String = {
            let (s, e) = (self.toks[from].1, self.toks[from].2);
            self.text.chars().skip(s).take(e - s).collect()
        };
        let Some(&(_, min, max)) = table.iter().find(|(n, ..)| *n == name) else {
            let why = if aggregate {
                if FUNCTIONS.iter().any(|(n, ..)| *n == name) {
                    "is not an aggregation function"
                } else {
                    "is not a known aggregation function"
                }
            } else if AGGREGATES.iter().any(|(n, ..)| *n == name) {
                "is an aggregation function: use it in stats"
            } else {
                "is not a known function"
            };
            return Err(self.err_span(from, from, format!("{written} {why}")));
        };
        let call_end = self.pos - 1;
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == MANY {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err_span(
                from,
                call_end,
                format!("{written} takes {expected} argument(s), not {}", args.len()),
            ));
        }
        let period_at = match name {
            "bin" => Some(0),
            "datefloor" | "dateceil" => Some(1),
            _ => None,
        };
        if let Some(i) = period_at {
            if !matches!(args.get(i), Some(Expr::Duration(_))) {
                return Err(self.err_span(
                    from,
                    call_end,
                    format!("{written} needs a time period such as 5m"),
                ));
            }
        }
        if name == "pct" && !matches!(args.get(1), Some(Expr::Num(p)) if (0.0..=100.0).contains(p))
        {
            return Err(self.err_span(
                from,
                call_end,
                format!("{written} needs a percentile between 0 and 100"),
            ));
        }
        Ok(())
    }

    // A chain `a or b or c` nests to the left, one level per operator: the
    // depth grows with each, and comes back when the chain ends.
    fn expr(&mut self) -> Result<Expr, Malformed> {
        let saved = self.depth;
        let mut left = self.and()?;
        while self.keyword("or") {
            self.deeper()?;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth = saved;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Malformed> {
        let saved = self.depth;
        let mut left = self.not()?;
        while self.keyword("and") {
            self.deeper()?;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        self.depth = saved;
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, Malformed> {
        if self.keyword("not") {
            self.deeper()?;
            let e = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
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
                    let re = compile_regex(&r).ok_or_else(|| {
                        self.err_span(self.pos, self.pos, "invalid regular expression".into())
                    })?;
                    self.pos += 1;
                    Ok(Expr::LikeRegex(Box::new(left), re, negate))
                }
                _ => Err(self.err()),
            };
        }
        if self.keyword("in") {
            // `in (SOURCE …)` subqueries are not supported: only lists.
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
        let saved = self.depth;
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.sym("+") {
                "+"
            } else if self.sym("-") {
                "-"
            } else {
                self.depth = saved;
                return Ok(left);
            };
            self.deeper()?;
            left = Expr::Binary(op, Box::new(left), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, Malformed> {
        let saved = self.depth;
        let mut left = self.unary()?;
        loop {
            let op = ["*", "/", "%", "^"].into_iter().find(|op| self.sym(op));
            match op {
                Some(op) => {
                    self.deeper()?;
                    left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
                }
                None => {
                    self.depth = saved;
                    return Ok(left);
                }
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, Malformed> {
        if self.sym("-") {
            self.deeper()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(e)));
        }
        if self.sym("(") {
            self.deeper()?;
            let e = self.expr()?;
            self.depth -= 1;
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
            Some(Tok::Duration(p, _)) => {
                self.pos += 1;
                Ok(Expr::Duration(p))
            }
            Some(Tok::Ident(name)) => {
                let from = self.pos;
                self.pos += 1;
                if self.sym("(") {
                    let name = name.to_ascii_lowercase();
                    self.deeper()?;
                    let args = self.call_args()?;
                    self.depth -= 1;
                    self.check_call(&name, &args, from, false)?;
                    Ok(Expr::Call(name, args))
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

    /// A constant for `fillmissing`: a string or a (negative) number.
    fn constant(&mut self) -> Result<String, Malformed> {
        let negative = self.sym("-");
        match self.peek().cloned() {
            Some(Tok::Str(s)) if !negative => {
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Num(n, _)) => {
                self.pos += 1;
                Ok(fmt_num(if negative { -n } else { n }))
            }
            _ => Err(self.err()),
        }
    }

    fn source(&mut self) -> Result<Source, Malformed> {
        if !self.keyword("loggroups") || !self.sym("(") {
            return Err(self.err());
        }
        let mut source = Source::default();
        if self.sym(")") {
            return Ok(source);
        }
        let mut seen = BTreeSet::new();
        loop {
            let key_at = self.pos;
            let key = self.ident()?;
            if !seen.insert(key.to_ascii_lowercase()) || !self.sym(":") {
                self.pos = key_at;
                return Err(self.err());
            }
            match key.to_ascii_lowercase().as_str() {
                "nameprefix" => {
                    let list_at = self.pos;
                    if !self.sym("[") {
                        return Err(self.err());
                    }
                    loop {
                        source.prefixes.push(self.string()?);
                        if self.sym("]") {
                            break;
                        }
                        if !self.sym(",") {
                            return Err(self.err());
                        }
                    }
                    if source.prefixes.len() > 5 {
                        return Err(self.err_span(
                            list_at,
                            self.pos - 1,
                            "namePrefix takes at most 5 prefixes".into(),
                        ));
                    }
                }
                "class" => {
                    let at = self.pos;
                    let class = self.string()?;
                    if !["STANDARD", "INFREQUENT_ACCESS", "DELIVERY"].contains(&class.as_str()) {
                        return Err(self.err_span(
                            at,
                            at,
                            format!("unknown log group class {class}"),
                        ));
                    }
                    source.class = Some(class);
                }
                _ => {
                    self.pos = key_at;
                    return Err(self.err());
                }
            }
            if self.sym(")") {
                return Ok(source);
            }
            if !self.sym(",") {
                return Err(self.err());
            }
        }
    }

    fn command(&mut self) -> Result<Command, Malformed> {
        let at = self.pos;
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
            // No field indexes: filterIndex filters like filter (§10.6).
            "filter" | "filterindex" => Ok(Command::Filter(self.expr()?)),
            "stats" => {
                let mut aggs = Vec::new();
                loop {
                    let from = self.pos;
                    let f = self.ident()?.to_ascii_lowercase();
                    if !self.sym("(") {
                        self.pos = from;
                        return Err(self.err());
                    }
                    let args = self.call_args()?;
                    self.check_call(&f, &args, from, true)?;
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
                    Some(Tok::Regex(r)) => {
                        let bad = |p: &Self, why: &str| p.err_span(p.pos, p.pos, why.into());
                        let re = compile_regex(&r)
                            .ok_or_else(|| bad(self, "invalid regular expression"))?;
                        if re.capture_names().flatten().next().is_none() {
                            return Err(bad(self, "parse regex needs a named group (?<name>…)"));
                        }
                        self.pos += 1;
                        return Ok(Command::ParseRegex(field, re));
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
            "unnest" => {
                let field = self.ident()?;
                if !self.keyword("into") {
                    return Err(self.err());
                }
                Ok(Command::Unnest(field, self.ident()?))
            }
            "unmask" => {
                self.ident()?;
                Ok(Command::Unmask)
            }
            "fillmissing" => {
                let mut fill = Fill::default();
                if self.keyword("with") {
                    loop {
                        let value = self.constant()?;
                        if !self.keyword("for") {
                            return Err(self.err());
                        }
                        fill.with.push((self.ident()?, value));
                        if !self.sym(",") {
                            break;
                        }
                        // `with v for a, with w for b` and `with v for a, w for b`.
                        self.keyword("with");
                    }
                }
                Ok(Command::FillMissing(fill))
            }
            "pattern" => Ok(Command::Pattern(self.ident()?)),
            "diff" => Ok(Command::Diff),
            "anomaly" => Ok(Command::Anomaly),
            "source" => Ok(Command::Source(self.source()?)),
            "lookup" | "join" => Err(self.err_span(at, at, format!("{name} is not supported"))),
            _ => {
                self.pos = at;
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
            depth: 0,
        };
        let mut commands: Vec<Command> = Vec::new();
        let mut source = None;
        while p.peek().is_some() {
            let at = p.pos;
            let command = match p.command()? {
                Command::Source(s) => {
                    if !commands.is_empty() || source.is_some() {
                        return Err(p.err_span(at, at, "SOURCE must be the first command".into()));
                    }
                    source = Some(s);
                    None
                }
                Command::FillMissing(mut fill) => {
                    let Some(Command::Stats(aggs, by)) = commands.last() else {
                        return Err(p.err_span(
                            at,
                            at,
                            "fillmissing must follow stats … by bin()".into(),
                        ));
                    };
                    let Some((period, bin)) = by.iter().find_map(|(e, name)| match e {
                        Expr::Call(n, args) if n == "bin" => match args.first() {
                            Some(Expr::Duration(p)) => Some((*p, name.clone())),
                            _ => None,
                        },
                        _ => None,
                    }) else {
                        return Err(p.err_span(
                            at,
                            at,
                            "fillmissing must follow stats … by bin()".into(),
                        ));
                    };
                    fill.bin = bin;
                    fill.period = Some(period);
                    fill.by = by.iter().map(|(_, n)| n.clone()).collect();
                    fill.counts = aggs
                        .iter()
                        .filter(|(f, _, _)| f == "count" || f == "count_distinct")
                        .map(|(_, _, n)| n.clone())
                        .collect();
                    Some(Command::FillMissing(fill))
                }
                c @ (Command::Diff | Command::Anomaly) => {
                    if !matches!(commands.last(), Some(Command::Pattern(_))) {
                        return Err(p.err_span(
                            at,
                            at,
                            "diff and anomaly must follow pattern".into(),
                        ));
                    }
                    Some(c)
                }
                c => Some(c),
            };
            commands.extend(command);
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
        Ok(Query { commands, source })
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

    /// The leading `SOURCE logGroups(…)`, if the query has one.
    pub fn source(&self) -> Option<&Source> {
        self.source.as_ref()
    }

    /// Whether the query has `diff`, which compares with the records of the
    /// previous equal-length period ([`RunOptions::previous`]).
    pub fn uses_previous_period(&self) -> bool {
        self.commands.iter().any(|c| matches!(c, Command::Diff))
    }

    /// Kept for callers: every function and its arity are checked by
    /// [`Query::parse`] now, so a parsed query always passes.
    pub fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A record: field name → string value (§10.3).
pub type Record = BTreeMap<String, String>;

/// Builds a record from an event, with JSON fields discovered (flattened),
/// and for `/aws/lambda/*` groups the embedded JSON and platform fields.
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
    let lambda = group.starts_with("/aws/lambda/");
    let object = match serde_json::from_str::<serde_json::Value>(message.trim()) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ if lambda => embedded_object(message),
        _ => None,
    };
    if let Some(map) = object {
        /// `prefix` is `None` at the top level (an empty key is a name).
        fn flatten(prefix: Option<&str>, v: &serde_json::Value, r: &mut Record) {
            // 5 system fields + at most 200 discovered ones (§10.3).
            if r.len() >= 205 {
                return;
            }
            let name = prefix.unwrap_or_default();
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let key = match prefix {
                            Some(prefix) => format!("{prefix}.{k}"),
                            None if k.starts_with('@') => format!("@{k}"),
                            None => k.clone(),
                        };
                        flatten(Some(&key), v, r);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        flatten(Some(&format!("{name}.{i}")), v, r);
                    }
                }
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => {
                    r.insert(name.to_owned(), s.clone());
                }
                other => {
                    r.insert(name.to_owned(), other.to_string());
                }
            }
        }
        flatten(None, &serde_json::Value::Object(map), &mut r);
    }
    if lambda {
        lambda_platform(message, &mut r);
    }
    r
}

/// The first `{…}` inside a Lambda log line that parses as a JSON object
/// (`2024-… <request id> INFO {"a":1}`). Only the first few `{` are tried, so
/// a line full of braces costs a bounded number of parses.
fn embedded_object(message: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    message.match_indices('{').take(16).find_map(|(i, _)| {
        let mut values =
            serde_json::Deserializer::from_str(&message[i..]).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(serde_json::Value::Object(m))) => Some(m),
            _ => None,
        }
    })
}

/// How a Lambda platform-line value becomes a field.
#[derive(Clone, Copy)]
enum LambdaValue {
    Text,
    /// `102.25 ms` → `102.25`.
    Millis,
    /// `128 MB` → bytes. Lambda's "MB" here are taken as 10^6 bytes: AWS's
    /// own sample queries turn `@memorySize` and `@maxMemoryUsed` back into
    /// MB by dividing by 1000 twice, so ×1,000,000 round-trips with them.
    Megabytes,
    /// A label we recognise only so that it ends the value before it.
    Ignored,
}

/// Labels of `START`/`END`/`REPORT` lines. Where one label ends another
/// (`Billed Duration:` and `Duration:`) the longer comes first, and since the
/// line is scanned left to right the longer one, which starts earlier, wins.
const LAMBDA_LABELS: [(&str, &str, LambdaValue); 13] = [
    ("RequestId:", "@requestId", LambdaValue::Text),
    ("Version:", "", LambdaValue::Ignored),
    ("Billed Restore Duration:", "", LambdaValue::Ignored),
    ("Restore Duration:", "", LambdaValue::Ignored),
    ("Billed Duration:", "@billedDuration", LambdaValue::Millis),
    ("Init Duration:", "@initDuration", LambdaValue::Millis),
    ("Duration:", "@duration", LambdaValue::Millis),
    ("Max Memory Used:", "@maxMemoryUsed", LambdaValue::Megabytes),
    ("Memory Size:", "@memorySize", LambdaValue::Megabytes),
    ("XRAY TraceId:", "@xrayTraceId", LambdaValue::Text),
    ("SegmentId:", "@xraySegmentId", LambdaValue::Text),
    ("Sampled:", "", LambdaValue::Ignored),
    ("Status:", "", LambdaValue::Ignored),
];

/// Fields of a Lambda platform line (§10.3), added to `r`.
fn lambda_platform(message: &str, r: &mut Record) {
    let Some(kind) = ["START", "END", "REPORT"].into_iter().find(|k| {
        message
            .strip_prefix(k)
            .is_some_and(|rest| rest.trim_start().starts_with("RequestId:"))
    }) else {
        return;
    };
    r.insert("@type".into(), kind.into());
    // (label index, where its value starts, where the label starts).
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < message.len() {
        let hit = LAMBDA_LABELS
            .iter()
            .position(|(label, _, _)| message[i..].starts_with(label));
        match hit {
            Some(k) => {
                let end = i + LAMBDA_LABELS[k].0.len();
                found.push((k, end, i));
                i = end;
            }
            None => {
                i += message[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    for (n, (k, value_start, _)) in found.iter().enumerate() {
        let value_end = found.get(n + 1).map_or(message.len(), |next| next.2);
        let value = message[*value_start..value_end].trim();
        let (_, field, kind) = LAMBDA_LABELS[*k];
        let first = value.split_whitespace().next().unwrap_or("");
        let v = match kind {
            LambdaValue::Ignored => None,
            LambdaValue::Text => (!first.is_empty()).then(|| first.to_owned()),
            LambdaValue::Millis => num(first).map(|_| first.to_owned()),
            LambdaValue::Megabytes => num(first).map(|mb| fmt_num(mb * 1_000_000.0)),
        };
        if let Some(v) = v {
            r.insert(field.to_owned(), v);
        }
    }
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

/// A value in evaluation: a string, or a map or list from `jsonParse`.
#[derive(Debug, Clone)]
enum Val {
    Str(String),
    /// Only objects and arrays: JSON scalars become `Str`.
    Json(serde_json::Value),
}

impl Val {
    fn from_json(v: serde_json::Value) -> Option<Val> {
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Val::Str(s)),
            v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_)) => Some(Val::Json(v)),
            other => Some(Val::Str(other.to_string())),
        }
    }

    fn into_string(self) -> String {
        match self {
            Val::Str(s) => s,
            Val::Json(j) => j.to_string(),
        }
    }
}

/// A record while a query runs: its fields, and which of them hold a map
/// or list (kept as compact JSON text in `f`, see the module doc).
#[derive(Debug, Clone, Default)]
struct Rec {
    f: Record,
    json: BTreeSet<String>,
}

impl Rec {
    /// A present field that holds text (not a map or list), borrowed.
    fn plain(&self, name: &str) -> Option<&str> {
        if self.json.contains(name) {
            return None;
        }
        self.f.get(name).map(String::as_str)
    }

    fn get(&self, name: &str) -> Option<String> {
        self.val(name).map(Val::into_string)
    }

    fn val(&self, name: &str) -> Option<Val> {
        if let Some(v) = self.f.get(name) {
            if self.json.contains(name) {
                if let Ok(j) = serde_json::from_str(v) {
                    return Val::from_json(j);
                }
            }
            return Some(Val::Str(v.clone()));
        }
        // A dot path into a map or list: the longest holding field wins.
        let mut cut = name.len();
        while let Some(dot) = name[..cut].rfind('.') {
            let head = &name[..dot];
            if self.json.contains(head) {
                let root: serde_json::Value = serde_json::from_str(self.f.get(head)?).ok()?;
                let mut v = &root;
                for step in name[dot + 1..].split('.') {
                    v = match v {
                        serde_json::Value::Object(m) => m.get(step)?,
                        serde_json::Value::Array(a) => a.get(step.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                return Val::from_json(v.clone());
            }
            cut = dot;
        }
        None
    }

    fn set(&mut self, name: &str, v: Option<Val>) {
        match v {
            Some(Val::Json(j)) => {
                self.f.insert(name.to_owned(), j.to_string());
                self.json.insert(name.to_owned());
            }
            Some(Val::Str(s)) => {
                self.f.insert(name.to_owned(), s);
                self.json.remove(name);
            }
            None => {
                self.f.remove(name);
                self.json.remove(name);
            }
        }
    }

    /// Rough size in bytes, for `unnest`'s budget.
    fn size(&self) -> usize {
        self.f.iter().map(|(k, v)| k.len() + v.len() + 16).sum()
    }
}

/// What evaluation needs besides the record.
#[derive(Debug, Clone, Copy)]
struct Cx {
    /// When the query started, epoch ms (`now()`).
    now_ms: i64,
    /// The query's time range, epoch ms, both inclusive.
    range: (i64, i64),
}

fn eval(e: &Expr, r: &Rec, cx: &Cx) -> Option<String> {
    match e {
        Expr::Field(f) => r.get(f),
        Expr::Str(s) => Some(s.clone()),
        Expr::Num(n) => Some(fmt_num(*n)),
        Expr::Duration(Period::Millis(ms)) => Some(ms.to_string()),
        // A month has no length in milliseconds.
        Expr::Duration(Period::Months(_)) => None,
        Expr::Not(x) => truth(eval(x, r, cx)? == "0"),
        Expr::Neg(x) => Some(fmt_num(-num(&eval(x, r, cx)?)?)),
        Expr::And(a, b) => truth(eval(a, r, cx)? == "1" && eval(b, r, cx)? == "1"),
        Expr::Or(a, b) => {
            let (a, b) = (eval(a, r, cx), eval(b, r, cx));
            if a.as_deref() == Some("1") || b.as_deref() == Some("1") {
                truth(true)
            } else {
                // Three-valued: false when both sides are known, else absent.
                a.and(b).and(truth(false))
            }
        }
        Expr::Binary(op @ ("=" | "!=" | "<" | "<=" | ">" | ">="), a, b)
            if matches!((&**a, &**b), (Expr::Field(_), Expr::Num(_))) =>
        {
            // `field op number`, the common filter: compared without copying
            // the field or formatting the number, when the field is a number.
            if let (Expr::Field(f), Expr::Num(y)) = (&**a, &**b) {
                if let Some(x) = r.plain(f).and_then(num) {
                    let ord = x.partial_cmp(y)?;
                    return truth(match *op {
                        "=" => ord.is_eq(),
                        "!=" => ord.is_ne(),
                        "<" => ord.is_lt(),
                        "<=" => ord.is_le(),
                        ">" => ord.is_gt(),
                        _ => ord.is_ge(),
                    });
                }
            }
            eval_binary(op, a, b, r, cx)
        }
        Expr::Binary(op, a, b) => eval_binary(op, a, b, r, cx),
        Expr::Like(x, s, negate) => truth(eval(x, r, cx)?.contains(s.as_str()) != *negate),
        Expr::LikeRegex(x, re, negate) => truth(re.is_match(&eval(x, r, cx)?) != *negate),
        Expr::In(x, items, negate) => {
            let v = eval(x, r, cx)?;
            let hit =
                items
                    .iter()
                    .filter_map(|i| eval(i, r, cx))
                    .any(|i| match (num(&v), num(&i)) {
                        (Some(a), Some(b)) => a == b,
                        _ => v == i,
                    });
            truth(hit != *negate)
        }
        Expr::Call(name, args) => call(name, args, r, cx),
    }
}

/// Evaluates keeping maps and lists: only fields and `jsonParse` make them.
/// A binary operator (§10.5): comparison numeric when both sides are
/// numbers, else by bytes; arithmetic on numbers only.
fn eval_binary(op: &str, a: &Expr, b: &Expr, r: &Rec, cx: &Cx) -> Option<String> {
    let (a, b) = (eval(a, r, cx)?, eval(b, r, cx)?);
    let numbers = num(&a).zip(num(&b));
    match op {
        "=" | "!=" | "<" | "<=" | ">" | ">=" => {
            let ord = match numbers {
                Some((x, y)) => x.partial_cmp(&y)?,
                None => a.as_bytes().cmp(b.as_bytes()),
            };
            truth(match op {
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
            let v = match op {
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

fn eval_val(e: &Expr, r: &Rec, cx: &Cx) -> Option<Val> {
    match e {
        Expr::Field(f) => r.val(f),
        Expr::Call(n, args) if n == "jsonparse" => {
            let text = eval(args.first()?, r, cx)?;
            Val::from_json(serde_json::from_str(&text).ok()?)
        }
        _ => eval(e, r, cx).map(Val::Str),
    }
}

/// A non-negative whole number, for `substr`'s positions.
fn index(s: &str) -> Option<usize> {
    let n = num(s)?;
    (n >= 0.0 && n.fract() == 0.0).then(|| n.min(usize::MAX as f64) as usize)
}

/// Longest value `replace` may build: a short search string replaced by a
/// long one could otherwise multiply a large message many times over.
const MAX_BUILT_VALUE: usize = 1 << 22;

fn call(name: &str, args: &[Expr], r: &Rec, cx: &Cx) -> Option<String> {
    let arg = |i: usize| args.get(i).and_then(|a| eval(a, r, cx));
    match name {
        "ispresent" => truth(arg(0).is_some()),
        "isempty" => truth(arg(0).is_none_or(|s| s.is_empty())),
        "isblank" => truth(arg(0).is_none_or(|s| s.trim().is_empty())),
        "bin" => {
            let period = match args.first() {
                Some(Expr::Duration(p)) => *p,
                _ => return None,
            };
            let t = ts_ms(r.f.get("@timestamp")?)?;
            floor_period(t, period).map(|t| t.to_string())
        }
        "abs" => Some(fmt_num(num(&arg(0)?)?.abs())),
        "floor" => Some(fmt_num(num(&arg(0)?)?.floor())),
        "ceil" => Some(fmt_num(num(&arg(0)?)?.ceil())),
        "greatest" | "least" => {
            let mut best: Option<f64> = None;
            for a in args {
                let n = num(&eval(a, r, cx)?)?;
                best = Some(match best {
                    None => n,
                    Some(b) if name == "greatest" => b.max(n),
                    Some(b) => b.min(n),
                });
            }
            best.map(fmt_num)
        }
        "log" => {
            let x = num(&arg(0)?)?;
            (x > 0.0).then(|| fmt_num(x.ln()))
        }
        "sqrt" => {
            let x = num(&arg(0)?)?;
            (x >= 0.0).then(|| fmt_num(x.sqrt()))
        }
        "strlen" => Some(arg(0)?.chars().count().to_string()),
        "toupper" => Some(arg(0)?.to_uppercase()),
        "tolower" => Some(arg(0)?.to_lowercase()),
        "concat" => Some(args.iter().filter_map(|a| eval(a, r, cx)).collect()),
        "coalesce" => args
            .iter()
            .filter_map(|a| eval(a, r, cx))
            .find(|s| !s.is_empty()),
        "strcontains" => truth(arg(0)?.contains(arg(1)?.as_str())),
        "ltrim" | "rtrim" | "trim" => {
            let s = arg(0)?;
            let set: Option<Vec<char>> = match args.get(1) {
                Some(_) => Some(arg(1)?.chars().collect()),
                None => None,
            };
            let strip = |c: char| match &set {
                Some(set) => set.contains(&c),
                None => c.is_whitespace(),
            };
            Some(
                match name {
                    "ltrim" => s.trim_start_matches(strip),
                    "rtrim" => s.trim_end_matches(strip),
                    _ => s.trim_matches(strip),
                }
                .to_owned(),
            )
        }
        "substr" => {
            let s = arg(0)?;
            let start = index(&arg(1)?)?;
            let rest = s.chars().skip(start);
            Some(match args.get(2) {
                Some(_) => rest.take(index(&arg(2)?)?).collect(),
                None => rest.collect(),
            })
        }
        "replace" => {
            let (s, from, to) = (arg(0)?, arg(1)?, arg(2)?);
            if from.is_empty() {
                return Some(s);
            }
            let hits = s.matches(from.as_str()).count();
            let size = hits
                .checked_mul(to.len())
                .and_then(|n| n.checked_add(s.len()))?;
            (size <= MAX_BUILT_VALUE).then(|| s.replace(from.as_str(), &to))
        }
        "datefloor" | "dateceil" => {
            let t = ts_ms(&arg(0)?)?;
            let Some(Expr::Duration(period)) = args.get(1) else {
                return None;
            };
            let floor = floor_period(t, *period)?;
            let v = if name == "dateceil" && floor != t {
                step_period(floor, *period)?
            } else {
                floor
            };
            Some(v.to_string())
        }
        "frommillis" => {
            let n = num(&arg(0)?)?;
            (n.abs() <= MAX_MILLIS as f64).then(|| (n.floor() as i64).to_string())
        }
        "tomillis" => ts_ms(&arg(0)?).map(|t| t.to_string()),
        "now" => Some(cx.now_ms.div_euclid(1000).to_string()),
        "isvalidip" => truth(arg(0)?.parse::<IpAddr>().is_ok()),
        "isvalidipv4" => truth(arg(0)?.parse::<Ipv4Addr>().is_ok()),
        "isvalidipv6" => truth(arg(0)?.parse::<Ipv6Addr>().is_ok()),
        "isipinsubnet" | "isipv4insubnet" | "isipv6insubnet" => {
            let (ip, cidr) = (arg(0)?, arg(1)?);
            let (net, len) = parse_cidr(&cidr)?;
            // A subnet of the other family is a wrong argument, not a miss.
            match (name, net) {
                ("isipv4insubnet", IpAddr::V6(_)) | ("isipv6insubnet", IpAddr::V4(_)) => None,
                _ => truth(ip.parse::<IpAddr>().is_ok_and(|ip| in_subnet(ip, net, len))),
            }
        }
        "jsonparse" => Val::from_json(serde_json::from_str(&arg(0)?).ok()?).map(Val::into_string),
        "jsonstringify" => match eval_val(args.first()?, r, cx)? {
            Val::Json(j) => Some(j.to_string()),
            // Only maps and lists have a JSON form to give.
            Val::Str(_) => None,
        },
        _ => None,
    }
}

/// `a.b.c.d/len`, `x::y/len`, with the prefix length in range.
fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (addr, len) = s.trim().split_once('/')?;
    let net: IpAddr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let bits = if net.is_ipv4() { 32 } else { 128 };
    (len <= bits).then_some((net, len))
}

/// Whether `ip` shares `net`'s first `len` bits; families never mix.
fn in_subnet(ip: IpAddr, net: IpAddr, len: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Timestamps beyond this many ms from the epoch (about ±285,000 years) are
/// not timestamps: the bound keeps all date arithmetic in range.
const MAX_MILLIS: i64 = 9_000_000_000_000_000;

/// A timestamp argument as epoch ms: a number is taken as epoch ms (how
/// `@timestamp` is held), otherwise the result form `2024-01-01 00:00:10.000`
/// or ISO 8601.
fn ts_ms(s: &str) -> Option<i64> {
    if let Some(n) = num(s) {
        return (n.abs() <= MAX_MILLIS as f64).then_some(n as i64);
    }
    Timestamp::parse_iso8601(&s.trim().replacen(' ', "T", 1))
        .ok()
        .map(Timestamp::millis)
        .filter(|t| in_time_range(*t))
}

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m)
}

/// Months since 1970-01 → epoch ms of that month's first instant.
fn month_start(index: i64) -> Option<i64> {
    let y = 1970 + index.div_euclid(12);
    let m = index.rem_euclid(12) + 1;
    days_from_civil(y, m, 1).checked_mul(DAY_MS)
}

/// `t` floored to the period, epoch-aligned (months: from 1970-01, so
/// quarters start in January, April, July and October).
fn floor_period(t: i64, p: Period) -> Option<i64> {
    if !in_time_range(t) {
        return None;
    }
    match p {
        Period::Millis(ms) if ms > 0 => Some(t.div_euclid(ms) * ms),
        Period::Months(n) if n > 0 => {
            let (y, m) = civil_from_days(t.div_euclid(DAY_MS));
            let index = (y - 1970) * 12 + (m - 1);
            month_start(index.div_euclid(n) * n)
        }
        _ => None,
    }
}

/// The period boundary after the boundary `t`.
fn step_period(t: i64, p: Period) -> Option<i64> {
    match p {
        Period::Millis(ms) => t.checked_add(ms),
        Period::Months(n) => {
            let (y, m) = civil_from_days(t.div_euclid(DAY_MS));
            month_start((y - 1970) * 12 + (m - 1) + n)
        }
    }
    .filter(|t| in_time_range(*t))
}

fn in_time_range(t: i64) -> bool {
    (-MAX_MILLIS..=MAX_MILLIS).contains(&t)
}

/// Whether an expression's values are timestamps (epoch ms), which the
/// results show as `yyyy-MM-dd HH:mm:ss.SSS` (§10.7).
fn is_time(e: &Expr, time_fields: &[String]) -> bool {
    match e {
        Expr::Field(f) => {
            f == "@timestamp" || f == "@ingestionTime" || time_fields.iter().any(|t| t == f)
        }
        Expr::Call(n, _) => matches!(n.as_str(), "bin" | "datefloor" | "dateceil" | "frommillis"),
        _ => false,
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

/// How to run a query besides its records.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Most rows to return.
    pub cap: usize,
    /// The query's time range in epoch ms, both ends inclusive: the bins of
    /// `fillmissing` and of `pattern`'s `@visualization`. Without it, the
    /// range of the records' own timestamps.
    pub range: Option<(i64, i64)>,
    /// When the query started, epoch ms: `now()`.
    pub now_ms: i64,
    /// The records of the previous equal-length period, for `diff`
    /// ([`Query::uses_previous_period`]); without them every pattern is new.
    pub previous: Vec<Record>,
}

fn format_value(field: &str, v: &str, time_fields: &[String]) -> String {
    if field == "@timestamp" || field == "@ingestionTime" || time_fields.iter().any(|f| f == field)
    {
        if let Some(ms) = num(v).filter(|ms| ms.abs() <= MAX_MILLIS as f64) {
            let t = Timestamp::from_millis(ms as i64).to_iso8601_seconds();
            if t.len() >= 19 {
                return format!(
                    "{} {}.{:03}",
                    &t[..10],
                    &t[11..19],
                    (ms as i64).rem_euclid(1000)
                );
            }
        }
    }
    v.to_owned()
}

/// Runs the query over `records` (already time-ranged).
pub fn run(q: &Query, records: Vec<Record>, opts: RunOptions) -> Outcome {
    let range = opts.range.unwrap_or_else(|| {
        let times = records
            .iter()
            .filter_map(|r| r.get("@timestamp").and_then(|t| ts_ms(t)));
        let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if lo <= hi {
            (lo, hi)
        } else {
            (0, 0)
        }
    });
    let runner = Runner::new(q, range, opts.now_ms);
    let mut part = runner.part();
    for r in records {
        runner.feed(&mut part, r);
    }
    runner.finish(part, opts.cap, &opts.previous)
}

/// The fields a query reads (§10.3): records need carry only these, so
/// discovery skips every other JSON member.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Lists, not sets: a handful of names, looked up for every JSON member
    /// of every event, are found fastest by a scan.
    names: Vec<String>,
    /// Every proper dotted prefix of a name: members that hold one are
    /// objects or arrays to flatten.
    prefixes: Vec<String>,
}

impl Projection {
    fn of(names: BTreeSet<String>) -> Projection {
        let prefixes: BTreeSet<String> = names
            .iter()
            .flat_map(|n| n.match_indices('.').map(move |(i, _)| n[..i].to_owned()))
            .collect();
        Projection {
            names: names.into_iter().collect(),
            prefixes: prefixes.into_iter().collect(),
        }
    }

    /// Whether the query reads `field`.
    pub fn wants(&self, field: &str) -> bool {
        self.names.iter().any(|n| n == field)
    }

    fn holds(&self, prefix: &str) -> bool {
        self.prefixes.iter().any(|n| n == prefix)
    }

    fn discovered(&self) -> bool {
        self.names
            .iter()
            .any(|n| !SYSTEM_FIELDS.contains(&n.as_str()))
    }
}

const SYSTEM_FIELDS: [&str; 6] = [
    "@timestamp",
    "@ingestionTime",
    "@message",
    "@logStream",
    "@log",
    "@ptr",
];

fn expr_fields(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Field(f) => {
            out.insert(f.clone());
        }
        Expr::Str(_) | Expr::Num(_) | Expr::Duration(_) => {}
        Expr::Call(_, args) => args.iter().for_each(|a| expr_fields(a, out)),
        Expr::Not(x) | Expr::Neg(x) | Expr::Like(x, ..) | Expr::LikeRegex(x, ..) => {
            expr_fields(x, out)
        }
        Expr::Binary(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
            expr_fields(a, out);
            expr_fields(b, out);
        }
        Expr::In(x, items, _) => {
            expr_fields(x, out);
            items.iter().for_each(|a| expr_fields(a, out));
        }
    }
}

impl Query {
    /// The fields this query reads.
    pub fn projection(&self) -> Projection {
        let mut names = BTreeSet::new();
        names.insert("@timestamp".to_owned());
        let mut shaped = false;
        for c in &self.commands {
            match c {
                Command::Fields(items) => {
                    shaped = true;
                    items.iter().for_each(|(e, _)| expr_fields(e, &mut names));
                }
                Command::Display(fields) => {
                    shaped = true;
                    names.extend(fields.iter().cloned());
                }
                Command::Filter(e) => expr_fields(e, &mut names),
                Command::Stats(aggs, by) => {
                    shaped = true;
                    aggs.iter()
                        .flat_map(|(_, args, _)| args)
                        .for_each(|e| expr_fields(e, &mut names));
                    by.iter().for_each(|(e, _)| expr_fields(e, &mut names));
                }
                Command::Sort(keys) => names.extend(keys.iter().map(|(k, _)| k.clone())),
                Command::Parse(field, ..) | Command::ParseRegex(field, _) => {
                    names.insert(field.clone());
                }
                Command::Dedup(fields) => names.extend(fields.iter().cloned()),
                Command::Unnest(field, _) | Command::Pattern(field) => {
                    shaped |= matches!(c, Command::Pattern(_));
                    names.insert(field.clone());
                }
                Command::Limit(_)
                | Command::Unmask
                | Command::FillMissing(_)
                | Command::Diff
                | Command::Anomaly
                | Command::Source(_) => {}
            }
        }
        if !shaped {
            // The default columns (§10.6).
            names.insert("@message".to_owned());
        }
        Projection::of(names)
    }
}

/// Like [`record`], but with only the fields `p` names: JSON members nobody
/// reads are skipped without being built. (Past §10.3's 200 discovered
/// fields [`record`] stops; a projected record may still carry a wanted
/// field from beyond that point.)
pub fn record_for(
    p: &Projection,
    account: &str,
    group: &str,
    stream: &str,
    timestamp: i64,
    ingestion: i64,
    message: &str,
) -> Record {
    if group.starts_with("/aws/lambda/") {
        let mut r = record(account, group, stream, timestamp, ingestion, message);
        r.retain(|k, _| p.wants(k));
        return r;
    }
    let mut r = Record::new();
    if p.wants("@timestamp") {
        r.insert("@timestamp".into(), timestamp.to_string());
    }
    if p.wants("@ingestionTime") {
        r.insert("@ingestionTime".into(), ingestion.to_string());
    }
    if p.wants("@message") {
        r.insert("@message".into(), message.to_owned());
    }
    if p.wants("@logStream") {
        r.insert("@logStream".into(), stream.to_owned());
    }
    if p.wants("@log") {
        r.insert("@log".into(), format!("{account}:{group}"));
    }
    let trimmed = message.trim();
    if p.discovered() && trimmed.starts_with('{') {
        let mut found = Vec::new();
        match skim(trimmed, p, &mut found) {
            // Like `record`: fields only from a message that is one object.
            Some(true) => {
                for (k, v) in found {
                    match v {
                        Some(v) => r.insert(k, v),
                        None => r.remove(&k),
                    };
                }
            }
            Some(false) => {}
            None => {
                let full = record(account, group, stream, timestamp, ingestion, message);
                r.extend(full.into_iter().filter(|(k, _)| p.wants(k)));
            }
        }
    }
    r
}

/// Why a skim stopped: the text is not JSON, or it is beyond what the skim
/// decides exactly (the full parse does).
enum Stop {
    Invalid,
    Unsure,
}

/// Reads the wanted members of a one-line JSON object without building the
/// rest — the common log line, read at memchr speed. `Some(true)`: an object,
/// `found` filled; `Some(false)`: not one JSON object; `None`: the text has
/// what only the full parser decides (control characters, `\u` escapes,
/// escaped keys, exponents, deep nesting), so [`record`] must read it.
fn skim(text: &str, p: &Projection, found: &mut Vec<(String, Option<String>)>) -> Option<bool> {
    let doc = text.as_bytes();
    if has_control(doc) {
        return None;
    }
    let mut sk = Skim { text, doc, pos: 0 };
    match sk.object_members(p, found) {
        Ok(()) if sk.pos == doc.len() => Some(true),
        Ok(()) | Err(Stop::Invalid) => Some(false),
        Err(Stop::Unsure) => None,
    }
}

/// Whether a text has control characters; in blocks of 64 bytes whose
/// check compiles to vector code.
fn has_control(doc: &[u8]) -> bool {
    doc.chunks(64)
        .any(|c| c.iter().fold(0u8, |acc, &b| acc | u8::from(b < 0x20)) != 0)
}

/// The first `"` or `\\` in `s`: eight bytes at a time (keys and most
/// values are short), then a vector search for long strings.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() {
        if i >= 64 {
            return memchr::memchr2(b'"', b'\\', &s[i..]).map(|p| p + i);
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // A zero byte of x ^ c marks c; the lowest mark is exact.
        let (q, b) = (x ^ (u64::from(b'"') * ONES), x ^ (u64::from(b'\\') * ONES));
        let marks = (q.wrapping_sub(ONES) & !q & HIGH) | (b.wrapping_sub(ONES) & !b & HIGH);
        if marks != 0 {
            return Some(i + (marks.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| p + i)
}

struct Skim<'a> {
    /// The text, and its bytes: tokens start and end at ASCII bytes, so
    /// slices between them are always whole characters.
    text: &'a str,
    doc: &'a [u8],
    pos: usize,
}

impl<'a> Skim<'a> {
    fn peek(&self) -> Option<u8> {
        self.doc.get(self.pos).copied()
    }

    fn ws(&mut self) {
        // No control characters here (see `skim`): space is the only blank.
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), Stop> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Stop::Invalid)
        }
    }

    /// A string; whether it had escapes.
    fn string(&mut self) -> Result<bool, Stop> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            let rest = self.doc.get(self.pos..).ok_or(Stop::Invalid)?;
            let at = quote_or_backslash(rest).ok_or(Stop::Invalid)?;
            self.pos += at;
            if self.doc[self.pos] == b'"' {
                self.pos += 1;
                return Ok(escaped);
            }
            escaped = true;
            match self.doc.get(self.pos + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
                Some(b'u') => return Err(Stop::Unsure),
                _ => return Err(Stop::Invalid),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - from
    }

    fn number(&mut self) -> Result<(), Stop> {
        let from = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(Stop::Invalid);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Stop::Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Stop::Invalid);
            }
        }
        // Exponents and very long numbers may overflow, which the full parse
        // refuses: it decides those.
        if matches!(self.peek(), Some(b'e' | b'E')) || self.pos - from > 300 {
            return Err(Stop::Unsure);
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Stop> {
        if self.doc.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Stop::Invalid)
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Stop> {
        if depth > 100 {
            return Err(Stop::Unsure);
        }
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            self.ws();
                        }
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(Stop::Invalid),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            self.ws();
                        }
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(Stop::Invalid),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Stop::Invalid),
        }
    }

    /// The top-level object, keeping wanted members.
    fn object_members(
        &mut self,
        p: &Projection,
        found: &mut Vec<(String, Option<String>)>,
    ) -> Result<(), Stop> {
        self.members(|name, raw| {
            if p.wants(name) || p.holds(name) {
                let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| Stop::Unsure)?;
                flatten_wanted(name, &v, p, found);
            }
            Ok(())
        })
    }

    /// The top-level object: `member(name, raw value text)` for each member.
    fn members(
        &mut self,
        mut member: impl FnMut(&str, &'a str) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key_at = self.pos + 1;
            if self.string()? {
                return Err(Stop::Unsure);
            }
            // Input is UTF-8 and the key ends at a quote, so this holds.
            let text: &'a str = self.text;
            let key = text.get(key_at..self.pos - 1).ok_or(Stop::Invalid)?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let value_at = self.pos;
            self.value(1)?;
            let name = if key.starts_with('@') {
                std::borrow::Cow::Owned(format!("@{key}"))
            } else {
                std::borrow::Cow::Borrowed(key)
            };
            let raw = text.get(value_at..self.pos).ok_or(Stop::Invalid)?;
            member(&name, raw)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Invalid),
            }
        }
    }
}

/// [`record`]'s flattening, keeping only wanted names.
fn flatten_wanted(
    prefix: &str,
    v: &serde_json::Value,
    p: &Projection,
    out: &mut Vec<(String, Option<String>)>,
) {
    match v {
        serde_json::Value::Object(m) => {
            if p.holds(prefix) {
                for (k, v) in m {
                    flatten_wanted(&format!("{prefix}.{k}"), v, p, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            if p.holds(prefix) {
                for (i, v) in items.iter().enumerate() {
                    flatten_wanted(&format!("{prefix}.{i}"), v, p, out);
                }
            }
        }
        _ if !p.wants(prefix) => {}
        serde_json::Value::Null => out.push((prefix.to_owned(), None)),
        serde_json::Value::String(s) => out.push((prefix.to_owned(), Some(s.clone()))),
        other => out.push((prefix.to_owned(), Some(other.to_string()))),
    }
}

/// Leading filters that are only `field op number` comparisons of top-level
/// JSON members, joined by `and`: decided from the raw members of most
/// messages, without building a record.
#[derive(Debug, Clone)]
struct RawFilter {
    tests: Vec<(String, std::cmp::Ordering, bool, f64)>,
}

impl RawFilter {
    /// From a conjunction of comparisons, if that is all it is.
    fn of(e: &Expr, tests: &mut Vec<(String, std::cmp::Ordering, bool, f64)>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match e {
            Expr::And(a, b) => Self::of(a, tests) && Self::of(b, tests),
            Expr::Binary(op, a, b) => match (&**a, &**b) {
                (Expr::Field(f), Expr::Num(n))
                    if !f.starts_with('@') && !f.contains('.') && n.is_finite() =>
                {
                    // (ordering, whether it must equal or must differ)
                    let (ord, want) = match *op {
                        "=" => (Equal, true),
                        "!=" => (Equal, false),
                        "<" => (Less, true),
                        ">" => (Greater, true),
                        "<=" => (Greater, false),
                        ">=" => (Less, false),
                        _ => return false,
                    };
                    tests.push((f.clone(), ord, want, *n));
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// `Some(pass)` when the raw message decides the filters; `None` when
    /// only a record does (a value that is not a plain number, say).
    fn decide(&self, message: &str) -> Option<bool> {
        let text = message.trim();
        let doc = text.as_bytes();
        if !doc.starts_with(b"{") {
            // No discovered fields (outside Lambda groups, which the caller
            // leaves to records): every comparison is absent.
            return Some(false);
        }
        if has_control(doc) {
            return None;
        }
        let mut values: Vec<Option<&str>> = vec![None; self.tests.len()];
        let mut sk = Skim { text, doc, pos: 0 };
        let scanned = sk.members(|name, raw| {
            for (slot, (field, ..)) in values.iter_mut().zip(&self.tests) {
                if field == name {
                    // The last of duplicate members wins, as in a record.
                    *slot = Some(raw);
                }
            }
            Ok(())
        });
        match scanned {
            Ok(()) if sk.pos == doc.len() => {}
            // Not one JSON object: no discovered fields, so every
            // comparison is absent and the filter drops the event.
            Ok(()) | Err(Stop::Invalid) => return Some(false),
            Err(Stop::Unsure) => return None,
        }
        let mut pass = true;
        for (raw, (_, ord, want, n)) in values.into_iter().zip(&self.tests) {
            let x = match raw {
                None | Some("null") => return Some(false),
                Some(raw) => {
                    let text = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                        Some(inner) if !inner.contains('\\') => inner,
                        Some(_) => return None,
                        None => raw,
                    };
                    num(text)?
                }
            };
            let o = x.partial_cmp(n)?;
            pass &= (o == *ord) == *want;
        }
        Some(pass)
    }
}

/// A query fed events in batches — on several threads, each with its own
/// [`Part`], merged in the order the events were read — then finished into
/// the outcome [`run`] gives. Commands up to the first that needs every
/// record (sort, stats, dedup, …) run as records arrive; a `stats` there
/// aggregates as they arrive too, so memory holds groups, not records.
#[derive(Debug, Clone)]
pub struct Runner {
    commands: Vec<Command>,
    split: usize,
    cx: Cx,
    projection: Projection,
    /// Leading `filter`s, and the narrower projection they read when it is
    /// narrower: a record is first built with only those fields, and built
    /// whole only if it passes.
    lead: usize,
    prefilter: Option<Projection>,
    raw_filter: Option<RawFilter>,
    /// `stats count(*) … by bin(…)` (or `datefloor(@timestamp, …)`, or
    /// `@timestamp`) right away: counts need only event times, and a block
    /// within one key needs only its directory entry.
    by_time: bool,
}

/// What a runner has gathered from some of the events.
#[derive(Debug, Clone, Default)]
pub struct Part {
    kept: Vec<Rec>,
    groups: HashMap<Vec<Option<String>>, Vec<Acc>>,
    fed: u64,
}

impl Part {
    /// Records or groups held.
    pub fn len(&self) -> usize {
        self.kept.len() + self.groups.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Runner {
    /// A runner for `q` over the time range `range` (epoch ms, inclusive),
    /// started at `now_ms`.
    pub fn new(q: &Query, range: (i64, i64), now_ms: i64) -> Runner {
        let split = q
            .commands
            .iter()
            .position(|c| !per_record(c))
            .unwrap_or(q.commands.len());
        let by_time = match q.commands.get(split) {
            Some(Command::Stats(aggs, by)) => {
                // Keys that never decrease with time: a block whose first and
                // last events share a key holds only events of that key.
                let monotonic = |e: &Expr| match e {
                    Expr::Field(f) => f == "@timestamp",
                    Expr::Call(n, args) if n == "bin" => {
                        matches!(args.as_slice(), [Expr::Duration(_)])
                    }
                    Expr::Call(n, args) if n == "datefloor" => matches!(
                        args.as_slice(),
                        [Expr::Field(f), Expr::Duration(_)] if f == "@timestamp"
                    ),
                    _ => false,
                };
                q.commands[..split].iter().all(|c| {
                    matches!(
                        c,
                        Command::Display(_) | Command::Unmask | Command::Source(_)
                    )
                }) && aggs
                    .iter()
                    .all(|(f, args, _)| f == "count" && counts_rows(args))
                    && by.iter().all(|(e, _)| monotonic(e))
            }
            _ => false,
        };
        let lead = q.commands[..split]
            .iter()
            .take_while(|c| matches!(c, Command::Filter(_)))
            .count();
        let projection = q.projection();
        let prefilter = (lead > 0)
            .then(|| {
                // Only what the filters read: most records end here.
                let mut names = BTreeSet::new();
                for c in &q.commands[..lead] {
                    if let Command::Filter(e) = c {
                        expr_fields(e, &mut names);
                    }
                }
                Projection::of(names)
            })
            .filter(|p| p.names.len() < projection.names.len());
        let raw_filter = {
            let mut tests = Vec::new();
            let all = lead > 0
                && q.commands[..lead].iter().all(|c| match c {
                    Command::Filter(e) => RawFilter::of(e, &mut tests),
                    _ => false,
                });
            all.then_some(RawFilter { tests })
        };
        Runner {
            commands: q.commands.clone(),
            split,
            cx: Cx { now_ms, range },
            projection,
            lead,
            prefilter,
            raw_filter,
            by_time,
        }
    }

    /// The fields records must carry.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Whether the query only counts events by (functions of) their time:
    /// then [`Runner::add_count`] stands for feeding the events.
    pub fn counts_by_time(&self) -> bool {
        self.by_time
    }

    /// Whether the rows are aggregates (no `@ptr` needed).
    pub fn aggregates(&self) -> bool {
        self.commands
            .iter()
            .any(|c| matches!(c, Command::Stats(..) | Command::Pattern(_)))
    }

    /// An empty part.
    pub fn part(&self) -> Part {
        Part::default()
    }

    /// The group key of an event at `timestamp`, for a [`Runner::counts_by_time`] query.
    pub fn time_key(&self, timestamp: i64) -> Vec<Option<String>> {
        let Some(Command::Stats(_, by)) = self.commands.get(self.split) else {
            return Vec::new();
        };
        let mut r = Rec::default();
        r.f.insert("@timestamp".into(), timestamp.to_string());
        by.iter().map(|(e, _)| eval(e, &r, &self.cx)).collect()
    }

    /// Counts `n` events of group `key` (see [`Runner::time_key`]).
    pub fn add_count(&self, part: &mut Part, key: Vec<Option<String>>, n: u64) {
        let Some(Command::Stats(aggs, _)) = self.commands.get(self.split) else {
            return;
        };
        let accs = part
            .groups
            .entry(key)
            .or_insert_with(|| aggs.iter().map(|(f, _, _)| Acc::new(f)).collect());
        for acc in accs {
            if let Acc::Count(c) = acc {
                *c += n;
            }
        }
        part.fed += n;
    }

    /// The narrower projection of the query's leading filters, when there
    /// is one: build records with it for [`Runner::passes`] first.
    pub fn prefilter(&self) -> Option<&Projection> {
        self.prefilter.as_ref()
    }

    /// Whether the leading filters keep an event, decided from its raw
    /// message when that is enough (`None`: build a record and ask
    /// [`Runner::passes`]). Not for `/aws/lambda/` groups, whose records
    /// discover more than the message's own JSON.
    pub fn passes_raw(&self, message: &str) -> Option<bool> {
        self.raw_filter.as_ref()?.decide(message)
    }

    /// Whether a record (built with [`Runner::prefilter`]) passes the
    /// leading filters.
    pub fn passes(&self, record: Record) -> bool {
        let mut r = Rec {
            f: record,
            json: BTreeSet::new(),
        };
        self.commands[..self.lead]
            .iter()
            .all(|c| apply_row(c, &mut r, &self.cx))
    }

    /// Feeds a record that [`Runner::passes`] (built whole this time).
    pub fn feed_passed(&self, part: &mut Part, record: Record) {
        self.feed_from(part, record, self.lead);
    }

    /// Feeds one record.
    pub fn feed(&self, part: &mut Part, record: Record) {
        self.feed_from(part, record, 0);
    }

    fn feed_from(&self, part: &mut Part, record: Record, from: usize) {
        let mut r = Rec {
            f: record,
            json: BTreeSet::new(),
        };
        for c in &self.commands[from..self.split] {
            if !apply_row(c, &mut r, &self.cx) {
                return;
            }
        }
        part.fed += 1;
        match self.commands.get(self.split) {
            Some(Command::Stats(aggs, by)) => {
                let key = by.iter().map(|(e, _)| eval(e, &r, &self.cx)).collect();
                let accs = part
                    .groups
                    .entry(key)
                    .or_insert_with(|| aggs.iter().map(|(f, _, _)| Acc::new(f)).collect());
                for (acc, (f, args, _)) in accs.iter_mut().zip(aggs) {
                    acc.push(f, args, &r, &self.cx);
                }
            }
            _ => part.kept.push(r),
        }
    }

    /// Merges `later` (events read after `into`'s) into `into`.
    pub fn merge(&self, into: &mut Part, later: Part) {
        into.fed += later.fed;
        into.kept.extend(later.kept);
        let aggs: &[(String, Vec<Expr>, String)] = match self.commands.get(self.split) {
            Some(Command::Stats(aggs, _)) => aggs,
            _ => &[],
        };
        for (key, accs) in later.groups {
            match into.groups.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(accs);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    for ((a, b), (f, _, _)) in o.get_mut().iter_mut().zip(accs).zip(aggs) {
                        a.merge(f, b);
                    }
                }
            }
        }
    }

    /// The outcome, with at most `cap` rows; `previous` holds the records
    /// of the period before, for `diff`.
    pub fn finish(&self, part: Part, cap: usize, previous: &[Record]) -> Outcome {
        let empty = State {
            records: Vec::new(),
            columns: Vec::new(),
            display: None,
            aggregated: false,
            time_fields: Vec::new(),
            matched: 0,
        };
        let mut st = exec_from(&self.commands[..self.split], 0, empty, &self.cx, &[]);
        st.matched = part.fed;
        let from = match self.commands.get(self.split) {
            Some(Command::Stats(aggs, by)) => {
                finish_stats(
                    aggs,
                    by,
                    part.groups.into_iter().collect(),
                    part.fed,
                    &mut st,
                );
                self.split + 1
            }
            _ => {
                let mut kept = part.kept;
                newest_first(&mut kept);
                st.records = kept;
                self.split
            }
        };
        let st = exec_from(&self.commands, from, st, &self.cx, previous);
        outcome(st, cap)
    }
}

fn outcome(mut st: State, cap: usize) -> Outcome {
    st.records.truncate(cap);
    let columns = st.display.unwrap_or_else(|| {
        if st.columns.is_empty() {
            vec!["@timestamp".into(), "@message".into()]
        } else {
            st.columns
        }
    });
    let rows = st
        .records
        .iter()
        .map(|r| {
            let mut row: Row = columns
                .iter()
                .filter_map(|c| {
                    r.get(c)
                        .map(|v| (c.clone(), format_value(c, &v, &st.time_fields)))
                })
                .collect();
            if !st.aggregated {
                if let Some(ptr) = r.f.get("@ptr") {
                    row.push(("@ptr".into(), ptr.clone()));
                }
            }
            row
        })
        .collect();
    Outcome {
        rows,
        matched: st.matched,
        aggregated: st.aggregated,
    }
}

/// Where a run of commands has got to.
struct State {
    records: Vec<Rec>,
    columns: Vec<String>,
    display: Option<Vec<String>>,
    aggregated: bool,
    time_fields: Vec<String>,
    matched: u64,
}

/// Most rows `fillmissing` may leave and `unnest` may make (the largest
/// result StartQuery can ask for), and `unnest`'s budget of record bytes.
const MAX_ROWS: usize = 100_000;
const UNNEST_BUDGET: usize = 256 << 20;

fn compare_values(x: &str, y: &str) -> std::cmp::Ordering {
    match num(x).zip(num(y)) {
        Some((x, y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        None => x.cmp(y),
    }
}

fn exec(commands: &[Command], records: Vec<Record>, cx: &Cx, previous: &[Record]) -> State {
    let mut records: Vec<Rec> = records
        .into_iter()
        .map(|f| Rec {
            f,
            json: BTreeSet::new(),
        })
        .collect();
    // Records are read newest first: the order of rows nothing sorts (§10.6).
    newest_first(&mut records);
    let st = State {
        matched: records.len() as u64,
        records,
        columns: Vec::new(),
        display: None,
        aggregated: false,
        time_fields: Vec::new(),
    };
    exec_from(commands, 0, st, cx, previous)
}

/// Records are read newest first: the order of rows nothing sorts (§10.6).
/// Stable, so events of one time keep the order they were read in.
fn newest_first(records: &mut [Rec]) {
    let t = |r: &Rec| r.f.get("@timestamp").and_then(|t| num(t)).unwrap_or(0.0);
    records.sort_by(|a, b| t(b).partial_cmp(&t(a)).unwrap_or(std::cmp::Ordering::Equal));
}

/// What a per-record command (fields, filter, parse, unmask) does to one
/// record; false when a filter drops it.
fn apply_row(c: &Command, r: &mut Rec, cx: &Cx) -> bool {
    match c {
        Command::Fields(items) => {
            for (e, name) in items {
                let v = eval_val(e, r, cx);
                r.set(name, v);
            }
            true
        }
        Command::Filter(e) => eval(e, r, cx).as_deref() == Some("1"),
        Command::Parse(field, glob, names) => {
            let Some(value) = r.get(field) else {
                return true;
            };
            let parts: Vec<&str> = glob.split('*').collect();
            let Some(start) = value.find(parts[0]) else {
                return true;
            };
            let mut rest = &value[start + parts[0].len()..];
            let mut captures = Vec::new();
            for (i, lit) in parts[1..].iter().enumerate() {
                let last = i == parts.len() - 2;
                if last && lit.is_empty() {
                    captures.push(rest.to_owned());
                    rest = "";
                } else if let Some(at) = rest.find(lit) {
                    captures.push(rest[..at].to_owned());
                    rest = &rest[at + lit.len()..];
                } else {
                    return true;
                }
            }
            for (n, v) in names.iter().zip(captures) {
                r.set(n, Some(Val::Str(v)));
            }
            true
        }
        Command::ParseRegex(field, re) => {
            let Some(value) = r.get(field) else {
                return true;
            };
            let Some(caps) = re.captures(&value) else {
                return true;
            };
            for name in re.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    r.set(name, Some(Val::Str(m.as_str().to_owned())));
                }
            }
            true
        }
        _ => true,
    }
}

/// Whether a command works on one record at a time, in any order.
fn per_record(c: &Command) -> bool {
    matches!(
        c,
        Command::Fields(_)
            | Command::Display(_)
            | Command::Filter(_)
            | Command::Parse(..)
            | Command::ParseRegex(..)
            | Command::Unmask
            | Command::Source(_)
    )
}

/// Runs `commands[from..]` on a state (`commands[..from]` already ran).
fn exec_from(
    commands: &[Command],
    from: usize,
    mut st: State,
    cx: &Cx,
    previous: &[Record],
) -> State {
    for (at, c) in commands.iter().enumerate().skip(from) {
        let records = &mut st.records;
        match c {
            Command::Fields(items) => {
                for r in records.iter_mut() {
                    apply_row(c, r, cx);
                }
                for (e, name) in items {
                    let time = is_time(e, &st.time_fields);
                    st.time_fields.retain(|f| f != name);
                    if time {
                        st.time_fields.push(name.clone());
                    }
                    if !st.columns.contains(name) {
                        st.columns.push(name.clone());
                    }
                }
            }
            Command::Display(names) => st.display = Some(names.clone()),
            Command::Filter(_) => {
                records.retain_mut(|r| apply_row(c, r, cx));
                st.matched = records.len() as u64;
            }
            Command::Parse(_, _, names) => {
                st.time_fields.retain(|f| !names.contains(f));
                for r in records.iter_mut() {
                    apply_row(c, r, cx);
                }
            }
            Command::ParseRegex(_, re) => {
                st.time_fields
                    .retain(|f| re.capture_names().flatten().all(|n| n != f));
                for r in records.iter_mut() {
                    apply_row(c, r, cx);
                }
            }
            Command::Dedup(names) => {
                let mut seen = HashSet::new();
                records.retain(|r| {
                    let key: Option<Vec<String>> = names.iter().map(|n| r.get(n)).collect();
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
                                let o = compare_values(&x, &y);
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
                let mut groups: BTreeMap<Vec<Option<String>>, Vec<Acc>> = BTreeMap::new();
                for r in records.iter() {
                    let key = by.iter().map(|(e, _)| eval(e, r, cx)).collect();
                    let accs = groups
                        .entry(key)
                        .or_insert_with(|| aggs.iter().map(|(f, _, _)| Acc::new(f)).collect());
                    for (acc, (f, args, _)) in accs.iter_mut().zip(aggs) {
                        acc.push(f, args, r, cx);
                    }
                }
                let fed = records.len() as u64;
                finish_stats(aggs, by, groups, fed, &mut st);
            }
            Command::Unnest(field, name) => {
                st.time_fields.retain(|f| f != name);
                let mut out = Vec::with_capacity(records.len());
                let mut budget = UNNEST_BUDGET;
                for mut r in std::mem::take(records) {
                    match r.val(field) {
                        Some(Val::Json(serde_json::Value::Array(items))) => {
                            // Past the budget the remaining elements are
                            // dropped: a long list in a large message would
                            // otherwise copy the message per element.
                            let size = r.size();
                            for item in items {
                                if out.len() >= MAX_ROWS || budget < size {
                                    break;
                                }
                                budget -= size;
                                let mut one = r.clone();
                                one.set(name, Val::from_json(item));
                                out.push(one);
                            }
                        }
                        other => {
                            r.set(name, other);
                            out.push(r);
                        }
                    }
                }
                *records = out;
                if !st.columns.contains(name) {
                    st.columns.push(name.clone());
                }
            }
            Command::Unmask => {}
            Command::FillMissing(fill) => fill_missing(fill, records, cx),
            Command::Pattern(field) => {
                st.aggregated = true;
                st.matched = records.len() as u64;
                *records = patterns(field, records, cx);
                st.time_fields.clear();
                st.columns = PATTERN_COLUMNS.iter().map(|c| c.to_string()).collect();
            }
            Command::Diff => {
                // The previous period runs through the same commands up to
                // and including `pattern`.
                let (lo, hi) = cx.range;
                let len = hi.saturating_sub(lo).saturating_add(1);
                let before = Cx {
                    now_ms: cx.now_ms,
                    range: (lo.saturating_sub(len), lo.saturating_sub(1)),
                };
                let earlier = exec(&commands[..at], previous.to_vec(), &before, &[]);
                *records = diff(&earlier.records, records);
                st.columns = DIFF_COLUMNS.iter().map(|c| c.to_string()).collect();
            }
            Command::Anomaly => {
                for r in records.iter_mut() {
                    anomaly(r);
                }
                st.columns
                    .extend(["@anomaly".to_owned(), "@priority".to_owned()]);
            }
            // Kept out of the command list by `Query::parse`.
            Command::Source(_) => {}
        }
    }
    st
}

/// The rows of a `stats` from its groups' states, and what it does to the
/// state: aggregated rows, its columns, which of them hold times.
fn finish_stats(
    aggs: &[(String, Vec<Expr>, String)],
    by: &[(Expr, String)],
    groups: BTreeMap<Vec<Option<String>>, Vec<Acc>>,
    fed: u64,
    st: &mut State,
) {
    st.aggregated = true;
    st.matched = fed;
    let time_fields: Vec<String> = by
        .iter()
        .filter(|(e, _)| is_time(e, &st.time_fields))
        .map(|(_, n)| n.clone())
        .chain(
            aggs.iter()
                .filter(|(f, args, _)| {
                    matches!(
                        f.as_str(),
                        "min" | "max" | "earliest" | "latest" | "sortsfirst" | "sortslast"
                    ) && args.first().is_some_and(|a| is_time(a, &st.time_fields))
                })
                .map(|(_, _, n)| n.clone()),
        )
        .collect();
    let mut out = Vec::new();
    for (key, accs) in groups {
        let mut rec = Rec::default();
        for ((_, name), v) in by.iter().zip(key) {
            rec.set(name, v.map(Val::Str));
        }
        for (acc, (f, args, name)) in accs.into_iter().zip(aggs) {
            rec.set(name, acc.finish(f, args).map(Val::Str));
        }
        out.push(rec);
    }
    st.records = out;
    st.time_fields = time_fields;
    st.columns = by
        .iter()
        .map(|(_, n)| n.clone())
        .chain(aggs.iter().map(|(_, _, n)| n.clone()))
        .collect();
}

/// `fillmissing` (§10.6): a row for every bin of the query's range that the
/// `stats` left out — for each combination of the other `by` keys seen —
/// with the `with` constants, and 0 for counts.
fn fill_missing(fill: &Fill, records: &mut Vec<Rec>, cx: &Cx) {
    let Some(period) = fill.period else {
        return;
    };
    let others: Vec<&String> = fill.by.iter().filter(|c| **c != fill.bin).collect();
    let mut combos: BTreeSet<Vec<Option<String>>> = records
        .iter()
        .map(|r| others.iter().map(|c| r.get(c)).collect())
        .collect();
    if others.is_empty() {
        combos.insert(Vec::new());
    }
    let present: HashSet<(Vec<Option<String>>, Option<String>)> = records
        .iter()
        .map(|r| (others.iter().map(|c| r.get(c)).collect(), r.get(&fill.bin)))
        .collect();
    let (Some(mut t), Some(last)) = (
        floor_period(cx.range.0, period),
        floor_period(cx.range.1, period),
    ) else {
        return;
    };
    // Each pass adds a row or meets one of the rows already there, so the
    // passes are bounded too, even for a range of many tiny bins.
    let mut passes = records.len().saturating_add(MAX_ROWS);
    'bins: while t <= last && passes > 0 {
        passes -= 1;
        for combo in &combos {
            if records.len() >= MAX_ROWS {
                break 'bins;
            }
            if present.contains(&(combo.clone(), Some(t.to_string()))) {
                continue;
            }
            let mut rec = Rec::default();
            rec.set(&fill.bin, Some(Val::Str(t.to_string())));
            for (c, v) in others.iter().zip(combo) {
                rec.set(c, v.clone().map(Val::Str));
            }
            for c in &fill.counts {
                rec.set(c, Some(Val::Str("0".into())));
            }
            for (c, v) in &fill.with {
                rec.set(c, Some(Val::Str(v.clone())));
            }
            records.push(rec);
        }
        match step_period(t, period) {
            Some(next) => t = next,
            None => break,
        }
    }
    // The order of `stats` rows: by their keys (§10.6).
    records.sort_by_cached_key(|r| fill.by.iter().map(|c| r.get(c)).collect::<Vec<_>>());
}

const PATTERN_COLUMNS: [&str; 5] = [
    "@pattern",
    "@sampleCount",
    "@ratio",
    "@tokens",
    "@visualization",
];
const DIFF_COLUMNS: [&str; 5] = [
    "@pattern",
    "@previousCount",
    "@currentCount",
    "@changeType",
    "@changePercentage",
];

/// `@visualization` splits the query's range into this many equal bins. With
/// 30 bins one bin holding every sample lies √29 ≈ 5.4σ from the mean, so
/// `anomaly`'s 3σ rule can fire at all (with 10 bins it never could).
const PATTERN_BINS: i64 = 30;

/// Whether a token looks variable (§10.6 `pattern`): a number, hex, a UUID,
/// an IP address (with or without a port) or a quoted string.
fn is_variable(t: &str) -> bool {
    let number = t
        .strip_prefix(['-', '+'])
        .unwrap_or(t)
        .starts_with(|c: char| c.is_ascii_digit())
        && t.parse::<f64>().is_ok();
    let hex_digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .is_some_and(hex_digits)
        || (t.len() >= 8 && hex_digits(t) && t.chars().any(|c| c.is_ascii_digit()));
    let uuid = t.len() == 36
        && t.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && t.split('-').all(hex_digits);
    let quoted = t.len() >= 2
        && ((t.starts_with('"') && t.ends_with('"')) || (t.starts_with('\'') && t.ends_with('\'')));
    number
        || hex
        || uuid
        || quoted
        || t.parse::<IpAddr>().is_ok()
        || t.parse::<std::net::SocketAddr>().is_ok()
}

/// Splits on whitespace, except inside a quoted token (`'a b'`).
fn split_tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let end = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..]
                .find(q)
                .map(|i| i + 2)
                .unwrap_or_else(|| rest.find(char::is_whitespace).unwrap_or(rest.len())),
            _ => rest.find(char::is_whitespace).unwrap_or(rest.len()),
        };
        // A closing quote may be followed by more text (`"a",`).
        let end = end
            + rest[end..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - end);
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    out
}

/// A token with its variable part replaced by `<*>`: the whole token, else
/// its core without surrounding punctuation (`(42),` → `(<*>),`), else the
/// value of `key=value`.
fn generalize(token: &str) -> String {
    if is_variable(token) {
        return "<*>".into();
    }
    let punct = |c: char| "()[]{}<>,;:.!?".contains(c);
    let core = token.trim_start_matches(punct);
    let lead = token.len() - core.len();
    let core = core.trim_end_matches(punct);
    if !core.is_empty() && is_variable(core) {
        return format!("{}<*>{}", &token[..lead], &token[lead + core.len()..]);
    }
    if let Some((key, value)) = token.split_once('=') {
        if !value.is_empty() {
            return format!("{key}={}", generalize(value));
        }
    }
    token.to_owned()
}

/// `pattern field`: one row per template, most samples first, ties by
/// template text.
fn patterns(field: &str, records: &[Rec], cx: &Cx) -> Vec<Rec> {
    let (lo, hi) = cx.range;
    let span = hi.saturating_sub(lo).saturating_add(1).max(1);
    let width = (span / PATTERN_BINS + i64::from(span % PATTERN_BINS != 0)).max(1);
    // template → (samples, tokens, per-bin counts)
    let mut clusters: BTreeMap<String, (u64, Vec<String>, Vec<u64>)> = BTreeMap::new();
    let mut total = 0u64;
    for r in records {
        let Some(value) = r.get(field) else {
            continue;
        };
        total += 1;
        let tokens: Vec<String> = split_tokens(&value).into_iter().map(generalize).collect();
        let entry = clusters
            .entry(tokens.join(" "))
            .or_insert_with(|| (0, tokens, vec![0; PATTERN_BINS as usize]));
        entry.0 += 1;
        if let Some(t) = r.f.get("@timestamp").and_then(|t| ts_ms(t)) {
            let bin = (t.saturating_sub(lo) / width).clamp(0, PATTERN_BINS - 1);
            entry.2[bin as usize] += 1;
        }
    }
    let mut out: Vec<_> = clusters.into_iter().collect();
    out.sort_by_key(|(_, (n, _, _))| std::cmp::Reverse(*n));
    out.into_iter()
        .map(|(pattern, (n, tokens, bins))| {
            let mut r = Rec::default();
            r.set("@pattern", Some(Val::Str(pattern)));
            r.set("@sampleCount", Some(Val::Str(n.to_string())));
            r.set(
                "@ratio",
                Some(Val::Str(fmt_num(n as f64 / total.max(1) as f64))),
            );
            r.set("@tokens", Val::from_json(serde_json::json!(tokens)));
            r.set("@visualization", Val::from_json(serde_json::json!(bins)));
            r
        })
        .collect()
}

/// `diff`: each pattern's count now against the previous period.
fn diff(earlier: &[Rec], now: &[Rec]) -> Vec<Rec> {
    let count = |r: &Rec| {
        r.get("@sampleCount")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in earlier {
        if let Some(p) = r.get("@pattern") {
            counts.entry(p).or_default().0 += count(r);
        }
    }
    for r in now {
        if let Some(p) = r.get("@pattern") {
            counts.entry(p).or_default().1 += count(r);
        }
    }
    let mut rows: Vec<_> = counts.into_iter().collect();
    rows.sort_by_key(|(_, (before, now))| std::cmp::Reverse((*now, *before)));
    rows.into_iter()
        .map(|(pattern, (before, now))| {
            let mut r = Rec::default();
            let kind = if before == 0 {
                "NEW"
            } else if now > before {
                "INCREASED"
            } else if now < before {
                "DECREASED"
            } else {
                "UNCHANGED"
            };
            r.set("@pattern", Some(Val::Str(pattern)));
            r.set("@previousCount", Some(Val::Str(before.to_string())));
            r.set("@currentCount", Some(Val::Str(now.to_string())));
            r.set("@changeType", Some(Val::Str(kind.into())));
            if before > 0 {
                let pct = (now as f64 - before as f64) / before as f64 * 100.0;
                r.set("@changePercentage", Some(Val::Str(fmt_num(pct))));
            }
            r
        })
        .collect()
}

/// `anomaly`: flags a pattern row whose per-bin counts have a bin more than
/// 3σ (population σ of its own bins) from their mean; the priority grows
/// with the largest deviation.
fn anomaly(r: &mut Rec) {
    let bins: Vec<f64> = r
        .get("@visualization")
        .and_then(|v| serde_json::from_str::<Vec<f64>>(&v).ok())
        .unwrap_or_default();
    let n = bins.len() as f64;
    let mut z = 0.0;
    if !bins.is_empty() {
        let mean = bins.iter().sum::<f64>() / n;
        let sd = (bins.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n).sqrt();
        if sd > 0.0 {
            z = bins
                .iter()
                .map(|c| (c - mean).abs() / sd)
                .fold(0.0, f64::max);
        }
    }
    let flagged = z > 3.0;
    r.set("@anomaly", truth(flagged).map(Val::Str));
    let priority = if z > 5.0 {
        "HIGH"
    } else if z > 4.0 {
        "MEDIUM"
    } else {
        "LOW"
    };
    r.set("@priority", flagged.then(|| Val::Str(priority.to_owned())));
}

/// `count_distinct` counts exactly up to this many values, then estimates.
const EXACT_DISTINCT: usize = 10_000;

/// HyperLogLog precision: 2^14 registers, about 0.8 % standard error.
const HLL_P: u32 = 14;

/// A HyperLogLog sketch (Flajolet et al.), with the small-range correction
/// (linear counting); a 64-bit hash needs no large-range one.
#[derive(Debug, Clone)]
struct Hll {
    registers: Vec<u8>,
}

impl Hll {
    fn new() -> Hll {
        Hll {
            registers: vec![0; 1 << HLL_P],
        }
    }

    fn add(&mut self, v: &str) {
        let h = hash64(v.as_bytes());
        let index = (h >> (64 - HLL_P)) as usize;
        let rank = ((h << HLL_P).leading_zeros() + 1).min(64 - HLL_P + 1) as u8;
        if let Some(reg) = self.registers.get_mut(index) {
            *reg = (*reg).max(rank);
        }
    }

    fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        let raw = alpha * m * m / sum;
        let e = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        e.round() as u64
    }
}

/// FNV-1a, then the SplitMix64 finalizer so every output bit depends on
/// every input bit (HyperLogLog reads the top bits). Fixed, unlike std's
/// hasher, so estimates are the same on every run.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
fn count_distinct<'a>(values: impl Iterator<Item = &'a str>) -> u64 {
    let mut exact: HashSet<&str> = HashSet::new();
    let mut sketch: Option<Hll> = None;
    for v in values {
        match &mut sketch {
            Some(h) => h.add(v),
            None => {
                exact.insert(v);
                if exact.len() > EXACT_DISTINCT {
                    let mut h = Hll::new();
                    exact.drain().for_each(|x| h.add(x));
                    sketch = Some(h);
                }
            }
        }
    }
    match sketch {
        Some(h) => h.estimate(),
        None => exact.len() as u64,
    }
}

/// The running state of one `stats` aggregate (§10.7). Rows are pushed in
/// the current order and partial states merged in that order, so a query
/// fed in parallel batches ends exactly where one pass would.
#[derive(Debug, Clone)]
enum Acc {
    /// `count(*)` / `count(f)`.
    Count(u64),
    /// `count_distinct`: exact up to [`EXACT_DISTINCT`] values, then a sketch.
    Distinct(HashSet<String>, Option<Box<Hll>>),
    /// `sum` and `avg`: Neumaier-compensated, so the order of batches does
    /// not change the digits.
    Sum { sum: f64, comp: f64, n: u64 },
    /// `min` / `max`: numeric while every value is a number, else text.
    Extreme {
        number: Option<f64>,
        text: Option<String>,
        numeric: bool,
    },
    /// `stddev` and `pct` need every value.
    Numbers(Vec<f64>),
    /// `earliest` / `latest`: (timestamp, value); ties keep the first.
    Pick(Option<(f64, String)>),
    /// `sortsFirst` / `sortsLast`.
    Text(Option<String>),
}

/// `count(*)` and `count()` count rows; `count(f)` counts present values.
fn counts_rows(args: &[Expr]) -> bool {
    match args.first() {
        None => true,
        Some(Expr::Str(s)) => s == "*",
        Some(_) => false,
    }
}

impl Acc {
    fn new(f: &str) -> Acc {
        match f {
            "count" => Acc::Count(0),
            "count_distinct" => Acc::Distinct(HashSet::new(), None),
            "sum" | "avg" => Acc::Sum {
                sum: 0.0,
                comp: 0.0,
                n: 0,
            },
            "min" | "max" => Acc::Extreme {
                number: None,
                text: None,
                numeric: true,
            },
            "earliest" | "latest" => Acc::Pick(None),
            "sortsfirst" | "sortslast" => Acc::Text(None),
            _ => Acc::Numbers(Vec::new()),
        }
    }

    fn add_number(sum: &mut f64, comp: &mut f64, x: f64) {
        let t = *sum + x;
        if sum.abs() >= x.abs() {
            *comp += (*sum - t) + x;
        } else {
            *comp += (x - t) + *sum;
        }
        *sum = t;
    }

    /// Feeds one row.
    fn push(&mut self, f: &str, args: &[Expr], r: &Rec, cx: &Cx) {
        if let Acc::Count(n) = self {
            if counts_rows(args) || args.first().is_some_and(|a| eval(a, r, cx).is_some()) {
                *n += 1;
            }
            return;
        }
        let Some(v) = args.first().and_then(|a| eval(a, r, cx)) else {
            return;
        };
        match self {
            Acc::Count(_) => {}
            Acc::Distinct(exact, sketch) => match sketch {
                Some(h) => h.add(&v),
                None => {
                    exact.insert(v);
                    if exact.len() > EXACT_DISTINCT {
                        let mut h = Hll::new();
                        exact.drain().for_each(|x| h.add(&x));
                        *sketch = Some(Box::new(h));
                    }
                }
            },
            Acc::Sum { sum, comp, n } => {
                if let Some(x) = num(&v) {
                    Acc::add_number(sum, comp, x);
                    *n += 1;
                }
            }
            Acc::Extreme {
                number,
                text,
                numeric,
            } => {
                let min = f == "min";
                match num(&v) {
                    Some(x) => {
                        *number = Some(number.map_or(x, |b| if min { b.min(x) } else { b.max(x) }));
                    }
                    None => *numeric = false,
                }
                let better = text
                    .as_ref()
                    .is_none_or(|b| if min { v < *b } else { v > *b });
                if better {
                    *text = Some(v);
                }
            }
            Acc::Numbers(values) => values.extend(num(&v)),
            Acc::Pick(best) => {
                let Some(t) = r.f.get("@timestamp").and_then(|t| num(t)) else {
                    return;
                };
                let better =
                    best.as_ref().is_none_or(
                        |(b, _)| {
                            if f == "earliest" {
                                t < *b
                            } else {
                                t > *b
                            }
                        },
                    );
                if better {
                    *best = Some((t, v));
                }
            }
            Acc::Text(best) => {
                let better =
                    best.as_ref()
                        .is_none_or(|b| if f == "sortsfirst" { v < *b } else { v > *b });
                if better {
                    *best = Some(v);
                }
            }
        }
    }

    /// Merges the state of rows that come after this state's rows.
    fn merge(&mut self, f: &str, later: Acc) {
        match (self, later) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Distinct(exact, sketch), Acc::Distinct(other, other_sketch)) => {
                match (sketch.as_mut(), other_sketch) {
                    (Some(h), Some(o)) => {
                        for (r, x) in h.registers.iter_mut().zip(o.registers.iter()) {
                            *r = (*r).max(*x);
                        }
                    }
                    (Some(h), None) => other.iter().for_each(|x| h.add(x)),
                    (None, Some(mut o)) => {
                        exact.drain().for_each(|x| o.add(&x));
                        *sketch = Some(o);
                    }
                    (None, None) => {
                        exact.extend(other);
                        if exact.len() > EXACT_DISTINCT {
                            let mut h = Hll::new();
                            exact.drain().for_each(|x| h.add(&x));
                            *sketch = Some(Box::new(h));
                        }
                    }
                }
            }
            (
                Acc::Sum { sum, comp, n },
                Acc::Sum {
                    sum: s2,
                    comp: c2,
                    n: n2,
                },
            ) => {
                Acc::add_number(sum, comp, s2);
                Acc::add_number(sum, comp, c2);
                *n += n2;
            }
            (
                Acc::Extreme {
                    number,
                    text,
                    numeric,
                },
                Acc::Extreme {
                    number: n2,
                    text: t2,
                    numeric: num2,
                },
            ) => {
                let min = f == "min";
                *number = match (*number, n2) {
                    (Some(a), Some(b)) => Some(if min { a.min(b) } else { a.max(b) }),
                    (a, b) => a.or(b),
                };
                if let Some(b) = t2 {
                    if text
                        .as_ref()
                        .is_none_or(|a| if min { b < *a } else { b > *a })
                    {
                        *text = Some(b);
                    }
                }
                *numeric &= num2;
            }
            (Acc::Numbers(a), Acc::Numbers(b)) => a.extend(b),
            (Acc::Pick(a), Acc::Pick(Some((t, v)))) => {
                let better = a
                    .as_ref()
                    .is_none_or(|(s, _)| if f == "earliest" { t < *s } else { t > *s });
                if better {
                    *a = Some((t, v));
                }
            }
            (Acc::Text(a), Acc::Text(Some(v))) => {
                let better = a
                    .as_ref()
                    .is_none_or(|s| if f == "sortsfirst" { v < *s } else { v > *s });
                if better {
                    *a = Some(v);
                }
            }
            // States of one aggregate always have the same kind.
            _ => {}
        }
    }

    /// The aggregate's value.
    fn finish(self, f: &str, args: &[Expr]) -> Option<String> {
        match self {
            Acc::Count(n) => Some(n.to_string()),
            Acc::Distinct(exact, sketch) => Some(
                match sketch {
                    Some(h) => h.estimate(),
                    None => exact.len() as u64,
                }
                .to_string(),
            ),
            Acc::Sum { sum, comp, n } => {
                let total = sum + comp;
                match f {
                    _ if n == 0 => None,
                    "avg" => Some(fmt_num(total / n as f64)),
                    _ => Some(fmt_num(total)),
                }
            }
            Acc::Extreme {
                number,
                text,
                numeric,
            } => {
                if numeric {
                    number.map(fmt_num)
                } else {
                    text
                }
            }
            Acc::Numbers(mut v) => match f {
                "stddev" => {
                    // Sample standard deviation: undefined below two values.
                    if v.len() < 2 {
                        return None;
                    }
                    // Summed in value order, so the digits do not depend on
                    // the order rows came in.
                    v.sort_by(f64::total_cmp);
                    let n = v.len() as f64;
                    let mean = v.iter().sum::<f64>() / n;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
                    let sd = var.sqrt();
                    sd.is_finite().then(|| fmt_num(sd))
                }
                _ => {
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
            },
            Acc::Pick(best) => best.map(|(_, v)| v),
            Acc::Text(best) => best,
        }
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
        run(
            &q,
            events(),
            RunOptions {
                cap: 10_000,
                ..RunOptions::default()
            },
        )
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
        let e = Query::parse("fields nosuch(x)").unwrap_err();
        assert_eq!((e.start, e.end), (7, 13));
    }
}

/// Golden tests of §10.3–10.7 beyond the worked example. Every expected row
/// was worked out by hand from the spec, not copied from a run.
#[cfg(test)]
mod language_tests {
    use super::*;

    /// 2024-01-01 00:00:00 UTC in epoch ms.
    const T0: i64 = 1_704_067_200_000;

    fn recs(group: &str, events: &[(i64, &str)]) -> Vec<Record> {
        events
            .iter()
            .map(|(t, m)| {
                let mut r = record("123456789012", group, "s1", *t, *t, m);
                r.insert("@ptr".into(), format!("ptr-{t}"));
                r
            })
            .collect()
    }

    fn run_opts(q: &str, records: Vec<Record>, opts: RunOptions) -> Vec<Row> {
        let q = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        run(&q, records, opts)
            .rows
            .into_iter()
            .map(|r| r.into_iter().filter(|(k, _)| k != "@ptr").collect())
            .collect()
    }

    /// Runs over `records` with the query range 00:00:00–00:05:00.999.
    fn run_on(q: &str, records: Vec<Record>) -> Vec<Row> {
        run_opts(
            q,
            records,
            RunOptions {
                cap: 10_000,
                range: Some((T0, T0 + 300_999)),
                now_ms: T0 + 300_123,
                previous: Vec::new(),
            },
        )
    }

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The §10.8 events.
    fn example() -> Vec<Record> {
        recs(
            "app",
            &[
                (
                    T0 + 10_000,
                    r#"{"level":"ERROR","latency":120,"user":{"id":"u1"}}"#,
                ),
                (
                    T0 + 20_000,
                    r#"{"level":"INFO","latency":30,"user":{"id":"u2"}}"#,
                ),
                (
                    T0 + 65_000,
                    r#"{"level":"ERROR","latency":300,"user":{"id":"u1"}}"#,
                ),
                (T0 + 120_000, "plain text latency=50"),
            ],
        )
    }

    /// The value of `expr` on one record at 00:00:10 whose message is
    /// `{"s":"  pad  ","n":"9","word":"xyZxyfooxyxyZ","ip":"10.1.2.3"}`.
    fn value(expr: &str) -> Option<String> {
        let message = r#"{"s":"  pad  ","n":"9","word":"xyZxyfooxyxyZ","ip":"10.1.2.3"}"#;
        let rows = run_on(
            &format!("fields {expr} as v | display v"),
            recs("app", &[(T0 + 10_000, message)]),
        );
        assert_eq!(rows.len(), 1, "{expr}");
        rows[0]
            .iter()
            .find(|(k, _)| k == "v")
            .map(|(_, v)| v.clone())
    }

    fn check(cases: &[(&str, Option<&str>)]) {
        for (expr, want) in cases {
            assert_eq!(value(expr).as_deref(), *want, "{expr}");
        }
    }

    fn malformed(q: &str) -> (usize, usize) {
        match Query::parse(q) {
            Ok(_) => panic!("{q} parsed"),
            Err(e) => (e.start, e.end),
        }
    }

    #[test]
    fn numeric_functions() {
        check(&[
            ("greatest(1, 5, 3)", Some("5")),
            ("greatest(n, 10.5)", Some("10.5")),
            ("least(1, 5, -3)", Some("-3")),
            ("least(n)", Some("9")),
            ("greatest(1, 'x')", None),
            ("greatest(1, missing)", None),
            ("log(1)", Some("0")),
            ("floor(log(100))", Some("4")),
            ("log(0)", None),
            ("log(-1)", None),
            ("sqrt(16)", Some("4")),
            ("sqrt(2.25)", Some("1.5")),
            ("sqrt(-1)", None),
            ("abs(-2)", Some("2")),
        ]);
    }

    #[test]
    fn string_functions() {
        check(&[
            ("isblank(s)", Some("0")),
            ("isblank('  ')", Some("1")),
            ("isblank('')", Some("1")),
            ("isblank(missing)", Some("1")),
            ("isempty('  ')", Some("0")),
            ("trim(\"xyZxyfooxyxyZ\", \"xyZ\")", Some("foo")),
            ("ltrim(word, 'xyZ')", Some("fooxyxyZ")),
            ("rtrim(word, 'xyZ')", Some("xyZxyfoo")),
            ("trim(s)", Some("pad")),
            ("ltrim(s)", Some("pad  ")),
            ("rtrim(s)", Some("  pad")),
            ("trim(word, missing)", None),
            ("substr(\"xyZfooxyZ\", 3, 3)", Some("foo")),
            ("substr('xyZfooxyZ', 6)", Some("xyZ")),
            ("substr('héllo', 1, 3)", Some("éll")),
            ("substr('abc', 5)", Some("")),
            ("substr('abc', 1, 0)", Some("")),
            ("substr('abc', -1)", None),
            ("substr('abc', 1.5)", None),
            ("replace('a-b-c', '-', '+')", Some("a+b+c")),
            ("replace('aaa', 'aa', 'b')", Some("ba")),
            ("replace('abc', '', 'x')", Some("abc")),
            ("replace(missing, 'a', 'b')", None),
            ("strlen('héllo')", Some("5")),
            ("concat('a', missing, 'b')", Some("ab")),
            ("toupper('aB')", Some("AB")),
            ("strcontains(word, 'foo')", Some("1")),
        ]);
    }

    #[test]
    fn datetime_functions() {
        // 2024-03-15 12:00:00 UTC: day 19797 since the epoch, + 12 h.
        let mid_march = "fromMillis(1710504000000)";
        check(&[
            ("datefloor(@timestamp, 1h)", Some("2024-01-01 00:00:00.000")),
            ("dateceil(@timestamp, 1h)", Some("2024-01-01 01:00:00.000")),
            ("dateceil(@timestamp, 10s)", Some("2024-01-01 00:00:10.000")),
            ("datefloor(@timestamp, 1m)", Some("2024-01-01 00:00:00.000")),
            // Weeks are epoch-aligned: 1970-01-01 was a Thursday.
            ("datefloor(@timestamp, 1w)", Some("2023-12-28 00:00:00.000")),
            (
                &format!("datefloor({mid_march}, 1mo)"),
                Some("2024-03-01 00:00:00.000"),
            ),
            (
                &format!("dateceil({mid_march}, 1mo)"),
                Some("2024-04-01 00:00:00.000"),
            ),
            (
                &format!("datefloor({mid_march}, 1q)"),
                Some("2024-01-01 00:00:00.000"),
            ),
            (
                &format!("dateceil({mid_march}, 1q)"),
                Some("2024-04-01 00:00:00.000"),
            ),
            (
                &format!("datefloor({mid_march}, 1y)"),
                Some("2024-01-01 00:00:00.000"),
            ),
            // 2024-03-01: day 19783.
            (
                &format!("toMillis(datefloor({mid_march}, 1mo))"),
                Some("1709251200000"),
            ),
            ("fromMillis(1704067210000)", Some("2024-01-01 00:00:10.000")),
            ("fromMillis('x')", None),
            ("toMillis(@timestamp)", Some("1704067210000")),
            ("toMillis('2024-01-01 00:00:10.000')", Some("1704067210000")),
            ("toMillis('2024-01-01T00:00:10Z')", Some("1704067210000")),
            ("toMillis('yesterday')", None),
            // The run started at T0 + 300.123 s.
            ("now()", Some("1704067500")),
            ("now() - 300", Some("1704067200")),
        ]);
        // A timestamp copied under another name keeps its format; one turned
        // into a number does not.
        assert_eq!(
            run_on(
                "fields @timestamp as t, toMillis(@timestamp) as ms | display t, ms | limit 1",
                example()
            ),
            [row(&[
                ("t", "2024-01-01 00:02:00.000"),
                ("ms", "1704067320000")
            ])]
        );
        assert_eq!(
            run_on(
                "stats count(*) as n by datefloor(@timestamp, 1m) as m",
                example()
            ),
            [
                row(&[("m", "2024-01-01 00:00:00.000"), ("n", "2")]),
                row(&[("m", "2024-01-01 00:01:00.000"), ("n", "1")]),
                row(&[("m", "2024-01-01 00:02:00.000"), ("n", "1")]),
            ]
        );
    }

    #[test]
    fn ip_functions() {
        check(&[
            ("isValidIp('10.0.0.1')", Some("1")),
            ("isValidIp('::1')", Some("1")),
            ("isValidIp('300.1.1.1')", Some("0")),
            ("isValidIp('abc')", Some("0")),
            ("isValidIpV4(ip)", Some("1")),
            ("isValidIpV4('::1')", Some("0")),
            ("isValidIpV6('::1')", Some("1")),
            ("isValidIpV6('10.0.0.1')", Some("0")),
            ("isValidIp(missing)", None),
            ("isIpInSubnet(ip, '10.0.0.0/8')", Some("1")),
            ("isIpInSubnet('11.1.2.3', '10.0.0.0/8')", Some("0")),
            (
                "isIpInSubnet('192.168.1.130', '192.168.1.128/25')",
                Some("1"),
            ),
            (
                "isIpInSubnet('192.168.1.127', '192.168.1.128/25')",
                Some("0"),
            ),
            // The last bits inside the prefix decide, not only the first.
            ("isIpInSubnet('10.128.0.1', '10.0.0.0/8')", Some("1")),
            (
                "isIpInSubnet('192.168.1.191', '192.168.1.128/26')",
                Some("1"),
            ),
            (
                "isIpInSubnet('192.168.1.192', '192.168.1.128/26')",
                Some("0"),
            ),
            (
                "isIpInSubnet('2001:db8:ffff::1', '2001:db8::/32')",
                Some("1"),
            ),
            ("isIpInSubnet('1.2.3.4', '0.0.0.0/0')", Some("1")),
            ("isIpInSubnet('1.2.3.4', '1.2.3.4/32')", Some("1")),
            ("isIpInSubnet('1.2.3.5', '1.2.3.4/32')", Some("0")),
            ("isIpInSubnet('2001:db8::1', '2001:db8::/32')", Some("1")),
            ("isIpInSubnet('2001:db9::1', '2001:db8::/32')", Some("0")),
            ("isIpInSubnet('10.0.0.1', '2001:db8::/32')", Some("0")),
            ("isIpInSubnet('nope', '10.0.0.0/8')", Some("0")),
            ("isIpInSubnet('10.0.0.1', '10.0.0.0/33')", None),
            ("isIpInSubnet('10.0.0.1', '10.0.0.0')", None),
            ("isIpv4InSubnet(ip, '10.1.0.0/16')", Some("1")),
            ("isIpv4InSubnet(ip, '10.2.0.0/16')", Some("0")),
            ("isIpv4InSubnet(ip, '2001:db8::/32')", None),
            ("isIpv6InSubnet('2001:db8::1', '2001:db8::/32')", Some("1")),
            ("isIpv6InSubnet('::1', '2001:db8::/32')", Some("0")),
            ("isIpv6InSubnet('::1', '10.0.0.0/8')", None),
        ]);
    }

    #[test]
    fn json_values_dot_paths_and_unnest() {
        let records = || {
            recs(
                "app",
                &[(
                    T0,
                    r#"{"a":{"b":7},"items":[1,{"x":"y"},null],"none":[],"text":"{\"k\":[true]}"}"#,
                )],
            )
        };
        assert_eq!(
            run_on(
                "fields jsonParse(@message) as j | display j.a.b, j.a, j.items.1.x, j.items.2, j.nope",
                records()
            ),
            [row(&[("j.a.b", "7"), ("j.a", r#"{"b":7}"#), ("j.items.1.x", "y")])]
        );
        // A string field holding JSON text is a string until parsed.
        assert_eq!(
            run_on(
                "fields text.k as raw, jsonParse(text) as t | display raw, t.k.0",
                records()
            ),
            [row(&[("t.k.0", "true")])]
        );
        assert_eq!(
            run_on(
                "fields jsonParse(@message) as j | unnest j.items into it | display it, it.x",
                records()
            ),
            [
                row(&[("it", "1")]),
                row(&[("it", r#"{"x":"y"}"#), ("it.x", "y")]),
                row(&[]),
            ]
        );
        // A non-list is a one-element list; an empty list makes no rows; an
        // absent field leaves the row as it was.
        assert_eq!(
            run_on(
                "fields jsonParse(@message) as j | unnest j.a into x | display x, x.b",
                records()
            ),
            [row(&[("x", r#"{"b":7}"#), ("x.b", "7")])]
        );
        assert_eq!(
            run_on(
                "fields jsonParse(@message) as j | unnest j.none into x | display x",
                records()
            ),
            Vec::<Row>::new()
        );
        assert_eq!(
            run_on("unnest nothing into x | display @timestamp, x", records()),
            [row(&[("@timestamp", "2024-01-01 00:00:00.000")])]
        );
        check(&[
            ("jsonStringify(jsonParse('[1, 2]'))", Some("[1,2]")),
            (
                "jsonStringify(jsonParse('{\"a\": \"b\"}'))",
                Some(r#"{"a":"b"}"#),
            ),
            ("jsonStringify(s)", None),
            ("jsonParse('5')", Some("5")),
            ("jsonParse('[1, 2]')", Some("[1,2]")),
            ("jsonParse('nope')", None),
        ]);
        assert_eq!(
            run_on(
                "fields jsonParse(@message) as j | fields jsonStringify(j.a) as s | display s",
                records()
            ),
            [row(&[("s", r#"{"b":7}"#)])]
        );
    }

    fn agg_records() -> Vec<Record> {
        recs(
            "app",
            &[
                (T0 + 10_000, r#"{"v":"2","s":"m","w":"10"}"#),
                (T0 + 20_000, r#"{"v":"4","s":"a","w":"9"}"#),
                (T0 + 30_000, r#"{"v":"6","s":"z","w":"100"}"#),
                (T0 + 40_000, r#"{"s":"k","v":"x"}"#),
                (T0 + 50_000, r#"{"s":"a"}"#),
            ],
        )
    }

    #[test]
    fn aggregations() {
        // v: 2, 4, 6 (and "x", not a number): mean 4, squares 4+0+4 = 8,
        // sample variance 8/2 = 4.
        assert_eq!(
            run_on(
                "stats stddev(v) as sd, count_distinct(s) as d, earliest(s) as e, latest(s) as l, \
                 sortsFirst(s) as f, sortsLast(s) as z",
                agg_records()
            ),
            [row(&[
                ("sd", "2"),
                ("d", "4"),
                ("e", "m"),
                ("l", "a"),
                ("f", "a"),
                ("z", "z"),
            ])]
        );
        // w is all numeric: numeric order. v has "x": string order, where
        // "2" < "4" < "6" < "x".
        assert_eq!(
            run_on(
                "stats min(w) as a, max(w) as b, min(v) as c, max(v) as d",
                agg_records()
            ),
            [row(&[("a", "9"), ("b", "100"), ("c", "2"), ("d", "x")])]
        );
        // With "x" beside 10, 9, 100 the byte order is "10" < "100" < "9" < "x".
        let mixed = recs(
            "app",
            &[
                (T0, r#"{"w":"10"}"#),
                (T0 + 1, r#"{"w":"9"}"#),
                (T0 + 2, r#"{"w":"100"}"#),
                (T0 + 3, r#"{"w":"x"}"#),
            ],
        );
        assert_eq!(
            run_on("stats min(w) as a, max(w) as b", mixed),
            [row(&[("a", "10"), ("b", "x")])]
        );
        // One value has no sample deviation; no values, no earliest.
        assert_eq!(
            run_on(
                "filter s = 'm' | stats stddev(v) as sd, earliest(nothing) as e, count(*) as n",
                agg_records()
            ),
            [row(&[("n", "1")])]
        );
        // Per group, and timestamps stay timestamps.
        assert_eq!(
            run_on(
                "stats count_distinct(v) as d, earliest(@timestamp) as first, max(@timestamp) as last by s",
                agg_records()
            ),
            [
                row(&[
                    ("s", "a"),
                    ("d", "1"),
                    ("first", "2024-01-01 00:00:20.000"),
                    ("last", "2024-01-01 00:00:50.000")
                ]),
                row(&[
                    ("s", "k"),
                    ("d", "1"),
                    ("first", "2024-01-01 00:00:40.000"),
                    ("last", "2024-01-01 00:00:40.000")
                ]),
                row(&[
                    ("s", "m"),
                    ("d", "1"),
                    ("first", "2024-01-01 00:00:10.000"),
                    ("last", "2024-01-01 00:00:10.000")
                ]),
                row(&[
                    ("s", "z"),
                    ("d", "1"),
                    ("first", "2024-01-01 00:00:30.000"),
                    ("last", "2024-01-01 00:00:30.000")
                ]),
            ]
        );
    }

    #[test]
    fn count_distinct_is_exact_then_estimated() {
        let values: Vec<String> = (0..200_000).map(|i| format!("value-{i}")).collect();
        let distinct = |n: usize| count_distinct(values[..n].iter().map(String::as_str));
        assert_eq!(distinct(10_000), 10_000);
        // Repeats do not count.
        assert_eq!(
            count_distinct(
                values[..10_000]
                    .iter()
                    .chain(&values[..10_000])
                    .map(String::as_str)
            ),
            10_000
        );
        // Past 10,000 the sketch answers: 2^14 registers give about 0.8 %
        // standard error, so 3 % is far outside chance.
        for n in [10_001usize, 20_000, 50_000, 200_000] {
            let est = distinct(n) as f64;
            assert!(
                (est - n as f64).abs() <= n as f64 * 0.03,
                "{n} distinct estimated as {est}"
            );
        }
        let twice = count_distinct(
            values[..50_000]
                .iter()
                .chain(&values[..50_000])
                .map(String::as_str),
        );
        assert!((twice as f64 - 50_000.0).abs() <= 1_500.0, "{twice}");
    }

    #[test]
    fn unmask_and_filter_index() {
        assert_eq!(
            run_on("unmask @message | limit 1", example()),
            [row(&[
                ("@timestamp", "2024-01-01 00:02:00.000"),
                ("@message", "plain text latency=50")
            ])]
        );
        assert_eq!(
            run_on(
                "filterIndex level = 'ERROR' | stats count(*) as n",
                example()
            ),
            [row(&[("n", "2")])]
        );
        assert_eq!(
            run_on("FILTERINDEX level in ['INFO'] | display latency", example()),
            [row(&[("latency", "30")])]
        );
    }

    #[test]
    fn fillmissing_fills_the_range() {
        // Range 00:00:00–00:05:00.999: 1-minute bins 00:00 … 00:05; ERROR
        // events at 00:00:10 and 00:01:05.
        let bin = |m: u8| format!("2024-01-01 00:0{m}:00.000");
        let q = "filter level = 'ERROR' | stats count(*) as n, avg(latency) as a by bin(1m)";
        let got = run_on(&format!("{q} | fillmissing"), example());
        let mut want = vec![
            row(&[("bin(1m)", &bin(0)), ("n", "1"), ("a", "120")]),
            row(&[("bin(1m)", &bin(1)), ("n", "1"), ("a", "300")]),
        ];
        for m in 2..=5 {
            want.push(row(&[("bin(1m)", &bin(m)), ("n", "0")]));
        }
        assert_eq!(got, want);
        let got = run_on(
            &format!("{q} | fillmissing with -1 for n, 'none' for a"),
            example(),
        );
        for (i, m) in (2..=5).enumerate() {
            assert_eq!(
                got[2 + i],
                row(&[("bin(1m)", &bin(m)), ("n", "-1"), ("a", "none")])
            );
        }
        assert_eq!(got.len(), 6);
        // With another key: every combination seen gets every bin (2-minute
        // bins 00:00, 00:02, 00:04), rows in key order, absent key first.
        let got = run_on(
            "stats count(*) as n by level, bin(2m) as b | fillmissing",
            example(),
        );
        let b = |m: u8| format!("2024-01-01 00:0{m}:00.000");
        assert_eq!(
            got,
            [
                row(&[("b", &b(0)), ("n", "0")]),
                row(&[("b", &b(2)), ("n", "1")]),
                row(&[("b", &b(4)), ("n", "0")]),
                row(&[("level", "ERROR"), ("b", &b(0)), ("n", "2")]),
                row(&[("level", "ERROR"), ("b", &b(2)), ("n", "0")]),
                row(&[("level", "ERROR"), ("b", &b(4)), ("n", "0")]),
                row(&[("level", "INFO"), ("b", &b(0)), ("n", "1")]),
                row(&[("level", "INFO"), ("b", &b(2)), ("n", "0")]),
                row(&[("level", "INFO"), ("b", &b(4)), ("n", "0")]),
            ]
        );
        // Nothing matched: every bin is empty.
        assert_eq!(
            run_on(
                "filter level = 'NONE' | stats count(*) as n by bin(1m) | fillmissing",
                example()
            )
            .len(),
            6
        );
        assert_eq!(malformed("fillmissing"), (0, 11));
        assert_eq!(malformed("stats count(*) by level | fillmissing"), (26, 37));
        assert_eq!(
            malformed("stats count(*) by bin(1m) | fillmissing with 0"),
            (46, 46)
        );
    }

    #[test]
    fn parse_with_a_regex() {
        assert_eq!(
            run_on(
                r"parse @message /latency=(?<lat>\d+)/ | filter ispresent(lat) | display lat",
                example()
            ),
            [row(&[("lat", "50")])]
        );
        // Rows that do not match are kept, without the fields.
        assert_eq!(
            run_on(
                r"parse @message /latency=(?<lat>\d+)/ | stats count(*) as n, count(lat) as m",
                example()
            ),
            [row(&[("n", "4"), ("m", "1")])]
        );
        assert_eq!(
            run_on(
                r"parse @message /(?<first>\w+) (?<second>\w+)/ | filter ispresent(first) | display first, second",
                example()
            ),
            [row(&[("first", "plain"), ("second", "text")])]
        );
        assert_eq!(
            run_on(
                r"PARSE @message /(?i)PLAIN (?<w>\w+)/ | filter ispresent(w) | display w",
                example()
            ),
            [row(&[("w", "text")])]
        );
        // `\/` is a slash; a group that does not take part is not set.
        assert_eq!(
            run_on(
                r"parse @message /a\/(?<x>\w+)(?<y>!)?/ | display x, y",
                recs("app", &[(T0, "path a/b c")])
            ),
            [row(&[("x", "b")])]
        );
        // `=~` takes a regex too.
        assert_eq!(
            run_on("filter @message =~ /^plain/ | display @message", example()),
            [row(&[("@message", "plain text latency=50")])]
        );
        // "parse @message " is 15 characters.
        assert_eq!(malformed(r"parse @message /(\d+)/"), (15, 22));
        assert_eq!(malformed(r"parse @message /(?<x>/"), (15, 22));
        assert_eq!(malformed(r"parse @message /(?<x>a"), (15, 22));
    }

    fn pattern_records() -> Vec<Record> {
        recs(
            "app",
            &[
                (T0, "user 'bob' logged in from 10.0.0.1"),
                (T0 + 1_000, "user 'alice smith' logged in from 10.0.0.2"),
                (T0 + 1_500, "user \"eve\" logged in from ::1"),
                (T0 + 29_000, "disk /dev/sda1 full"),
            ],
        )
    }

    /// The 30 per-bin counts with `at` (bin, count) set.
    fn bins(at: &[(usize, u64)]) -> String {
        let mut v = vec![0u64; 30];
        for (i, n) in at {
            v[*i] = *n;
        }
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn pattern_clusters_by_template() {
        // Range 30 s: thirty 1-second bins.
        let opts = RunOptions {
            cap: 100,
            range: Some((T0, T0 + 29_999)),
            ..RunOptions::default()
        };
        assert_eq!(
            run_opts("pattern @message", pattern_records(), opts),
            [
                row(&[
                    ("@pattern", "user <*> logged in from <*>"),
                    ("@sampleCount", "3"),
                    ("@ratio", "0.75"),
                    ("@tokens", r#"["user","<*>","logged","in","from","<*>"]"#),
                    ("@visualization", &bins(&[(0, 1), (1, 2)])),
                ]),
                row(&[
                    ("@pattern", "disk /dev/sda1 full"),
                    ("@sampleCount", "1"),
                    ("@ratio", "0.25"),
                    ("@tokens", r#"["disk","/dev/sda1","full"]"#),
                    ("@visualization", &bins(&[(29, 1)])),
                ]),
            ]
        );
        for (token, want) in [
            ("(42),", "(<*>),"),
            ("id=0x1F", "id=<*>"),
            ("v=3.5", "v=<*>"),
            ("123e4567-e89b-12d3-a456-426614174000", "<*>"),
            ("a1b2c3d4", "<*>"),
            ("deadbeef", "deadbeef"),
            ("10.0.0.1:443", "<*>"),
            ("[::1]:80", "<*>"),
            ("-7", "<*>"),
            ("abc", "abc"),
            ("inf", "inf"),
            ("=", "="),
        ] {
            assert_eq!(generalize(token), want, "{token}");
        }
        assert_eq!(
            split_tokens(" a 'b c' \"d\", e"),
            ["a", "'b c'", "\"d\",", "e"]
        );
    }

    #[test]
    fn anomaly_flags_spiky_patterns() {
        let mut events: Vec<(i64, String)> = Vec::new();
        // "steady <n>": one per second for 30 s, so no bin deviates.
        for i in 0..30 {
            events.push((T0 + i * 1_000, format!("steady {i}")));
        }
        // "burst <n>": four in bin 0: √29 ≈ 5.39σ → HIGH.
        for i in 0..4 {
            events.push((T0 + i * 10, format!("burst {i}")));
        }
        // "pair <n>": one in bin 3 and one in bin 7: √14 ≈ 3.74σ → LOW.
        events.push((T0 + 3_000, "pair 1".into()));
        events.push((T0 + 7_000, "pair 2".into()));
        let events: Vec<(i64, &str)> = events.iter().map(|(t, m)| (*t, m.as_str())).collect();
        let opts = RunOptions {
            cap: 100,
            range: Some((T0, T0 + 29_999)),
            ..RunOptions::default()
        };
        let got: Vec<Row> = run_opts(
            "pattern @message | anomaly | display @pattern, @sampleCount, @anomaly, @priority",
            recs("app", &events),
            opts,
        );
        assert_eq!(
            got,
            [
                row(&[
                    ("@pattern", "steady <*>"),
                    ("@sampleCount", "30"),
                    ("@anomaly", "0")
                ]),
                row(&[
                    ("@pattern", "burst <*>"),
                    ("@sampleCount", "4"),
                    ("@anomaly", "1"),
                    ("@priority", "HIGH")
                ]),
                row(&[
                    ("@pattern", "pair <*>"),
                    ("@sampleCount", "2"),
                    ("@anomaly", "1"),
                    ("@priority", "LOW")
                ]),
            ]
        );
    }

    #[test]
    fn diff_compares_with_the_previous_period() {
        let now = recs(
            "app",
            &[
                (T0, "user 1 logged in"),
                (T0 + 1, "user 2 logged in"),
                (T0 + 2, "user 3 logged in"),
                (T0 + 3, "disk full"),
                (T0 + 4, "cache miss for key 77"),
            ],
        );
        let before = recs(
            "app",
            &[
                (T0 - 10, "user 8 logged in"),
                (T0 - 11, "user 9 logged in"),
                (T0 - 12, "disk full"),
                (T0 - 13, "bye 1"),
                (T0 - 14, "bye 2"),
                (T0 - 15, "bye 3"),
                (T0 - 16, "bye 4"),
                (T0 - 17, "debug 1"),
            ],
        );
        let opts = RunOptions {
            cap: 100,
            range: Some((T0, T0 + 29_999)),
            now_ms: 0,
            previous: before,
        };
        let q = Query::parse("filter @message not like 'debug' | pattern @message | diff").unwrap();
        assert!(q.uses_previous_period());
        let out = run(&q, now, opts);
        assert!(out.aggregated);
        assert_eq!(
            out.rows,
            [
                row(&[
                    ("@pattern", "user <*> logged in"),
                    ("@previousCount", "2"),
                    ("@currentCount", "3"),
                    ("@changeType", "INCREASED"),
                    ("@changePercentage", "50")
                ]),
                row(&[
                    ("@pattern", "disk full"),
                    ("@previousCount", "1"),
                    ("@currentCount", "1"),
                    ("@changeType", "UNCHANGED"),
                    ("@changePercentage", "0")
                ]),
                row(&[
                    ("@pattern", "cache miss for key <*>"),
                    ("@previousCount", "0"),
                    ("@currentCount", "1"),
                    ("@changeType", "NEW")
                ]),
                row(&[
                    ("@pattern", "bye <*>"),
                    ("@previousCount", "4"),
                    ("@currentCount", "0"),
                    ("@changeType", "DECREASED"),
                    ("@changePercentage", "-100")
                ]),
            ]
        );
        // diff and anomaly need a pattern right before them.
        assert_eq!(malformed("diff"), (0, 4));
        assert_eq!(malformed("pattern @message | limit 5 | anomaly"), (29, 36));
    }

    #[test]
    fn source_is_parsed_and_exposed() {
        let q = Query::parse(
            "SOURCE logGroups(namePrefix: ['/app', \"/b\"], class: 'STANDARD') | fields @message",
        )
        .unwrap();
        assert_eq!(
            q.source(),
            Some(&Source {
                prefixes: vec!["/app".into(), "/b".into()],
                class: Some("STANDARD".into()),
            })
        );
        let q = Query::parse("source LOGGROUPS(class: 'INFREQUENT_ACCESS')").unwrap();
        assert_eq!(
            q.source(),
            Some(&Source {
                prefixes: Vec::new(),
                class: Some("INFREQUENT_ACCESS".into()),
            })
        );
        assert_eq!(Query::parse("fields a").unwrap().source(), None);
        // The list starts after "SOURCE logGroups(namePrefix: " (29
        // characters) and is 25 long.
        assert_eq!(
            malformed("SOURCE logGroups(namePrefix: ['a','b','c','d','e','f'])"),
            (29, 54)
        );
        assert_eq!(
            malformed("fields a | SOURCE logGroups(namePrefix: ['a'])"),
            (11, 17)
        );
        // "SOURCE logGroups(class: " is 24 characters; 'GOLD' is 6.
        assert_eq!(malformed("SOURCE logGroups(class: 'GOLD')"), (24, 30));
        assert_eq!(malformed("SOURCE logGroups(owner: 'me')"), (17, 22));
        assert_eq!(malformed("SOURCE logGroups(namePrefix: '/a')"), (29, 33));
        assert_eq!(malformed("SOURCE logGroups(namePrefix: ['/a']"), (35, 35));
    }

    #[test]
    fn unsupported_commands_and_bad_calls_are_malformed() {
        assert_eq!(malformed("lookup table key"), (0, 6));
        assert_eq!(malformed("fields a | join x"), (11, 15));
        // A subquery: "filter a in " is 12 characters.
        assert_eq!(malformed("filter a in (SOURCE logGroups())"), (12, 13));
        // Wrong arity: the whole call.
        assert_eq!(malformed("fields strlen(a, b)"), (7, 19));
        assert_eq!(malformed("fields substr('x')"), (7, 18));
        assert_eq!(malformed("fields replace('a', 'b')"), (7, 24));
        assert_eq!(malformed("fields now(1)"), (7, 13));
        assert_eq!(malformed("fields greatest()"), (7, 17));
        assert_eq!(malformed("stats pct(x)"), (6, 12));
        assert_eq!(malformed("stats pct(x, 101)"), (6, 17));
        assert_eq!(malformed("stats count_distinct()"), (6, 22));
        // A period is needed where one belongs.
        assert_eq!(malformed("fields bin(5)"), (7, 13));
        assert_eq!(malformed("fields datefloor(@timestamp, 5)"), (7, 31));
        // Unknown names, and functions in the wrong place: the name.
        assert_eq!(malformed("fields nosuch(a)"), (7, 13));
        assert_eq!(malformed("stats bogus(x)"), (6, 11));
        assert_eq!(malformed("stats strlen(x)"), (6, 12));
        assert_eq!(malformed("stats count(*) as n | fields count(x)"), (29, 34));
        let e = Query::parse("fields strlen(a, b)").unwrap_err();
        assert!(e.message.contains("strlen"), "{}", e.message);
        // Durations: bin caps, calendar units, and overflow.
        assert!(Query::parse("stats count(*) by bin(1mo)").is_ok());
        assert!(Query::parse("fields datefloor(@timestamp, 2q)").is_ok());
        assert_eq!(malformed("fields bin(61m)"), (11, 14));
        assert_eq!(malformed("fields bin(99999999999999999w)"), (11, 29));
    }

    #[test]
    fn lambda_fields() {
        let lambda = |m: &str| record("1", "/aws/lambda/fn", "s", T0, T0, m);
        let r = lambda("2024-01-01T00:00:00.000Z\tabc\tINFO\t{\"a\":1,\"b\":{\"c\":\"d\"}} tail");
        assert_eq!(r.get("a").map(String::as_str), Some("1"));
        assert_eq!(r.get("b.c").map(String::as_str), Some("d"));
        // The first brace that opens an object wins; not in other groups.
        let r = lambda("x {not json} then {\"k\":\"v\"}");
        assert_eq!(r.get("k").map(String::as_str), Some("v"));
        let other = record("1", "app", "s", T0, T0, "INFO {\"a\":1}");
        assert_eq!(other.get("a"), None);

        let r = lambda(
            "REPORT RequestId: 8f5b-11 Duration: 102.25 ms Billed Duration: 103 ms \
             Memory Size: 128 MB Max Memory Used: 70 MB Init Duration: 150.10 ms \
             XRAY TraceId: 1-5e2b-abc SegmentId: 0a1b Sampled: true",
        );
        let want = [
            ("@type", "REPORT"),
            ("@requestId", "8f5b-11"),
            ("@duration", "102.25"),
            ("@billedDuration", "103"),
            ("@memorySize", "128000000"),
            ("@maxMemoryUsed", "70000000"),
            ("@initDuration", "150.10"),
            ("@xrayTraceId", "1-5e2b-abc"),
            ("@xraySegmentId", "0a1b"),
        ];
        for (k, v) in want {
            assert_eq!(r.get(k).map(String::as_str), Some(v), "{k}");
        }
        // Lambda's own separators are tabs.
        let r = lambda(
            "REPORT RequestId: r1\tDuration: 1.50 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 64 MB\t\n",
        );
        assert_eq!(r.get("@duration").map(String::as_str), Some("1.50"));
        assert_eq!(r.get("@billedDuration").map(String::as_str), Some("2"));
        assert_eq!(
            r.get("@maxMemoryUsed").map(String::as_str),
            Some("64000000")
        );
        assert_eq!(r.get("@initDuration"), None);
        let r = lambda("START RequestId: r2 Version: $LATEST");
        assert_eq!(r.get("@type").map(String::as_str), Some("START"));
        assert_eq!(r.get("@requestId").map(String::as_str), Some("r2"));
        let r = lambda("END RequestId: r3");
        assert_eq!(r.get("@type").map(String::as_str), Some("END"));
        assert_eq!(r.get("@requestId").map(String::as_str), Some("r3"));
        assert_eq!(lambda("STARTED RequestId: r4").get("@type"), None);
        let plain = record("1", "app", "s", T0, T0, "END RequestId: r3");
        assert_eq!(plain.get("@type"), None);
        // The AWS sample query for provisioned memory reads MB back.
        let records = vec![
            lambda("REPORT RequestId: a Duration: 5 ms Billed Duration: 5 ms Memory Size: 128 MB Max Memory Used: 70 MB"),
            lambda("START RequestId: a Version: 1"),
        ];
        assert_eq!(
            run_on(
                "filter @type = 'REPORT' | stats max(@memorySize / 1000 / 1000) as mb, max(@maxMemoryUsed / 1000 / 1000) as used",
                records
            ),
            [row(&[("mb", "128"), ("used", "70")])]
        );
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        for q in [
            "fields substr(@message, 99999999999999999999)",
            "fields fromMillis(1e300) as t | display t",
            "fields datefloor(1e17, 1y) as t, dateceil(-9e15, 1mo) as u",
            "fields replace(@message, 'a', @message)",
            "fields 2 ^ 5000 as x, 10 % 0 as y, log(1e308 * 10) as z",
            "stats count(*) by bin(1ms) | fillmissing",
            "fields jsonParse('[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]') as j | unnest j.0.0 into x",
            "pattern nothing | anomaly",
            "filter @message like /(a+)+$/",
        ] {
            let q = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
            run(
                &q,
                example(),
                RunOptions {
                    cap: 10,
                    range: Some((i64::MIN, i64::MAX)),
                    ..RunOptions::default()
                },
            );
        }
        let deep = format!("fields {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        let chain = format!("fields 1{}", " + 1".repeat(3_000));
        let nots = format!("filter {}1", "not ".repeat(2_000));
        let calls = format!("fields {}1{}", "abs(".repeat(3_000), ")".repeat(3_000));
        for bad in [&deep, &chain, &nots, &calls] {
            let e = Query::parse(bad).unwrap_err();
            assert!(e.message.contains("too deeply"), "{}", e.message);
        }
        // Depth comes back after each chain: many short ones are fine.
        let flat = format!("fields a{}", ", (1 + 2) * 3".repeat(500));
        assert!(Query::parse(&flat).is_ok());
        for bad in [
            "parse @message /",
            "fields `a",
            "fields 'a",
            "fields a like /x",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod runner_tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const QUERIES: [&str; 9] = [
        "fields @timestamp, level | filter level = \"ERROR\" | sort @timestamp asc",
        "stats count(*) as n, avg(latency) as a, stddev(latency) as sd, pct(latency, 90) as p by level",
        "stats count(*) by bin(1m)",
        "filter latency > 100 | stats sum(latency) as s, min(user.id) as lo, max(level) as hi, \
         earliest(latency) as e, latest(latency) as l, count_distinct(user.id) as d by bin(5m)",
        "parse @message \"latency=*\" as lat | filter ispresent(lat) | display lat, @logStream",
        "fields user.id as u | filter ispresent(u) | dedup u | sort u asc | display u",
        "filter @message like /ERROR/ | stats count(*) as n by tags.0",
        "fields jsonParse(@message) as j | filter ispresent(j.user.id) | stats count(*) by j.user.id",
        "limit 7",
    ];

    fn events(n: usize, seed: u64) -> Vec<(i64, String)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let t = 1_704_067_200_000 + rng.gen_range(0..1_800_000);
                let m = match i % 5 {
                    0 => format!("plain text latency={}", rng.gen_range(1..500)),
                    1 => format!(
                        r#"{{"level":"ERROR","latency":{},"user":{{"id":"u{}"}},"tags":["a","b"]}}"#,
                        rng.gen_range(1..500),
                        rng.gen_range(0..7)
                    ),
                    2 => format!(
                        r#"  {{"level":"INFO","latency":{}.5,"user":{{"id":"u{}"}},"@level":"x","level":null}}"#,
                        rng.gen_range(1..500),
                        rng.gen_range(0..7)
                    ),
                    3 => format!(r#"{{"level":"WARN","latency":"{}","note":"a \"quoted\" \u00e9"}} trailing"#, i),
                    _ => format!(r#"{{"le\u0076el":"DEBUG","latency":{},"user":{{"id":null}}}}"#, i % 300),
                };
                (t, m)
            })
            .collect()
    }

    /// Projected records carry exactly the wanted fields of full records.
    #[test]
    fn projected_records_are_full_records_narrowed() {
        for q in QUERIES {
            let p = Query::parse(q).unwrap().projection();
            for (t, m) in events(200, 3) {
                let mut full = record("1", "g", "s", t, t + 1, &m);
                full.retain(|k, _| p.wants(k));
                assert_eq!(
                    record_for(&p, "1", "g", "s", t, t + 1, &m),
                    full,
                    "{q}: {m}"
                );
            }
        }
    }

    /// Events fed to parts on several "threads" and merged in order give
    /// what one pass gives; so does counting by time from event times alone.
    #[test]
    fn merged_parts_give_the_outcome_of_one_pass() {
        for seed in 0..4 {
            let evs = events(600, seed);
            for q in QUERIES {
                let query = Query::parse(q).unwrap();
                let records: Vec<Record> = evs
                    .iter()
                    .enumerate()
                    .map(|(i, (t, m))| {
                        let mut r = record("1", "g", &format!("s{}", i % 3), *t, *t + 1, m);
                        r.insert("@ptr".into(), i.to_string());
                        r
                    })
                    .collect();
                let range = (1_704_067_200_000, 1_704_069_000_000);
                let one = run(
                    &query,
                    records.clone(),
                    RunOptions {
                        cap: 10_000,
                        range: Some(range),
                        ..RunOptions::default()
                    },
                );
                let runner = Runner::new(&query, range, 0);
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut parts = vec![runner.part()];
                for r in records {
                    if rng.gen_bool(0.05) {
                        parts.push(runner.part());
                    }
                    let r = {
                        let p = runner.projection();
                        let mut r = r;
                        r.retain(|k, _| p.wants(k) || k == "@ptr");
                        r
                    };
                    // Half the time through the narrow first build, as the
                    // server reads, when the query has one.
                    match runner.prefilter() {
                        Some(fp) if rng.gen_bool(0.5) => {
                            let mut narrow = r.clone();
                            narrow.retain(|k, _| fp.wants(k));
                            if runner.passes(narrow) {
                                runner.feed_passed(parts.last_mut().unwrap(), r);
                            }
                        }
                        _ => runner.feed(parts.last_mut().unwrap(), r),
                    }
                }
                let mut all = runner.part();
                for p in parts {
                    runner.merge(&mut all, p);
                }
                let merged = runner.finish(all, 10_000, &[]);
                assert_eq!(merged.rows, one.rows, "{q}");
                assert_eq!(merged.matched, one.matched, "{q}");
                if runner.counts_by_time() {
                    let mut counted = runner.part();
                    for (t, _) in &evs {
                        runner.add_count(&mut counted, runner.time_key(*t), 1);
                    }
                    assert_eq!(runner.finish(counted, 10_000, &[]).rows, one.rows, "{q}");
                }
            }
        }
        assert!(Runner::new(
            &Query::parse("stats count(*) by bin(5m)").unwrap(),
            (0, 1),
            0
        )
        .counts_by_time());
        assert!(!Runner::new(
            &Query::parse("filter x = 1 | stats count(*) by bin(5m)").unwrap(),
            (0, 1),
            0
        )
        .counts_by_time());

        // The leading filter of QUERIES[3] reads `latency` alone.
        let narrow = Runner::new(&Query::parse(QUERIES[3]).unwrap(), (0, 1), 0);
        let names = narrow.prefilter().map(|p| p.names.clone());
        assert_eq!(names, Some(vec!["latency".to_owned()]));
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i32>().prop_map(|n| serde_json::json!(n)),
            (-1e6f64..1e6).prop_map(|n| serde_json::json!(n)),
            "[a-z \\\"/é\\t]{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::vec(("(a|b|c|@d|e|x|level)", inner), 0..5)
                    .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// The skim reads exactly what the full parse reads, for valid JSON
        /// and for JSON with one character dropped, doubled or inserted.
        #[test]
        fn skimmed_records_equal_full_records(
            members in proptest::collection::vec(("(a|b|c|@d|e|x|level)", json_value()), 0..6),
            spaced in proptest::bool::ANY,
            edit in proptest::option::of((0usize..400, 0usize..3, "[{}\\[\\],:\" \\\\0-9eE.\\-ntu]")),
        ) {
            let object = serde_json::Value::Object(members.into_iter().collect());
            let mut text = if spaced {
                serde_json::to_string_pretty(&object).unwrap().replace('\n', " ")
            } else {
                object.to_string()
            };
            if let Some((at, how, ch)) = edit {
                let mut at = at % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match how {
                    0 if at < text.len() => {
                        let c = text[at..].chars().next().unwrap();
                        text.replace_range(at..at + c.len_utf8(), "");
                    }
                    1 => text.insert_str(at, &ch),
                    _ => text.insert_str(at, &format!("{ch}{ch}")),
                }
            }
            let q = Query::parse("stats count(*) by a, b.c, b.0, @@d, e.x.level, x, level").unwrap();
            let p = q.projection();
            let mut full = record("1", "g", "s", 5, 6, &text);
            full.retain(|k, _| p.wants(k));
            proptest::prop_assert_eq!(record_for(&p, "1", "g", "s", 5, 6, &text), full, "{}", text);
        }
    }

    /// A raw decision, when there is one, is the decision of a record.
    #[test]
    fn raw_filter_decisions_equal_record_decisions() {
        let messages = [
            r#"{"status":500,"x":1}"#,
            r#"{"status":"500"}"#,
            r#"{"status":" 502 "}"#,
            r#"{"status":200}"#,
            r#"{"status":null}"#,
            r#"{"status":500,"status":null}"#,
            r#"{"status":null,"status":503}"#,
            r#"{"status":true}"#,
            r#"{"status":"abc"}"#,
            r#"{"status":[500]}"#,
            r#"{"status":5e2}"#,
            r#"{"status":"5\u0030"}"#,
            r#"{"x":1}"#,
            r#"{"status":500"#,
            r#"{"status":500} trailing"#,
            "plain 500",
            r#"  {"status":-0, "latency": 12.5}  "#,
            r#"{"status":600,"latency":"7"}"#,
        ];
        for q in [
            "filter status >= 500 | stats count(*)",
            "filter status != 0 and latency < 10 | stats count(*)",
            "filter status = 500 | stats count(*)",
            "filter status <= 500 | filter latency > 1 | stats count(*)",
        ] {
            let runner = Runner::new(&Query::parse(q).unwrap(), (0, 1), 0);
            assert!(runner.raw_filter.is_some(), "{q}");
            let p = runner.prefilter().unwrap().clone();
            let mut decided = 0;
            for m in messages {
                let by_record = runner.passes(record_for(&p, "1", "g", "s", 1, 1, m));
                if let Some(raw) = runner.passes_raw(m) {
                    decided += 1;
                    assert_eq!(raw, by_record, "{q}: {m}");
                }
            }
            assert!(decided >= 10, "{q}: only {decided} decided raw");
        }
        let q = Query::parse("filter status like /5/ | stats count(*)").unwrap();
        assert!(Runner::new(&q, (0, 1), 0).raw_filter.is_none());
    }

    proptest::proptest! {
        /// The word-at-a-time search finds what a byte loop finds.
        #[test]
        fn quote_search_matches_a_byte_loop(s in "[a-z\"\\\\ é]{0,150}") {
            let b = s.as_bytes();
            let want = b.iter().position(|&c| c == b'"' || c == b'\\');
            proptest::prop_assert_eq!(quote_or_backslash(b), want);
        }
    }
}
