//! `GET /metrics` end to end: a collector (indexer and detector running) and an agent
//! tailing a file. The exposition is parsed with a strict Prometheus text-format parser
//! (the test fails if it does not parse, or if a family has no `# TYPE`), lines are
//! appended and made searchable, and a second scrape shows every stage moving: ingest,
//! archive (bytes, records, fsync histogram), both consumers' lag gauges, indexer,
//! detector, HTTP requests by route template, refusals by reason and the process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use yagura_e2e::{Agent, Collector, append_lines};

/// A rule so the live detector runs (its matches do not matter here).
const RULES: &str = r#"title: Metrics e2e marker
id: 5b0c9a7e-3f0e-4c3b-9a61-000000000012
logsource:
    product: linux
    service: sshd
detection:
    selection:
        event.action: ssh_login
    condition: selection
level: low
"#;

fn line(i: usize) -> String {
    format!("2026-11-25T08:00:00.000000+00:00 metrics-host app[7]: metrics line {i:05}")
}

/// One parsed scrape.
struct Scrape {
    parsed: MetricsExposition<PrometheusType, PrometheusValue>,
    text: String,
}

/// One sample: its labels and its value (a histogram's count).
type Row = (BTreeMap<String, String>, f64);

impl Scrape {
    fn rows(&self, family: &str) -> Vec<Row> {
        let Some(family) = self.parsed.families.get(family) else {
            return Vec::new();
        };
        family
            .iter_samples()
            .map(|sample| {
                let labels = sample
                    .get_labelset()
                    .map(|set| {
                        set.iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<BTreeMap<_, _>>()
                    })
                    .unwrap_or_default();
                let value = match &sample.value {
                    PrometheusValue::Counter(c) => c.value.as_f64(),
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                    PrometheusValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                    PrometheusValue::Summary(_) => f64::NAN,
                };
                (labels, value)
            })
            .collect()
    }

    /// The sum of the samples of `family` whose labels include `labels`; `None` when no
    /// sample matches (the series does not exist).
    fn get(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .rows(family)
            .into_iter()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, value)| value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    fn value(&self, family: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        self.get(family, labels)
            .with_context(|| format!("no series {family}{labels:?} in\n{}", self.text))
    }

    /// A histogram's cumulative buckets must ascend and end at `+Inf` = its count.
    fn check_histogram(&self, family: &str, labels: &[(&str, &str)]) -> anyhow::Result<u64> {
        let family_data = self
            .parsed
            .families
            .get(family)
            .with_context(|| format!("no family {family}"))?;
        for sample in family_data.iter_samples() {
            let set = sample.get_labelset().map_err(|e| anyhow::anyhow!("{e}"))?;
            let matches = labels
                .iter()
                .all(|(k, v)| set.iter().any(|(name, value)| name == k && value == v));
            if !matches {
                continue;
            }
            let PrometheusValue::Histogram(h) = &sample.value else {
                bail!("{family} is not a histogram");
            };
            let counts: Vec<f64> = h.buckets.iter().map(|b| b.count.as_f64()).collect();
            anyhow::ensure!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "{family} buckets are cumulative: {counts:?}"
            );
            let last = h.buckets.last().context("buckets")?;
            anyhow::ensure!(last.upper_bound == f64::INFINITY, "+Inf bucket last");
            let count = h.count.context("count")?;
            anyhow::ensure!(last.count.as_f64() as u64 == count, "+Inf equals the count");
            anyhow::ensure!(h.sum.is_some(), "{family} has a sum");
            return Ok(count);
        }
        bail!("no histogram {family}{labels:?} in\n{}", self.text)
    }
}

