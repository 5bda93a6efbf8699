//! Filter patterns (`spec/logs.md` §6), one engine for FilterLogEvents and
//! (later) metric filters, subscription filters and Live Tail. The kind is
//! decided by the first non-blank character: `{` JSON (§6.2), `[`
//! space-delimited (§6.3), anything else terms (§6.1); `%regex%` may appear as
//! a term or a value (§6.4). Matching is case-sensitive throughout.

use regex::Regex;

use super::model::LogsError;

/// Regex terms allowed in one pattern (§6.4).
const MAX_REGEXES: usize = 2;

fn invalid() -> LogsError {
    LogsError::InvalidParameter("Invalid filter pattern".to_owned())
}

/// A term of a term pattern.
#[derive(Debug, Clone)]
enum Term {
    Literal(String),
    Regex(Regex),
}

impl Term {
    fn found_in(&self, message: &str) -> bool {
        match self {
            Term::Literal(t) => message.contains(t.as_str()),
            Term::Regex(r) => r.is_match(message),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone)]
enum Operand {
    /// Quoted or bare text; `*` is a wildcard.
    Text(String),
    /// A number, with its text for string comparisons.
    Number(f64, String),
    /// `*` alone.
    Any,
    Regex(Regex),
}

/// A JSON selector step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A selector and its text as written (`$.a.b[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum JsonExpr {
    Or(Vec<JsonExpr>),
    And(Vec<JsonExpr>),
    Compare(Selector, Op, Operand),
    IsNull(Selector),
    IsBool(Selector, bool),
    NotExists(Selector),
}

