//! `yagura bench shop`: the shop under load on loopback, measured with wrk.
//!
//! A collector (`yagura serve`, shop on SQLite, indexing on) serves the shop; a few
//! customers sign in, each wrk thread drives one customer's cart — half `GET /cart`,
//! half `PUT /cart/items/{sku}` (a write: the cart rows and its audit record in one
//! transaction, then forwarded, indexed and searchable). Then sign-ins per second with
//! two concurrent clients, which Argon2id bounds by design, and the time of one hash.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::bench_agent::{Guard, read_line_with};
use yagura_collector::shop::infrastructure::password_hash::{HashCost, PasswordHasher};

const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, clap::Args)]
pub struct BenchShopArgs {
    /// Seconds of cart load.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// wrk threads (one customer each).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// wrk connections in all.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Seconds of sign-ins.
    #[arg(long, default_value_t = 10)]
    login_seconds: u64,
    /// Work directory (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

struct Customer {
    cookie: String,
    csrf: String,
}

async fn sign_in(client: &reqwest::Client, url: &str, email: &str) -> anyhow::Result<Customer> {
    let response = client
        .post(format!("{url}/shop/api/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "sign-in: {}",
        response.status()
    );
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("session cookie")?
        .to_string();
    let body: serde_json::Value = response.json().await?;
    Ok(Customer {
        cookie,
        csrf: body["csrf_token"].as_str().context("csrf")?.to_string(),
    })
}

fn lua_script(customers: &[Customer]) -> String {
    let sessions: Vec<String> = customers
        .iter()
        .map(|c| format!("{{cookie = \"{}\", csrf = \"{}\"}}", c.cookie, c.csrf))
        .collect();
    format!(
        r#"sessions = {{ {} }}
local counter = 1
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  s = sessions[id]
  n = 0
end
function request()
  n = n + 1
  local headers = {{ ["Cookie"] = s.cookie, ["X-CSRF-Token"] = s.csrf, ["Content-Type"] = "application/json" }}
  if n % 2 == 0 then
    return wrk.format("GET", "/shop/api/cart", headers)
  end
  local sku = "SKU-" .. (n % 5 + 1)
  return wrk.format("PUT", "/shop/api/cart/items/" .. sku, headers, '{{"quantity":' .. (n % 9 + 1) .. '}}')
end
"#,
        sessions.join(", ")
    )
}

/// The figure after `label` on wrk's output line that starts with it.
fn wrk_figure(output: &str, label: &str) -> Option<String> {
    output
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
}

pub async fn run(args: BenchShopArgs) -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk not found: install it (apt-get install wrk)");
    }
    let (work, remove) = super::bench::work_dir(args.dir, "shop")?;
    let config = work.join("collector.toml");
    std::fs::write(&config, "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (url, rest) = tokio::task::block_in_place(|| {
        read_line_with(&mut child, "yagura collector listening on")
    })?;
    let _collector = Guard(child);
    let fingerprint = tokio::task::block_in_place(|| {
        rest.map_while(Result::ok).find_map(|l| {
            l.strip_prefix("certificate fingerprint (sha256):")
                .map(|f| f.trim().to_string())
        })
    })
    .context("fingerprint")?;
    let (client, _) =
        yagura_agent::tls::pinned_client(Some(&fingerprint), Duration::from_secs(30))?;

    // One hash at the default cost (what every sign-in and registration pays).
    let hasher = PasswordHasher::new(HashCost::default())?;
    let mut hash_times = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        hasher.hash(PASSWORD)?;
        hash_times.push(started.elapsed());
    }
    hash_times.sort();
    let hash_ms = hash_times[hash_times.len() / 2].as_secs_f64() * 1000.0;

    let mut customers = Vec::new();
    for i in 0..args.threads {
        let email = format!("bench{i}@example.org");
        let registered = client
            .post(format!("{url}/shop/api/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(
            registered.status().is_success(),
            "register: {}",
            registered.status()
        );
        let customer = sign_in(&client, &url, &email).await?;
        for sku in 1..=5 {
            let added = client
                .post(format!("{url}/shop/api/cart/items"))
                .header(reqwest::header::COOKIE, &customer.cookie)
                .header("x-csrf-token", &customer.csrf)
                .json(&json!({"sku": format!("SKU-{sku}"), "quantity": 1}))
                .send()
                .await?;
            anyhow::ensure!(added.status().is_success(), "seed cart: {}", added.status());
        }
        customers.push(customer);
    }
    let script = work.join("cart.lua");
    std::fs::write(&script, lua_script(&customers))?;
    let output = tokio::task::block_in_place(|| {
        Command::new("wrk")
            .args([
                &format!("-t{}", args.threads),
                &format!("-c{}", args.connections),
                &format!("-d{}s", args.seconds),
                "--latency",
                "-s",
            ])
            .arg(&script)
            .arg(&url)
            .output()
    })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    let requests = wrk_figure(&text, "Requests/sec:").unwrap_or_default();
    let p50 = wrk_figure(&text, "50%").unwrap_or_default();
    let p99 = wrk_figure(&text, "99%").unwrap_or_default();
    let non_2xx = wrk_figure(&text, "Non-2xx or 3xx responses:").unwrap_or_else(|| "0".into());

    // Sign-ins per second, two clients at once (one per core).
    let deadline = Instant::now() + Duration::from_secs(args.login_seconds);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                if sign_in(&client, &url, "bench0@example.org").await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut logins = 0;
    for task in tasks {
        logins += task.await?;
    }
    let logins_per_second = logins as f64 / args.login_seconds as f64;

    println!(
        "shop benchmark ({} cores; wrk and the collector share them)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "cart (50% GET /cart, 50% PUT /cart/items/{{sku}}; {} threads, {} connections, {} s): {requests} requests/s, p50 {p50}, p99 {p99}, non-2xx {non_2xx}",
        args.threads, args.connections, args.seconds
    );
    println!(
        "sign-ins: {logins_per_second:.1}/s with 2 clients; one Argon2id hash (m=19 MiB, t=2, p=1): {hash_ms:.1} ms median"
    );
    if remove {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
