//! Composite alarm rules (`spec/cloudwatch.md` §8.2–8.3): the rule grammar,
//! its limits, the children a rule names, and its value over the children's
//! states.
//!
//! ```text
//! rule    := orExpr
//! orExpr  := andExpr ("OR" andExpr)*
//! andExpr := notExpr ("AND" notExpr)*
//! notExpr := "NOT" notExpr | atom
//! atom    := "TRUE" | "FALSE" | "(" rule ")" | FN "(" ref ")"
//! FN      := "ALARM" | "OK" | "INSUFFICIENT_DATA"
//! ```
//! Keywords are accepted in any case [TW]; a reference is an alarm name or
//! ARN, quoted or bare (a bare one ends at the closing parenthesis, trimmed).

use crate::evaluation::State;

/// Most distinct children of one rule.
pub const MAX_CHILDREN: usize = 100;
/// Most elements (children, TRUE/FALSE, parentheses) of one rule.
pub const MAX_ELEMENTS: usize = 500;
/// Longest rule.
pub const MAX_RULE_CHARS: usize = 10_240;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `TRUE` / `FALSE`.
    Const(bool),
    /// `ALARM(x)`, `OK(x)`, `INSUFFICIENT_DATA(x)`: the child's reference as
    /// written (name or ARN).
    Is(State, String),
    /// `NOT`.
    Not(Box<Rule>),
    /// `AND`.
    And(Box<Rule>, Box<Rule>),
    /// `OR`.
    Or(Box<Rule>, Box<Rule>),
}

/// Why a rule is refused (the text of a `ValidationError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Ref(String),
}

fn lex(text: &str) -> Result<Vec<Tok>, Invalid> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b'(' => {
                out.push(Tok::Open);
                i += 1;
                // After FN "(", the reference: quoted, or bare up to ")".
                if matches!(out.iter().rev().nth(1), Some(Tok::Word(w)) if function(w).is_some()) {
                    while i < b.len() && b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'"') {
                        let end = text[i + 1..].find('"').ok_or_else(|| {
                            Invalid("Unterminated quoted alarm name in the alarm rule".into())
                        })?;
                        out.push(Tok::Ref(text[i + 1..i + 1 + end].to_owned()));
                        i += end + 2;
                    } else {
                        let end = text[i..].find(')').ok_or_else(|| {
                            Invalid("Missing closing parenthesis in the alarm rule".into())
                        })?;
                        out.push(Tok::Ref(text[i..i + end].trim().to_owned()));
                        i += end;
                    }
                }
            }
            b')' => {
                out.push(Tok::Close);
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if i == start {
                    return Err(Invalid(format!(
                        "Unexpected character '{}' in the alarm rule",
                        text[start..].chars().next().unwrap_or(' ')
                    )));
                }
                out.push(Tok::Word(text[start..i].to_ascii_uppercase()));
            }
        }
    }
    Ok(out)
}

