//! The shop inside the running `yagura up` stack: a brute force and an IDOR attempt
//! against it become audit events the analyst finds in search, and the audit chain they
//! were appended to verifies with `yagura shop audit verify`.

use std::time::{Duration, Instant};

use reqwest::header;
use serde_json::{Value, json};
use yagura_e2e::{Up, binaries};

const PASSWORD: &str = "correct horse battery staple";

struct Session {
    cookie: String,
    csrf: String,
}

async fn login(
    client: &reqwest::Client,
    url: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<(u16, Option<Session>)> {
    let response = client
        .post(format!("{url}/shop/api/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body: Value = response.json().await?;
    Ok((
        status,
        cookie.map(|cookie| Session {
            cookie,
            csrf: body["csrf_token"].as_str().unwrap_or_default().to_string(),
        }),
    ))
}

async fn search_total(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
) -> anyhow::Result<u64> {
    let body: Value = client
        .get(format!("{url}/api/v1/search"))
        .bearer_auth(token)
        .query(&[("q", query), ("limit", "5")])
        .send()
        .await?
        .json()
        .await?;
    Ok(body["total"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_and_idor_through_yagura_up_are_audit_events_in_search() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let Up {
        process: mut up,
        url,
        fingerprint,
        token,
        data_arg,
        ..
    } = Up::start(tmp.path())?;
    let (client, _) =
        yagura_agent::tls::pinned_client(Some(&fingerprint), Duration::from_secs(10))?;

    for email in ["alice@example.org", "mallory@example.org"] {
        let registered = client
            .post(format!("{url}/shop/api/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        assert_eq!(registered.status().as_u16(), 202);
    }
    // Brute force: the sixth guess meets a locked account.
    for _ in 0..6 {
        let (status, _) = login(&client, &url, "alice@example.org", "guess guess guess").await?;
        assert_eq!(status, 401);
    }
    let (locked, _) = login(&client, &url, "alice@example.org", PASSWORD).await?;
    assert_eq!(locked, 401, "locked out, even with the right password");

    // IDOR: mallory asks for a cart that is not hers.
    let (_, mallory) = login(&client, &url, "mallory@example.org", PASSWORD).await?;
    let mallory = mallory.expect("session");
    let own: Value = client
        .get(format!("{url}/shop/api/cart"))
        .header(header::COOKIE, &mallory.cookie)
        .send()
        .await?
        .json()
        .await?;
    assert!(own["id"].is_string(), "{own}");
    let victim_cart = uuid::Uuid::now_v7();
    let idor = client
        .post(format!("{url}/shop/api/carts/{victim_cart}/items"))
        .header(header::COOKIE, &mallory.cookie)
        .header("x-csrf-token", &mallory.csrf)
        .json(&json!({"sku": "TEA-1", "quantity": 1}))
        .send()
        .await?;
    assert_eq!(idor.status().as_u16(), 404);
    let headers = idor.headers().clone();
    assert!(headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()?
            .contains("frame-ancestors 'none'")
    );

    // The audit events reach search through the archive and the index.
    let deadline = Instant::now() + Duration::from_secs(60);
    let queries = [
        "event.dataset:yagura.shop.audit AND event.action:lockout",
        "event.dataset:yagura.shop.audit AND event.action:login AND event.outcome:failure",
        "event.dataset:yagura.shop.audit AND event.action:access_denied",
    ];
    let mut totals = [0u64; 3];
    while Instant::now() < deadline {
        for (total, query) in totals.iter_mut().zip(queries) {
            *total = search_total(&client, &url, &token, query).await?;
        }
        if totals[0] >= 1 && totals[1] >= 6 && totals[2] >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(totals[0] >= 1, "lockout searchable: {totals:?}");
    assert!(totals[1] >= 6, "failed logins searchable: {totals:?}");
    assert!(totals[2] >= 1, "IDOR attempt searchable: {totals:?}");
    let hits: Value = client
        .get(format!("{url}/api/v1/search"))
        .bearer_auth(&token)
        .query(&[("q", queries[2]), ("limit", "1")])
        .send()
        .await?
        .json()
        .await?;
    let hit = &hits["hits"][0];
    let text = hit.to_string();
    assert!(text.contains("mallory@example.org"), "{text}");
    assert!(text.contains(&victim_cart.to_string()), "{text}");

    // A form submission: its phone and address are stored encrypted.
    let submitted = client
        .post(format!("{url}/shop/api/form"))
        .header(header::COOKIE, &mallory.cookie)
        .header("x-csrf-token", &mallory.csrf)
        .json(&json!({
            "name": "Mallory Example", "email": "mallory@example.org",
            "phone": "+44 20 7946 0958", "address": "1 Main Street", "message": "hello"
        }))
        .send()
        .await?;
    assert_eq!(submitted.status().as_u16(), 201);

    // The shop's signing identity signs only inside the collector: a batch under it
    // from the network is refused, even correctly signed with the stolen key.
    let agents: Value = client
        .get(format!("{url}/api/v1/agents"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let shop_id: uuid::Uuid = agents
        .as_array()
        .and_then(|list| list.iter().find(|a| a["kind"] == "shop"))
        .and_then(|a| a["id"].as_str())
        .expect("the shop identity is registered")
        .parse()?;
    let stolen =
        yagura_shared::AgentKey::from_file_text(&std::fs::read_to_string(data.join("shop.key"))?)?;
    let forged = yagura_shared::SignedBatch::seal(
        &stolen,
        shop_id,
        1_000_000,
        chrono::Utc::now(),
        &[yagura_shared::Event::new(chrono::Utc::now())],
    )?;
    let refused = client
        .post(format!("{url}/api/v1/ingest"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(forged.into_bytes())
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 401, "{}", refused.text().await?);

    let status = up.stop("INT", Duration::from_secs(30))?;
    assert!(status.success(), "{status}");
    // The chain the events were appended to verifies offline.
    let verify = std::process::Command::new(&binaries().collector)
        .args(["shop", "audit", "verify", "--data-dir", &data_arg])
        .output()?;
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(out.contains("audit trail intact"), "{out}");

    let shop = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(std::process::Command::new(&binaries().collector)
            .arg("shop")
            .args(args)
            .args(["--data-dir", &data_arg])
            .output()?)
    };
    // The masked export keeps no personal value; an unmasked one is not offered.
    let export = shop(&["export", "--masked"])?;
    assert!(export.status.success());
    let exported = String::from_utf8(export.stdout)?;
    assert!(exported.contains("\"phone\":\"***58\""), "{exported}");
    assert!(exported.contains("m***@example.org"), "{exported}");
    for secret in ["7946", "Main Street", "Mallory", "alice@"] {
        assert!(!exported.contains(secret), "{secret} in {exported}");
    }
    assert!(!shop(&["export"])?.status.success());
    // Key rotation re-encrypts the submission, and the chain records it.
    let rotated = shop(&["rotate-key"])?;
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(
        rotated.status.success() && said.contains("1 submissions re-encrypted"),
        "{said}"
    );
    assert!(
        shop(&["export", "--masked"])?.status.success(),
        "still readable after rotation"
    );
    // A record changed in the database breaks the chain at that record.
    let db = yagura_collector::shop::infrastructure::database::ShopDatabase::open(
        &format!("sqlite://{}", data.join("shop.db").display()),
        None,
    )
    .await?;
    sqlx::query(
        "UPDATE audit_log SET event = REPLACE(event, 'failure', 'success') WHERE sequence = 4",
    )
    .execute(&db.pool)
    .await?;
    db.close().await;
    let broken = shop(&["audit", "verify"])?;
    assert_eq!(broken.status.code(), Some(1));
    let said = String::from_utf8_lossy(&broken.stderr).into_owned();
    assert!(said.contains("BROKEN at record 4"), "{said}");
    Ok(())
}
