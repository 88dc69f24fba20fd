//! A headless Chromium driven through chromedriver (WebDriver), for the console's
//! browser tests: started per test on a free port, screenshots saved under the test's
//! output directory, and the helpers the tests share (sign in with TOTP, wait for a
//! page's data).
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium
//! chromium-driver`, done by `.ci/run`). Without them a test is skipped with the reason
//! printed, and fails instead under `YAGURA_TEST_STRICT=1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const DRIVERS: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
const BROWSERS: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/// How long a page may take to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

fn strict() -> bool {
    std::env::var("YAGURA_TEST_STRICT").is_ok_and(|v| v == "1")
}

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Browser {
    /// A fresh headless Chromium, or `None` (test skipped) when the machine has none.
    /// Screenshots go to `shots`.
    pub async fn start(shots: &Path) -> anyhow::Result<Option<Browser>> {
        let (Some(driver), Some(browser)) = (first_existing(DRIVERS), first_existing(BROWSERS))
        else {
            let reason = "chromium and chromium-driver are not installed \
                          (apt-get install -y chromium chromium-driver)";
            if strict() {
                bail!("YAGURA_TEST_STRICT=1 and {reason}");
            }
            eprintln!("skipped: {reason}");
            return Ok(None);
        };
        std::fs::create_dir_all(shots)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(shots.join("chromedriver.log"))?;
        let mut driver = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = driver.kill();
                bail!("chromedriver did not listen on {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    "--no-first-run", "--disable-extensions",
                    "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", "--disable-default-apps",
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            bail!("capabilities are an object");
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("starting a Chromium session")?;
        Ok(Some(Browser {
            client,
            driver,
            shots: shots.to_path_buf(),
        }))
    }

    /// Saves the page as `NAME.png` in the screenshot directory.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.client.goto(url).await?)
    }

    /// The element matching `css`, once it exists.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for `{css}`"))
    }

    /// Runs `script` (a function body returning a value) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, Vec::new()).await?)
    }

    /// Waits until `script` (a function body) returns true.
    pub async fn wait_until(&self, what: &str, script: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            // A script that throws (an element the page has not drawn yet) is "not yet":
            // pages render in steps, and the condition is polled until it holds.
            let last_error = match self.eval(script).await {
                Ok(value) if value.as_bool() == Some(true) => return Ok(()),
                Ok(_) => None,
                Err(error) => Some(error),
            };
            if Instant::now() > deadline {
                let _ = self.screenshot("timeout").await;
                match last_error {
                    Some(error) => bail!("timed out waiting for {what}: {error:#}"),
                    None => bail!("timed out waiting for {what}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.wait_for(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Sends `keys` to whatever has the keyboard focus (WebDriver key codes: Enter is
    /// `\u{E007}`, Tab `\u{E004}`).
    pub async fn press(&self, keys: &str) -> anyhow::Result<()> {
        self.client.active_element().await?.send_keys(keys).await?;
        Ok(())
    }

    /// Focuses the first element matching `css` (as Tab would reach it), then sends
    /// `keys` to it.
    pub async fn press_on(&self, css: &str, keys: &str) -> anyhow::Result<()> {
        self.wait_for(css).await?;
        self.client
            .execute(
                "document.querySelector(arguments[0]).focus(); return true;",
                vec![serde_json::Value::String(css.to_string())],
            )
            .await?;
        self.press(keys).await
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.wait_for(css).await?.click().await?;
        Ok(())
    }

    /// Every resource the page has loaded (scripts, styles, fetches, event streams):
    /// the browser's own record, `performance.getEntriesByType('resource')`.
    pub async fn requested_urls(&self) -> anyhow::Result<Vec<String>> {
        let found = self
            .eval(
                "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)];",
            )
            .await?;
        Ok(found
            .as_array()
            .map(|urls| {
                urls.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Signs in on the console's sign-in page at `url` (which the console redirected to)
    /// with a password and, for an account without a second factor yet, enrols one: reads
    /// the secret the page shows and answers with a code from it. Returns the secret.
    pub async fn sign_in_enrolling_totp(
        &self,
        email: &str,
        password: &str,
    ) -> anyhow::Result<String> {
        self.fill("#email", email).await?;
        self.fill("#password", password).await?;
        self.click("#login-submit").await?;
        self.wait_until(
            "the enrolment step",
            "return !document.getElementById('enrol').hidden && document.getElementById('enrol-secret').textContent.length > 0;",
        )
        .await?;
        let secret = self
            .wait_for("#enrol-secret")
            .await?
            .text()
            .await?
            .trim()
            .to_string();
        self.screenshot("enrol").await?;
        self.fill("#enrol-code", &totp_now(&secret)?).await?;
        self.click("#enrol-submit").await?;
        self.wait_until(
            "the recovery codes",
            "return !document.getElementById('recovery').hidden && document.querySelectorAll('#recovery-codes li').length > 0;",
        )
        .await?;
        self.click("#enrol-continue").await?;
        Ok(secret)
    }

    /// Ends the session and stops chromedriver (also done, less politely, on drop).
    pub async fn close(mut self) -> anyhow::Result<()> {
        let client = self.client.clone();
        let closed = client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        closed?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The current TOTP code (RFC 6238: SHA-1, 6 digits, 30 s) of a base32 secret.
pub fn totp_now(secret: &str) -> anyhow::Result<String> {
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("secret {secret}: {e:?}"))?;
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        None,
        String::new(),
    );
    Ok(totp.generate_current()?)
}
