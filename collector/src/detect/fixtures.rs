//! Rule tests: every rule file comes with events that must make it fire and events that
//! must not — the negative half that SigmaHQ's regression data lacks.
//!
//! For a rule file `DIR/a/b.yml` the fixtures are `DIR/fixtures/a/b.match.ndjson` and
//! `DIR/fixtures/a/b.nomatch.ndjson`: ECS events, one per line, in order (correlations
//! read their `@timestamp`s). The rules under test in a file are its correlations and
//! the detection rules that report on their own (not the ones that only feed a
//! correlation). The match file passes when each of them fires at least once, the
//! no-match file when none fires. Each fixture file runs through a fresh detector holding
//! the whole rule set, so correlations across files work as they do live. A missing
//! fixture file is a failure: rules are tested like code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rsigma_eval::Pipeline;
use yagura_shared::Event;

use super::engine::Detector;
use super::rules::{RuleFile, RuleSet};

/// The result of one fixture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed { events: usize },
    Failed(String),
    Missing(PathBuf),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed { .. })
    }
}

/// The test of one rule file.
#[derive(Debug, Clone)]
pub struct FileTest {
    pub path: PathBuf,
    /// The rules under test (title, for the report).
    pub rules: Vec<String>,
    pub matching: Outcome,
    pub not_matching: Outcome,
}

impl FileTest {
    pub fn passed(&self) -> bool {
        self.matching.passed() && self.not_matching.passed()
    }
}

/// The fixture files of `rule_file`, found under `dirs`' `fixtures/` folders.
pub(super) fn fixture_paths(dirs: &[PathBuf], rule_file: &Path) -> Option<(PathBuf, PathBuf)> {
    dirs.iter().find_map(|dir| {
        let relative = rule_file.strip_prefix(dir).ok()?;
        let base = dir.join("fixtures").join(relative).with_extension("");
        let name = |suffix: &str| {
            let mut path = base.clone().into_os_string();
            path.push(suffix);
            PathBuf::from(path)
        };
        Some((name(".match.ndjson"), name(".nomatch.ndjson")))
    })
}

/// Keys (id, else title) of the rules of `file` that report matches themselves.
fn rules_under_test(file: &RuleFile, set: &RuleSet) -> Vec<(String, String)> {
    let feeding: HashSet<String> = set
        .files
        .iter()
        .flat_map(|f| f.collection.correlations.iter())
        .filter(|c| !c.generate)
        .flat_map(|c| c.rules.iter().cloned())
        .collect();
    let key = |id: &Option<String>, title: &str| id.clone().unwrap_or_else(|| title.to_string());
    let mut rules: Vec<(String, String)> = file
        .collection
        .rules
        .iter()
        .filter(|r| {
            !r.id.as_ref().is_some_and(|id| feeding.contains(id))
                && !r.name.as_ref().is_some_and(|n| feeding.contains(n))
        })
        .map(|r| (key(&r.id, &r.title), r.title.clone()))
        .collect();
    rules.extend(
        file.collection
            .correlations
            .iter()
            .map(|c| (key(&c.id, &c.title), c.title.clone())),
    );
    rules
}

/// Runs the events of `path` through a fresh detector; returns how many events there
/// were and, per rule key, the first event line that made it fire.
fn run_fixture(
    path: &Path,
    set: &RuleSet,
    pipeline: &Pipeline,
) -> Result<(usize, Vec<(String, usize)>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut detector = Detector::new(set, pipeline.clone())?;
    let mut fired: Vec<(String, usize)> = Vec::new();
    let mut events = 0;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(map)) => Event::from_map(map),
            Ok(_) => {
                return Err(format!(
                    "{}:{}: not a JSON object",
                    path.display(),
                    index + 1
                ));
            }
            Err(e) => return Err(format!("{}:{}: {e}", path.display(), index + 1)),
        };
        events += 1;
        for detection in detector.process(event) {
            let key = detection.rule.id.unwrap_or(detection.rule.title);
            if !fired.iter().any(|(k, _)| *k == key) {
                fired.push((key, index + 1));
            }
        }
    }
    Ok((events, fired))
}

