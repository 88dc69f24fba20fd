//! Lines per second of each parser, on one core.
//!
//! `parse_into/*`: the whole step the agent runs per line — the tailer's event
//! (`Line::write_event`: id, times, message, original, file, host and agent fields) filled
//! by `parse_flat`, as the agent's producer does it. `to_ndjson/*` adds writing the event
//! into the batch's NDJSON (what gets compressed and signed). `baseline/tailer_event` is
//! the tailer's event alone. `extract/*` runs only the borrowed parse (no event, no
//! allocation), the ceiling of the nom layer.
//!
//! Inputs: the loghub samples in `tests/fixtures/loghub` (OpenSSH, Linux, Apache error)
//! and generated lines (access log, JSON, PostgreSQL, dnsmasq, auditd).
//! Run: `cargo bench -p yagura-agent --bench parsers -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::sync::Arc;

use yagura_agent::parse::{ParseContext, ParserKind, parse_flat, syslog, web};
use yagura_agent::tail::{EventContext, Line};
use yagura_shared::{EventLines, FlatEvent};

fn fixture(path: &str) -> Vec<String> {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/loghub")
        .join(path);
    std::fs::read_to_string(full)
        .expect("loghub fixture")
        .lines()
        .map(str::to_string)
        .collect()
}

fn generated_access(n: usize) -> Vec<String> {
    let methods = ["GET", "POST", "HEAD", "PUT"];
    let statuses = [200, 200, 200, 304, 404, 401, 500];
    (0..n)
        .map(|i| {
            format!(
                "203.0.{}.{} - {} [24/Nov/2026:10:{:02}:{:02} +0000] \"{} /shop/item/{}?ref=home&page={} HTTP/1.1\" {} {} \"https://shop.example/\" \"Mozilla/5.0 (X11; Linux x86_64; rv:{}.0) Gecko/20100101 Firefox/{}.0\"",
                i % 256,
                (i * 7) % 256,
                if i % 5 == 0 { "bob" } else { "-" },
                (i / 60) % 60,
                i % 60,
                methods[i % methods.len()],
                i,
                i % 9,
                statuses[i % statuses.len()],
                512 + i,
                100 + i % 30,
                100 + i % 30
            )
        })
        .collect()
}

fn generated_json(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"@timestamp":"2026-11-24T10:00:{:02}.{:03}Z","level":"info","message":"request served","event":{{"action":"http_request","outcome":"success"}},"user":{{"name":"user{}"}},"source":{{"ip":"192.0.2.{}"}},"http":{{"request":{{"method":"GET"}},"response":{{"status_code":200}}}},"url":{{"path":"/cart/{}"}},"duration_ms":{}}}"#,
                i % 60,
                i % 1000,
                i % 97,
                i % 256,
                i,
                i % 500
            )
        })
        .collect()
}

fn generated_postgresql(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("2026-11-25 08:10:{:02}.{:03} UTC [{}] app@shop LOG:  statement: SELECT * FROM items WHERE id = {i};", i % 60, i % 1000, 3000 + i % 50),
            1 => format!("2026-11-25 08:10:{:02}.{:03} UTC [{}] user{}@shop FATAL:  password authentication failed for user \"user{}\"", i % 60, i % 1000, 3000 + i % 50, i % 13, i % 13),
            2 => format!("2026-11-25 08:10:{:02}.{:03} UTC [{}] app@shop ERROR:  relation \"t{i}\" does not exist at character 15", i % 60, i % 1000, 3000 + i % 50),
            _ => format!("2026-11-25 08:10:{:02}.{:03} UTC [{}] LOG:  checkpoint complete: wrote {i} buffers", i % 60, i % 1000, 3000 + i % 50),
        })
        .collect()
}

fn generated_dns(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => format!("Nov 24 10:00:{:02} gw dnsmasq[612]: query[A] host{i}.example.com from 192.168.1.{}", i % 60, i % 256),
            1 => format!("Nov 24 10:00:{:02} gw dnsmasq[612]: reply host{i}.example.com is 93.184.{}.{}", i % 60, i % 256, (i * 3) % 256),
            _ => format!("24-Nov-2026 10:00:{:02}.123 queries: info: client @0x7f1c2c0a6b68 192.168.1.{}#{} (h{i}.example): query: h{i}.example IN A +E(0)K (192.168.1.1)", i % 60, i % 256, 1024 + i),
        })
        .collect()
}

fn generated_auditd(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => format!(r#"type=SYSCALL msg=audit(1764000000.{:03}:{i}): arch=c000003e syscall=59 success=yes exit=0 a0=55d1 a1=55d2 a2=55d3 a3=0 items=2 ppid=1000 pid={} auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" key="exec""#, i % 1000, 2000 + i),
            1 => format!(r#"type=USER_LOGIN msg=audit(1764000001.{:03}:{i}): pid={} uid=0 auid=4294967295 ses=4294967295 msg='op=login acct="user{}" exe="/usr/sbin/sshd" hostname=? addr=203.0.113.{} terminal=sshd res=failed'"#, i % 1000, 2000 + i, i % 11, i % 256),
            _ => format!("type=PROCTITLE msg=audit(1764000000.{:03}:{i}): proctitle=636174002F6574632F736861646F77", i % 1000),
        })
        .collect()
}

