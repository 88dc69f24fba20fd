//! Value lists: plain-text files operators maintain next to the rules (blocklists,
//! watchlists), used by rules through Sigma's `|expand` modifier and a placeholder named
//! after the list — `dns.question.name|endswith|expand: '.%dns_blocklist%'` reads
//! `lists/dns_blocklist.txt`.
//!
//! A list is `lists/NAME.txt` in a rule directory (for a rule file given by itself, in
//! the nearest folder above it that has a `lists/`): one value per line; blank lines and
//! lines starting with `#` are ignored, as is a `#` comment after whitespace at the end
//! of a line. A value is a Sigma string like any value written in a rule (`*` and `?`
//! are wildcards, `\` escapes them) and is matched with the modifiers of the rule's
//! field, so a rule decides whether an entry means "exactly" or "ends with".
//!
//! Why Yagura resolves placeholders itself rather than through a processing pipeline's
//! `value_placeholders` with `vars` (the pySigma way, which `rsigma-eval` also has): in
//! rsigma that transformation expands `%name%` in *every* value of a rule, `|expand` or
//! not (URL-encoded text in a web rule is full of `%`), leaves a placeholder that names
//! no variable in place, and leaves the `expand` modifier on the item — which rsigma then
//! evaluates as a template filled from the *event's* fields at match time, an exact
//! comparison that ignores `|endswith` and `|contains`. So a list entry would never
//! match as a suffix and a misspelt list name would silently match nothing. Here, only
//! the values of `|expand` items are expanded, every placeholder must name a list (else
//! the rule is an error at its `file:line`), and the resolved item loses `expand` and
//! keeps its other modifiers. The lists are read when the rules are (`yagura rules
//! check|test|eval`, collector start) and are part of what hot reload watches.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rsigma_parser::{Detection, Detections, Modifier, SigmaCollection, SigmaString, SigmaValue};

use super::rules::RuleProblem;

/// The folder of a rule directory that holds the lists.
pub const LISTS_FOLDER: &str = "lists";
/// The largest list file read (a million domains is about 20 MiB).
const MAX_LIST_FILE: u64 = 64 << 20;
/// The most values one detection item may expand to (several placeholders in one value
/// multiply), so a typo cannot make a rule of billions of values.
const MAX_EXPANDED: usize = 2_000_000;

/// One list file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueList {
    pub path: PathBuf,
    pub values: Vec<String>,
}

/// Every list the rule directories have, by placeholder name, and the names of list
/// files that could not be read (rules using them are errors, but not "no such list").
#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub lists: BTreeMap<String, ValueList>,
    pub unreadable: HashSet<String>,
}

/// Whether `name` can be a placeholder: letters, digits, `_`, `-`, `.`.
fn is_list_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The `lists/` folders of `dirs`: each directory's own, and for a rule file given by
/// itself the nearest one above it. Each folder once.
pub fn list_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut seen = HashSet::new();
    for dir in dirs {
        let folder = if dir.is_file() {
            dir.ancestors()
                .skip(1)
                .map(|a| a.join(LISTS_FOLDER))
                .find(|l| l.is_dir())
        } else {
            Some(dir.join(LISTS_FOLDER)).filter(|l| l.is_dir())
        };
        if let Some(folder) = folder {
            let key = folder.canonicalize().unwrap_or_else(|_| folder.clone());
            if seen.insert(key) {
                found.push(folder);
            }
        }
    }
    found
}

/// The list files (`*.txt`, not hidden) of `dirs`' `lists/` folders, sorted per folder.
pub fn list_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in list_dirs(dirs) {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut here: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "txt")
                    && p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
            })
            .collect();
        here.sort();
        files.extend(here);
    }
    files
}