impl JsonExpr {
    fn selectors<'a>(&'a self, out: &mut Vec<&'a Selector>) {
        match self {
            JsonExpr::Or(items) | JsonExpr::And(items) => {
                items.iter().for_each(|e| e.selectors(out));
            }
            JsonExpr::Compare(s, ..)
            | JsonExpr::IsNull(s)
            | JsonExpr::IsBool(s, _)
            | JsonExpr::NotExists(s) => {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
}

/// A field of a space-delimited pattern.
#[derive(Debug, Clone)]
enum Field {
    /// `...`: zero or more tokens.
    Rest,
    /// A named field, with its condition as OR of ANDs of comparisons.
    Named(String, Vec<Vec<(Op, Operand)>>),
}

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Empty or blank: every event.
    All,
    /// Terms (§6.1).
    Terms {
        /// Terms that must all occur.
        required: Vec<TermPart>,
        /// Terms of which one must occur, when any.
        optional: Vec<TermPart>,
        /// Terms that must not occur.
        excluded: Vec<TermPart>,
    },
    /// A JSON pattern (§6.2).
    Json(JsonPart),
    /// A space-delimited pattern (§6.3).
    Space(SpacePart),
}

/// An opaque term of a term pattern.
#[derive(Debug, Clone)]
pub struct TermPart(Term);

/// An opaque JSON pattern expression.
#[derive(Debug, Clone)]
pub struct JsonPart(JsonExpr);

/// An opaque list of space-delimited fields.
#[derive(Debug, Clone)]
pub struct SpacePart(Vec<Field>);

/// §6.4: letters, digits, `: _ # = @ / ; , -`, the operators `^ $ ? [ ] { }
/// | \ * + .`; no grouping, no multi-byte characters.
fn compile_regex(body: &str, count: &mut usize) -> Result<Regex, LogsError> {
    *count += 1;
    if *count > MAX_REGEXES || body.is_empty() {
        return Err(invalid());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":_#=@/;,-^$?[]{}|\\*+.".contains(c);
    if !body.chars().all(allowed) {
        return Err(invalid());
    }
    Regex::new(body).map_err(|_| invalid())
}

/// Wildcard match: `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A cursor over pattern text.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
    regexes: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.s[self.pos..].starts_with(|c: char| c.is_whitespace()) {
            self.pos += self.s[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.s[self.pos..].chars().next()
    }

    fn word(&mut self, allowed: impl Fn(char) -> bool) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.s[self.pos..].chars().next().filter(|c| allowed(*c)) {
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let ends = rest[word.len().min(rest.len())..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        if rest.starts_with(word) && ends {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn op(&mut self) -> Result<Op, LogsError> {
        for (text, op) in [
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ] {
            if self.eat(text) {
                return Ok(op);
            }
        }
        Err(invalid())
    }

    fn quoted(&mut self) -> Result<String, LogsError> {
        // At the opening quote.
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => return Err(invalid()),
                },
                other => out.push(other),
            }
        }
        Err(invalid())
    }

    fn regex(&mut self) -> Result<Regex, LogsError> {
        // At the opening percent sign.
        self.pos += 1;
        let end = self.s[self.pos..].find('%').ok_or_else(invalid)?;
        let body = &self.s[self.pos..self.pos + end];
        self.pos += end + 1;
        compile_regex(body, &mut self.regexes)
    }

    fn operand(&mut self) -> Result<Operand, LogsError> {
        match self.peek() {
            Some('"') => Ok(Operand::Text(self.quoted()?)),
            Some('%') => Ok(Operand::Regex(self.regex()?)),
            _ => {
                let bare = self.word(|c| c.is_ascii_alphanumeric() || "_.*:/-+".contains(c));
                if bare.is_empty() {
                    return Err(invalid());
                }
                if bare == "*" {
                    return Ok(Operand::Any);
                }
                match bare.parse::<f64>() {
                    Ok(n) if is_number(bare) => Ok(Operand::Number(n, bare.to_owned())),
                    _ => Ok(Operand::Text(bare.to_owned())),
                }
            }
        }
    }
}

fn is_number(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

impl Pattern {
    /// Parses a pattern of at most 1,024 characters.
    pub fn parse(text: &str) -> Result<Pattern, LogsError> {
        if text.chars().count() > 1024 {
            return Err(invalid());
        }
        let trimmed = text.trim();
        let mut lx = Lexer {
            s: trimmed,
            pos: 0,
            regexes: 0,
        };
        if trimmed.is_empty() {
            Ok(Pattern::All)
        } else if trimmed.starts_with('{') {
            if !trimmed.ends_with('}') {
                return Err(invalid());
            }
            lx.pos = 1;
            let expr = parse_or(&mut lx)?;
            if !lx.eat("}") || lx.pos != trimmed.len() {
                return Err(invalid());
            }
            Ok(Pattern::Json(JsonPart(expr)))
        } else if trimmed.starts_with('[') {
            if !trimmed.ends_with(']') {
                return Err(invalid());
            }
            lx.pos = 1;
            let fields = parse_fields(&mut lx)?;
            Ok(Pattern::Space(SpacePart(fields)))
        } else {
            parse_terms(&mut lx)
        }
    }

    /// What a matching message must contain, for block skipping: every inner
    /// list is a disjunction of literals, and all of them must hold. `None`
    /// when nothing is known (regex terms, JSON and space-delimited patterns,
    /// whose values may be escaped or split in the raw text).
    pub fn required_literals(&self) -> Option<Vec<Vec<&str>>> {
        let Pattern::Terms {
            required, optional, ..
        } = self
        else {
            return None;
        };
        fn literal(t: &TermPart) -> Option<&str> {
            match &t.0 {
                Term::Literal(s) => Some(s.as_str()),
                Term::Regex(_) => None,
            }
        }
        let mut all: Vec<Vec<&str>> = required
            .iter()
            .filter_map(literal)
            .map(|s| vec![s])
            .collect();
        if !optional.is_empty() {
            // One regex among the alternatives makes the disjunction unknowable.
            if let Some(any) = optional.iter().map(literal).collect::<Option<Vec<_>>>() {
                all.push(any);
            }
        }
        Some(all)
    }

    /// The longest literal every match contains, to search a whole block's
    /// text at once before matching single events.
    pub fn anchor(&self) -> Option<&str> {
        self.required_literals()?
            .into_iter()
            .filter(|any| any.len() == 1)
            .map(|any| any[0])
            .filter(|s| !s.is_empty())
            .max_by_key(|s| s.len())
    }

    /// Whether `message` matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Terms {
                required,
                optional,
                excluded,
            } => {
                required.iter().all(|t| t.0.found_in(message))
                    && !excluded.iter().any(|t| t.0.found_in(message))
                    && (optional.is_empty() || optional.iter().any(|t| t.0.found_in(message)))
            }
            Pattern::Json(expr) => {
                match serde_json::from_str::<serde_json::Value>(message.trim()) {
                    Ok(v @ serde_json::Value::Object(_)) => eval_json(&expr.0, &v),
                    _ => false,
                }
            }
            Pattern::Space(fields) => {
                let tokens = tokenize(message);
                let rest = !fields.0.iter().any(|f| matches!(f, Field::Rest));
                bind(&fields.0, &tokens, message, rest, &mut Vec::new())
            }
        }
    }
}

