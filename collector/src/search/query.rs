//! The analyst's query language: parsed into a small tree, with positioned errors.
//!
//! The grammar (docs/query-language.md has the user's version, with examples):
//!
//! ```text
//! query    := or
//! or       := and ("OR" and)*
//! and      := unary (["AND"] unary)*          adjacent clauses are ANDed
//! unary    := ("NOT" | "-") unary | primary
//! primary  := "(" or ")" | clause
//! clause   := [field ":"] value
//! value    := "\"" phrase "\"" | "/" regex "/" | range | ">"|">="|"<"|"<=" bound
//!           | "*" | word                        a word may hold * and ? wildcards
//! range    := ("[" | "{") bound "TO" bound ("]" | "}")
//! ```
//!
//! The parser knows nothing of the schema: whether `10.0.0.0/8` is a CIDR block or a word
//! is decided when the tree is compiled against a field ([`super::compile`]). Input is
//! untrusted (it comes from the API), so nothing here panics, recursion is bounded, and
//! every error says where (a 1-based character column) and what was expected.

use std::fmt;
use std::ops::Bound;

/// How deeply parentheses and NOTs may nest: far beyond any real query, well within the
/// stack of a request handler.
const MAX_DEPTH: usize = 64;
/// Longest accepted query text.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Matches every event (an empty query, or a bare `*`).
    All,
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Clause(Clause),
}

/// One `field:value` (or a bare value, searched in the full-text fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub field: Option<String>,
    pub value: Value,
    /// Character column (1-based) where the clause starts, for compile errors.
    pub column: usize,
}

/// The value side of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A word, escapes resolved.
    Word(String),
    /// A quoted phrase, escapes resolved.
    Phrase(String),
    /// A word with `*` (any run) or `?` (one character) wildcards, kept as a pattern of
    /// [`Glob`] pieces so that escaped stars stay literal.
    Wildcard(Vec<Glob>),
    /// `/regex/`, the text between the slashes (`\/` unescaped).
    Regex(String),
    /// `[a TO b]`, `{a TO b}`, `>a`, `<=b` …; `*` leaves a side open.
    Range {
        lower: Bound<String>,
        upper: Bound<String>,
    },
    /// `field:*`: the field is present.
    Exists,
}

/// A piece of a wildcard pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum Glob {
    Literal(String),
    AnyRun,
    AnyOne,
}

/// A syntax error: where, what was expected, what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based character column.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column {}: expected {}, found {}",
            self.column, self.expected, self.found
        )
    }
}

impl std::error::Error for SyntaxError {}

/// Parses a query. An empty (or all-blank) query is [`Node::All`].
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(SyntaxError {
            column: 1,
            expected: format!("a query of at most {MAX_QUERY_BYTES} bytes"),
            found: format!("{} bytes", text.len()),
        });
    }
    let mut parser = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    parser.skip_blank();
    if parser.at_end() {
        return Ok(Node::All);
    }
    let node = parser.or()?;
    parser.skip_blank();
    if !parser.at_end() {
        return Err(parser.error(if parser.peek() == Some(')') {
            "an operator or the end of the query (this `)` closes nothing)"
        } else {
            "an operator or the end of the query"
        }));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the cursor.
    pos: usize,
    depth: usize,
}

