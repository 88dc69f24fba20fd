//! Configuration errors an operator can act on: the line, the column and the dotted key
//! at fault (`ingest.max_body_bytes`, `sources[2].parser`), and every error of a file at
//! once rather than one per attempt.
//!
//! Both binaries parse TOML with serde (`deny_unknown_fields` everywhere), which stops at
//! the first error and reports a byte span. [`key_at`] names the key at that span from the
//! text itself, and [`every_problem`] finds the next error by parsing again with the
//! offending line blanked, until the file parses or the errors stop moving forward.

use std::fmt;

/// One error in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key at fault, when it can be named.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{line}:{column}: ")?,
            (Some(line), None) => write!(f, "{line}: ")?,
            _ => {}
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigProblem {
    /// `FILE:LINE:COLUMN: `key`: message` (or `FILE: …` without a line), the shape
    /// editors and CI logs link to.
    pub fn in_file(&self, path: &std::path::Path) -> String {
        if self.line.is_some() {
            format!("{}:{self}", path.display())
        } else {
            format!("{}: {self}", path.display())
        }
    }

    /// A problem at byte `offset` of `text` (from a TOML error's span).
    pub fn at(text: &str, offset: Option<usize>, message: impl Into<String>) -> Self {
        let located = offset.map(|o| line_column(text, o));
        ConfigProblem {
            line: located.map(|(l, _)| l),
            column: located.map(|(_, c)| c),
            key: offset.and_then(|o| key_at(text, o)),
            message: message.into().trim().to_string(),
        }
    }

    /// A problem with the dotted `key` (found in `text` for its line, when it is there).
    pub fn of_key(text: &str, key: &str, message: impl Into<String>) -> Self {
        ConfigProblem {
            line: line_of_key(text, key),
            column: None,
            key: Some(key.to_string()),
            message: message.into().trim().to_string(),
        }
    }
}

/// What `check-config FILE` does in both binaries: reads the file, prints each problem
/// on standard error as `FILE:LINE:COLUMN: …` and `FILE: ok` on standard output when there
/// is none; the error says how many there were.
pub fn check_file(
    path: &std::path::Path,
    problems_of: impl FnOnce(&str) -> Vec<ConfigProblem>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let problems = problems_of(&text);
    for problem in &problems {
        eprintln!("{}", problem.in_file(path));
    }
    if !problems.is_empty() {
        return Err(format!("{}: {} error(s)", path.display(), problems.len()));
    }
    println!("{}: ok", path.display());
    Ok(())
}

/// 1-based line and column (in characters) of byte `offset`; never panics, whatever the
/// offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A line's table header (`[a.b]` → `a.b`, `[[a]]` → `a`, with whether it is an array of
/// tables), ignoring comments.
fn header(line: &str) -> Option<(String, bool)> {
    let line = line.split('#').next().unwrap_or("").trim();
    if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        return Some((unquote_path(inner), true));
    }
    line.strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .map(|inner| (unquote_path(inner), false))
}

fn unquote_path(path: &str) -> String {
    path.split('.')
        .map(|p| p.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// The key a `key = value` line sets (dotted keys kept), if it is one.
fn assigned_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.starts_with('#') || line.starts_with('[') {
        return None;
    }
    let (key, _) = line.split_once('=')?;
    let key = unquote_path(key);
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    .then_some(key)
}

/// The table in force at each line: its dotted name with array-of-table indices
/// (`sources[1]`), `""` at the top level.
fn tables(text: &str) -> Vec<String> {
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut current = String::new();
    text.lines()
        .map(|line| {
            if let Some((name, array)) = header(line) {
                current = if array {
                    let n = counts.entry(name.clone()).or_insert(0);
                    *n += 1;
                    format!("{name}[{}]", *n - 1)
                } else {
                    name
                };
            }
            current.clone()
        })
        .collect()
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// The dotted key at byte `offset`: the key its line assigns within the table in force,
/// or the table a header line opens.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let (line, _) = line_column(text, offset);
    let source = text.lines().nth(line - 1)?;
    let table = tables(text).get(line - 1).cloned().unwrap_or_default();
    if header(source).is_some() {
        return (!table.is_empty()).then_some(table);
    }
    assigned_key(source).map(|key| join(&table, &key))
}

/// The line that sets the dotted `key` (array-of-table indices included), if any.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let tables = tables(text);
    text.lines().enumerate().find_map(|(i, line)| {
        let table = tables.get(i)?;
        let found = match header(line) {
            Some(_) => table == key,
            None => assigned_key(line).is_some_and(|k| join(table, &k) == key),
        };
        found.then_some(i + 1)
    })
}