/// The values of a list file's text (see the module documentation for the format).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            // A comment after a value needs whitespace before its `#`, so a value may
            // contain `#` (URL fragments).
            let comment = line.match_indices('#').map(|(i, _)| i).find(|&i| {
                line[..i]
                    .chars()
                    .next_back()
                    .is_none_or(char::is_whitespace)
            });
            line[..comment.unwrap_or(line.len())].trim()
        })
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads every list of `dirs`. A list that cannot be read, a file name that cannot be a
/// placeholder, and a name two folders both define are errors at the file; an empty
/// list is a warning (rules using it match nothing on it).
pub fn load_lists(
    dirs: &[PathBuf],
    errors: &mut Vec<RuleProblem>,
    warnings: &mut Vec<RuleProblem>,
) -> Lists {
    let mut lists = Lists::default();
    for path in list_files(dirs) {
        let problem = |message: String| RuleProblem {
            path: path.clone(),
            line: 1,
            message,
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_list_name(&name) {
            errors.push(problem(format!(
                "`{name}` cannot be a list name (a placeholder `%{name}%`): use letters, digits, `_`, `-` and `.`"
            )));
            continue;
        }
        if let Some(first) = lists.lists.get(&name) {
            errors.push(problem(format!(
                "list `{name}` is also defined by {}: one name, one list",
                first.path.display()
            )));
            continue;
        }
        let text = match read_list(&path) {
            Ok(text) => text,
            Err(message) => {
                errors.push(problem(message));
                lists.unreadable.insert(name);
                continue;
            }
        };
        let values = parse_list(&text);
        if values.is_empty() {
            warnings.push(problem(format!(
                "list `{name}` has no values: rules that use `%{name}%` match nothing on it"
            )));
        }
        lists.lists.insert(name, ValueList { path, values });
    }
    lists
}

fn read_list(path: &Path) -> Result<String, String> {
    super::rules::read_capped(path, MAX_LIST_FILE, " the list", "a list")
}

/// A piece of a value: text as written, or a placeholder's name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// The pieces of a value written with `|expand`. `%name%` is a placeholder when `name`
/// could be a list name; any other `%` is text.
fn pieces(value: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(open) = value[at..].find('%').map(|i| at + i) {
        let rest = &value[open + 1..];
        match rest.find('%') {
            Some(len) if is_list_name(&rest[..len]) => {
                if open > text_start {
                    out.push(Piece::Text(&value[text_start..open]));
                }
                out.push(Piece::Placeholder(&rest[..len]));
                text_start = open + len + 2;
                at = text_start;
            }
            _ => at = open + 1,
        }
    }
    if text_start < value.len() {
        out.push(Piece::Text(&value[text_start..]));
    }
    out
}

/// Everything needed to report a problem in one rule file.
struct Context<'a> {
    path: &'a Path,
    text: &'a str,
    title: &'a str,
    lists: &'a Lists,
    errors: &'a mut Vec<RuleProblem>,
    warnings: &'a mut Vec<RuleProblem>,
}