/// Characters that end a word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')'
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_blank(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn column_at(&self, pos: usize) -> usize {
        self.text[..pos.min(self.text.len())].chars().count() + 1
    }

    fn error(&self, expected: &str) -> SyntaxError {
        self.error_at(self.pos, expected)
    }

    fn error_at(&self, pos: usize, expected: &str) -> SyntaxError {
        let found = match self.text[pos.min(self.text.len())..].chars().next() {
            None => "the end of the query".to_string(),
            Some(_) => {
                let word: String = self.text[pos..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(24)
                    .collect();
                format!("`{word}`")
            }
        };
        SyntaxError {
            column: self.column_at(pos),
            expected: expected.to_string(),
            found,
        }
    }

    /// Whether the upcoming word is exactly `keyword` (a whole word, case-sensitive).
    fn at_keyword(&self, keyword: &str) -> bool {
        let rest = self.rest();
        rest.starts_with(keyword) && rest[keyword.len()..].chars().next().is_none_or(ends_word)
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("at most {MAX_DEPTH} levels of nesting")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node, SyntaxError> {
        let mut items = vec![self.and()?];
        loop {
            self.skip_blank();
            if !self.at_keyword("OR") {
                break;
            }
            self.pos += 2;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Node::All)
        } else {
            Node::Or(items)
        })
    }

    fn and(&mut self) -> Result<Node, SyntaxError> {
        let mut items = vec![self.unary()?];
        loop {
            self.skip_blank();
            if self.at_end() || self.peek() == Some(')') || self.at_keyword("OR") {
                break;
            }
            if self.at_keyword("AND") {
                self.pos += 3;
            }
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Node::All)
        } else {
            Node::And(items)
        })
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        self.skip_blank();
        let negated = if self.at_keyword("NOT") {
            self.pos += 3;
            true
        } else if self.peek() == Some('-')
            && self.rest()[1..]
                .chars()
                .next()
                .is_some_and(|c| !ends_word(c))
        {
            self.pos += 1;
            true
        } else {
            false
        };
        if negated {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        self.skip_blank();
        match self.peek() {
            None => Err(self.error("a search term")),
            Some('(') => {
                let open = self.pos;
                self.bump();
                self.enter()?;
                self.skip_blank();
                if self.peek() == Some(')') {
                    return Err(self.error("a search term inside the parentheses"));
                }
                let inner = self.or()?;
                self.depth -= 1;
                self.skip_blank();
                if self.peek() != Some(')') {
                    let mut e = self.error("`)`");
                    e.expected = format!("`)` to close the `(` at column {}", self.column_at(open));
                    return Err(e);
                }
                self.bump();
                Ok(inner)
            }
            Some(')') => Err(self.error("a search term")),
            Some(_) if self.at_keyword("AND") || self.at_keyword("OR") => {
                Err(self.error("a search term before the operator"))
            }
            Some(_) => self.clause(),
        }
    }

    fn clause(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        let column = self.column_at(start);
        let field_len = self
            .rest()
            .chars()
            .take_while(|c| is_field_char(*c))
            .count();
        let field = if field_len > 0 && self.rest()[field_len..].starts_with(':') {
            let name = self.rest()[..field_len].to_string();
            self.pos += field_len + 1;
            Some(name)
        } else {
            None
        };
        if field.is_some() && self.peek().is_none_or(char::is_whitespace) {
            return Err(self.error("a value after the field's `:`"));
        }
        let value = self.value(field.is_some())?;
        if field.is_none() && value == Value::Exists {
            return Ok(Node::All);
        }
        Ok(Node::Clause(Clause {
            field,
            value,
            column,
        }))
    }

    fn value(&mut self, has_field: bool) -> Result<Value, SyntaxError> {
        match self.peek() {
            Some('"') => self.quoted('"').map(Value::Phrase),
            Some('/') => self.quoted('/').map(Value::Regex),
            Some('[') | Some('{') => self.range(),
            Some('>') | Some('<') if has_field => self.comparison(),
            Some('*') if self.rest()[1..].chars().next().is_none_or(ends_word) => {
                self.bump();
                Ok(Value::Exists)
            }
            Some(c) if ends_word(c) => Err(self.error("a value")),
            Some(_) => self.word(),
            None => Err(self.error("a value")),
        }
    }

    /// Text between `delimiter`s; a backslash escapes the delimiter and itself. In a
    /// regex, other escapes are kept for the regex engine.
    fn quoted(&mut self, delimiter: char) -> Result<String, SyntaxError> {
        let open = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    let what = if delimiter == '"' { "quote" } else { "slash" };
                    let mut e = self.error("");
                    e.expected = format!(
                        "a closing {what} `{delimiter}` for the one at column {}",
                        self.column_at(open)
                    );
                    return Err(e);
                }
                Some(c) if c == delimiter => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c) if c == delimiter || c == '\\' && delimiter == '"' => out.push(c),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => out.push('\\'),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// A bare word up to whitespace or a parenthesis; `\` escapes the next character.
    fn word(&mut self) -> Result<Value, SyntaxError> {
        let mut pieces: Vec<Glob> = Vec::new();
        let mut literal = String::new();
        let mut wild = false;
        while let Some(c) = self.peek() {
            if ends_word(c) {
                break;
            }
            self.bump();
            match c {
                '\\' => match self.bump() {
                    Some(escaped) => literal.push(escaped),
                    None => return Err(self.error("a character after `\\`")),
                },
                '*' | '?' => {
                    wild = true;
                    if !literal.is_empty() {
                        pieces.push(Glob::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(if c == '*' { Glob::AnyRun } else { Glob::AnyOne });
                }
                '"' => {
                    return Err(self.error_at(
                        self.pos - 1,
                        "no quote inside a word (quote the whole value)",
                    ));
                }
                _ => literal.push(c),
            }
        }
        if !wild {
            return Ok(Value::Word(literal));
        }
        if !literal.is_empty() {
            pieces.push(Glob::Literal(literal));
        }
        Ok(Value::Wildcard(pieces))
    }

    /// A range bound: a quoted string or a word without wildcards (`*` is open).
    fn bound_text(&mut self, stop: &[char]) -> Result<Option<String>, SyntaxError> {
        self.skip_blank();
        if self.peek() == Some('"') {
            return self.quoted('"').map(Some);
        }
        let start = self.pos;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() || stop.contains(&c) {
                break;
            }
            self.bump();
            if c == '\\' {
                match self.bump() {
                    Some(e) => out.push(e),
                    None => return Err(self.error("a character after `\\`")),
                }
            } else {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err(self.error_at(start, "a range bound (a value, or `*` for open)"));
        }
        Ok((out != "*").then_some(out))
    }

    fn range(&mut self) -> Result<Value, SyntaxError> {
        let inclusive_low = self.bump() == Some('[');
        let low = self.bound_text(&[']', '}'])?;
        self.skip_blank();
        if !self.at_keyword("TO") {
            return Err(self.error("`TO` between the range bounds"));
        }
        self.pos += 2;
        let high = self.bound_text(&[']', '}'])?;
        self.skip_blank();
        let inclusive_high = match self.peek() {
            Some(']') => true,
            Some('}') => false,
            _ => return Err(self.error("`]` or `}` to close the range")),
        };
        self.bump();
        let bound = |value: Option<String>, inclusive: bool| match value {
            None => Bound::Unbounded,
            Some(v) if inclusive => Bound::Included(v),
            Some(v) => Bound::Excluded(v),
        };
        Ok(Value::Range {
            lower: bound(low, inclusive_low),
            upper: bound(high, inclusive_high),
        })
    }

    fn comparison(&mut self) -> Result<Value, SyntaxError> {
        let greater = self.bump() == Some('>');
        let inclusive = if self.peek() == Some('=') {
            self.bump();
            true
        } else {
            false
        };
        let Some(value) = self.bound_text(&[')'])? else {
            return Err(self.error("a value to compare with"));
        };
        let bound = if inclusive {
            Bound::Included(value)
        } else {
            Bound::Excluded(value)
        };
        Ok(if greater {
            Value::Range {
                lower: bound,
                upper: Bound::Unbounded,
            }
        } else {
            Value::Range {
                lower: Bound::Unbounded,
                upper: bound,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clause(field: Option<&str>, value: Value, column: usize) -> Node {
        Node::Clause(Clause {
            field: field.map(str::to_string),
            value,
            column,
        })
    }

    fn word(s: &str) -> Value {
        Value::Word(s.to_string())
    }

    #[test]
    fn fields_words_phrases_and_implicit_and() {
        assert_eq!(parse("").expect("valid"), Node::All);
        assert_eq!(parse("  * ").expect("valid"), Node::All);
        assert_eq!(
            parse("user.name:admin \"failed password\"").expect("valid"),
            Node::And(vec![
                clause(Some("user.name"), word("admin"), 1),
                clause(None, Value::Phrase("failed password".into()), 17),
            ])
        );
    }

    #[test]
    fn operators_bind_not_then_and_then_or() {
        assert_eq!(
            parse("a OR b AND NOT c").expect("valid"),
            Node::Or(vec![
                clause(None, word("a"), 1),
                Node::And(vec![
                    clause(None, word("b"), 6),
                    Node::Not(Box::new(clause(None, word("c"), 16))),
                ]),
            ])
        );
        assert_eq!(
            parse("(a OR b) -c").expect("valid"),
            Node::And(vec![
                Node::Or(vec![clause(None, word("a"), 2), clause(None, word("b"), 7)]),
                Node::Not(Box::new(clause(None, word("c"), 11))),
            ])
        );
    }

    #[test]
    fn values_keep_cidrs_ipv6_and_paths_whole() {
        assert_eq!(
            parse("source.ip:10.0.0.0/8").expect("valid"),
            clause(Some("source.ip"), word("10.0.0.0/8"), 1)
        );
        assert_eq!(
            parse("source.ip:2001:db8::/32").expect("valid"),
            clause(Some("source.ip"), word("2001:db8::/32"), 1)
        );
        // A leading slash starts a regex: paths are quoted (or their slashes escaped).
        assert_eq!(
            parse(r#"log.file.path:"/var/log/auth.log""#).expect("valid"),
            clause(
                Some("log.file.path"),
                Value::Phrase("/var/log/auth.log".into()),
                1
            )
        );
        assert_eq!(
            parse(r"log.file.path:\/var\/log").expect("valid"),
            clause(Some("log.file.path"), word("/var/log"), 1)
        );
    }

    #[test]
    fn wildcards_regexes_ranges_and_exists() {
        assert_eq!(
            parse(r"process.command_line:*mimi\*katz?").expect("valid"),
            clause(
                Some("process.command_line"),
                Value::Wildcard(vec![
                    Glob::AnyRun,
                    Glob::Literal("mimi*katz".into()),
                    Glob::AnyOne
                ]),
                1
            )
        );
        assert_eq!(
            parse(r"url.path:/\/admin\/.*/").expect("valid"),
            clause(Some("url.path"), Value::Regex("/admin/.*".into()), 1)
        );
        assert_eq!(
            parse("source.port:[1024 TO *}").expect("valid"),
            clause(
                Some("source.port"),
                Value::Range {
                    lower: Bound::Included("1024".into()),
                    upper: Bound::Unbounded
                },
                1
            )
        );
        assert_eq!(
            parse("http.response.status_code:>=500").expect("valid"),
            clause(
                Some("http.response.status_code"),
                Value::Range {
                    lower: Bound::Included("500".into()),
                    upper: Bound::Unbounded
                },
                1
            )
        );
        assert_eq!(
            parse("user.name:*").expect("valid"),
            clause(Some("user.name"), Value::Exists, 1)
        );
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        let cases = [
            ("user.name:", 11, "a value after the field's `:`"),
            ("(a OR b", 8, "`)` to close the `(` at column 1"),
            ("a OR", 5, "a search term"),
            ("AND a", 1, "a search term before the operator"),
            (
                "message:\"open",
                14,
                "a closing quote `\"` for the one at column 9",
            ),
            (
                "a )",
                3,
                "an operator or the end of the query (this `)` closes nothing)",
            ),
            ("port:[1 2]", 9, "`TO` between the range bounds"),
            ("port:[1 TO 2", 13, "`]` or `}` to close the range"),
            ("()", 2, "a search term inside the parentheses"),
        ];
        for (query, column, expected) in cases {
            let error = parse(query).expect_err(query);
            assert_eq!(
                (error.column, error.expected.as_str()),
                (column, expected),
                "{query}"
            );
        }
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert!(
            parse(&deep)
                .expect_err("an error")
                .expected
                .contains("nesting")
        );
        let nots = "NOT ".repeat(200) + "a";
        assert!(
            parse(&nots)
                .expect_err("an error")
                .expected
                .contains("nesting")
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let error = parse("user.name:\"é").expect_err("an error");
        assert_eq!(error.column, 13);
    }

    proptest! {
        /// Any text, however hostile: a tree or a positioned error, never a panic, and
        /// the error's column lies within the text (or just past its end).
        #[test]
        fn never_panics_and_errors_point_into_the_text(text in "\\PC{0,80}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1);
            }
        }

        /// Queries built from the grammar's own pieces always parse.
        #[test]
        fn grammatical_queries_parse(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[a-z]{1,8}",
                    "[a-z]{1,5}\\.[a-z]{1,5}:[a-z0-9]{1,6}",
                    "[a-z]{1,5}:\"[a-z ]{0,10}\"",
                    "[a-z]{1,5}:\\*[a-z]{1,4}\\*",
                    "[a-z]{1,5}:\\[[0-9]{1,3} TO [0-9]{1,3}\\]",
                    "NOT [a-z]{1,5}",
                    "\\([a-z]{1,5} OR [a-z]{1,5}\\)",
                ],
                1..6,
            ),
            joiner in prop_oneof![Just(" "), Just(" AND "), Just(" OR ")],
        ) {
            let query = parts.join(joiner);
            prop_assert!(parse(&query).is_ok(), "{}", query);
        }
    }
}