fn parse_terms(lx: &mut Lexer<'_>) -> Result<Pattern, LogsError> {
    let (mut required, mut optional, mut excluded) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(first) = lx.peek() {
        let list = match first {
            '?' => {
                lx.pos += 1;
                &mut optional
            }
            '-' => {
                lx.pos += 1;
                &mut excluded
            }
            _ => &mut required,
        };
        let next = lx.s[lx.pos..].chars().next();
        let term = match next {
            Some('"') => Term::Literal(lx.quoted()?),
            Some('%') => Term::Regex(lx.regex()?),
            _ => {
                let word = lx.word(|c| !c.is_whitespace());
                // A lone `?` or `-`, or a stray quote inside a word.
                if word.is_empty() || word.contains('"') {
                    return Err(invalid());
                }
                Term::Literal(word.to_owned())
            }
        };
        list.push(TermPart(term));
    }
    Ok(Pattern::Terms {
        required,
        optional,
        excluded,
    })
}

fn parse_or(lx: &mut Lexer<'_>) -> Result<JsonExpr, LogsError> {
    let mut items = vec![parse_and(lx)?];
    while lx.eat("||") {
        items.push(parse_and(lx)?);
    }
    Ok(if items.len() == 1 {
        items.remove(0)
    } else {
        JsonExpr::Or(items)
    })
}

fn parse_and(lx: &mut Lexer<'_>) -> Result<JsonExpr, LogsError> {
    let mut items = vec![parse_unary(lx)?];
    while lx.eat("&&") {
        items.push(parse_unary(lx)?);
    }
    Ok(if items.len() == 1 {
        items.remove(0)
    } else {
        JsonExpr::And(items)
    })
}

fn parse_unary(lx: &mut Lexer<'_>) -> Result<JsonExpr, LogsError> {
    if lx.eat("(") {
        let inner = parse_or(lx)?;
        return if lx.eat(")") {
            Ok(inner)
        } else {
            Err(invalid())
        };
    }
    let selector = parse_selector(lx)?;
    if lx.keyword("IS") {
        return if lx.keyword("NULL") {
            Ok(JsonExpr::IsNull(selector))
        } else if lx.keyword("TRUE") {
            Ok(JsonExpr::IsBool(selector, true))
        } else if lx.keyword("FALSE") {
            Ok(JsonExpr::IsBool(selector, false))
        } else {
            Err(invalid())
        };
    }
    if lx.keyword("NOT") {
        return if lx.keyword("EXISTS") {
            Ok(JsonExpr::NotExists(selector))
        } else {
            Err(invalid())
        };
    }
    let op = lx.op()?;
    let operand = lx.operand()?;
    Ok(JsonExpr::Compare(selector, op, operand))
}