fn function(word: &str) -> Option<State> {
    match word {
        "ALARM" => Some(State::Alarm),
        "OK" => Some(State::Ok),
        "INSUFFICIENT_DATA" => Some(State::InsufficientData),
        _ => None,
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn word(&mut self, w: &str) -> bool {
        if matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Rule, Invalid> {
        let mut left = self.and()?;
        while self.word("OR") {
            left = Rule::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Rule, Invalid> {
        let mut left = self.not()?;
        while self.word("AND") {
            left = Rule::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Rule, Invalid> {
        // Deep nesting is refused rather than allowed to exhaust the stack.
        self.depth += 1;
        if self.depth > MAX_ELEMENTS {
            return Err(Invalid("The alarm rule is nested too deeply".into()));
        }
        let r = if self.word("NOT") {
            Rule::Not(Box::new(self.not()?))
        } else {
            self.atom()?
        };
        self.depth -= 1;
        Ok(r)
    }

    fn atom(&mut self) -> Result<Rule, Invalid> {
        let bad = |what: &str| Invalid(format!("Invalid alarm rule: {what}"));
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Word(w)) if w == "TRUE" || w == "FALSE" => {
                self.pos += 1;
                Ok(Rule::Const(w == "TRUE"))
            }
            Some(Tok::Word(w)) => {
                let state = function(&w).ok_or_else(|| bad(&format!("unexpected '{w}'")))?;
                self.pos += 1;
                match (
                    self.toks.get(self.pos),
                    self.toks.get(self.pos + 1),
                    self.toks.get(self.pos + 2),
                ) {
                    (Some(Tok::Open), Some(Tok::Ref(r)), Some(Tok::Close)) if !r.is_empty() => {
                        let r = r.clone();
                        self.pos += 3;
                        Ok(Rule::Is(state, r))
                    }
                    _ => Err(bad(&format!("{w} needs an alarm name in parentheses"))),
                }
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(bad("missing ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Tok::Close) => Err(bad("unexpected ')'")),
            Some(Tok::Ref(_)) | None => Err(bad("unexpected end")),
        }
    }
}

impl Rule {
    /// Parses and checks a rule against §8.1's limits.
    pub fn parse(text: &str) -> Result<Rule, Invalid> {
        if text.is_empty() || text.chars().count() > MAX_RULE_CHARS {
            return Err(Invalid(format!(
                "AlarmRule must be between 1 and {MAX_RULE_CHARS} characters long"
            )));
        }
        let toks = lex(text)?;
        let elements = toks
            .iter()
            .filter(|t| match t {
                Tok::Word(w) => function(w).is_none() && w != "AND" && w != "OR" && w != "NOT",
                _ => true,
            })
            .count();
        if elements > MAX_ELEMENTS {
            return Err(Invalid(format!(
                "The alarm rule has more than {MAX_ELEMENTS} elements"
            )));
        }
        let mut p = Parser {
            toks,
            pos: 0,
            depth: 0,
        };
        let rule = p.or()?;
        if p.pos != p.toks.len() {
            return Err(Invalid(
                "Invalid alarm rule: unexpected text after the rule".into(),
            ));
        }
        if rule.children().len() > MAX_CHILDREN {
            return Err(Invalid(format!(
                "The alarm rule references more than {MAX_CHILDREN} alarms"
            )));
        }
        Ok(rule)
    }

    /// The distinct children, as written, in order of first mention.
    pub fn children(&self) -> Vec<&str> {
        fn walk<'a>(r: &'a Rule, out: &mut Vec<&'a str>) {
            match r {
                Rule::Const(_) => {}
                Rule::Is(_, name) => {
                    if !out.contains(&name.as_str()) {
                        out.push(name);
                    }
                }
                Rule::Not(x) => walk(x, out),
                Rule::And(a, b) | Rule::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// The rule's value, with `state` giving a child's state (`None`: the
    /// child does not exist, and `ALARM(x)` etc. are false [TW]).
    pub fn holds(&self, state: &impl Fn(&str) -> Option<State>) -> bool {
        match self {
            Rule::Const(b) => *b,
            Rule::Is(want, name) => state(name) == Some(*want),
            Rule::Not(x) => !x.holds(state),
            Rule::And(a, b) => a.holds(state) && b.holds(state),
            Rule::Or(a, b) => a.holds(state) || b.holds(state),
        }
    }
}

/// The name a child reference stands for: an alarm ARN's last part, else the
/// reference itself.
pub fn child_name(reference: &str) -> &str {
    match reference.strip_prefix("arn:") {
        Some(_) => reference
            .split_once(":alarm:")
            .map_or(reference, |(_, name)| name),
        None => reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(name: &str) -> Option<State> {
        match child_name(name) {
            "CPUHigh" => Some(State::Alarm),
            "DiskHigh" => Some(State::Ok),
            "NetworkHigh" => Some(State::Ok),
            "DeploymentInProgress" => Some(State::Alarm),
            "New" => Some(State::InsufficientData),
            _ => None,
        }
    }

    #[test]
    fn spec_examples_parse_and_evaluate() {
        for (rule, want) in [
            (
                "ALARM(CPUHigh) AND NOT ALARM(\"DeploymentInProgress\")",
                false,
            ),
            (
                "(ALARM(CPUHigh) OR ALARM(DiskHigh)) AND OK(NetworkHigh)",
                true,
            ),
            ("FALSE", false),
            ("TRUE", true),
            ("alarm(CPUHigh) and ok( DiskHigh )", true),
            ("INSUFFICIENT_DATA(New) AND NOT OK(New)", true),
            (
                "ALARM(arn:aws:cloudwatch:us-east-1:123456789012:alarm:CPUHigh)",
                true,
            ),
            ("NOT NOT ALARM(Missing)", false),
            ("OK(DiskHigh) OR ALARM(DiskHigh) AND FALSE", true),
            ("(OK(DiskHigh) OR ALARM(DiskHigh)) AND FALSE", false),
        ] {
            let r = Rule::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e:?}"));
            assert_eq!(r.holds(&states), want, "{rule}");
        }
        let r = Rule::parse("ALARM(a) OR OK(b) OR ALARM(\"a\") OR ALARM( my alarm )").unwrap();
        assert_eq!(r.children(), ["a", "b", "my alarm"]);
    }

    #[test]
    fn bad_rules_are_refused() {
        for rule in [
            "",
            "ALARM(",
            "ALARM()",
            "ALARM(x",
            "ALARM(x) AND",
            "ALARM(x) OK(y)",
            "MAYBE(x)",
            "(ALARM(x)",
            "ALARM(x))",
            "ALARM(\"x)",
            "NOT",
            "ALARM(x) & OK(y)",
        ] {
            assert!(Rule::parse(rule).is_err(), "{rule:?} parsed");
        }
        let many: Vec<String> = (0..101).map(|i| format!("ALARM(a{i})")).collect();
        assert!(Rule::parse(&many.join(" OR ")).is_err());
        let fine: Vec<String> = (0..100).map(|i| format!("ALARM(a{i})")).collect();
        assert!(Rule::parse(&fine.join(" OR ")).is_ok());
        assert!(Rule::parse(&format!("{}TRUE", "NOT ".repeat(600))).is_err());
        assert!(Rule::parse(&format!("{}TRUE{}", "(".repeat(300), ")".repeat(300))).is_err());
        assert!(Rule::parse(&"x".repeat(MAX_RULE_CHARS + 1)).is_err());
    }
}