impl Context<'_> {
    /// The line that writes `value` (its first from the rule's title on), else the
    /// first that has `needle`, else the rule's title line.
    fn line_of(&self, value: &str, needle: &str) -> usize {
        let title = super::rules::line_of_title(self.text, self.title);
        let from_title = |wanted: &str| {
            self.text
                .lines()
                .enumerate()
                .skip(title.saturating_sub(1))
                .find(|(_, l)| l.contains(wanted))
                .map(|(i, _)| i + 1)
        };
        from_title(value)
            .or_else(|| from_title(needle))
            .unwrap_or(title)
    }

    fn error(&mut self, value: &str, needle: &str, message: String) {
        let line = self.line_of(value, needle);
        self.errors.push(RuleProblem {
            path: self.path.to_path_buf(),
            line,
            message: format!("rule `{}`: {message}", self.title),
        });
    }

    /// `value` expanded with the lists, or `None` after reporting why it cannot be.
    fn expand(&mut self, value: &str) -> Option<Vec<String>> {
        let mut expanded = vec![String::new()];
        for piece in pieces(value) {
            match piece {
                Piece::Text(text) => expanded.iter_mut().for_each(|v| v.push_str(text)),
                Piece::Placeholder(name) => {
                    let needle = format!("%{name}%");
                    let Some(list) = self.lists.lists.get(name) else {
                        let why = if self.lists.unreadable.contains(name) {
                            format!(
                                "`{needle}`: the list `{name}` could not be read (see its error)"
                            )
                        } else {
                            let known: Vec<&str> =
                                self.lists.lists.keys().map(String::as_str).collect();
                            format!(
                                "`{needle}` names no list: there is no `{LISTS_FOLDER}/{name}.txt` in the rule directory (lists: {})",
                                if known.is_empty() {
                                    "none".to_string()
                                } else {
                                    known.join(", ")
                                }
                            )
                        };
                        self.error(value, &needle, why);
                        return None;
                    };
                    if expanded.len().saturating_mul(list.values.len()) > MAX_EXPANDED {
                        self.error(
                            value,
                            &needle,
                            format!("`{value}` expands to more than {MAX_EXPANDED} values"),
                        );
                        return None;
                    }
                    expanded = expanded
                        .iter()
                        .flat_map(|prefix| list.values.iter().map(move |v| format!("{prefix}{v}")))
                        .collect();
                }
            }
        }
        Some(expanded)
    }

    /// Resolves the `|expand` items of one detection (recursively).
    fn detection(&mut self, detection: &mut Detection) {
        match detection {
            Detection::AllOf(items) => {
                for item in items {
                    if !item.field.has_modifier(Modifier::Expand) {
                        self.literal_placeholders(&item.values);
                        continue;
                    }
                    let mut values = Vec::with_capacity(item.values.len());
                    let mut resolved = true;
                    for value in &item.values {
                        match value {
                            SigmaValue::String(s) => match self.expand(&s.original) {
                                Some(expanded) => values.extend(
                                    expanded
                                        .iter()
                                        .map(|v| SigmaValue::String(SigmaString::new(v))),
                                ),
                                None => resolved = false,
                            },
                            other => values.push(other.clone()),
                        }
                    }
                    if resolved {
                        item.values = values;
                        item.field.modifiers.retain(|m| *m != Modifier::Expand);
                    }
                }
            }
            Detection::AnyOf(subs) | Detection::And(subs) => {
                subs.iter_mut().for_each(|d| self.detection(d))
            }
            Detection::ArrayMatch { body, .. } => self.detection(body),
            Detection::Conditional { named, .. } => {
                named.values_mut().for_each(|d| self.detection(d))
            }
            Detection::Keywords(values) => self.literal_placeholders(values),
        }
    }

    /// A value naming a list without `|expand` is matched literally — almost certainly
    /// not what its author meant, so it is a warning.
    fn literal_placeholders(&mut self, values: &[SigmaValue]) {
        for value in values {
            let SigmaValue::String(s) = value else {
                continue;
            };
            for piece in pieces(&s.original) {
                if let Piece::Placeholder(name) = piece
                    && self.lists.lists.contains_key(name)
                {
                    let needle = format!("%{name}%");
                    let line = self.line_of(&s.original, &needle);
                    self.warnings.push(RuleProblem {
                        path: self.path.to_path_buf(),
                        line,
                        message: format!(
                            "rule `{}`: `{needle}` names a list but the field has no `|expand`: it is matched as written",
                            self.title
                        ),
                    });
                }
            }
        }
    }

    fn detections(&mut self, detections: &mut Detections) {
        for detection in detections.named.values_mut() {
            self.detection(detection);
        }
    }
}

