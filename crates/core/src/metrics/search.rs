//! SEARCH expressions (`spec/cloudwatch.md` §6.6): the search language and
//! matching of metric identities, with CloudWatch's tokenisation rules.

use super::model::MetricId;

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// `{Namespace[, DimName…]}`: namespace and, when dimensions are listed, the exact name set.
    pub schema: Option<(String, Option<Vec<String>>)>,
    /// The search term.
    pub term: Option<Term>,
}

/// A search term.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// Both.
    And(Box<Term>, Box<Term>),
    /// Either.
    Or(Box<Term>, Box<Term>),
    /// Not.
    Not(Box<Term>),
    /// Unquoted: token match against any property.
    Word(String),
    /// Quoted: exact match against any property.
    Exact(String),
    /// `Property=value` (value unquoted or quoted-exact).
    Prop(String, Box<Term>),
    /// `:aws.AccountId = …`: only the local account exists.
    Always,
}

/// Splits `text` into its original segments: on non-alphanumerics, lower→upper
/// transitions, `ABc` (acronym then word) and letter↔digit transitions.
fn segments(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some(&prev) = current.chars().last().as_ref() {
            let next = chars.get(i + 1).copied();
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_alphabetic() != c.is_alphabetic())
                || (prev.is_uppercase()
                    && c.is_uppercase()
                    && next.is_some_and(char::is_lowercase));
            if boundary {
                out.push(std::mem::take(&mut current));
            }
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Lower-cased tokens of a property: its segments plus their full concatenation.
fn tokens(text: &str) -> Vec<String> {
    let segs = segments(text);
    let mut out: Vec<String> = segs.iter().map(|s| s.to_lowercase()).collect();
    if segs.len() > 1 {
        out.push(segs.concat().to_lowercase());
    }
    out
}

/// Whether the unquoted `term` matches the property `text` (§6.6 rules).
fn word_matches(term: &str, text: &str) -> bool {
    let property = tokens(text);
    let term_segments = segments(term);
    if !term_segments.is_empty()
        && term_segments
            .iter()
            .all(|t| property.contains(&t.to_lowercase()))
    {
        return true;
    }
    // A composite of consecutive segments matches case-sensitively on the original text.
    let segs = segments(text);
    (0..segs.len()).any(|i| (i + 1..=segs.len()).any(|j| segs[i..j].concat() == term))
}

fn properties(m: &MetricId) -> Vec<&str> {
    let mut out = vec![m.name.as_str(), m.namespace.as_str()];
    for d in &m.dimensions {
        out.push(&d.name);
        out.push(&d.value);
    }
    out
}

impl Term {
    fn matches(&self, m: &MetricId) -> bool {
        match self {
            Term::And(a, b) => a.matches(m) && b.matches(m),
            Term::Or(a, b) => a.matches(m) || b.matches(m),
            Term::Not(a) => !a.matches(m),
            Term::Always => true,
            Term::Word(w) => properties(m).iter().any(|p| word_matches(w, p)),
            Term::Exact(e) => properties(m).iter().any(|p| p == e),
            Term::Prop(key, value) => {
                let values: Vec<&str> = match key.as_str() {
                    "MetricName" => vec![m.name.as_str()],
                    "Namespace" => vec![m.namespace.as_str()],
                    dim => m
                        .dimensions
                        .iter()
                        .filter(|d| d.name == dim)
                        .map(|d| d.value.as_str())
                        .collect(),
                };
                values.iter().any(|v| match value.as_ref() {
                    Term::Exact(e) => v == e,
                    Term::Word(w) => word_matches(w, v),
                    _ => false,
                })
            }
        }
    }
}

impl Search {
    /// Whether metric `m` is selected.
    pub fn matches(&self, m: &MetricId) -> bool {
        if let Some((namespace, dims)) = &self.schema {
            if &m.namespace != namespace {
                return false;
            }
            if dims
                .as_ref()
                .is_some_and(|dims| !m.has_dimension_names(dims))
            {
                return false;
            }
        }
        self.term.as_ref().is_none_or(|t| t.matches(m))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Word(String),
    Quoted(String),
    Eq,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        match chars[i] {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated quoted term".to_owned()),
                        Some('\\') => {
                            text.push(*chars.get(i + 1).ok_or("dangling escape")?);
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Quoted(text));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | '=' | '"')
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    pos: usize,
}

impl P {
    fn or(&mut self) -> Result<Term, String> {
        let mut left = self.and()?;
        while self.toks.get(self.pos) == Some(&Tok::Word("OR".into())) {
            self.pos += 1;
            left = Term::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Term, String> {
        let mut left = self.not()?;
        loop {
            match self.toks.get(self.pos) {
                Some(Tok::Word(w)) if w == "AND" => {
                    self.pos += 1;
                    left = Term::And(Box::new(left), Box::new(self.not()?));
                }
                // Adjacent terms are ANDed.
                Some(Tok::Word(w)) if w != "OR" => {
                    left = Term::And(Box::new(left), Box::new(self.not()?))
                }
                Some(Tok::Quoted(_) | Tok::Open) => {
                    left = Term::And(Box::new(left), Box::new(self.not()?))
                }
                _ => return Ok(left),
            }
        }
    }

    fn not(&mut self) -> Result<Term, String> {
        if self.toks.get(self.pos) == Some(&Tok::Word("NOT".into())) {
            self.pos += 1;
            return Ok(Term::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Term, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of search term")?;
        self.pos += 1;
        let term = match tok {
            Tok::Open => {
                let inner = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err("expected ')'".to_owned());
                }
                self.pos += 1;
                return Ok(inner);
            }
            Tok::Quoted(q) => Term::Exact(q),
            Tok::Word(w) => Term::Word(w),
            Tok::Close | Tok::Eq => return Err("unexpected token in search term".to_owned()),
        };
        if self.toks.get(self.pos) == Some(&Tok::Eq) {
            self.pos += 1;
            let key = match term {
                Term::Word(w) | Term::Exact(w) => w,
                _ => return Err("invalid property".to_owned()),
            };
            let value = match self.toks.get(self.pos).cloned() {
                Some(Tok::Word(w)) => Term::Word(w),
                Some(Tok::Quoted(q)) => Term::Exact(q),
                _ => return Err(format!("{key}= needs a value")),
            };
            self.pos += 1;
            if key == ":aws.AccountId" {
                return Ok(Term::Always);
            }
            return Ok(Term::Prop(key, Box::new(value)));
        }
        Ok(term)
    }
}

/// Parses the first argument of SEARCH.
pub fn parse_search(s: &str) -> Result<Search, String> {
    if s.chars().count() > 1024 {
        return Err("the search expression is longer than 1024 characters".to_owned());
    }
    let trimmed = s.trim();
    let (schema, rest) = match trimmed.strip_prefix('{') {
        Some(after) => {
            let end = after.find('}').ok_or("unterminated schema '{'")?;
            let parts: Vec<String> = after[..end]
                .split(',')
                .map(|p| p.trim().trim_matches('"').to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            let (namespace, dims) = parts.split_first().ok_or("empty schema")?;
            let dims = (!dims.is_empty()).then(|| dims.to_vec());
            (Some((namespace.clone(), dims)), &after[end + 1..])
        }
        None => (None, trimmed),
    };
    let toks = lex(rest)?;
    let term = if toks.is_empty() {
        None
    } else {
        let mut p = P { toks, pos: 0 };
        let t = p.or()?;
        if p.pos != p.toks.len() {
            return Err("unexpected trailing input in search term".to_owned());
        }
        Some(t)
    };
    if schema.is_none() && term.is_none() {
        return Err("a search needs a schema or a search term".to_owned());
    }
    Ok(Search { schema, term })
}

/// Default labels of SEARCH results (§6.2 rule 8): the dimension values that
/// differ between the series, then the metric name when it varies.
pub fn default_labels(metrics: &[MetricId]) -> Vec<String> {
    let differing_dims: Vec<String> = {
        let mut names: Vec<String> = metrics
            .iter()
            .flat_map(|m| m.dimensions.iter().map(|d| d.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| {
                let mut values: Vec<Option<&str>> = metrics
                    .iter()
                    .map(|m| {
                        m.dimensions
                            .iter()
                            .find(|d| &d.name == n)
                            .map(|d| d.value.as_str())
                    })
                    .collect();
                values.sort();
                values.dedup();
                values.len() > 1
            })
            .collect()
    };
    let names_vary = metrics.windows(2).any(|w| w[0].name != w[1].name);
    metrics
        .iter()
        .map(|m| {
            let mut parts: Vec<&str> = differing_dims
                .iter()
                .filter_map(|n| {
                    m.dimensions
                        .iter()
                        .find(|d| &d.name == n)
                        .map(|d| d.value.as_str())
                })
                .collect();
            if names_vary || parts.is_empty() {
                parts.push(&m.name);
            }
            parts.join(" ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::Dimension;

    fn metric(ns: &str, name: &str, dims: &[(&str, &str)]) -> MetricId {
        MetricId {
            namespace: ns.into(),
            name: name.into(),
            dimensions: dims
                .iter()
                .map(|(n, v)| Dimension {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn tokenisation() {
        assert_eq!(
            tokens("CustomCount1"),
            ["custom", "count", "1", "customcount1"]
        );
        assert_eq!(tokens("SDBFailure"), ["sdb", "failure", "sdbfailure"]);
        assert_eq!(
            tokens("Project2-trial333"),
            ["project", "2", "trial", "333", "project2trial333"]
        );
        for (term, hit) in [
            ("count", true),
            ("Count", true),
            ("COUNT", true),
            ("couNT", false),
            ("CustomCount", true),
            ("Count1", true),
            ("customcount", false),
        ] {
            assert_eq!(word_matches(term, "CustomCount1"), hit, "{term}");
        }
    }

    #[test]
    fn spec_examples() {
        let cpu = metric("AWS/EC2", "CPUUtilization", &[("InstanceId", "i-1")]);
        let cpu_typed = metric(
            "AWS/EC2",
            "CPUUtilization",
            &[("InstanceId", "i-2"), ("Type", "t3")],
        );
        let errors_a = metric("AWS/Lambda", "Errors", &[("FunctionName", "ProjectA-fn")]);
        let invocations_c = metric(
            "AWS/Lambda",
            "Invocations",
            &[("FunctionName", "ProjectC-fn")],
        );
        let invocations_b = metric(
            "AWS/Lambda",
            "Invocations",
            &[("FunctionName", "ProjectB-fn")],
        );
        let custom = metric("App", "Latency", &[]);
        let s = parse_search(r#"{AWS/EC2,InstanceId} MetricName="CPUUtilization""#).unwrap();
        assert!(s.matches(&cpu) && !s.matches(&cpu_typed));
        let s = parse_search(r#" {AWS/Lambda,FunctionName} MetricName="Errors" OR (MetricName="Invocations" AND (ProjectA OR ProjectB)) "#).unwrap();
        assert!(s.matches(&errors_a) && s.matches(&invocations_b) && !s.matches(&invocations_c));
        let s = parse_search("NOT Namespace=AWS").unwrap();
        assert!(s.matches(&custom) && !s.matches(&cpu));
        let s = parse_search("{AWS/EC2} i-2").unwrap();
        assert!(s.matches(&cpu_typed) && !s.matches(&cpu));
        assert!(parse_search("").is_err());
        assert!(parse_search("(unclosed").is_err());
        // Values of the dimensions that differ (one metric lacks Type); the name is the same.
        assert_eq!(
            default_labels(&[cpu.clone(), cpu_typed.clone()]),
            ["i-1", "i-2 t3"]
        );
        assert_eq!(
            default_labels(&[errors_a, invocations_b]),
            ["ProjectA-fn Errors", "ProjectB-fn Invocations"]
        );
    }
}