fn parse_selector(lx: &mut Lexer<'_>) -> Result<Selector, LogsError> {
    if !lx.eat("$") {
        return Err(invalid());
    }
    let start = lx.pos - 1;
    let mut steps = Vec::new();
    loop {
        let rest = &lx.s[lx.pos..];
        if rest.starts_with('.') {
            lx.pos += 1;
            let key = lx.word(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if key.is_empty()
                || lx.s[lx.pos..]
                    .starts_with(|c: char| !c.is_whitespace() && !"[.=!<>)&|}".contains(c))
            {
                return Err(invalid());
            }
            steps.push(Step::Key(key.to_owned()));
        } else if rest.starts_with('[') {
            lx.pos += 1;
            let index = lx.word(|c| c.is_ascii_digit());
            let index: usize = index.parse().map_err(|_| invalid())?;
            if !lx.s[lx.pos..].starts_with(']') {
                return Err(invalid());
            }
            lx.pos += 1;
            steps.push(Step::Index(index));
        } else {
            break;
        }
    }
    if steps.is_empty() {
        return Err(invalid());
    }
    Ok(Selector {
        text: lx.s[start..lx.pos].to_owned(),
        steps,
    })
}

fn parse_fields(lx: &mut Lexer<'_>) -> Result<Vec<Field>, LogsError> {
    let mut fields = Vec::new();
    loop {
        if lx.eat("...") {
            fields.push(Field::Rest);
        } else {
            let name = lx.word(|c| c.is_ascii_alphanumeric() || c == '_');
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(invalid());
            }
            let mut alternatives: Vec<Vec<(Op, Operand)>> = Vec::new();
            if !matches!(lx.peek(), Some(',') | Some(']')) {
                let mut all = vec![(lx.op()?, lx.operand()?)];
                loop {
                    let and = if lx.eat("&&") {
                        true
                    } else if lx.eat("||") {
                        false
                    } else {
                        break;
                    };
                    // Every comparison names the same field.
                    if lx.word(|c| c.is_ascii_alphanumeric() || c == '_') != name {
                        return Err(invalid());
                    }
                    let cmp = (lx.op()?, lx.operand()?);
                    if and {
                        all.push(cmp);
                    } else {
                        alternatives.push(std::mem::replace(&mut all, vec![cmp]));
                    }
                }
                alternatives.push(all);
            }
            fields.push(Field::Named(name.to_owned(), alternatives));
        }
        if lx.eat(",") {
            continue;
        }
        if lx.eat("]") && lx.pos == lx.s.len() {
            return Ok(fields);
        }
        return Err(invalid());
    }
}

/// The scalar text of a JSON value as comparisons see it.
fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn resolve<'v>(root: &'v serde_json::Value, steps: &[Step]) -> Option<&'v serde_json::Value> {
    steps.iter().try_fold(root, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(*i),
    })
}

fn compare_text(op: Op, operand: &Operand, text: &str) -> bool {
    let number = text.parse::<f64>().ok().filter(|_| is_number(text));
    let ordered = |ord: std::cmp::Ordering| match op {
        Op::Eq => ord.is_eq(),
        Op::Ne => ord.is_ne(),
        Op::Gt => ord.is_gt(),
        Op::Lt => ord.is_lt(),
        Op::Ge => ord.is_ge(),
        Op::Le => ord.is_le(),
    };
    match operand {
        Operand::Any => op == Op::Eq,
        Operand::Regex(r) => match op {
            Op::Eq => r.is_match(text),
            Op::Ne => !r.is_match(text),
            _ => false,
        },
        Operand::Number(n, literal) => match number {
            Some(x) => x.partial_cmp(n).is_some_and(ordered),
            None => match op {
                Op::Eq => text == literal,
                Op::Ne => text != literal,
                _ => false,
            },
        },
        Operand::Text(t) => match op {
            Op::Eq => glob(t, text),
            Op::Ne => !glob(t, text),
            _ => false,
        },
    }
}

