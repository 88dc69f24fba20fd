//! The `postgresql` parser on the log of a real PostgreSQL server.
//!
//! Against the server on 127.0.0.1:5432 (user `postgres`, trust auth), with `psql`: a
//! login as a role that does not exist (always logged as `FATAL`) and a statement with a
//! syntax error (always logged as `ERROR` + `STATEMENT`). The new part of the server log
//! (`YAGURA_PG_LOG`, default `/var/log/postgresql/postgresql-*-main.log`) is then parsed
//! line by line.
//!
//! Where `psql`, the server or a readable log is missing, the test prints why and passes;
//! with `YAGURA_TEST_STRICT=1` it fails instead.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use yagura_agent::parse::{ParseContext, ParserKind, parse_into};
use yagura_shared::Event;

fn skip(reason: &str) {
    if std::env::var("YAGURA_TEST_STRICT").is_ok_and(|v| v == "1") {
        panic!("YAGURA_TEST_STRICT=1 and the PostgreSQL test cannot run: {reason}");
    }
    println!("skipped: {reason}");
}

fn log_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("YAGURA_PG_LOG") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/var/log/postgresql")
        .map_err(|e| format!("/var/log/postgresql: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("postgresql-") && n.ends_with("-main.log"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no postgresql-*-main.log in /var/log/postgresql".to_string())
}

fn psql(user: &str, sql: &str) -> std::io::Result<std::process::Output> {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            user,
            "-d",
            "postgres",
        ])
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
}

#[test]
fn real_postgresql_log() {
    let path = match log_path() {
        Ok(p) => p,
        Err(reason) => return skip(&reason),
    };
    let start = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) => return skip(&format!("{}: {e}", path.display())),
    };
    if let Err(e) = std::fs::File::open(&path) {
        return skip(&format!("{} is not readable: {e}", path.display()));
    }
    match psql("postgres", "SELECT 1") {
        Err(e) => return skip(&format!("psql cannot run: {e}")),
        Ok(out) if !out.status.success() => {
            return skip(&format!(
                "PostgreSQL on 127.0.0.1:5432 refused user postgres: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(_) => {}
    }

    let marker = format!(
        "yagura_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    let role = format!("{marker}_nobody");
    let login = psql(&role, "SELECT 1").expect("psql runs");
    assert!(!login.status.success(), "login as a missing role must fail");
    let bad = psql("postgres", &format!("SELEC {marker}")).expect("psql runs");
    assert!(!bad.status.success(), "a syntax error must fail");

    // The server writes its log asynchronously: wait for both entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_text = loop {
        let bytes = std::fs::read(&path).expect("read log");
        let from = if (bytes.len() as u64) < start {
            0
        } else {
            start as usize
        };
        let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
        if text.contains(&role) && text.contains(&format!("SELEC {marker}")) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the log did not show the failed login and the statement within 10 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let ctx = ParseContext::default();
    let mut events = Vec::new();
    for line in new_text.lines() {
        let mut event = Event::new(Utc::now());
        event.set_str("message", line);
        event.set_str("event.original", line);
        parse_into(ParserKind::Postgresql, line, &ctx, &mut event);
        event.validate().expect("valid");
        let unparsed = event.get("tags").is_some();
        assert!(
            !unparsed || line.starts_with('\t'),
            "only continuation lines may be unparsed: {line:?}"
        );
        println!("{}", event.to_json_line());
        events.push(event);
    }
    let now = Utc::now();
    for e in &events {
        if e.get("tags").is_none() {
            let t = e.timestamp().expect("time");
            assert!(
                (now - t).num_minutes().abs() < 10,
                "log time {t} near now {now}"
            );
            assert!(e.get("process.pid").is_some(), "pid: {e:?}");
        }
    }
    let failed_login = events
        .iter()
        .find(|e| {
            e.get_str("user.name") == Some(role.as_str()) && e.get_str("log.level") == Some("FATAL")
        })
        .expect("the failed login is logged");
    assert_eq!(failed_login.action(), Some("pg_role_missing"));
    assert_eq!(failed_login.outcome(), Some("failure"));
    assert_eq!(failed_login.get_str("event.category.0"), None);
    assert_eq!(
        failed_login.get("event.category"),
        Some(&serde_json::json!(["authentication"]))
    );
    let error = events
        .iter()
        .position(|e| {
            e.action() == Some("pg_error")
                && e.get_str("error.message")
                    .is_some_and(|m| m.contains("syntax error at or near \"SELEC\""))
        })
        .expect("the syntax error is logged");
    let statement = &events[error + 1..]
        .iter()
        .find(|e| e.action() == Some("pg_error_statement"))
        .expect("STATEMENT follows the error");
    assert_eq!(
        statement.get_str("postgresql.log.query"),
        Some(format!("SELEC {marker}").as_str())
    );
    assert_eq!(statement.get_str("user.name"), Some("postgres"));
    assert_eq!(
        statement.get_str("postgresql.log.database"),
        Some("postgres")
    );
}
