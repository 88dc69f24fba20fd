//! The analyst console in a real headless Chromium, against the whole `yagura up` stack:
//! sign-in with a TOTP second factor, a search with its histogram and rows, a syntax
//! error shown at its place, an alert arriving live, a dashboard with every panel drawn,
//! keyboard reach and labels, and no request to any host but the collector. Each step
//! saves a screenshot under this test's output directory
//! (`target/tmp/console/<test>/`). The role test needs no browser: a customer's session
//! gets no console page and no API answer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use reqwest::header;
use serde_json::{Value, json};
use yagura_e2e::browser::{Browser, totp_now};
use yagura_e2e::{Up, copy_dir};

const ENTER: &str = "\u{E007}";
const TAB: &str = "\u{E004}";

fn shots(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console")
        .join(test)
}

fn rules_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../detections")
        .display()
        .to_string()
}

async fn wait_for_total(up: &Up, client: &reqwest::Client, query: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = client
            .get(format!("{}/api/v1/search", up.url))
            .bearer_auth(&up.token)
            .query(&[("q", query), ("limit", "1")])
            .send()
            .await?
            .json()
            .await?;
        let total = body["total"].as_u64().unwrap_or(0);
        if total > 0 {
            return Ok(total);
        }
        anyhow::ensure!(Instant::now() < deadline, "no events for {query} in 60 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every form control on the page has a label (`<label for>` or wrapping).
const UNLABELLED: &str = "return [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && (!e.labels || e.labels.length === 0))
    .map(e => e.outerHTML);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_signs_in_with_totp_searches_sees_a_live_alert_and_a_dashboard()
-> anyhow::Result<()> {
    let out = shots("analyst");
    let Some(browser) = Browser::start(&out).await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    // A copy of the rule pack: the test breaks a rule file later.
    let rules = tmp.path().join("detections");
    copy_dir(&PathBuf::from(rules_dir()), &rules)?;
    let up = Up::start_with(tmp.path(), &["--rules", &rules.display().to_string()])?;
    let (client, _) =
        yagura_agent::tls::pinned_client(Some(&up.fingerprint), Duration::from_secs(10))?;
    let collector = url_host(&up.url);

    // Any console page without a session leads to the sign-in page, and back after it.
    browser
        .goto(&format!(
            "{}/console/search?q=event.dataset:yagura.demo",
            up.url
        ))
        .await?;
    browser.wait_for("#login-form").await?;
    let at = browser.client.current_url().await?;
    assert_eq!(at.path(), "/console/login", "redirected to sign in: {at}");
    assert_eq!(
        browser.eval(UNLABELLED).await?,
        json!([]),
        "login page labels"
    );
    browser.screenshot("login").await?;
    browser
        .sign_in_enrolling_totp(&up.console_user, &up.console_password)
        .await?;
    browser.wait_for("#q").await?;
    let at = browser.client.current_url().await?;
    assert_eq!(at.path(), "/console/search", "back where it started: {at}");
    let whoami = browser.wait_for("#whoami").await?.text().await?;
    assert!(whoami.contains(&up.console_user), "{whoami}");

    // A search: histogram and rows.
    wait_for_total(&up, &client, "event.dataset:yagura.demo").await?;
    browser
        .fill("#q", "event.dataset:yagura.demo AND event.outcome:failure")
        .await?;
    let pressed = Instant::now();
    browser.wait_for("#q").await?.send_keys(ENTER).await?;
    browser
        .wait_until(
            "search results",
            "return document.getElementById('page').dataset.state === 'ready'
                && document.querySelectorAll('#results tr.result-row').length > 0
                && document.querySelectorAll('#histogram rect.bar').length > 0;",
        )
        .await?;
    let rendered = pressed.elapsed();
    let rows = browser
        .eval("return document.querySelectorAll('#results tr.result-row').length;")
        .await?;
    println!("search rendered {rows} rows with its histogram {rendered:?} after Enter");
    let shown = browser
        .eval("return document.getElementById('results').textContent;")
        .await?;
    assert!(shown.as_str().unwrap_or_default().contains("yagura.demo"));
    let at = browser.client.current_url().await?;
    assert!(
        at.query()
            .unwrap_or_default()
            .contains("event.outcome%3Afailure"),
        "the URL holds the query: {at}"
    );
    assert_eq!(
        browser.eval(UNLABELLED).await?,
        json!([]),
        "search page labels"
    );
    browser.screenshot("search").await?;

    // Keyboard: Tab from the top reaches the query box; a focused result row opens
    // with Enter.
    browser
        .eval("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); return true;")
        .await?;
    let mut reached = false;
    for _ in 0..15 {
        browser.press(TAB).await?;
        if browser.eval("return document.activeElement.id;").await? == json!("q") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the query box is reachable with Tab");
    browser.press_on("#results tr.result-row", ENTER).await?;
    browser
        .wait_until(
            "the event detail",
            "return !document.getElementById('event-detail').hidden
                && document.getElementById('event-json').textContent.includes('yagura.demo')
                && !document.getElementById('event-provenance').textContent.startsWith('Checking');",
        )
        .await?;
    let provenance = browser
        .eval("return document.getElementById('event-provenance').textContent;")
        .await?;
    assert!(
        provenance.as_str().unwrap_or_default().contains("verified"),
        "provenance with its verification: {provenance}"
    );
    browser.screenshot("event-detail").await?;

    // A facet value filters by click; a drag across the histogram narrows the range.
    let facet = browser.wait_for("#facets button.facet-value").await?;
    let value = facet.text().await?;
    facet.click().await?;
    browser
        .wait_until(
            "the facet filter",
            "return document.getElementById('page').dataset.state === 'ready';",
        )
        .await?;
    let q = browser
        .eval("return document.getElementById('q').value;")
        .await?;
    assert!(
        q.as_str()
            .unwrap_or_default()
            .ends_with(&format!(" AND event.dataset:{value}")),
        "the clicked value is added to the query: {q}"
    );
    let chart = browser.wait_for("#histogram").await?;
    let drag = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: chart,
            duration: None,
            x: -200.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(100)),
            x: 300.0,
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.client.perform_actions(drag).await?;
    browser
        .wait_until(
            "the zoomed range",
            "return location.search.includes('range=custom')
                && document.getElementById('range').value === 'custom'
                && document.getElementById('page').dataset.state === 'ready';",
        )
        .await?;
    browser.screenshot("zoomed").await?;

    // A syntax error comes back with its message, pointed at its place.
    browser.fill("#q", "user.name:(admin").await?;
    browser.wait_for("#q").await?.send_keys(ENTER).await?;
    browser
        .wait_until(
            "the syntax error",
            "const p = document.getElementById('query-error-pointer');
             return !!p && p.textContent.includes('^');",
        )
        .await?;
    let message = browser
        .wait_for("#query-error-message")
        .await?
        .text()
        .await?;
    assert!(!message.is_empty(), "an error message");
    browser.screenshot("syntax-error").await?;

    // Alerts: the page is live; a CSRF attempt on the shop raises an alert that appears
    // without a reload.
    browser
        .goto(&format!("{}/console/alerts?status=", up.url))
        .await?;
    browser
        .wait_until(
            "the live alert stream",
            "return document.getElementById('live-status').textContent === 'live';",
        )
        .await?;
    browser
        .eval("window.__sameDocument = true; return true;")
        .await?;
    let before = browser
        .eval("return document.querySelectorAll('#alerts tr.alert-row').length;")
        .await?
        .as_u64()
        .unwrap_or(0);
    let refused = client
        .post(format!("{}/shop/api/login", up.url))
        .header(header::ORIGIN, "https://evil.example")
        .json(&json!({"email": "x@example.org", "password": "whatever it is"}))
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 403);
    browser
        .wait_until(
            "the new alert",
            "return [...document.querySelectorAll('#alerts tr.alert-row')]
                .some(r => r.textContent.includes('cross-site request forgery'));",
        )
        .await?;
    assert_eq!(
        browser
            .eval("return window.__sameDocument === true;")
            .await?,
        json!(true),
        "no reload happened"
    );
    let after = browser
        .eval("return document.querySelectorAll('#alerts tr.alert-row').length;")
        .await?
        .as_u64()
        .unwrap_or(0);
    assert!(after > before, "{before} → {after} rows");
    browser.screenshot("alert-live").await?;

    // Its detail and an action, by keyboard.
    browser.press_on("#alerts tr.alert-row", ENTER).await?;
    browser
        .press_on("#alert-detail button[data-action='ack']", ENTER)
        .await?;
    browser
        .wait_until(
            "the acknowledgement",
            "return document.getElementById('alert-history').textContent.includes('acknowledged');",
        )
        .await?;
    assert_eq!(
        browser.eval(UNLABELLED).await?,
        json!([]),
        "alert page labels"
    );
    browser.screenshot("alert-detail").await?;

    // A dashboard: every panel drawn with data.
    wait_for_total(
        &up,
        &client,
        "event.category:authentication AND event.outcome:success",
    )
    .await?;
    browser
        .goto(&format!(
            "{}/console/dashboards/authentication-overview",
            up.url
        ))
        .await?;
    browser
        .wait_until(
            "every panel",
            "const panels = [...document.querySelectorAll('.dash-panel')];
             return panels.length > 0 && panels.every(p => p.dataset.state !== 'loading');",
        )
        .await?;
    let panels = browser
        .eval(
            "return [...document.querySelectorAll('.dash-panel')].map(p => ({
                type: p.dataset.type, state: p.dataset.state,
                title: p.querySelector('h2').textContent,
                drawn: p.dataset.type === 'timeseries' ? !!p.querySelector('path.line')
                     : p.dataset.type === 'top' ? p.querySelectorAll('.top-list li').length > 0
                     : p.dataset.type === 'number' ? Number(p.querySelector('.big-number').textContent.replace(/[^0-9]/g, '')) > 0
                     : p.querySelectorAll('tbody tr').length > 0 }));",
        )
        .await?;
    browser.screenshot("dashboard").await?;
    let panels = panels.as_array().cloned().unwrap_or_default();
    assert_eq!(panels.len(), 6, "{panels:?}");
    for panel in &panels {
        assert_eq!(panel["state"], "ready", "{panel}");
        assert_eq!(panel["drawn"], true, "drawn with data: {panel}");
    }

    // The fleet and rules pages draw too.
    for (page, ready) in [
        ("fleet", "#agents tr.agent-row"),
        ("rules", "#rules tr.rule-row"),
    ] {
        browser.goto(&format!("{}/console/{page}", up.url)).await?;
        browser.wait_for(ready).await?;
        browser.screenshot(page).await?;
    }

    // A broken rule file is refused (the running rules stay) and every page says so,
    // with the file and line.
    std::fs::write(
        rules.join("broken.yml"),
        "title: broken\nlogsource:\n    product: linux\ndetection:\n    sel:\n        a: b\n    condition: sel and\n",
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.goto(&format!("{}/console/search", up.url)).await?;
        browser.wait_for("#q").await?;
        // The notice is fetched once the page has drawn.
        let mut shown = String::new();
        for _ in 0..20 {
            shown = browser
                .eval("const n = document.getElementById('notice'); return n.hidden ? '' : n.textContent;")
                .await?
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !shown.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if shown.contains("broken.yml:7:") {
            assert!(shown.contains("refused"), "{shown}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no notice of the refused rules: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    browser.screenshot("rules-refused-notice").await?;

    // Nothing was ever fetched from anywhere but the collector.
    let urls = browser.requested_urls().await?;
    assert!(!urls.is_empty());
    for url in &urls {
        assert!(
            url.starts_with("data:") || url_host(url) == collector,
            "a request to another host: {url}"
        );
    }
    browser.close().await?;
    Ok(())
}

fn url_host(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// A customer's session — a complete sign-in, just not an analyst's — gets no console
/// page and no API answer; neither does a session still waiting for its second factor
/// or no session at all; and a console session's write needs its CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_analysts_with_both_factors_reach_the_console_and_its_api() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let up = Up::start(tmp.path())?;
    let (client, _) =
        yagura_agent::tls::pinned_client(Some(&up.fingerprint), Duration::from_secs(10))?;
    // (This client follows no redirect: the 303s are checked as such.)
    let base = &up.url;
    let pages = [
        "/console/",
        "/console/search?q=*",
        "/console/alerts",
        "/console/fleet",
        "/console/rules",
        "/console/dashboards",
        "/console/dashboards/fleet-health",
    ];
    let apis = [
        "/api/v1/search?q=*",
        "/api/v1/alerts",
        "/api/v1/agents",
        "/api/v1/rules",
        "/api/v1/dashboards",
        "/api/v1/export?q=*",
        "/metrics",
    ];
    let get = async |path: &str, cookie: Option<&str>| -> anyhow::Result<(u16, String)> {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((status, location))
    };

    // No session: pages send to the sign-in page, the API answers 401.
    for page in pages {
        let (status, location) = get(page, None).await?;
        assert_eq!(status, 303, "{page}");
        assert!(
            location.starts_with("/console/login?next="),
            "{page}: {location}"
        );
    }
    for api in apis {
        assert_eq!(get(api, None).await?.0, 401, "{api}");
    }

    // A customer, fully signed in.
    let email = "customer@example.org";
    let password = "correct horse battery staple";
    let registered = client
        .post(format!("{base}/shop/api/register"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    assert!(registered.status().is_success());
    let (cookie, body) = sign_in(&client, base, email, password).await?;
    assert_eq!(
        body["mfa_required"], false,
        "customers sign in with a password"
    );
    for page in pages {
        assert_eq!(get(page, Some(&cookie)).await?.0, 403, "customer on {page}");
    }
    for api in apis {
        assert_eq!(get(api, Some(&cookie)).await?.0, 403, "customer on {api}");
    }

    // The analyst (admin) account, before its second factor: not yet.
    let (cookie, body) = sign_in(&client, base, &up.console_user, &up.console_password).await?;
    assert_eq!(body["mfa_required"], true);
    for page in pages {
        let (status, location) = get(page, Some(&cookie)).await?;
        assert_eq!(status, 303, "half-signed-in on {page}");
        assert!(location.starts_with("/console/login"), "{location}");
    }
    for api in apis {
        assert_eq!(
            get(api, Some(&cookie)).await?.0,
            401,
            "half-signed-in on {api}"
        );
    }

    // With the second factor: everything.
    let (cookie, csrf) = second_factor(&client, base, &cookie, &body).await?;
    for page in pages {
        assert_eq!(get(page, Some(&cookie)).await?.0, 200, "analyst on {page}");
    }
    for api in apis {
        assert_eq!(get(api, Some(&cookie)).await?.0, 200, "analyst on {api}");
    }

    // A console write without the CSRF token, or from another site, is refused.
    let write = |token: Option<&str>, origin: Option<&str>| {
        let mut request = client
            .post(format!("{base}/api/v1/alerts/none/ack"))
            .header(header::COOKIE, &cookie);
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.send()
    };
    assert_eq!(write(None, None).await?.status().as_u16(), 403);
    assert_eq!(
        write(Some(&csrf), Some("https://evil.example"))
            .await?
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        write(Some(&csrf), None).await?.status().as_u16(),
        404,
        "with its token the write reaches the API (no such alert)"
    );

    // An analyst triages alerts but cannot revoke an agent; the admin can.
    let analyst = "analyst@example.org";
    let created = std::process::Command::new(&yagura_e2e::binaries().collector)
        .args([
            "shop",
            "create-account",
            analyst,
            "--role",
            "analyst",
            "--data-dir",
        ])
        .arg(&up.data_arg)
        .env("YAGURA_SHOP_PASSWORD", password)
        .output()?;
    assert!(created.status.success(), "{created:?}");
    let (analyst_cookie, body) = sign_in(&client, base, analyst, password).await?;
    let (analyst_cookie, analyst_csrf) =
        second_factor(&client, base, &analyst_cookie, &body).await?;
    let agents: Value = client
        .get(format!("{base}/api/v1/agents"))
        .header(header::COOKIE, &analyst_cookie)
        .send()
        .await?
        .json()
        .await?;
    let agent = agents
        .as_array()
        .and_then(|all| all.iter().find(|a| a["kind"] == "agent"))
        .and_then(|a| a["id"].as_str())
        .unwrap_or_default()
        .to_string();
    let revoke = |cookie: &str, token: &str| {
        client
            .post(format!("{base}/api/v1/agents/{agent}/revoke"))
            .header(header::COOKIE, cookie)
            .header("x-csrf-token", token)
            .send()
    };
    assert_eq!(
        revoke(&analyst_cookie, &analyst_csrf)
            .await?
            .status()
            .as_u16(),
        403
    );
    assert_eq!(revoke(&cookie, &csrf).await?.status().as_u16(), 200);
    Ok(())
}

/// Enrols a TOTP second factor for a session waiting for one (`body`: its sign-in
/// answer) and confirms it with a code: the session's new cookie and CSRF token.
async fn second_factor(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    body: &Value,
) -> anyhow::Result<(String, String)> {
    let csrf = body["csrf_token"].as_str().unwrap_or_default().to_string();
    let enrolment: Value = client
        .post(format!("{base}/shop/api/mfa/enroll"))
        .header(header::COOKIE, cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await?
        .json()
        .await?;
    let uri = enrolment["otpauth_uri"].as_str().unwrap_or_default();
    let secret = uri
        .split("secret=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .unwrap_or_default();
    let confirmed = client
        .post(format!("{base}/shop/api/mfa/confirm"))
        .header(header::COOKIE, cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"code": totp_now(secret)?}))
        .send()
        .await?;
    anyhow::ensure!(
        confirmed.status().is_success(),
        "confirm: {}",
        confirmed.status()
    );
    let cookie = session_cookie(&confirmed).unwrap_or_else(|| cookie.to_string());
    let confirmed: Value = confirmed.json().await?;
    let csrf = confirmed["csrf_token"]
        .as_str()
        .unwrap_or(&csrf)
        .to_string();
    Ok((cookie, csrf))
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<(String, Value)> {
    let response = client
        .post(format!("{base}/shop/api/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "sign-in: {}",
        response.status()
    );
    let cookie = session_cookie(&response).unwrap_or_default();
    Ok((cookie, response.json().await?))
}

/// Benchmark, not part of `cargo test`: from pressing Enter on a term query to its rows
/// and histogram drawn, measured in the page (a `keydown` listener and the next animation
/// frame after the page says it is ready), over a data directory prepared with
/// `yagura bench search --events 10000000 --dir DIR`:
///
/// ```sh
/// YAGURA_E2E_RELEASE=1 YAGURA_CONSOLE_BENCH_DIR=DIR cargo test -p yagura-e2e \
///   --test console -- --ignored --nocapture console_search_latency
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: needs a data directory prepared by `yagura bench search`"]
async fn console_search_latency() -> anyhow::Result<()> {
    let data = std::env::var("YAGURA_CONSOLE_BENCH_DIR")
        .map_err(|_| anyhow::anyhow!("set YAGURA_CONSOLE_BENCH_DIR (see the doc comment)"))?;
    let out = shots("bench");
    let Some(browser) = Browser::start(&out).await? else {
        anyhow::bail!("the benchmark needs chromium and chromium-driver");
    };
    let tmp = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&data, tmp.path().join("data"))?;
    let collector = yagura_e2e::Collector::start(tmp.path(), "")?;
    let email = format!("bench-{}@example.org", uuid::Uuid::now_v7().simple());
    let password = "correct horse battery staple";
    let created = std::process::Command::new(&yagura_e2e::binaries().collector)
        .args([
            "shop",
            "create-account",
            &email,
            "--role",
            "analyst",
            "--config",
        ])
        .arg(&collector.config)
        .env("YAGURA_SHOP_PASSWORD", password)
        .output()?;
    anyhow::ensure!(
        created.status.success(),
        "create-account: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    browser
        .goto(&format!("{}/console/search?range=7d", collector.url))
        .await?;
    browser.sign_in_enrolling_totp(&email, password).await?;
    browser.wait_for("#q").await?;
    browser
        .eval(
            "window.__bench = {};
             document.addEventListener('keydown', e => {
               if (e.key === 'Enter' && e.target.id === 'q') { window.__bench.t0 = performance.now(); window.__bench.t1 = null; }
             }, true);
             new MutationObserver(() => {
               const page = document.getElementById('page');
               if (page.dataset.state === 'ready' && window.__bench.t0 && !window.__bench.t1) {
                 requestAnimationFrame(() => { window.__bench.t1 = performance.now(); });
               }
             }).observe(document.getElementById('page'), { attributes: true, attributeFilter: ['data-state'] });
             return true;",
        )
        .await?;
    let users = ["admin", "root", "oracle", "deploy", "alice"];
    let mut times = Vec::new();
    let mut totals = Vec::new();
    for round in 0..(users.len() * 4) {
        let query = format!("user.name:{}", users[round % users.len()]);
        browser.fill("#q", &query).await?;
        browser.wait_for("#q").await?.send_keys(ENTER).await?;
        browser
            .wait_until(
                "the rendered results",
                "return !!(window.__bench.t1 && document.querySelectorAll('#results tr.result-row').length > 0
                    && document.querySelectorAll('#histogram rect.bar').length > 0);",
            )
            .await?;
        let took = browser
            .eval("return window.__bench.t1 - window.__bench.t0;")
            .await?
            .as_f64()
            .unwrap_or(f64::NAN);
        let total = browser
            .eval("return document.getElementById('result-count').textContent;")
            .await?;
        // The first round of each query is the cold one: report warm rounds.
        if round >= users.len() {
            times.push(took);
        }
        totals.push(format!("{query}: {total}"));
    }
    browser.screenshot("search-10m").await?;
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!("{}", totals.join("\n"));
    println!(
        "Enter → rendered rows and histogram, {} warm runs: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        times.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
    browser.close().await?;
    Ok(())
}
