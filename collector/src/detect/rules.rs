//! Rule files: finding them, parsing them with `rsigma-parser`, and checking that every
//! rule compiles under Yagura's field mapping — each problem reported as `file:line:
//! message`, the way a detection engineer's editor and CI want it.
//!
//! A rule directory holds Sigma YAML files (`*.yml`, `*.yaml`, one or more documents
//! each: detection rules, correlation rules, filters) in any tree of folders. Folders
//! named `fixtures`, `lists`, `runbooks` and `pipelines`, and hidden ones, hold other
//! things (test events, blocklists, runbooks) and are not read as rules. The value lists
//! in `lists/*.txt` are read with the rules and fill the placeholders of their `|expand`
//! values before they are checked ([`super::lists`]).

use std::path::{Path, PathBuf};

use rsigma_eval::{Pipeline, apply_pipelines, compile_rule};
use rsigma_parser::{SigmaCollection, parse_sigma_yaml};

use super::lists::{self, Lists};

/// Folders of a rule directory that do not hold rules.
const NOT_RULES: &[&str] = &["fixtures", "lists", "runbooks", "pipelines"];
/// The largest rule file read (a rule is a few kilobytes; this is a typo guard).
const MAX_RULE_FILE: u64 = 4 << 20;

/// One problem in one rule file, at a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// The rules of one file, parsed.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub path: PathBuf,
    pub collection: SigmaCollection,
}

/// Every rule file under some directories, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub files: Vec<RuleFile>,
    /// Problems that stop a file from loading.
    pub errors: Vec<RuleProblem>,
    /// Lint findings (the rule loads, but something is off).
    pub warnings: Vec<RuleProblem>,
    /// The value lists the rules' placeholders were filled from.
    pub lists: Lists,
}

impl RuleSet {
    pub fn detection_rules(&self) -> usize {
        self.files.iter().map(|f| f.collection.rules.len()).sum()
    }

    pub fn correlation_rules(&self) -> usize {
        self.files
            .iter()
            .map(|f| f.collection.correlations.len())
            .sum()
    }

    /// All files' rules as one collection (what the engine loads).
    pub fn merged(&self) -> SigmaCollection {
        let mut all = SigmaCollection::new();
        for file in &self.files {
            all.rules.extend(file.collection.rules.iter().cloned());
            all.correlations
                .extend(file.collection.correlations.iter().cloned());
            all.filters.extend(file.collection.filters.iter().cloned());
        }
        all
    }
}

/// Yagura's field mapping (Sigma's generic names to the agent's ECS fields).
pub fn ecs_pipeline() -> Result<Pipeline, String> {
    rsigma_eval::parse_pipeline(include_str!("yagura_ecs.yml"))
        .map_err(|e| format!("the built-in field mapping does not parse: {e}"))
}