/// Most errors reported for one file.
const MOST_PROBLEMS: usize = 50;

/// Every error `parse` finds in `text`: after each, the offending line is blanked and the
/// text parsed again, while errors keep coming from later lines (an error with no line,
/// on a table header, or not after the previous one ends the search — what follows it
/// would be noise).
pub fn every_problem(
    text: &str,
    mut parse: impl FnMut(&str) -> Option<ConfigProblem>,
) -> Vec<ConfigProblem> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut current = text.to_string();
    let mut problems: Vec<ConfigProblem> = Vec::new();
    while problems.len() < MOST_PROBLEMS {
        let Some(problem) = parse(&current) else {
            break;
        };
        let line = problem.line;
        let previous = problems.last().and_then(|p| p.line);
        let forward = matches!((line, previous), (Some(l), Some(p)) if l > p)
            || (previous.is_none() && problems.is_empty());
        if !forward {
            break;
        }
        problems.push(problem);
        let Some(line) = line else {
            break;
        };
        // Only a `key = …` line is blanked, with the lines that continue its value (a
        // multi-line array): blanking a header or a line inside a value would make the
        // errors that follow about the blanking, not the file.
        if lines
            .get(line - 1)
            .is_none_or(|l| assigned_key(l).is_none())
        {
            break;
        }
        for (i, text_line) in lines.iter_mut().enumerate().skip(line - 1) {
            if i > line - 1 && (header(text_line).is_some() || assigned_key(text_line).is_some()) {
                break;
            }
            text_line.clear();
        }
        current = lines.join("\n");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "data_dir = \"d\"\n[ingest]\nmax_body_bytes = \"big\"\n\n[[sources]]\npaths = [\"/a\"]\n[[sources]]\nparser = \"x\"\n";

    #[test]
    fn keys_are_named_with_their_table_and_array_index() {
        let offset = |needle: &str| TEXT.find(needle).expect("needle");
        assert_eq!(key_at(TEXT, offset("\"d\"")), Some("data_dir".into()));
        assert_eq!(
            key_at(TEXT, offset("\"big\"")),
            Some("ingest.max_body_bytes".into())
        );
        assert_eq!(
            key_at(TEXT, offset("parser")),
            Some("sources[1].parser".into())
        );
        assert_eq!(key_at(TEXT, offset("[ingest]")), Some("ingest".into()));
        assert_eq!(line_of_key(TEXT, "sources[1].parser"), Some(8));
        assert_eq!(line_of_key(TEXT, "ingest.max_body_bytes"), Some(3));
        assert_eq!(line_of_key(TEXT, "ingest.nothing"), None);
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é = 1", 3), (1, 3));
        // Inside a character or past the end: still an answer.
        assert_eq!(line_column("é", 1).0, 1);
        assert_eq!(line_column("ab", 10), (1, 3));
    }

    #[test]
    fn every_error_is_found_in_one_pass() {
        // A stand-in parser: any line holding "bad" is an error.
        let parse = |text: &str| {
            text.find("bad")
                .map(|o| ConfigProblem::at(text, Some(o), "bad value"))
        };
        let text = "a = 1\nb = \"bad\"\n[t]\nc = \"bad\"\nd = 2\n";
        let found = every_problem(text, parse);
        let rendered: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, ["2:6: `b`: bad value", "4:6: `t.c`: bad value"]);
        assert!(every_problem("a = 1\n", parse).is_empty());

        // A misspelt key with a multi-line value is one error, not one per line.
        let multi = "pathz = [\n  \"/a\",\n  \"/b\",\n]\nnext = \"bad\"\n";
        let unknown = |text: &str| {
            text.find("pathz")
                .or_else(|| text.find("bad"))
                .map(|o| ConfigProblem::at(text, Some(o), "no"))
        };
        let found: Vec<Option<usize>> = every_problem(multi, unknown)
            .iter()
            .map(|p| p.line)
            .collect();
        assert_eq!(found, [Some(1), Some(5)]);
    }
}
