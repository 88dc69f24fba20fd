//! How CLI commands reach a running collector's API: URL, bearer token and the pinned
//! certificate fingerprint (read from the data directory when not given).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Collector API URL.
    #[arg(long, env = "YAGURA_URL", default_value = "https://127.0.0.1:8443")]
    pub url: String,
    /// API token (printed at the collector's first start, or `yagura api-token create`).
    #[arg(long, env = "YAGURA_TOKEN", hide_env_values = true)]
    pub token: String,
    /// SHA-256 fingerprint of the collector certificate; read from the data directory
    /// when not given.
    #[arg(long, env = "YAGURA_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// The collector data directory, to read the certificate from.
    #[arg(long, default_value = super::up::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl RemoteArgs {
    pub(super) fn client(&self) -> anyhow::Result<reqwest::Client> {
        let fingerprint = match &self.fingerprint {
            Some(f) => f.clone(),
            None => {
                let (cert, _) = yagura_collector::tls::current_paths(&self.data_dir.join("tls"));
                yagura_collector::tls::fingerprint_of_pem_file(&cert).with_context(|| {
                    format!(
                        "no --fingerprint given and {} is not readable",
                        cert.display()
                    )
                })?
            }
        };
        let (client, _) =
            yagura_agent::tls::pinned_client(Some(&fingerprint), Duration::from_secs(60))
                .context("building the HTTPS client")?;
        Ok(client)
    }

    /// Sends `GET` or `POST` to `path`; a problem document becomes an error.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        self.call_with(method, path, None).await
    }

    /// [`Self::call`] with a JSON body.
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = self
            .client()?
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let body: Value = response.json().await.context("reading the response")?;
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            anyhow::bail!("{status}: {detail}");
        }
        Ok(body)
    }
}