fn eval_json(expr: &JsonExpr, root: &serde_json::Value) -> bool {
    match expr {
        JsonExpr::Or(items) => items.iter().any(|e| eval_json(e, root)),
        JsonExpr::And(items) => items.iter().all(|e| eval_json(e, root)),
        JsonExpr::NotExists(sel) => resolve(root, &sel.steps).is_none(),
        JsonExpr::IsNull(sel) => resolve(root, &sel.steps).is_some_and(serde_json::Value::is_null),
        JsonExpr::IsBool(sel, want) => {
            resolve(root, &sel.steps).and_then(serde_json::Value::as_bool) == Some(*want)
        }
        JsonExpr::Compare(sel, op, operand) => match resolve(root, &sel.steps) {
            // Missing paths, objects and arrays: false whatever the operator.
            None | Some(serde_json::Value::Object(_) | serde_json::Value::Array(_)) => false,
            Some(serde_json::Value::Null) => *op == Op::Ne && !matches!(operand, Operand::Any),
            Some(v @ serde_json::Value::String(_)) => {
                let text = scalar_text(v).unwrap_or_default();
                // A number against a string compares text, never order.
                match operand {
                    Operand::Number(_, literal) => match op {
                        Op::Eq => &text == literal,
                        Op::Ne => &text != literal,
                        _ => false,
                    },
                    _ => compare_text(*op, operand, &text),
                }
            }
            Some(v) => compare_text(*op, operand, &scalar_text(v).unwrap_or_default()),
        },
    }
}

/// Splits an event into (start, end, value) tokens: runs of spaces separate,
/// `[...]` and `"..."` are single tokens without their brackets or quotes.
fn tokenize(message: &str) -> Vec<(usize, &str)> {
    let bytes = message.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' {
            i += 1;
            continue;
        }
        let start = i;
        let close = match bytes[i] {
            b'[' => Some(b']'),
            b'"' => Some(b'"'),
            _ => None,
        };
        match close.and_then(|c| message[i + 1..].find(c as char).map(|at| (c, at))) {
            Some((_, at)) => {
                out.push((start, &message[i + 1..i + 1 + at]));
                i += at + 2;
            }
            None => {
                while i < bytes.len() && bytes[i] != b' ' {
                    i += 1;
                }
                out.push((start, &message[start..i]));
            }
        }
    }
    out
}

fn field_matches(alternatives: &[Vec<(Op, Operand)>], value: &str) -> bool {
    alternatives.is_empty()
        || alternatives.iter().any(|all| {
            all.iter()
                .all(|(op, operand)| compare_text(*op, operand, value))
        })
}

/// Binds fields to tokens; without `...`, the last field takes the rest of the
/// line. Named fields' values are pushed on `out` (popped when backtracking).
fn bind(
    fields: &[Field],
    tokens: &[(usize, &str)],
    message: &str,
    last_takes_rest: bool,
    out: &mut Vec<(String, String)>,
) -> bool {
    match fields.split_first() {
        None => tokens.is_empty(),
        Some((Field::Rest, rest)) => {
            (0..=tokens.len()).any(|k| bind(rest, &tokens[k..], message, last_takes_rest, out))
        }
        Some((Field::Named(name, alternatives), rest)) => {
            let Some(&(start, value)) = tokens.first() else {
                return false;
            };
            if rest.is_empty() && last_takes_rest && tokens.len() > 1 {
                let value = message[start..].trim_end();
                if field_matches(alternatives, value) {
                    out.push((name.clone(), value.to_owned()));
                    return true;
                }
                return false;
            }
            if !field_matches(alternatives, value) {
                return false;
            }
            out.push((name.clone(), value.to_owned()));
            if bind(rest, &tokens[1..], message, last_takes_rest, out) {
                return true;
            }
            out.pop();
            false
        }
    }
}

/// What a matching event makes available to metric filters (§7).
#[derive(Debug, Clone)]
pub enum Bindings {
    /// Term patterns extract nothing.
    Nothing,
    /// Space-delimited patterns: every named field's value.
    Fields(Vec<(String, String)>),
    /// JSON patterns: the event document.
    Json(serde_json::Value),
}

