//! `yagura rules`: the detection engineer's tools for rule directories.
//!
//! - `check DIR…`: every rule file parses and compiles under the field mapping; errors and
//!   lint warnings as `file:line: message`; exit 1 on any error.
//! - `eval DIR… [--events FILE|-]`: evaluates NDJSON events offline (hunting in exported
//!   logs, side-by-side benchmarks) and prints each match as one JSON line.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use yagura_collector::detect::{Detector, ecs_pipeline, load_rules};
use yagura_shared::Event;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files: parse, field mapping, compile, references, lint.
    Check(CheckArgs),
    /// Evaluate NDJSON events against rules and print the matches as NDJSON.
    Eval(EvalArgs),
    /// Run each rule file's fixtures (fixtures/<path>.match.ndjson must fire,
    /// fixtures/<path>.nomatch.ndjson must not); exit 1 on any failure.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rule directories (their `fixtures/` folders hold the events).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule directories or files.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Do not print lint warnings.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Rule directories or files.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// NDJSON events (one ECS event per line); `-` or absent for standard input.
    #[arg(long, short = 'e')]
    events: Option<PathBuf>,
}

pub fn run(command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Check(args) => check(args),
        RulesCommand::Eval(args) => eval(args),
        RulesCommand::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    use yagura_collector::detect::fixtures::{Outcome, test_rules};
    let pipeline = ecs_pipeline().map_err(anyhow::Error::msg)?;
    let set = load_rules(&args.dirs, &pipeline).map_err(|p| anyhow::anyhow!("{p}"))?;
    for error in &set.errors {
        eprintln!("{error}");
    }
    let results = test_rules(&args.dirs, &set, &pipeline);
    let cell = |outcome: &Outcome| match outcome {
        Outcome::Passed { events } => format!("ok ({events} events)"),
        Outcome::Failed(_) => "FAILED".to_string(),
        Outcome::Missing(_) => "MISSING".to_string(),
    };
    println!(
        "{:<60} {:<18} {:<18}",
        "rule file", "must fire", "must not fire"
    );
    let mut failures = Vec::new();
    for result in &results {
        let name = result.path.display().to_string();
        println!(
            "{name:<60} {:<18} {:<18}",
            cell(&result.matching),
            cell(&result.not_matching)
        );
        for outcome in [&result.matching, &result.not_matching] {
            match outcome {
                Outcome::Failed(why) => failures.push(why.clone()),
                Outcome::Missing(path) => {
                    failures.push(format!("{}: no fixture file", path.display()))
                }
                Outcome::Passed { .. } => {}
            }
        }
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    println!(
        "{passed} of {} rule files passed; {} rule errors",
        results.len(),
        set.errors.len()
    );
    if !failures.is_empty() || !set.errors.is_empty() {
        anyhow::bail!(
            "{} fixture failures, {} rule errors",
            failures.len(),
            set.errors.len()
        );
    }
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let pipeline = ecs_pipeline().map_err(anyhow::Error::msg)?;
    let set = load_rules(&args.dirs, &pipeline).map_err(|p| anyhow::anyhow!("{p}"))?;
    let mut err = std::io::stderr().lock();
    if !args.quiet {
        for warning in &set.warnings {
            writeln!(err, "{warning} (warning)")?;
        }
    }
    for error in &set.errors {
        writeln!(err, "{error}")?;
    }
    println!(
        "{} files: {} detection rules, {} correlation rules loaded; {} errors, {} warnings",
        set.files.len()
            + set
                .errors
                .iter()
                .map(|e| &e.path)
                .collect::<std::collections::HashSet<_>>()
                .len(),
        set.detection_rules(),
        set.correlation_rules(),
        set.errors.len(),
        set.warnings.len()
    );
    if !set.errors.is_empty() {
        anyhow::bail!("{} rule errors", set.errors.len());
    }
    Ok(())
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let pipeline = ecs_pipeline().map_err(anyhow::Error::msg)?;
    let set = load_rules(&args.dirs, &pipeline).map_err(|p| anyhow::anyhow!("{p}"))?;
    if let Some(first) = set.errors.first() {
        anyhow::bail!(
            "{first} (and {} more errors; `yagura rules check` lists them)",
            set.errors.len() - 1
        );
    }
    let mut detector = Detector::new(&set, pipeline).map_err(anyhow::Error::msg)?;
    let input: Box<dyn std::io::BufRead> = match args.events.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
    };
    let name = args
        .events
        .as_ref()
        .map_or_else(|| "-".to_string(), |p| p.display().to_string());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut events, mut matches, mut skipped) = (0u64, 0u64, 0u64);
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event = match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => Event::from_map(map),
            Ok(_) => {
                eprintln!("{name}:{}: not a JSON object, skipped", index + 1);
                skipped += 1;
                continue;
            }
            Err(e) => {
                eprintln!("{name}:{}: {e}, skipped", index + 1);
                skipped += 1;
                continue;
            }
        };
        events += 1;
        for detection in detector.process(event) {
            serde_json::to_writer(&mut out, &detection)?;
            out.write_all(b"\n")?;
            matches += 1;
        }
    }
    out.flush()?;
    eprintln!(
        "{events} events, {matches} matches ({} detection rules, {} correlation rules){}",
        detector.detection_rules(),
        detector.correlation_rules(),
        if skipped > 0 {
            format!(", {skipped} lines skipped")
        } else {
            String::new()
        }
    );
    Ok(())
}