/// The rule files under `dirs` (a file given directly is taken as is), sorted.
pub fn rule_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, RuleProblem> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RuleProblem> {
        let entries = std::fs::read_dir(dir).map_err(|e| RuleProblem {
            path: dir.to_path_buf(),
            line: 1,
            message: format!("cannot read the rule directory: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !NOT_RULES.contains(&name.as_ref()) {
                    walk(&path, out)?;
                }
            } else if name.ends_with(".yml") || name.ends_with(".yaml") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for dir in dirs {
        if dir.is_file() {
            files.push(dir.clone());
        } else {
            walk(dir, &mut files)?;
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Reads, parses and checks every rule file under `dirs` with `pipeline`, their
/// placeholders filled from the lists of `dirs`. A file with an error is left out of
/// `files` and its problems are in `errors`; the others load.
pub fn load(dirs: &[PathBuf], pipeline: &Pipeline) -> Result<RuleSet, RuleProblem> {
    let mut set = RuleSet::default();
    set.lists = lists::load_lists(dirs, &mut set.errors, &mut set.warnings);
    for path in rule_files(dirs)? {
        let text = match read_rule_file(&path) {
            Ok(text) => text,
            Err(message) => {
                set.errors.push(RuleProblem {
                    path,
                    line: 1,
                    message,
                });
                continue;
            }
        };
        let before = set.errors.len();
        let mut collection = parse_file(&path, &text, &mut set.errors);
        if let Some(collection) = &mut collection {
            lists::resolve(
                &path,
                &text,
                collection,
                &set.lists,
                &mut set.errors,
                &mut set.warnings,
            );
        }
        if let Some(collection) = &collection {
            // An unresolved placeholder would compile (rsigma reads it as a template of
            // the event's fields), so only a fully resolved file is compiled.
            if set.errors.len() == before {
                check_compiles(&path, &text, collection, pipeline, &mut set.errors);
            }
            lint(&path, &text, &mut set.warnings);
        }
        match collection {
            Some(collection) if set.errors.len() == before => {
                set.files.push(RuleFile { path, collection })
            }
            _ => {}
        }
    }
    check_references(&mut set);
    Ok(set)
}

fn read_rule_file(path: &Path) -> Result<String, String> {
    read_capped(path, MAX_RULE_FILE, "", "a rule file")
}

/// The text of a file of the rule directories, refused before reading when it is over
/// `limit` bytes (a stray large file must not exhaust memory at load). `the` names the
/// file in messages (` the list`, or nothing), `kind` its kind (`a rule file`).
pub(super) fn read_capped(
    path: &Path,
    limit: u64,
    the: &str,
    kind: &str,
) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read{the}: {e}"))?
        .len();
    if size > limit {
        return Err(format!("{size} bytes: larger than {kind} may be ({limit})"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read{the} as UTF-8 text: {e}"))
}

/// The YAML documents of `text` with the line (1-based) each starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1usize, String::new())];
    for (index, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            docs.push((index + 2, String::new()));
            continue;
        }
        if let Some((_, doc)) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|(_, doc)| !doc.trim().is_empty());
    docs
}

/// A line number a message from the YAML layer names (`at line 7 column 3`).
fn line_in_message(message: &str) -> Option<usize> {
    let rest = &message[message.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Parses a rule file; each document that does not parse is a problem at its line.
fn parse_file(path: &Path, text: &str, errors: &mut Vec<RuleProblem>) -> Option<SigmaCollection> {
    let problem = |line: usize, message: String| RuleProblem {
        path: path.to_path_buf(),
        line,
        message,
    };
    match parse_sigma_yaml(text) {
        Err(e) => {
            let line = e
                .location()
                .map(|l| l.line as usize)
                .or_else(|| line_in_message(&e.to_string()))
                .unwrap_or(1);
            errors.push(problem(line, e.to_string()));
            None
        }
        Ok(mut collection) if collection.errors.is_empty() => {
            temporal_needs_every_rule(&mut collection);
            if collection.rules.is_empty()
                && collection.correlations.is_empty()
                && collection.filters.is_empty()
            {
                errors.push(problem(1, "no Sigma rule in this file".into()));
                return None;
            }
            Some(collection)
        }
        Ok(_) => {
            // Which documents fail, each parsed alone.
            for (start, doc) in documents(text) {
                let messages: Vec<String> = match parse_sigma_yaml(&doc) {
                    Err(e) => vec![e.to_string()],
                    Ok(c) => c.errors,
                };
                for message in messages {
                    let line = if message.starts_with("Condition") {
                        // The position pest gives is inside the condition text.
                        doc.lines()
                            .position(|l| l.trim_start().starts_with("condition:"))
                            .map_or(start, |i| start + i)
                    } else {
                        line_in_message(&message).map_or(start, |l| start + l - 1)
                    };
                    errors.push(problem(line, one_line(&message)));
                }
            }
            None
        }
    }
}

/// A multi-line parser message (pest draws the input with a caret) on one line: its
/// first line and what was expected.
fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let mut out = lines
        .next()
        .unwrap_or_default()
        .trim_end_matches(" -->")
        .trim()
        .to_string();
    for line in lines {
        if let Some(expected) = line.trim().strip_prefix("= ") {
            out.push_str(": ");
            out.push_str(expected);
        }
    }
    out
}

/// Sigma's temporal correlations fire when *every* rule they name has matched within the
/// timespan. The parser gives one without a `condition` the threshold "at least one
/// rule", which would fire on the first rule alone; this restores the specification's
/// meaning (at least as many distinct rules as are named).
pub(crate) fn temporal_needs_every_rule(collection: &mut SigmaCollection) {
    use rsigma_parser::{ConditionOperator, CorrelationCondition, CorrelationType};
    for correlation in &mut collection.correlations {
        if !matches!(
            correlation.correlation_type,
            CorrelationType::Temporal | CorrelationType::TemporalOrdered
        ) {
            continue;
        }
        let needed = correlation.rules.len() as u64;
        if let CorrelationCondition::Threshold {
            predicates,
            field: None,
            ..
        } = &mut correlation.condition
            && predicates.as_slice() == [(ConditionOperator::Gte, 1)]
        {
            predicates[0].1 = needed;
        }
    }
}

/// The line where the rule titled `title` starts (its `title:` line), or 1.
pub(crate) fn line_of_title(text: &str, title: &str) -> usize {
    text.lines()
        .position(|l| {
            l.strip_prefix("title:")
                .is_some_and(|t| t.trim().trim_matches(['\'', '"']) == title)
        })
        .map_or(1, |i| i + 1)
}

/// Every detection rule of the file compiles after the field mapping.
fn check_compiles(
    path: &Path,
    text: &str,
    collection: &SigmaCollection,
    pipeline: &Pipeline,
    errors: &mut Vec<RuleProblem>,
) {
    let pipelines = std::slice::from_ref(pipeline);
    for rule in &collection.rules {
        let mut mapped = rule.clone();
        let result = apply_pipelines(pipelines, &mut mapped)
            .map_err(|e| format!("field mapping: {e}"))
            .and_then(|_| compile_rule(&mapped).map(|_| ()).map_err(|e| e.to_string()));
        if let Err(message) = result {
            errors.push(RuleProblem {
                path: path.to_path_buf(),
                line: line_of_title(text, &rule.title),
                message: format!("rule `{}`: {message}", rule.title),
            });
        }
    }
    for correlation in &collection.correlations {
        let mut engine = rsigma_eval::CorrelationEngine::new(Default::default());
        if let Err(e) = engine.add_correlation(correlation) {
            errors.push(RuleProblem {
                path: path.to_path_buf(),
                line: line_of_title(text, &correlation.title),
                message: format!("correlation `{}`: {e}", correlation.title),
            });
        }
    }
}

/// Lint findings of the library's Sigma linter, as warnings.
fn lint(path: &Path, text: &str, warnings: &mut Vec<RuleProblem>) {
    for warning in rsigma_parser::lint_yaml_str(text) {
        warnings.push(RuleProblem {
            path: path.to_path_buf(),
            line: warning
                .span
                .as_ref()
                .map_or(1, |s| s.start_line as usize + 1),
            message: format!("{} [{}]", warning.message, warning.rule),
        });
    }
}

/// A correlation that names a rule no file defines is an error in the correlation's
/// file (it would never fire), and that file is not loaded — which can orphan another
/// file's correlations in turn, so this repeats until nothing more is dropped.
fn check_references(set: &mut RuleSet) {
    while drop_unresolved(set) {}
}

/// One pass of [`check_references`]; whether a file was dropped.
fn drop_unresolved(set: &mut RuleSet) -> bool {
    let known: std::collections::HashSet<String> = set
        .files
        .iter()
        .flat_map(|f| f.collection.rules.iter())
        .flat_map(|r| [r.id.clone(), r.name.clone()])
        .flatten()
        .chain(
            set.files
                .iter()
                .flat_map(|f| f.collection.correlations.iter())
                .flat_map(|c| [c.id.clone(), c.name.clone()])
                .flatten(),
        )
        .collect();
    let mut broken = Vec::new();
    for (index, file) in set.files.iter().enumerate() {
        let text = std::fs::read_to_string(&file.path).unwrap_or_default();
        for correlation in &file.collection.correlations {
            for reference in &correlation.rules {
                if !known.contains(reference) {
                    set.errors.push(RuleProblem {
                        path: file.path.clone(),
                        line: line_of_title(&text, &correlation.title),
                        message: format!(
                            "correlation `{}` names rule `{reference}`, which no rule file defines",
                            correlation.title
                        ),
                    });
                    broken.push(index);
                }
            }
        }
    }
    broken.dedup();
    let dropped = !broken.is_empty();
    for index in broken.into_iter().rev() {
        set.files.remove(index);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    const GOOD: &str = "title: Whoami\nid: 11111111-1111-4111-8111-111111111111\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    selection:\n        Image|endswith: '/whoami'\n    condition: selection\nlevel: low\n";

    #[test]
    fn rule_files_skip_fixtures_lists_runbooks_and_hidden_folders() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "a.yml", GOOD);
        write(dir.path(), "nested/b.yaml", GOOD);
        write(dir.path(), "fixtures/a.yml", "not a rule");
        write(dir.path(), "lists/bad.yml", "not a rule");
        write(dir.path(), ".git/x.yml", "not a rule");
        write(dir.path(), "notes.md", "text");
        let files = rule_files(&[dir.path().to_path_buf()]).expect("files");
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("under")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a.yml", "nested/b.yaml"]);
    }

    #[test]
    fn broken_files_are_reported_at_their_line_and_the_rest_load() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "good.yml", GOOD);
        // A condition naming a selection that does not exist, in the second document.
        let second = format!(
            "{GOOD}---\ntitle: Broken\nlogsource:\n    product: linux\ndetection:\n    selection:\n        a: b\n    condition: selection and\nlevel: low\n"
        );
        write(dir.path(), "two.yml", &second);
        write(dir.path(), "yaml.yml", "title: x\ndetection: [unclosed\n");
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load(&[dir.path().to_path_buf()], &pipeline).expect("load");
        assert_eq!(set.files.len(), 1, "only the good file loads");
        assert_eq!(set.detection_rules(), 1);
        let problems: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].ends_with("expected quantifier, ident, or not_op"),
            "{problems:?}"
        );
        assert!(
            problems[0].starts_with(&format!("{}:18:", dir.path().join("two.yml").display())),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with(&format!("{}:3:", dir.path().join("yaml.yml").display())),
            "{problems:?}"
        );
    }

    /// Dropping a broken file can orphan another file's correlation; that one goes too.
    #[test]
    fn dropping_a_file_drops_the_correlations_that_needed_it() {
        let dir = tempfile::tempdir().expect("tmp");
        write(
            dir.path(),
            "a.yml",
            "title: Failed\nname: failed\nlogsource:\n    product: linux\ndetection:\n    sel:\n        event.outcome: failure\n    condition: sel\nlevel: low\n---\ntitle: Typo\ncorrelation:\n    type: event_count\n    rules:\n        - faild\n    group-by:\n        - user.name\n    timespan: 5m\n    condition:\n        gte: 3\nlevel: high\n",
        );
        write(
            dir.path(),
            "b.yml",
            "title: Many\ncorrelation:\n    type: event_count\n    rules:\n        - failed\n    group-by:\n        - user.name\n    timespan: 5m\n    condition:\n        gte: 3\nlevel: high\n",
        );
        write(dir.path(), "c.yml", GOOD);
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load(&[dir.path().to_path_buf()], &pipeline).expect("load");
        let names: Vec<String> = set
            .files
            .iter()
            .map(|f| {
                f.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["c.yml"]);
        assert_eq!(set.errors.len(), 2, "{:?}", set.errors);
        assert!(crate::detect::Detector::new(&set, pipeline).is_ok());
    }

    #[test]
    fn a_correlation_naming_an_unknown_rule_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        write(
            dir.path(),
            "corr.yml",
            "title: Many\ncorrelation:\n    type: event_count\n    rules:\n        - no-such-rule\n    group-by:\n        - user.name\n    timespan: 5m\n    condition:\n        gte: 3\nlevel: high\n",
        );
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load(&[dir.path().to_path_buf()], &pipeline).expect("load");
        assert!(set.files.is_empty());
        assert_eq!(set.errors.len(), 1);
        assert_eq!(set.errors[0].line, 1);
        assert!(set.errors[0].message.contains("no-such-rule"));
    }
}
