//! Prometheus metrics as the collector and the agent expose them on `/metrics`.
//!
//! Both binaries read their figures at scrape time (atomics their stages already keep,
//! the archive's end, `/proc/self`) rather than registering live metric objects, so the
//! stages stay free of any metrics library. An [`Exposition`] gathers one scrape's
//! families and hands them to the official Prometheus client (`prometheus-client`) as a
//! custom collector, whose encoder writes the text format 0.0.4: `# HELP` and `# TYPE`
//! once per family, label values escaped, counters named `…_total`, histograms as
//! cumulative `_bucket{le=…}` series with `_sum` and `_count`.
//!
//! [`Histogram`] is a fixed-bucket latency histogram of atomics, cheap enough to update
//! on a hot path (the archive writer's fsync, every HTTP request). [`ProcessStats`]
//! reads the standard `process_*` figures from `/proc/self`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the text format written by [`Exposition::encode`], so a scraper
/// parses it as Prometheus text (version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The kind of a metric family, which decides its `# TYPE` and how its samples read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (resets at restart); the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

/// One sample's number: integers stay exact, seconds and ratios are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A count or a size.
    Int(u64),
    /// A duration, a timestamp or anything fractional.
    Float(f64),
}

impl From<u64> for Number {
    fn from(value: u64) -> Self {
        Number::Int(value)
    }
}

impl From<f64> for Number {
    fn from(value: f64) -> Self {
        Number::Float(value)
    }
}

#[derive(Debug, Clone)]
enum Value {
    Number(Number),
    Histogram(HistogramSnapshot),
}

type Labels = Vec<(String, String)>;

/// One metric family of a scrape: its name, help, kind and samples.
#[derive(Debug, Clone)]
pub struct Family {
    /// The name as the encoder wants it: without `_total` for counters (it adds it).
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    /// Adds a sample with these labels (an empty slice for none). A value that does not
    /// fit the family's kind (a number in a histogram) is left out.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Number>) -> &mut Self {
        if self.kind != Kind::Histogram {
            self.samples
                .push((owned(labels), Value::Number(value.into())));
        }
        self
    }

    /// Adds a histogram with these labels (an empty slice for none); left out of a
    /// family that is not a histogram.
    pub fn histogram(&mut self, labels: &[(&str, &str)], value: HistogramSnapshot) -> &mut Self {
        if self.kind == Kind::Histogram {
            self.samples.push((owned(labels), Value::Histogram(value)));
        }
        self
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// One scrape: the families in the order they were first named.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// A counter family; `name` ends in `_total` (as it is written, so it can be found
    /// in the source). Naming a family again returns the same one.
    pub fn counter(&mut self, name: &str, help: &str) -> &mut Family {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.family(base, help, Kind::Counter)
    }

    /// A gauge family. Naming a family again returns the same one.
    pub fn gauge(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, Kind::Gauge)
    }

    /// A histogram family (its series get `_bucket`, `_sum` and `_count`).
    pub fn histogram(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, Kind::Histogram)
    }

    fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Family {
        let index = match self
            .families
            .iter()
            .position(|f| f.name == name && f.kind == kind)
        {
            Some(index) => index,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[index]
    }

    /// The text exposition (format 0.0.4, [`CONTENT_TYPE`]).
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let mut sample = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (Kind::Counter, Value::Number(Number::Int(n))) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(n, None)?
                    }
                    (Kind::Counter, Value::Number(Number::Float(x))) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(x, None)?
                    }
                    (Kind::Gauge, Value::Number(Number::Int(n))) => sample.encode_gauge(n)?,
                    (Kind::Gauge, Value::Number(Number::Float(x))) => sample.encode_gauge(x)?,
                    (Kind::Histogram, Value::Histogram(h)) => sample
                        .encode_histogram::<NoLabelSet>(
                            h.sum,
                            h.count,
                            &h.buckets,
                            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
                        )?,
                    // Kept out when added (`Family::sample`, `Family::histogram`).
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// A histogram's state at one moment: per-bucket counts (not cumulative; the last bucket
/// is `+Inf`), their total and the sum of the observations in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations in this bucket only)`, bounds ascending, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation (the sum of the buckets, so the two always agree).
    pub count: u64,
    /// The sum of the observed values, in seconds.
    pub sum: f64,
}

/// A latency histogram with fixed bucket bounds (in seconds), all atomics: an
/// observation is two relaxed additions, never a lock, so hot paths can afford it.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow (`+Inf`) bucket.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending upper bounds in seconds, without `+Inf`).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation into the first bucket whose bound it does not exceed.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.counts.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts now (each bucket read once; the count is their sum).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