fn generated_syslog(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => format!("2026-11-24T00:{:02}:{:02}.604537+00:00 web-{} sshd[{}]: Failed password for invalid user admin{} from 203.0.113.{} port {} ssh2", (i / 60) % 60, i % 60, i % 9, 1000 + i, i % 17, i % 256, 40000 + i % 20000),
            1 => format!("<38>Nov 24 10:{:02}:{:02} web-{} sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt install pkg{i}", (i / 60) % 60, i % 60, i % 9),
            _ => format!("<86>1 2026-11-24T10:00:{:02}.003Z web-{} systemd-logind 600 - - New session {i} of user u{}.", i % 60, i % 9, i % 7),
        })
        .collect()
}

fn tailer_lines(texts: &[String]) -> Vec<Line> {
    let dataset: Arc<str> = Arc::from("bench");
    let path: Arc<str> = Arc::from("/var/log/auth.log");
    let labels = Arc::new(BTreeMap::new());
    let mut offset = 0u64;
    texts
        .iter()
        .map(|text| {
            let line = Line {
                source: 0,
                dataset: dataset.clone(),
                labels: labels.clone(),
                path: path.clone(),
                offset,
                text: text.clone(),
                invalid_utf8: false,
                truncated: false,
            };
            offset += text.len() as u64 + 1;
            line
        })
        .collect()
}

fn bench_parsers(c: &mut Criterion) {
    let ctx = ParseContext::at(
        DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .expect("time")
            .with_timezone(&Utc),
    );
    let context = EventContext {
        host_name: "agent-host".into(),
        agent_id: uuid::Uuid::now_v7(),
    };
    let openssh = fixture("OpenSSH/OpenSSH_2k.log");
    let linux = fixture("Linux/Linux_2k.log");
    let apache = fixture("Apache/Apache_2k.log");
    let cases: Vec<(&str, ParserKind, Vec<String>)> = vec![
        ("syslog/loghub_linux", ParserKind::Syslog, linux.clone()),
        ("syslog/loghub_openssh", ParserKind::Syslog, openssh.clone()),
        (
            "syslog/generated",
            ParserKind::Syslog,
            generated_syslog(2000),
        ),
        (
            "linux-auth/loghub_openssh",
            ParserKind::LinuxAuth,
            openssh.clone(),
        ),
        (
            "linux-auth/loghub_linux",
            ParserKind::LinuxAuth,
            linux.clone(),
        ),
        (
            "linux-auth/generated",
            ParserKind::LinuxAuth,
            generated_syslog(2000),
        ),
        (
            "web-access/generated",
            ParserKind::WebAccess,
            generated_access(2000),
        ),
        (
            "web-error/loghub_apache",
            ParserKind::WebError,
            apache.clone(),
        ),
        ("json/generated", ParserKind::Json, generated_json(2000)),
        (
            "postgresql/generated",
            ParserKind::Postgresql,
            generated_postgresql(2000),
        ),
        ("dns/generated", ParserKind::Dns, generated_dns(2000)),
        (
            "auditd/generated",
            ParserKind::Auditd,
            generated_auditd(2000),
        ),
        ("auto/loghub_openssh", ParserKind::Auto, openssh.clone()),
    ];

    let cases: Vec<(&str, ParserKind, Vec<Line>)> = cases
        .into_iter()
        .map(|(name, kind, texts)| (name, kind, tailer_lines(&texts)))
        .collect();
    let mut event = FlatEvent::new();
    let mut group = c.benchmark_group("parse_into");
    for (name, kind, lines) in &cases {
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                for line in lines {
                    event.clear();
                    line.write_event(&context, &mut event);
                    parse_flat(*kind, black_box(&line.text), &ctx, &mut event);
                    black_box(&event);
                }
            })
        });
    }
    group.finish();

    let mut batch = EventLines::default();
    let mut group = c.benchmark_group("to_ndjson");
    for (name, kind, lines) in &cases {
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                batch.clear();
                for line in lines {
                    event.clear();
                    line.write_event(&context, &mut event);
                    parse_flat(*kind, black_box(&line.text), &ctx, &mut event);
                    batch.push_flat(&mut event);
                }
                black_box(batch.bytes());
            })
        });
    }
    group.finish();

    let openssh_lines = tailer_lines(&openssh);
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(openssh.len() as u64));
    group.bench_function("tailer_event", |b| {
        b.iter(|| {
            for line in &openssh_lines {
                event.clear();
                line.write_event(&context, &mut event);
                black_box(&event);
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Elements(openssh.len() as u64));
    group.bench_function("syslog/loghub_openssh", |b| {
        b.iter(|| {
            for line in &openssh {
                black_box(syslog::parse(black_box(line), &ctx));
            }
        })
    });
    group.bench_function("linux-auth/loghub_openssh", |b| {
        b.iter(|| {
            for line in &openssh {
                if let Some(r) = syslog::parse(black_box(line), &ctx) {
                    black_box(yagura_agent::parse::auth::classify(
                        r.app_name.unwrap_or(""),
                        r.message,
                    ));
                }
            }
        })
    });
    let access = generated_access(2000);
    group.throughput(Throughput::Elements(access.len() as u64));
    group.bench_function("web-access/generated", |b| {
        b.iter(|| {
            for line in &access {
                black_box(web::parse_access(black_box(line)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parsers);
criterion_main!(benches);