impl Bindings {
    /// The text of `$field` (space-delimited) or `$.path` (JSON), when it is
    /// present and a scalar.
    pub fn value(&self, reference: &str) -> Option<String> {
        match self {
            Bindings::Nothing => None,
            Bindings::Fields(fields) => {
                let name = reference.strip_prefix('$')?;
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            }
            Bindings::Json(doc) => {
                let mut lx = Lexer {
                    s: reference,
                    pos: 0,
                    regexes: 0,
                };
                let selector = parse_selector(&mut lx).ok()?;
                if lx.pos != reference.len() {
                    return None;
                }
                resolve(doc, &selector.steps).and_then(scalar_text)
            }
        }
    }
}

impl Pattern {
    /// Whether `reference` (`$.path` or `$field`) can be extracted by this pattern:
    /// `$.path` for JSON patterns, `$name` for a named field of a space-delimited one.
    pub fn can_extract(&self, reference: &str) -> bool {
        match self {
            Pattern::Json(_) => {
                let mut lx = Lexer {
                    s: reference,
                    pos: 0,
                    regexes: 0,
                };
                (reference.starts_with("$.") || reference.starts_with("$["))
                    && parse_selector(&mut lx).is_ok()
                    && lx.pos == reference.len()
            }
            Pattern::Space(fields) => reference.strip_prefix('$').is_some_and(|name| {
                fields
                    .0
                    .iter()
                    .any(|f| matches!(f, Field::Named(n, _) if n == name))
            }),
            _ => false,
        }
    }

    /// The bindings of `message` when it matches.
    pub fn match_extract(&self, message: &str) -> Option<Bindings> {
        match self {
            Pattern::Json(expr) => {
                match serde_json::from_str::<serde_json::Value>(message.trim()) {
                    Ok(v @ serde_json::Value::Object(_)) if eval_json(&expr.0, &v) => {
                        Some(Bindings::Json(v))
                    }
                    _ => None,
                }
            }
            Pattern::Space(fields) => {
                let tokens = tokenize(message);
                let mut out = Vec::new();
                let rest = !fields.0.iter().any(|f| matches!(f, Field::Rest));
                bind(&fields.0, &tokens, message, rest, &mut out).then_some(Bindings::Fields(out))
            }
            other => other.matches(message).then_some(Bindings::Nothing),
        }
    }