/// Tests every loaded rule file of `set` (loaded from `dirs`) against its fixtures.
pub fn test_rules(dirs: &[PathBuf], set: &RuleSet, pipeline: &Pipeline) -> Vec<FileTest> {
    let mut results = Vec::new();
    for file in &set.files {
        let rules = rules_under_test(file, set);
        let titles = rules.iter().map(|(_, t)| t.clone()).collect();
        let Some((matching, not_matching)) = fixture_paths(dirs, &file.path) else {
            continue;
        };
        let check = |path: &Path, must_fire: bool| -> Outcome {
            if !path.exists() {
                return Outcome::Missing(path.to_path_buf());
            }
            match run_fixture(path, set, pipeline) {
                Err(message) => Outcome::Failed(message),
                Ok((events, fired)) => {
                    for (key, title) in &rules {
                        let hit = fired.iter().find(|(k, _)| k == key);
                        match (must_fire, hit) {
                            (true, None) => {
                                return Outcome::Failed(format!(
                                    "{}: `{title}` did not fire on its {events} events",
                                    path.display()
                                ));
                            }
                            (false, Some((_, line))) => {
                                return Outcome::Failed(format!(
                                    "{}:{line}: `{title}` fired",
                                    path.display()
                                ));
                            }
                            _ => {}
                        }
                    }
                    Outcome::Passed { events }
                }
            }
        };
        results.push(FileTest {
            path: file.path.clone(),
            rules: titles,
            matching: check(&matching, true),
            not_matching: check(&not_matching, false),
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{ecs_pipeline, load_rules};

    const RULE: &str = "title: sudo failure\nid: 2b0f5f0e-0000-4000-8000-000000000001\nlogsource:\n    product: linux\n    service: sudo\ndetection:\n    selection:\n        event.action: sudo_auth_failure\n    condition: selection\nlevel: medium\n";
    const FAILURE: &str = r#"{"@timestamp":"2026-11-25T10:00:00Z","process":{"name":"sudo"},"event":{"action":"sudo_auth_failure"}}"#;
    const SUCCESS: &str = r#"{"@timestamp":"2026-11-25T10:00:00Z","process":{"name":"sudo"},"event":{"action":"sudo_command"}}"#;

    fn run(matching: Option<&str>, not_matching: Option<&str>) -> FileTest {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("auth")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("fixtures/auth")).expect("mkdir");
        std::fs::write(dir.path().join("auth/sudo.yml"), RULE).expect("rule");
        if let Some(text) = matching {
            std::fs::write(dir.path().join("fixtures/auth/sudo.match.ndjson"), text).expect("w");
        }
        if let Some(text) = not_matching {
            std::fs::write(dir.path().join("fixtures/auth/sudo.nomatch.ndjson"), text).expect("w");
        }
        let pipeline = ecs_pipeline().expect("pipeline");
        let dirs = vec![dir.path().to_path_buf()];
        let set = load_rules(&dirs, &pipeline).expect("load");
        let mut results = test_rules(&dirs, &set, &pipeline);
        assert_eq!(results.len(), 1);
        results.remove(0)
    }

    #[test]
    fn fixtures_pass_fail_and_go_missing_as_they_should() {
        let good = run(Some(FAILURE), Some(SUCCESS));
        assert!(good.passed(), "{good:?}");
        assert_eq!(good.rules, ["sudo failure"]);

        let contradicted = run(Some(SUCCESS), Some(FAILURE));
        assert!(matches!(&contradicted.matching, Outcome::Failed(m) if m.contains("did not fire")));
        assert!(
            matches!(&contradicted.not_matching, Outcome::Failed(m) if m.ends_with(":1: `sudo failure` fired"))
        );

        let missing = run(Some(FAILURE), None);
        assert!(matches!(missing.not_matching, Outcome::Missing(_)));
        assert!(!missing.passed());

        let broken = run(Some("{not json"), Some(SUCCESS));
        assert!(matches!(&broken.matching, Outcome::Failed(m) if m.contains(":1:")));
    }
}
