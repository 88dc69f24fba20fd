//! What the live detector runs, for the console's rules page and its notice: each rule
//! (level, tags, file), the files left out at load, the last refused change, and each
//! rule file's fixture result.
//!
//! The detector publishes here at start and at every reload; fixture tests run on a
//! thread of their own (they build a detector per fixture file), so a reload never waits
//! for them.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rsigma_eval::Pipeline;
use serde::Serialize;

use super::fixtures::{FileTest, Outcome, fixture_paths, test_rules};
use super::rules::{RuleProblem, RuleSet};

#[derive(Debug, Clone, Default, Serialize)]
pub struct CatalogView {
    /// When the running rules were loaded (RFC 3339).
    pub loaded_at: Option<String>,
    pub dirs: Vec<String>,
    pub rules: Vec<RuleEntry>,
    /// Files left out of the running set, with their problem.
    pub errors: Vec<ProblemEntry>,
    pub warnings: Vec<ProblemEntry>,
    /// The last change that was refused while the previous rules kept running; cleared
    /// by the next successful load.
    pub refused: Option<Refusal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleEntry {
    pub id: Option<String>,
    pub title: String,
    /// `detection`, or the correlation type (`event_count`, `temporal`, …).
    pub kind: String,
    pub level: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub file: String,
    /// The fixture result of the rule's file; `None` while running or without fixtures.
    pub test: Option<TestEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestEntry {
    pub passed: bool,
    pub at: String,
    pub matching: String,
    pub matching_result: String,
    pub not_matching: String,
    pub not_matching_result: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemEntry {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub at: String,
    /// `file:line: message` each.
    pub problems: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    view: CatalogView,
    /// Bumped at each load, so a slow fixture run of an older set is not applied.
    generation: u64,
}

/// Shared between the detector (writer) and the API (reader).
#[derive(Debug, Clone, Default)]
pub struct RuleCatalog {
    inner: Arc<RwLock<Inner>>,
    /// Held by the fixture run in progress, so reloads in quick succession test one
    /// after another, and a run whose rule set was replaced meanwhile does not start.
    fixtures: Arc<std::sync::Mutex<()>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn problems(list: &[RuleProblem]) -> Vec<ProblemEntry> {
    list.iter()
        .map(|p| ProblemEntry {
            file: p.path.display().to_string(),
            line: p.line,
            message: p.message.clone(),
        })
        .collect()
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed { events } => format!("passed ({events} events)"),
        Outcome::Failed(message) => format!("failed: {message}"),
        Outcome::Missing(path) => format!("missing: {}", path.display()),
    }
}

impl RuleCatalog {
    /// The rules of `set` (loaded from `dirs`) are now running; their fixtures are
    /// tested in the background.
    pub fn loaded(&self, dirs: &[PathBuf], set: &RuleSet, pipeline: &Pipeline) {
        let mut rules = Vec::new();
        for file in &set.files {
            let path = file.path.display().to_string();
            let entry = |id: &Option<String>,
                         title: &str,
                         kind: &str,
                         level: Option<rsigma_parser::Level>,
                         status: Option<rsigma_parser::Status>,
                         tags: &[String],
                         description: &Option<String>| RuleEntry {
                id: id.clone(),
                title: title.to_string(),
                kind: kind.to_string(),
                level: level.map(|l| l.as_str().to_string()),
                status: status.map(|s| format!("{s:?}").to_lowercase()),
                tags: tags.to_vec(),
                description: description.clone(),
                file: path.clone(),
                test: None,
            };
            for r in &file.collection.rules {
                rules.push(entry(
                    &r.id,
                    &r.title,
                    "detection",
                    r.level,
                    r.status,
                    &r.tags,
                    &r.description,
                ));
            }
            for c in &file.collection.correlations {
                rules.push(entry(
                    &c.id,
                    &c.title,
                    c.correlation_type.as_str(),
                    c.level,
                    c.status,
                    &c.tags,
                    &c.description,
                ));
            }
        }
        let generation = {
            let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            inner.generation += 1;
            inner.view = CatalogView {
                loaded_at: Some(now()),
                dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
                rules,
                errors: problems(&set.errors),
                warnings: problems(&set.warnings),
                refused: None,
            };
            inner.generation
        };
        let catalog = self.clone();
        let dirs = dirs.to_vec();
        let set = set.clone();
        let pipeline = pipeline.clone();
        let started = std::thread::Builder::new()
            .name("rule-fixtures".into())
            .spawn(move || {
                let _turn = catalog
                    .fixtures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if catalog.generation() != generation {
                    return;
                }
                let tests = test_rules(&dirs, &set, &pipeline);
                catalog.tested(generation, &dirs, &tests);
            });
        if let Err(error) = started {
            tracing::warn!(%error, "rule fixtures not tested");
        }
    }

    /// A changed rule set was refused; the running rules stay.
    pub fn refused(&self, problems: &[String]) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.view.refused = Some(Refusal {
            at: now(),
            problems: problems.to_vec(),
        });
    }

    fn tested(&self, generation: u64, dirs: &[PathBuf], tests: &[FileTest]) {
        let at = now();
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.generation != generation {
            return;
        }
        for test in tests {
            let file = test.path.display().to_string();
            let (matching, not_matching) = fixture_paths(dirs, &test.path).unwrap_or_default();
            let entry = TestEntry {
                passed: test.passed(),
                at: at.clone(),
                matching: matching.display().to_string(),
                matching_result: outcome_text(&test.matching),
                not_matching: not_matching.display().to_string(),
                not_matching_result: outcome_text(&test.not_matching),
            };
            for rule in inner.view.rules.iter_mut().filter(|r| r.file == file) {
                rule.test = Some(entry.clone());
            }
        }
    }

    fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    pub fn view(&self) -> CatalogView {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .view
            .clone()
    }
}
