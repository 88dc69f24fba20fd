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
    /// Replay the collector's stored events (oldest first) through the rules and report
    /// how often each would have fired.
    Backtest(BacktestArgs),
    /// Run each rule file's fixtures (fixtures/<path>.match.ndjson must fire,
    /// fixtures/<path>.nomatch.ndjson must not); exit 1 on any failure.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Rule directories or files.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Only the stored events this query matches.
    #[arg(long, default_value = "*")]
    query: String,
    /// From this time (e.g. 7d, 24h, or RFC 3339).
    #[arg(long, default_value = "7d")]
    since: String,
    /// Up to this time.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
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

pub async fn run(command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Check(args) => check(args),
        RulesCommand::Eval(args) => eval(args),
        RulesCommand::Test(args) => test(args),
        RulesCommand::Backtest(args) => backtest(args).await,
    }
}

/// Loads and compiles the rules of `dirs`; any rule error stops the command.
fn detector_for(dirs: &[PathBuf]) -> anyhow::Result<Detector> {
    let pipeline = ecs_pipeline().map_err(anyhow::Error::msg)?;
    let set = load_rules(dirs, &pipeline).map_err(|p| anyhow::anyhow!("{p}"))?;
    if let Some(first) = set.errors.first() {
        anyhow::bail!(
            "{first} (and {} more errors; `yagura rules check` lists them)",
            set.errors.len() - 1
        );
    }
    Detector::new(&set, pipeline).map_err(anyhow::Error::msg)
}

/// Per rule: matches, first and last event time.
#[derive(Default)]
struct Tally {
    level: String,
    matches: u64,
    first: Option<String>,
    last: Option<String>,
}

async fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    let mut detector = detector_for(&args.dirs)?;
    let scope = super::search::QueryArgs {
        query: args.query.clone(),
        since: Some(args.since.clone()),
        from: None,
        to: args.to.clone(),
        oldest_first: true,
        fields: None,
        remote: args.remote,
    };
    let mut response = scope
        .get("/api/v1/export", vec![("format", "ndjson".to_string())])
        .await?;
    let mut tallies: std::collections::BTreeMap<String, Tally> = Default::default();
    let mut events = 0u64;
    let mut buffer: Vec<u8> = Vec::new();
    let mut tally = |detector: &mut Detector, line: &[u8]| {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(line) else {
            return;
        };
        events += 1;
        for detection in detector.process(Event::from_map(map)) {
            let entry = tallies.entry(detection.rule.title.clone()).or_default();
            entry.level = detection.rule.level.clone().unwrap_or_default();
            entry.matches += 1;
            if entry.first.is_none() {
                entry.first = detection.timestamp.clone();
            }
            entry.last = detection.timestamp;
        }
    };
    while let Some(chunk) = response
        .chunk()
        .await
        .context("reading the stored events")?
    {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            tally(&mut detector, &line[..end]);
        }
    }
    if !buffer.is_empty() {
        let rest = std::mem::take(&mut buffer);
        tally(&mut detector, &rest);
    }
    let mut rows: Vec<(String, Tally)> = tallies.into_iter().collect();
    rows.sort_by(|a, b| b.1.matches.cmp(&a.1.matches).then(a.0.cmp(&b.0)));
    println!(
        "{:<60} {:<13} {:>8}  {:<27} {:<27}",
        "rule", "level", "matches", "first", "last"
    );
    for (title, t) in &rows {
        println!(
            "{title:<60} {:<13} {:>8}  {:<27} {:<27}",
            t.level,
            t.matches,
            t.first.as_deref().unwrap_or("-"),
            t.last.as_deref().unwrap_or("-")
        );
    }
    println!(
        "{events} events replayed; {} of {} rules would have fired",
        rows.len(),
        detector.detection_rules() + detector.correlation_rules()
    );
    Ok(())
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
    let mut detector = detector_for(&args.dirs)?;
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
