//! Filter patterns (`spec/logs.md` §6). The kind is decided by the first
//! non-blank character; term patterns (§6.1) are implemented here, JSON and
//! space-delimited patterns and `%regex%` terms are refused as invalid until
//! they are (issue #4).

use super::model::LogsError;

/// A parsed filter pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Empty or blank: every event.
    All,
    /// Terms (§6.1).
    Terms {
        /// Terms that must all occur.
        required: Vec<String>,
        /// Terms of which one must occur, when any.
        optional: Vec<String>,
        /// Terms that must not occur.
        excluded: Vec<String>,
    },
}

fn invalid() -> LogsError {
    LogsError::InvalidParameter("Invalid filter pattern".to_owned())
}

impl Pattern {
    /// Parses a pattern of at most 1,024 characters.
    pub fn parse(text: &str) -> Result<Pattern, LogsError> {
        if text.chars().count() > 1024 {
            return Err(invalid());
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Pattern::All);
        }
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            return Err(invalid());
        }
        let (mut required, mut optional, mut excluded) = (Vec::new(), Vec::new(), Vec::new());
        let mut chars = trimmed.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&first) = chars.peek() else {
                break;
            };
            let list = match first {
                '?' => {
                    chars.next();
                    &mut optional
                }
                '-' => {
                    chars.next();
                    &mut excluded
                }
                _ => &mut required,
            };
            let quoted = chars.peek() == Some(&'"');
            let term = match chars.peek() {
                Some('"') => {
                    chars.next();
                    let mut term = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(invalid()),
                            Some('"') => break,
                            Some('\\') if chars.peek() == Some(&'"') => {
                                chars.next();
                                term.push('"');
                            }
                            Some(c) => term.push(c),
                        }
                    }
                    term
                }
                Some('%') => return Err(invalid()),
                _ => {
                    let mut term = String::new();
                    while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                        if c == '"' {
                            return Err(invalid());
                        }
                        term.push(c);
                    }
                    term
                }
            };
            // A lone `?` or `-`; `""` (the empty phrase) matches everything.
            if term.is_empty() && !quoted {
                return Err(invalid());
            }
            list.push(term);
        }
        Ok(Pattern::Terms {
            required,
            optional,
            excluded,
        })
    }

    /// Whether `message` matches (case-sensitive substrings).
    pub fn matches(&self, message: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Terms {
                required,
                optional,
                excluded,
            } => {
                required.iter().all(|t| message.contains(t.as_str()))
                    && !excluded.iter().any(|t| message.contains(t.as_str()))
                    && (optional.is_empty()
                        || optional.iter().any(|t| message.contains(t.as_str())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The term table of §6.1 (the regex row waits for regex terms).
    #[test]
    fn spec_term_table() {
        let messages = [
            "[ERROR 400] BAD REQUEST",
            "[ERROR 419] MISSING ARGUMENTS",
            "[INFO] ok",
        ];
        for (pattern, expected) in [
            ("ERROR", [true, true, false]),
            ("ERROR ARGUMENTS", [false, true, false]),
            ("?ERROR ?ARGUMENTS", [true, true, false]),
            ("ERROR -ARGUMENTS", [true, false, false]),
            ("\"BAD REQUEST\"", [true, false, false]),
            ("error", [false, false, false]),
            ("RROR", [true, true, false]),
            ("\" \"", [true, true, true]),
            ("", [true, true, true]),
            ("   ", [true, true, true]),
        ] {
            let p = Pattern::parse(pattern).unwrap();
            let got: Vec<bool> = messages.iter().map(|m| p.matches(m)).collect();
            assert_eq!(got, expected, "{pattern}");
        }
        for bad in ["\"unclosed", "a\"b", "{ $.x = 1 }", "[a, b]", "%x%"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Pattern::parse(&"a".repeat(1025)).is_err());
    }

    /// Against a naive reading of §6.1: all plain terms, no excluded term, one
    /// optional term when there are any.
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
    }
}