/// The standard process metrics of this process, read from `/proc/self`; a figure that
/// cannot be read (another OS, a restricted `/proc`) is `None` and left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// `process_resident_memory_bytes` (`VmRSS` of `/proc/self/status`).
    pub resident_memory_bytes: Option<u64>,
    /// `process_cpu_seconds_total`: user plus system time.
    pub cpu_seconds: Option<f64>,
    /// `process_open_fds`: entries of `/proc/self/fd`.
    pub open_fds: Option<u64>,
    /// `process_max_fds`: the soft limit on open files.
    pub max_fds: Option<u64>,
    /// `process_start_time_seconds`: Unix time the process started.
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on every Linux
/// architecture this runs on; it is part of the kernel's user-space ABI).
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads the figures now (a few small `/proc` reads: do it off the async threads).
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text));
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        ProcessStats {
            resident_memory_bytes: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|text| parse_vm_rss(&text)),
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / USER_HZ),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| parse_max_open_files(&text)),
            start_time_seconds: match (stat, boot_time) {
                (Some(stat), Some(boot)) => Some(boot as f64 + stat.start_ticks as f64 / USER_HZ),
                _ => None,
            },
        }
    }

    /// Adds the `process_*` families (the names every Prometheus client uses).
    pub fn add_to(&self, exposition: &mut Exposition) {
        if let Some(bytes) = self.resident_memory_bytes {
            exposition
                .gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                )
                .sample(&[], bytes);
        }
        if let Some(seconds) = self.cpu_seconds {
            exposition
                .counter(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                )
                .sample(&[], seconds);
        }
        if let Some(fds) = self.open_fds {
            exposition
                .gauge("process_open_fds", "Number of open file descriptors.")
                .sample(&[], fds);
        }
        if let Some(fds) = self.max_fds {
            exposition
                .gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                )
                .sample(&[], fds);
        }
        if let Some(start) = self.start_time_seconds {
            exposition
                .gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                )
                .sample(&[], start);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    cpu_ticks: u64,
    start_ticks: u64,
}

/// utime + stime and starttime of `/proc/<pid>/stat`, read after the command name (in
/// parentheses, and it may itself contain spaces and parentheses).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: the boot time in Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_once_with_escaped_labels() {
        let mut out = Exposition::default();
        out.counter("yagura_things_total", "Things seen.")
            .sample(&[("kind", "a")], 3u64);
        out.gauge("yagura_level_bytes", "A level.").sample(&[], 1.5);
        // The same family named again gets the sample, not a second HELP/TYPE.
        out.counter("yagura_things_total", "Things seen.")
            .sample(&[("kind", "b \"quoted\" \\ and\nnewline")], 4u64);
        // A number in a histogram family is left out.
        out.histogram("yagura_empty_seconds", "Nothing.")
            .sample(&[], 1u64);
        let text = out.encode().expect("encode");
        assert_eq!(
            text,
            "# HELP yagura_things_total Things seen.\n\
             # TYPE yagura_things_total counter\n\
             yagura_things_total{kind=\"a\"} 3\n\
             yagura_things_total{kind=\"b \\\"quoted\\\" \\\\ and\\nnewline\"} 4\n\
             # HELP yagura_level_bytes A level.\n\
             # TYPE yagura_level_bytes gauge\n\
             yagura_level_bytes 1.5\n\
             # HELP yagura_empty_seconds Nothing.\n\
             # TYPE yagura_empty_seconds histogram\n"
        );
    }

    #[test]
    fn histogram_series_are_cumulative_with_sum_and_count() {
        static BOUNDS: &[f64] = &[0.001, 0.01, 0.1];
        let histogram = Histogram::new(BOUNDS);
        histogram.observe(Duration::from_micros(500)); // ≤ 0.001
        histogram.observe(Duration::from_millis(1)); // exactly on a bound: that bucket
        histogram.observe(Duration::from_millis(50)); // ≤ 0.1
        histogram.observe(Duration::from_secs(2)); // +Inf
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.buckets,
            [(0.001, 2), (0.01, 0), (0.1, 1), (f64::INFINITY, 1)]
        );
        assert_eq!(snapshot.count, 4);
        assert!((snapshot.sum - 2.0515).abs() < 1e-9, "{}", snapshot.sum);
        let mut out = Exposition::default();
        out.histogram("yagura_wait_seconds", "Waits.")
            .histogram(&[("route", "/a/{id}")], snapshot);
        let text = out.encode().expect("encode");
        let expected = "# HELP yagura_wait_seconds Waits.\n\
             # TYPE yagura_wait_seconds histogram\n\
             yagura_wait_seconds_bucket{route=\"/a/{id}\",le=\"0.001\"} 2\n\
             yagura_wait_seconds_bucket{route=\"/a/{id}\",le=\"0.01\"} 2\n\
             yagura_wait_seconds_bucket{route=\"/a/{id}\",le=\"0.1\"} 3\n\
             yagura_wait_seconds_bucket{route=\"/a/{id}\",le=\"+Inf\"} 4\n";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.contains("yagura_wait_seconds_count{route=\"/a/{id}\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("yagura_wait_seconds_sum{route=\"/a/{id}\"} 2.05"),
            "{text}"
        );
    }

    #[test]
    fn proc_files_are_parsed() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 8 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn this_process_is_measured() {
        let stats = ProcessStats::read();
        assert!(stats.resident_memory_bytes.is_some_and(|b| b > 0));
        assert!(stats.open_fds.is_some_and(|n| n > 0));
        assert!(stats.cpu_seconds.is_some());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = stats.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
        let mut out = Exposition::default();
        stats.add_to(&mut out);
        let text = out.encode().expect("encode");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(text.contains("\nprocess_open_fds "), "{text}");
    }
}