    /// TestMetricFilter's `extractedValues` for a matching `message` (§7.4).
    pub fn extracted_values(&self, message: &str) -> Option<Vec<(String, String)>> {
        let bindings = self.match_extract(message)?;
        Some(match (self, bindings) {
            (_, Bindings::Fields(fields)) => fields
                .into_iter()
                .map(|(n, v)| (format!("${n}"), v))
                .collect(),
            (Pattern::Json(expr), Bindings::Json(doc)) => {
                let mut selectors = Vec::new();
                expr.0.selectors(&mut selectors);
                selectors
                    .into_iter()
                    .filter_map(|s| {
                        Some((
                            s.text.clone(),
                            resolve(&doc, &s.steps).and_then(scalar_text)?,
                        ))
                    })
                    .collect()
            }
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(messages: &[&str], rows: &[(&str, &[bool])]) {
        for (pattern, expected) in rows {
            let p = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            let got: Vec<bool> = messages.iter().map(|m| p.matches(m)).collect();
            assert_eq!(&got, expected, "{pattern}");
        }
    }

    /// The term table of §6.1.
    #[test]
    fn spec_term_table() {
        table(
            &[
                "[ERROR 400] BAD REQUEST",
                "[ERROR 419] MISSING ARGUMENTS",
                "[INFO] ok",
            ],
            &[
                ("ERROR", &[true, true, false]),
                ("ERROR ARGUMENTS", &[false, true, false]),
                ("?ERROR ?ARGUMENTS", &[true, true, false]),
                ("ERROR -ARGUMENTS", &[true, false, false]),
                ("\"BAD REQUEST\"", &[true, false, false]),
                ("error", &[false, false, false]),
                ("RROR", &[true, true, false]),
                ("\" \"", &[true, true, true]),
                ("%ERROR.4[01]9%", &[false, true, false]),
                ("", &[true, true, true]),
                ("   ", &[true, true, true]),
            ],
        );
    }

    /// The JSON table of §6.2.
    #[test]
    fn spec_json_table() {
        let event = r#"{"eventType":"UpdateTrail","sourceIPAddress":"111.111.111.111","arrayKey":["value","another value"],"objectList":[{"name":"a","id":1},{"name":"b","id":2}],"SomeObject":null,"user":{"id":1}}"#;
        table(
            &[event, "not json", "[1, 2]"],
            &[
                ("{ $.eventType = \"UpdateTrail\" }", &[true, false, false]),
                ("{ $.eventType = Update* }", &[true, false, false]),
                ("{ $.sourceIPAddress != 123.123.* }", &[true, false, false]),
                ("{ $.arrayKey[0] = \"value\" }", &[true, false, false]),
                ("{ $.objectList[1].id = 2 }", &[true, false, false]),
                ("{ $.objectList[1].id > 1 && $.user.id = 1 }", &[true, false, false]),
                ("{ $.SomeObject IS NULL }", &[true, false, false]),
                ("{ $.SomeOtherObject NOT EXISTS }", &[true, false, false]),
                ("{ $.arrayKey = \"value\" }", &[false, false, false]),
                ("{ $.missing != \"x\" }", &[false, false, false]),
                (
                    "{ ($.user.id = 2 && $.eventType = \"UpdateTrail\") || $.arrayKey[1] = \"nope\" }",
                    &[false, false, false],
                ),
                ("{ $.eventType = %^Update% }", &[true, false, false]),
                ("{ $.eventType = * }", &[true, false, false]),
                ("{ $.user.id >= 1 && $.user.id <= 1 && $.user.id < 2 }", &[true, false, false]),
            ],
        );
        for bad in [
            "{ $.a }",
            "{ $.a IS NOT NULL }",
            "{ $.a EXISTS }",
            "{ a = 1 }",
            "{ $.a = 1",
            "{ ($.a = 1 }",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// The space-delimited table of §6.3.
    #[test]
    fn spec_space_table() {
        let event = r#"127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#;
        assert_eq!(tokenize(event).len(), 7);
        table(
            &[event],
            &[
                (
                    "[ip, user, username, timestamp, request = *.html*, status_code = 4*, bytes]",
                    &[true],
                ),
                (
                    "[..., status_code = 404 || status_code = 410, bytes]",
                    &[true],
                ),
                (
                    "[ip, server, username, timestamp, request, status_code, bytes > 1000]",
                    &[true],
                ),
                (
                    "[ip, server, username, timestamp, request, status_code, bytes > 2000]",
                    &[false],
                ),
                ("[w1 = 127*, w2]", &[true]),
                ("[w1 != 127* && w1 != 10*, w2]", &[false]),
                ("[a, b, c, d, e, f, g, h]", &[false]),
            ],
        );
        for bad in ["[a = 1 && b = 2]", "[1a]", "[a,]", "[a b]"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// TestMetricFilter's example (§7.4) and JSON selectors.
    #[test]
    fn extraction() {
        let p = Pattern::parse("[ip, user, username, timestamp, request, status_code = 4*, bytes]")
            .unwrap();
        let hit = r#"127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#;
        let miss = r#"127.0.0.1 Prod frank [10/Oct/2000:13:25:16 -0700] "GET / HTTP/1.0" 200 10"#;
        let got = p.extracted_values(hit).unwrap();
        assert_eq!(
            got,
            [
                ("$ip", "127.0.0.1"),
                ("$user", "Prod"),
                ("$username", "frank"),
                ("$timestamp", "10/Oct/2000:13:25:15 -0700"),
                ("$request", "GET /index.html HTTP/1.0"),
                ("$status_code", "404"),
                ("$bytes", "1534"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(p.extracted_values(miss).is_none());
        assert!(p.can_extract("$bytes") && !p.can_extract("$nope") && !p.can_extract("$.bytes"));
        let j = Pattern::parse("{ $.latency = * && $.user.id > 0 }").unwrap();
        let doc = r#"{"latency":50,"user":{"id":7}}"#;
        assert_eq!(
            j.extracted_values(doc).unwrap(),
            [
                ("$.latency".to_owned(), "50".to_owned()),
                ("$.user.id".to_owned(), "7".to_owned())
            ]
        );
        let b = j.match_extract(doc).unwrap();
        assert_eq!(b.value("$.user.id").as_deref(), Some("7"));
        assert_eq!(b.value("$.user").as_deref(), None);
        assert!(j.can_extract("$.latency") && !j.can_extract("$latency"));
        assert!(!Pattern::parse("ERROR").unwrap().can_extract("$.x"));
    }

    /// §6.4: the examples, the character set and the two-regex quota.
    #[test]
    fn spec_regexes() {
        table(
            &[
                "[ERROR 401] UNAUTHORIZED REQUEST",
                "[SUCCESS 200] AUTHORIZED REQUEST",
                "10.0.0.12 up",
                "Failure",
            ],
            &[
                ("%AUTHORIZED%", &[true, true, false, false]),
                (
                    r"%\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}%",
                    &[false, false, true, false],
                ),
                ("%[Ee]rror|[Ff]ail%", &[false, false, false, true]),
            ],
        );
        for bad in ["%something!%", "%(a)%", "%a% %b% %c%", "%é%", "%%"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Pattern::parse("%a% %b%").is_ok());
    }

    fn naive(words: &[(u8, String)], message: &str) -> bool {
        let has = |w: &String| message.contains(w.as_str());
        let plain = words.iter().filter(|(k, _)| *k == 0).all(|(_, w)| has(w));
        let excluded = words.iter().filter(|(k, _)| *k == 2).any(|(_, w)| has(w));
        let optional: Vec<&String> = words
            .iter()
            .filter(|(k, _)| *k == 1)
            .map(|(_, w)| w)
            .collect();
        plain && !excluded && (optional.is_empty() || optional.into_iter().any(has))
    }

    proptest! {
        /// Term patterns against a naive reading of §6.1.
        #[test]
        fn terms_match_like_the_naive_reading(
            words in proptest::collection::vec((0u8..3, "[a-c]{1,3}"), 1..5),
            message in "[a-c ]{0,20}",
        ) {
            let text: Vec<String> = words
                .iter()
                .map(|(k, w)| format!("{}{w}", ["", "?", "-"][usize::from(*k)]))
                .collect();
            let p = Pattern::parse(&text.join(" ")).unwrap();
            prop_assert_eq!(p.matches(&message), naive(&words, &message));
        }

        /// `{ $.k = v }` on `{"k": v}` for numbers and strings, against direct comparison.
        #[test]
        fn json_equality_and_order_like_direct_comparison(a in -1000i64..1000, b in -1000i64..1000) {
            let event = format!(r#"{{"k": {a}, "s": "{a}"}}"#);
            for (op, want) in [("=", a == b), ("!=", a != b), (">", a > b), ("<", a < b), (">=", a >= b), ("<=", a <= b)] {
                let p = Pattern::parse(&format!("{{ $.k {op} {b} }}")).unwrap();
                prop_assert_eq!(p.matches(&event), want, "{} {} {}", a, op, b);
                // A string value: text equality only, never order.
                let s = Pattern::parse(&format!("{{ $.s {op} {b} }}")).unwrap();
                let text_want = match op { "=" => a == b, "!=" => a != b, _ => false };
                prop_assert_eq!(s.matches(&event), text_want);
            }
        }

        /// Wildcards against a regex built from the same glob.
        #[test]
        fn glob_matches_like_a_regex(pattern in "[ab*]{0,6}", text in "[ab]{0,8}") {
            let re = Regex::new(&format!("^{}$", pattern.split('*').map(regex::escape).collect::<Vec<_>>().join(".*"))).unwrap();
            prop_assert_eq!(glob(&pattern, &text), re.is_match(&text));
        }

        /// Parsing arbitrary text never panics.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,60}") {
            let _ = Pattern::parse(&text).map(|p| p.matches("a b [c] \"d\" {\"e\": 1}"));
        }
    }
}