/// Replaces the placeholders of every `|expand` value in `collection`'s rules and
/// filters with the values of their lists (see the module documentation). A placeholder
/// that names no list is an error at its line; the item is then left as it was and the
/// file must not load.
pub fn resolve(
    path: &Path,
    text: &str,
    collection: &mut SigmaCollection,
    lists: &Lists,
    errors: &mut Vec<RuleProblem>,
    warnings: &mut Vec<RuleProblem>,
) {
    let (errors_before, warnings_before) = (errors.len(), warnings.len());
    for rule in &mut collection.rules {
        let mut cx = Context {
            path,
            text,
            title: &rule.title,
            lists,
            errors,
            warnings,
        };
        cx.detections(&mut rule.detection);
    }
    for filter in &mut collection.filters {
        let mut cx = Context {
            path,
            text,
            title: &filter.title,
            lists,
            errors,
            warnings,
        };
        cx.detections(&mut filter.detection);
    }
    // Selections are visited in no particular order; problems are reported in the
    // file's.
    errors[errors_before..].sort_by_key(|p| p.line);
    warnings[warnings_before..].sort_by_key(|p| p.line);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::detect::{Detector, ecs_pipeline, load_rules};
    use yagura_shared::Event;

    /// A blocklist rule as the pack writes it: the listed domain itself, or any name
    /// under it.
    pub(crate) const BLOCKLIST_RULE: &str = "title: Blocklisted domain\nid: 3c1d4e55-0000-4000-8000-000000000001\nlogsource:\n    category: dns\ndetection:\n    selection_domain:\n        dns.question.name|expand: '%dns_blocklist%'\n    selection_subdomain:\n        dns.question.name|endswith|expand: '.%dns_blocklist%'\n    condition: 1 of selection_*\nlevel: high\n";

    pub(crate) fn query(name: &str) -> Event {
        let mut e = Event::new(chrono::Utc::now());
        e.set_str("event.dataset", "dns");
        e.set_str("event.action", "dns_query");
        e.set("event.category", serde_json::json!(["network"]));
        e.set_str("dns.question.name", name);
        e
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    fn fires(detector: &mut Detector, name: &str) -> bool {
        !detector.process(query(name)).is_empty()
    }

    /// The list's entries match as the rule's modifiers say: exactly, and as a suffix
    /// after a dot (a subdomain); other names, and names that merely end in the same
    /// letters, do not.
    #[test]
    fn a_list_placeholder_expands_to_the_list_values() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "dns/blocklisted.yml", BLOCKLIST_RULE);
        write(
            dir.path(),
            "lists/dns_blocklist.txt",
            "# operators maintain this list\nevil.example\n\nBad.Example.net  # case does not matter\n",
        );
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load_rules(&[dir.path().to_path_buf()], &pipeline).expect("load");
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        assert_eq!(
            set.lists.lists["dns_blocklist"].values,
            ["evil.example", "Bad.Example.net"]
        );
        let mut detector = Detector::new(&set, pipeline).expect("detector");
        assert!(fires(&mut detector, "evil.example"));
        assert!(fires(&mut detector, "c2.evil.example"));
        assert!(fires(&mut detector, "x.y.bad.example.net"));
        assert!(fires(&mut detector, "EVIL.example"));
        assert!(!fires(&mut detector, "example.com"));
        assert!(
            !fires(&mut detector, "notevil.example"),
            "a suffix needs the dot"
        );
        assert!(!fires(&mut detector, "evil.example.com"));
    }

    /// A placeholder naming no list is an error at the line that uses it, and the file
    /// does not load; so is one naming a list that cannot be read.
    #[test]
    fn a_missing_list_is_an_error_at_its_file_and_line() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "dns/blocklisted.yml", BLOCKLIST_RULE);
        write(dir.path(), "lists/other.txt", "a.example\n");
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load_rules(&[dir.path().to_path_buf()], &pipeline).expect("load");
        assert!(set.files.is_empty(), "the rule must not load");
        let problems: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let file = dir.path().join("dns/blocklisted.yml");
        assert!(
            problems[0].starts_with(&format!("{}:7: ", file.display())),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with(&format!("{}:9: ", file.display())),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("`%dns_blocklist%` names no list")
                && problems[0].contains("lists/dns_blocklist.txt")
                && problems[0].contains("(lists: other)"),
            "{problems:?}"
        );

        write(dir.path(), "lists/dns_blocklist.txt", "evil.example\n");
        std::fs::write(dir.path().join("lists/dns_blocklist.txt"), [0xff, 0xfe]).expect("w");
        let set = load_rules(&[dir.path().to_path_buf()], &pipeline).expect("load");
        let problems: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        assert!(
            problems[0].starts_with(&format!(
                "{}:1: cannot read the list as UTF-8",
                dir.path().join("lists/dns_blocklist.txt").display()
            )),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("the list `dns_blocklist` could not be read"),
            "{problems:?}"
        );
    }

    /// An empty list is a warning (the rule matches nothing), a list name that cannot
    /// be a placeholder an error, and a list name used without `|expand` a warning.
    #[test]
    fn odd_lists_and_literal_placeholders_are_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "lists/dns_blocklist.txt", "# nothing yet\n");
        write(dir.path(), "lists/bad name.txt", "x\n");
        write(dir.path(), "lists/notes.md", "not a list\n");
        write(
            dir.path(),
            "literal.yml",
            "title: Literal\nlogsource:\n    category: dns\ndetection:\n    sel:\n        dns.question.name|endswith: '.%dns_blocklist%'\n    condition: sel\nlevel: low\n",
        );
        write(dir.path(), "dns/blocklisted.yml", BLOCKLIST_RULE);
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load_rules(&[dir.path().to_path_buf()], &pipeline).expect("load");
        let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`bad name` cannot be a list name"),
            "{errors:?}"
        );
        let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("list `dns_blocklist` has no values")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.starts_with(&format!(
                "{}:6: rule `Literal`: `%dns_blocklist%` names a list but the field has no `|expand`",
                dir.path().join("literal.yml").display()
            ))),
            "{warnings:?}"
        );
        let mut detector = Detector::new(&set, pipeline).expect("detector");
        assert!(!fires(&mut detector, "evil.example"));
        assert!(
            !fires(&mut detector, ""),
            "an empty list matches nothing, not empty names"
        );
    }

    /// A rule file given by itself finds the `lists/` of the nearest folder above it.
    #[test]
    fn a_rule_file_given_alone_uses_the_lists_above_it() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "linux/dns/blocklisted.yml", BLOCKLIST_RULE);
        write(dir.path(), "lists/dns_blocklist.txt", "evil.example\n");
        let file = dir.path().join("linux/dns/blocklisted.yml");
        let pipeline = ecs_pipeline().expect("pipeline");
        let set = load_rules(&[file], &pipeline).expect("load");
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        let mut detector = Detector::new(&set, pipeline).expect("detector");
        assert!(fires(&mut detector, "www.evil.example"));
    }

    #[test]
    fn list_files_are_values_with_comments_and_blanks_ignored() {
        let text = "# operators maintain this\n\nevil.example\n  bad.example   # since 2026-11\n# gone.example\nhttp://x.example/#frag\n\t\n";
        assert_eq!(
            parse_list(text),
            ["evil.example", "bad.example", "http://x.example/#frag"]
        );
    }

    #[test]
    fn placeholders_are_names_between_percent_signs() {
        assert_eq!(
            pieces(".%dns_blocklist%"),
            [Piece::Text("."), Piece::Placeholder("dns_blocklist")]
        );
        assert_eq!(
            pieces("%a%-%b.c%"),
            [
                Piece::Placeholder("a"),
                Piece::Text("-"),
                Piece::Placeholder("b.c")
            ]
        );
        // URL-encoding and lone signs are text.
        assert_eq!(pieces("/%2e %2f/"), [Piece::Text("/%2e %2f/")]);
        assert_eq!(pieces("100%"), [Piece::Text("100%")]);
        assert_eq!(pieces("%%"), [Piece::Text("%%")]);
    }
}