async fn scrape(collector: &Collector) -> anyhow::Result<Scrape> {
    let response = collector
        .client()?
        .get(format!("{}/metrics", collector.url))
        .bearer_auth(&collector.api_token)
        .send()
        .await?;
    anyhow::ensure!(response.status().as_u16() == 200, "{}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type}"
    );
    let text = response.text().await?;
    let parsed = parse_prometheus(&text)
        .map_err(|e| anyhow::anyhow!("/metrics does not parse as Prometheus text: {e}\n{text}"))?;
    for (name, family) in &parsed.families {
        anyhow::ensure!(
            family.family_type != PrometheusType::Unknown,
            "{name} has no # TYPE"
        );
        anyhow::ensure!(!family.help.is_empty(), "{name} has no # HELP");
    }
    Ok(Scrape { parsed, text })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_shows_on_metrics_and_moves_with_the_data() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("marker.yml"), RULES)?;
    let collector = Collector::start(
        &tmp.path().join("collector"),
        &format!("[detect]\nrules = [\"{}\"]\n", rules.display()),
    )?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("app.log");
    let sources = format!(
        "[[sources]]\npaths = [\"{}\"]\ndataset = \"e2e.metrics\"\n",
        log.display()
    );
    let mut agent = Agent::enroll(
        &tmp.path().join("agent"),
        &collector,
        "metrics-host",
        &sources,
    )?;
    agent.start()?;
    let query = "event.dataset:e2e.metrics";
    append_lines(&log, 0..100, line)?;
    collector
        .wait_for_total(query, 100, Duration::from_secs(60))
        .await?;

    let before = scrape(&collector).await?;
    // Every family is there from the first scrape, with every refusal reason.
    for reason in [
        "malformed",
        "clock_skew",
        "unknown_agent",
        "revoked_agent",
        "unverified",
        "too_large",
        "slow_down",
        "unavailable",
    ] {
        before.value(
            "yagura_ingest_batches_rejected_total",
            &[("reason", reason)],
        )?;
    }
    for consumer in ["indexer", "detector"] {
        for family in [
            "yagura_consumer_lag_bytes",
            "yagura_consumer_lag_seconds",
            "yagura_consumer_lag_events",
            "yagura_consumer_lag_events_truncated",
        ] {
            let value = before.value(family, &[("consumer", consumer)])?;
            anyhow::ensure!(value >= 0.0, "{family}{{consumer={consumer}}} = {value}");
        }
    }
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let value = before.value(family, &[])?;
        anyhow::ensure!(value > 0.0, "{family} = {value}");
    }
    before.value("yagura_alerts", &[("status", "open")])?;
    before.value("yagura_alert_notifications", &[("status", "failed")])?;
    before.value("yagura_archive_writer_running", &[])?;
    let fsyncs_before = before.check_histogram("yagura_archive_fsync_seconds", &[])?;
    anyhow::ensure!(fsyncs_before > 0, "the first batches were fsynced");

    // A refusal, a route nobody serves, then more lines.
    let (status, _, _) = collector.post_ingest(b"not a batch".to_vec()).await?;
    anyhow::ensure!(status == 400, "garbage is refused: {status}");
    let missing = collector
        .client()?
        .get(format!("{}/no/such/route/42", collector.url))
        .send()
        .await?;
    anyhow::ensure!(missing.status().as_u16() == 404);
    append_lines(&log, 100..600, line)?;
    collector
        .wait_for_total(query, 600, Duration::from_secs(60))
        .await?;

    // The detector reads right behind ingest: wait until it has seen the new lines too.
    let detector_before = before.value("yagura_detector_events_total", &[])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let after = scrape(&collector).await?;
        if after.value("yagura_detector_events_total", &[])? >= detector_before + 500.0 {
            break after;
        }
        if Instant::now() > deadline {
            bail!(
                "the detector did not evaluate the new lines:\n{}",
                after.text
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let grew = |family: &str, labels: &[(&str, &str)], by: f64| -> anyhow::Result<()> {
        let (old, new) = (before.value(family, labels)?, after.value(family, labels)?);
        anyhow::ensure!(
            new >= old + by,
            "{family}{labels:?} went from {old} to {new}, expected at least +{by}"
        );
        Ok(())
    };
    grew("yagura_ingest_batches_accepted_total", &[], 1.0)?;
    grew("yagura_ingest_events_accepted_total", &[], 500.0)?;
    grew("yagura_ingest_accepted_bytes_total", &[], 1.0)?;
    grew(
        "yagura_ingest_batches_rejected_total",
        &[("reason", "malformed")],
        1.0,
    )?;
    grew("yagura_archive_bytes", &[], 1.0)?;
    grew("yagura_archive_records_appended_total", &[], 1.0)?;
    grew("yagura_indexer_events_total", &[], 500.0)?;
    let fsyncs_after = after.check_histogram("yagura_archive_fsync_seconds", &[])?;
    anyhow::ensure!(
        fsyncs_after > fsyncs_before,
        "fsyncs {fsyncs_before} → {fsyncs_after}"
    );
    // HTTP: the agent's uploads, the searches, the refused batch, the first scrape and
    // the unmatched path, each under its route template.
    let shipped = |scrape: &Scrape| {
        scrape
            .get(
                "yagura_http_requests_total",
                &[("route", "/api/v1/ingest/bundle"), ("status", "200")],
            )
            .unwrap_or(0.0)
            + scrape
                .get(
                    "yagura_http_requests_total",
                    &[("route", "/api/v1/ingest"), ("status", "200")],
                )
                .unwrap_or(0.0)
    };
    anyhow::ensure!(
        shipped(&after) > shipped(&before),
        "uploads are counted:\n{}",
        after.text
    );
    grew(
        "yagura_http_requests_total",
        &[
            ("route", "/api/v1/search"),
            ("method", "GET"),
            ("status", "200"),
        ],
        1.0,
    )?;
    after.value(
        "yagura_http_requests_total",
        &[
            ("route", "/api/v1/ingest"),
            ("method", "POST"),
            ("status", "400"),
        ],
    )?;
    after.value(
        "yagura_http_requests_total",
        &[("route", "/metrics"), ("method", "GET"), ("status", "200")],
    )?;
    let unmatched = after.value(
        "yagura_http_requests_total",
        &[("route", "unmatched"), ("status", "404")],
    )?;
    anyhow::ensure!(unmatched >= 1.0);
    anyhow::ensure!(
        !after.text.contains("/no/such/route"),
        "raw paths never become labels"
    );
    let searches = after.check_histogram(
        "yagura_http_request_duration_seconds",
        &[("route", "/api/v1/search")],
    )?;
    anyhow::ensure!(searches > 0);
    for consumer in ["indexer", "detector"] {
        after.value("yagura_consumer_lag_bytes", &[("consumer", consumer)])?;
        after.value("yagura_consumer_lag_events", &[("consumer", consumer)])?;
    }
    agent.kill_hard();
    Ok(())
}
