//! Detection: Sigma rules (detection and correlation) on Yagura's events.
//!
//! `rsigma-parser` parses the rules and `rsigma-eval` evaluates them; this module owns
//! what surrounds them: finding and checking rule files with `file:line` errors
//! ([`rules`]), the value lists operators maintain beside the rules and that fill the
//! placeholders of `|expand` values ([`lists`]), the field mapping from Sigma's generic names to the agent's ECS fields
//! (`yagura_ecs.yml`, compiled into the binary), and the detector that evaluates events in
//! event time and gives every match a deterministic id ([`engine`]), and the live
//! detector that runs them on the archive stream with its state in the database, every
//! match recorded exactly once across crashes ([`live`]).

pub mod catalog;
pub mod engine;
pub mod fixtures;
pub mod lists;
pub mod live;
pub mod rules;

pub use catalog::RuleCatalog;
pub use engine::{Detection, Detector};
pub use live::{DETECTOR_CONSUMER, DetectorStats, LiveDetector};
pub use rules::{RuleProblem, RuleSet, ecs_pipeline, load as load_rules};
