//! Network segments end to end: a collector with agent ingest on a listener of its own
//! (its own certificate), the shop on another admitting only 127.0.0.2, and the main
//! listener left with the console and the API. An agent enrolls and ships through the
//! ingest listener and its lines are found through the API; each listener answers only
//! its own segment's routes (the others are 404 there); a client from outside the shop's
//! allowlist is closed before the TLS handshake and counted on `/metrics`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use yagura_e2e::{Agent, Collector, append_lines};

fn line(i: usize) -> String {
    format!("2026-11-26T08:00:00.000000+00:00 segment-host app[7]: segment line {i:04}")
}

/// `listener NAME (SEGMENTS) on URL certificate sha256 FP` → (URL, FP).
fn listener(collector: &Collector, name: &str) -> anyhow::Result<(String, String)> {
    let rest = collector
        .process
        .expect_line(&format!("listener {name} "), Duration::from_secs(5))?;
    let mut words = rest.split_whitespace();
    let url = words
        .find(|w| w.starts_with("https://"))
        .context("url")?
        .to_string();
    let fingerprint = words.last().context("fingerprint")?.to_string();
    Ok((url, fingerprint))
}

/// A client that skips certificate checks (the shop listener's is the collector's own;
/// what matters here is whether the connection is admitted), leaving from `from`.
fn client_from(from: &str) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(from.parse::<IpAddr>()?)
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn status(client: &reqwest::Client, url: &str) -> anyhow::Result<u16> {
    Ok(client.get(url).send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_serves_its_segment_to_its_network() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ingest_tls = tmp.path().join("ingest-tls");
    let ingest_identity = yagura_collector::tls::TlsIdentity::load_or_generate(
        &ingest_tls,
        &["ingest.yagura.test".to_string()],
    )?;
    let collector = Collector::start(
        &tmp.path().join("collector"),
        &format!(
            "[listeners.ingest]\nlisten = \"127.0.0.1:0\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
             [listeners.shop]\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.2/32\"]\n",
            ingest_tls.join("collector.crt").display(),
            ingest_tls.join("collector.key").display()
        ),
    )?;
    let (main_url, main_fingerprint) = listener(&collector, "main")?;
    let (ingest_url, ingest_fingerprint) = listener(&collector, "ingest")?;
    let (shop_url, _) = listener(&collector, "shop")?;
    assert_eq!(main_url, collector.url, "the API's address is the main one");
    assert_eq!(main_fingerprint, collector.fingerprint);
    assert_eq!(
        ingest_fingerprint, ingest_identity.fingerprint,
        "the ingest listener presents its own certificate"
    );
    assert_ne!(ingest_fingerprint, main_fingerprint);
    assert!(ingest_url != main_url && shop_url != main_url && shop_url != ingest_url);

    // An agent enrolls at the ingest listener, pinning its certificate, and ships there.
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("app.log");
    let sources = format!(
        "[[sources]]\npaths = [\"{}\"]\ndataset = \"e2e.segments\"\n",
        log.display()
    );
    let mut agent = Agent::enroll_at(
        &tmp.path().join("agent"),
        &collector,
        (&ingest_url, &ingest_fingerprint),
        "segment-host",
        &sources,
        "",
    )?;
    agent.start()?;
    append_lines(&log, 0..50, line)?;
    collector
        .wait_for_total("event.dataset:e2e.segments", 50, Duration::from_secs(60))
        .await?;

    // Each listener serves its own segment's routes only (and the probes).
    let main = collector.client()?;
    let (ingest, _) =
        yagura_agent::tls::pinned_client(Some(&ingest_fingerprint), Duration::from_secs(10))?;
    let token = &collector.api_token;
    for path in ["/api/v1/search?q=*", "/metrics", "/api/v1/agents"] {
        let on_ingest = ingest
            .get(format!("{ingest_url}{path}"))
            .bearer_auth(token)
            .send()
            .await?;
        assert_eq!(on_ingest.status().as_u16(), 404, "{path} on ingest");
    }
    for path in ["/console/search", "/console/login", "/shop/api/session"] {
        assert_eq!(
            status(&ingest, &format!("{ingest_url}{path}")).await?,
            404,
            "{path} on ingest"
        );
    }
    for path in ["/api/v1/ingest", "/api/v1/enroll"] {
        let on_main = main
            .post(format!("{main_url}{path}"))
            .body("{}")
            .send()
            .await?;
        assert_eq!(on_main.status().as_u16(), 404, "{path} on main");
    }
    assert_eq!(
        status(&main, &format!("{main_url}/console/login")).await?,
        200,
        "the console stays on the main listener"
    );
    assert_eq!(
        status(&main, &format!("{main_url}/shop/api/session")).await?,
        401,
        "the console signs in through the shop's routes on its own listener"
    );
    for url in [&main_url, &ingest_url] {
        let client = if url == &main_url { &main } else { &ingest };
        assert_eq!(status(client, &format!("{url}/health/live")).await?, 200);
    }

    // The shop listener admits 127.0.0.2 and serves only the shop there …
    let admitted = client_from("127.0.0.2")?;
    assert_eq!(
        status(&admitted, &format!("{shop_url}/shop/openapi.json")).await?,
        200
    );
    // … customers' routes only: administration and the audit trail stay on the
    // management listener.
    for path in [
        "/console/login",
        "/api/v1/search?q=*",
        "/metrics",
        "/shop/api/admin/users",
        "/shop/api/audit",
    ] {
        assert_eq!(
            status(&admitted, &format!("{shop_url}{path}")).await?,
            404,
            "{path} on the shop listener"
        );
    }
    assert_ne!(
        status(&main, &format!("{main_url}/shop/api/admin/users")).await?,
        404,
        "shop administration is on the management listener"
    );
    // … and closes 127.0.0.1's connections before any TLS: no certificate, no answer.
    let outsider = client_from("127.0.0.1")?;
    for _ in 0..3 {
        let refused = outsider
            .get(format!("{shop_url}/shop/openapi.json"))
            .send()
            .await;
        assert!(refused.is_err(), "an outsider got {refused:?}");
    }
    let metrics = main
        .get(format!("{main_url}/metrics"))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("yagura_http_connections_refused_total{listener=\"shop\"} "))
        .with_context(|| format!("no shop refusal counter in\n{metrics}"))?
        .trim()
        .parse()?;
    assert!(refused >= 3.0, "{refused} refusals counted");
    assert!(
        metrics.contains("yagura_http_connections_refused_total{listener=\"ingest\"} 0"),
        "every listener's counter exists"
    );
    agent.kill_hard();
    Ok(())
}
