//! Kubernetes label selectors (`labels.Parse` syntax) and their matching. No I/O here.
//!
//! The HPA sends `metric.selector` as a query string (`queue=embed,tier in (gpu,cpu),!canary`);
//! every form `labels.Parse` accepts is accepted here: `=`, `==`, `!=`, `in`, `notin`, `key`,
//! `!key`, `>` and `<`. Keys and values are checked against the same rules Kubernetes applies,
//! so a selector the API server would refuse is refused here too, with the offending part named.

use std::collections::BTreeSet;
use std::fmt;

use crate::apimachinery::label::{validate_key, validate_value};
use crate::model::Labels;
use crate::primitives::{QUOTED_CHARS, quoted_prefix};

/// A parsed selector: every requirement must hold (they are ANDed). Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One `key op values` term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    /// Sorted and deduplicated; one value for `=`/`!=`/`>`/`<`, none for exists/does-not-exist.
    values: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// Why a selector string could not be parsed; the message quotes the part that is wrong, and
/// of a long selector only its start, so a 64 KB selector is not echoed back in the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {}: {}", quoted_prefix(selector), reason)]
pub struct SelectorError {
    selector: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    In,
    NotIn,
    Gt,
    Lt,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => f.write_str(&quoted_prefix(s)),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Eq => f.write_str("'='"),
            Token::DoubleEq => f.write_str("'=='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Bang => f.write_str("'!'"),
            Token::In => f.write_str("'in'"),
            Token::NotIn => f.write_str("'notin'"),
            Token::Gt => f.write_str("'>'"),
            Token::Lt => f.write_str("'<'"),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let two =
                |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, t2: Token, t1: Token| {
                    if chars.peek() == Some(&'=') {
                        chars.next();
                        t2
                    } else {
                        t1
                    }
                };
            tokens.push(match c {
                '=' => two(&mut chars, Token::DoubleEq, Token::Eq),
                '!' => two(&mut chars, Token::NotEq, Token::Bang),
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                '>' => Token::Gt,
                _ => Token::Lt,
            });
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    tokens
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error(&self, reason: impl Into<String>) -> SelectorError {
        let mut reason = reason.into();
        // A reason quotes keys and values, which can be as long as the selector.
        if let Some((cut, _)) = reason.char_indices().nth(4 * QUOTED_CHARS) {
            reason.truncate(cut);
            reason.push_str("...");
        }
        SelectorError {
            selector: self.input.to_string(),
            reason,
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = if self.peek() == Some(&Token::Bang) {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Some(Token::Ident(k)) => k,
            Some(t) => return Err(self.error(format!("expected a label key, found {t}"))),
            None => return Err(self.error("expected a label key, found the end")),
        };
        validate_key(&key).map_err(|e| self.error(format!("label key {key:?} {e}")))?;
        if negated {
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let op = match self.peek() {
            None | Some(Token::Comma) => {
                return Ok(Requirement {
                    key,
                    op: Operator::Exists,
                    values: BTreeSet::new(),
                });
            }
            Some(_) => self.next(),
        };
        let (op, values) = match op {
            Some(Token::Eq | Token::DoubleEq) => (Operator::In, self.single_value(&key)?),
            Some(Token::NotEq) => (Operator::NotIn, self.single_value(&key)?),
            Some(Token::In) => (Operator::In, self.value_set(&key)?),
            Some(Token::NotIn) => (Operator::NotIn, self.value_set(&key)?),
            Some(t @ (Token::Gt | Token::Lt)) => {
                let values = self.single_value(&key)?;
                if let Some(v) = values.iter().next()
                    && v.parse::<i64>().is_err()
                {
                    return Err(self.error(format!(
                        "value {v:?} after {t} for {key:?} must be an integer"
                    )));
                }
                let op = if t == Token::Gt {
                    Operator::GreaterThan
                } else {
                    Operator::LessThan
                };
                (op, values)
            }
            Some(t) => {
                return Err(self.error(format!("expected an operator after {key:?}, found {t}")));
            }
            None => unreachable!("peeked a token above"),
        };
        Ok(Requirement { key, op, values })
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; may be empty (`key=`), as in Kubernetes.
    fn single_value(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        let value = match self.peek() {
            Some(Token::Ident(v)) => {
                let v = v.clone();
                self.next();
                v
            }
            None | Some(Token::Comma) => String::new(),
            Some(t) => return Err(self.error(format!("expected a value for {key:?}, found {t}"))),
        };
        validate_value(&value)
            .map_err(|e| self.error(format!("value {value:?} for {key:?} {e}")))?;
        Ok(BTreeSet::from([value]))
    }

    fn value_set(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            Some(t) => {
                return Err(self.error(format!(
                    "expected '(' after 'in'/'notin' for {key:?}, found {t}"
                )));
            }
            None => return Err(self.error(format!("expected '(' after 'in'/'notin' for {key:?}"))),
        }
        let mut values = BTreeSet::new();
        loop {
            let value = match self.peek() {
                Some(Token::Ident(v)) => {
                    let v = v.clone();
                    self.next();
                    v
                }
                Some(Token::Comma | Token::Close) => String::new(),
                Some(t) => {
                    return Err(self.error(format!(
                        "expected a value in the set for {key:?}, found {t}"
                    )));
                }
                None => {
                    return Err(
                        self.error(format!("the value set for {key:?} is not closed with ')'"))
                    );
                }
            };
            validate_value(&value)
                .map_err(|e| self.error(format!("value {value:?} for {key:?} {e}")))?;
            values.insert(value);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => break,
                Some(t) => {
                    return Err(self.error(format!(
                        "expected ',' or ')' in the set for {key:?}, found {t}"
                    )));
                }
                None => {
                    return Err(
                        self.error(format!("the value set for {key:?} is not closed with ')'"))
                    );
                }
            }
        }
        if values.len() == 1
            && values.contains("")
            && self.tokens.get(self.pos - 2) == Some(&Token::Open)
        {
            return Err(self.error(format!("the value set for {key:?} must not be empty")));
        }
        Ok(values)
    }
}

impl Selector {
    /// The selector that matches every series (what an absent `labelSelector` means).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Parses `labels.Parse` syntax. An empty or all-whitespace string matches everything.
    ///
    /// # Errors
    /// [`SelectorError`] naming the token, key or value that is wrong.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: lex(input),
            pos: 0,
            input,
        };
        let mut requirements = Vec::new();
        if parser.tokens.is_empty() {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => {
                    if parser.peek().is_none() {
                        return Err(
                            parser.error("a trailing ',' must be followed by a requirement")
                        );
                    }
                }
                Some(t) => {
                    return Err(
                        parser.error(format!("expected ',' between requirements, found {t}"))
                    );
                }
            }
        }
        Ok(Selector { requirements })
    }

    /// Whether every requirement holds for `labels`. `!=` and `notin` hold when the label is
    /// absent, as in Kubernetes.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.op {
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
                Operator::In => value.is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                Operator::GreaterThan | Operator::LessThan => {
                    let (Some(have), Some(want)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values.iter().next().and_then(|v| v.parse::<i64>().ok()),
                    ) else {
                        return false;
                    };
                    if r.op == Operator::GreaterThan {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }

    /// The first `key in (values)` / `key=value` requirement, if any: every matching series has
    /// `key` set to one of `values`, so a caller with an index on `key` can look up candidates
    /// instead of scanning (it must still check [`Selector::matches`] on them).
    pub fn equality_requirement(&self) -> Option<(&str, impl Iterator<Item = &str>)> {
        self.requirements
            .iter()
            .find(|r| r.op == Operator::In)
            .map(|r| (r.key.as_str(), r.values.iter().map(String::as_str)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One requirement as the property test writes it, and Kubernetes' rule for it, written
    /// out directly (k8s.io/apimachinery `labels.Requirement.Matches`).
    #[derive(Debug, Clone)]
    enum Req {
        Eq(&'static str, &'static str),
        NotEq(&'static str, &'static str),
        In(&'static str, Vec<&'static str>),
        NotIn(&'static str, Vec<&'static str>),
        Exists(&'static str),
        Absent(&'static str),
        Gt(&'static str, i64),
        Lt(&'static str, i64),
    }

    impl Req {
        fn text(&self) -> String {
            match self {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::NotEq(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.to_string(),
                Req::Absent(k) => format!("!{k}"),
                Req::Gt(k, n) => format!("{k}>{n}"),
                Req::Lt(k, n) => format!("{k}<{n}"),
            }
        }

        fn holds(&self, labels: &Labels) -> bool {
            let get = |k: &str| labels.get(k);
            let int = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
            match self {
                Req::Eq(k, v) => get(k) == Some(*v),
                Req::NotEq(k, v) => get(k) != Some(*v),
                Req::In(k, vs) => get(k).is_some_and(|v| vs.contains(&v)),
                Req::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(&v)),
                Req::Exists(k) => get(k).is_some(),
                Req::Absent(k) => get(k).is_none(),
                Req::Gt(k, n) => int(k).is_some_and(|v| v > *n),
                Req::Lt(k, n) => int(k).is_some_and(|v| v < *n),
            }
        }
    }

    fn req() -> impl proptest::strategy::Strategy<Value = Req> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec!["a", "b", "app.kubernetes.io/name"]);
        // Requirement values are label values: `-2` is not one (it must start alphanumeric).
        let value = prop::sample::select(vec!["x", "y", "1", "10", "0"]);
        let values = prop::collection::vec(value.clone(), 1..4);
        prop_oneof![
            (key.clone(), value.clone()).prop_map(|(k, v)| Req::Eq(k, v)),
            (key.clone(), value).prop_map(|(k, v)| Req::NotEq(k, v)),
            (key.clone(), values.clone()).prop_map(|(k, v)| Req::In(k, v)),
            (key.clone(), values).prop_map(|(k, v)| Req::NotIn(k, v)),
            key.clone().prop_map(Req::Exists),
            key.clone().prop_map(Req::Absent),
            (key.clone(), 0i64..12).prop_map(|(k, n)| Req::Gt(k, n)),
            (key, 0i64..12).prop_map(|(k, n)| Req::Lt(k, n)),
        ]
    }

    proptest::proptest! {
        /// Parsing the written selector and matching it agrees with Kubernetes' rules applied
        /// directly, for every label set.
        #[test]
        fn matching_agrees_with_kubernetes_rules(
            reqs in proptest::collection::vec(req(), 0..5),
            labels in proptest::collection::btree_map(
                proptest::sample::select(vec!["a", "b", "app.kubernetes.io/name", "c"]),
                proptest::sample::select(vec!["x", "y", "1", "10", "-2", "z"]),
                0..4,
            ),
        ) {
            let text: Vec<String> = reqs.iter().map(Req::text).collect();
            let text = text.join(",");
            let selector = Selector::parse(&text).expect("a well-formed selector parses");
            let labels: Labels = labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let want = reqs.iter().all(|r| r.holds(&labels));
            proptest::prop_assert_eq!(selector.matches(&labels), want, "{} on {:?}", text, labels);
        }
    }

    #[test]
    fn a_huge_selector_is_quoted_by_its_start_only() {
        let huge = format!("a={}", "x".repeat(64 * 1024));
        let err = Selector::parse(&format!("{huge} {huge}"))
            .expect_err("two requirements without a comma");
        let text = err.to_string();
        assert!(text.len() < 600, "{} bytes: {}", text.len(), &text[..200]);
        assert!(text.contains("bytes)"), "{text}");
        assert!(text.starts_with("invalid label selector \"a=xxx"), "{text}");
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        struct Case {
            name: &'static str,
            selector: &'static str,
            labels: &'static [(&'static str, &'static str)],
            want: bool,
        }
        let cases = [
            Case {
                name: "empty matches all",
                selector: "",
                labels: &[("a", "1")],
                want: true,
            },
            Case {
                name: "blank matches all",
                selector: "  ",
                labels: &[],
                want: true,
            },
            Case {
                name: "equals",
                selector: "queue=embed",
                labels: &[("queue", "embed")],
                want: true,
            },
            Case {
                name: "double equals",
                selector: "queue==embed",
                labels: &[("queue", "embed")],
                want: true,
            },
            Case {
                name: "equals other",
                selector: "queue=embed",
                labels: &[("queue", "other")],
                want: false,
            },
            Case {
                name: "equals missing",
                selector: "queue=embed",
                labels: &[],
                want: false,
            },
            Case {
                name: "not equals missing",
                selector: "queue!=embed",
                labels: &[],
                want: true,
            },
            Case {
                name: "not equals same",
                selector: "queue!=embed",
                labels: &[("queue", "embed")],
                want: false,
            },
            Case {
                name: "in",
                selector: "tier in (gpu, cpu)",
                labels: &[("tier", "cpu")],
                want: true,
            },
            Case {
                name: "in other",
                selector: "tier in (gpu,cpu)",
                labels: &[("tier", "tpu")],
                want: false,
            },
            Case {
                name: "notin missing",
                selector: "tier notin (gpu)",
                labels: &[],
                want: true,
            },
            Case {
                name: "notin hit",
                selector: "tier notin (gpu)",
                labels: &[("tier", "gpu")],
                want: false,
            },
            Case {
                name: "exists",
                selector: "canary",
                labels: &[("canary", "")],
                want: true,
            },
            Case {
                name: "exists missing",
                selector: "canary",
                labels: &[],
                want: false,
            },
            Case {
                name: "not exists",
                selector: "!canary",
                labels: &[],
                want: true,
            },
            Case {
                name: "not exists present",
                selector: "!canary",
                labels: &[("canary", "x")],
                want: false,
            },
            Case {
                name: "greater",
                selector: "prio>3",
                labels: &[("prio", "5")],
                want: true,
            },
            Case {
                name: "greater not",
                selector: "prio>3",
                labels: &[("prio", "3")],
                want: false,
            },
            Case {
                name: "less non-integer label",
                selector: "prio<3",
                labels: &[("prio", "x")],
                want: false,
            },
            Case {
                name: "several anded",
                selector: "queue=embed,tier in (gpu),!canary",
                labels: &[("queue", "embed"), ("tier", "gpu")],
                want: true,
            },
            Case {
                name: "empty value",
                selector: "queue=",
                labels: &[("queue", "")],
                want: true,
            },
            Case {
                name: "prefixed key",
                selector: "app.kubernetes.io/name=x",
                labels: &[("app.kubernetes.io/name", "x")],
                want: true,
            },
        ];
        for c in cases {
            let selector =
                Selector::parse(c.selector).unwrap_or_else(|e| panic!("case {}: {e}", c.name));
            assert_eq!(
                selector.matches(&labels(c.labels)),
                c.want,
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn bad_selectors_are_refused_naming_the_part() {
        struct Case {
            name: &'static str,
            selector: &'static str,
            mentions: &'static str,
        }
        let cases = [
            Case {
                name: "bad key char",
                selector: "que:ue=x",
                mentions: "\"que:ue\"",
            },
            Case {
                name: "bad value char",
                selector: "queue=a:b",
                mentions: "\"a:b\"",
            },
            Case {
                name: "missing key",
                selector: "=x",
                mentions: "label key",
            },
            Case {
                name: "trailing comma",
                selector: "a=b,",
                mentions: "trailing",
            },
            Case {
                name: "unclosed set",
                selector: "a in (x,y",
                mentions: "not closed",
            },
            Case {
                name: "in without parens",
                selector: "a in x",
                mentions: "'('",
            },
            Case {
                name: "empty set",
                selector: "a in ()",
                mentions: "empty",
            },
            Case {
                name: "non-integer gt",
                selector: "a>x",
                mentions: "integer",
            },
            Case {
                name: "two values",
                selector: "a=b c",
                mentions: "between requirements",
            },
            Case {
                name: "long value",
                selector: "a=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                mentions: "63",
            },
            Case {
                name: "bad prefix",
                selector: "Foo/bar=x",
                mentions: "prefix",
            },
            Case {
                name: "double bang",
                selector: "!!a",
                mentions: "label key",
            },
        ];
        for c in cases {
            let err = Selector::parse(c.selector).expect_err(c.name).to_string();
            assert!(
                err.contains(c.mentions),
                "case {}: {err:?} should mention {}",
                c.name,
                c.mentions
            );
        }
    }
}
