//! A real HTTP receiver on loopback standing in for Slack, PagerDuty and webhook
//! consumers: it records every request (path, headers, body, arrival time, the status
//! it answered) and answers as the test tells it — accept, fail with a status, ask to
//! retry later (429 with `Retry-After`), or not listen at all (connection refused).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 202 with PagerDuty's success body on `/v2/enqueue`, else 200 `ok` (Slack's answer).
    Accept,
    /// This status, with a short body.
    Fail(u16),
    /// 429 with `Retry-After: seconds`.
    TooManyRequests { retry_after_seconds: u64 },
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

struct Shared {
    behaviour: Behaviour,
    received: Vec<Received>,
}

pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver listening now.
    pub async fn start() -> anyhow::Result<Self> {
        let mut receiver = Self::reserve().await?;
        receiver.listen().await?;
        Ok(receiver)
    }

    /// A receiver with its port chosen but nothing listening yet: connections are refused
    /// until [`Self::listen`].
    pub async fn reserve() -> anyhow::Result<Self> {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = probe.local_addr()?;
        drop(probe);
        Ok(Receiver {
            address,
            shared: Arc::new(Mutex::new(Shared {
                behaviour: Behaviour::Accept,
                received: Vec::new(),
            })),
            server: None,
        })
    }

    /// Starts listening on the reserved port.
    pub async fn listen(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.address).await?;
        let shared = Arc::clone(&self.shared);
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = Arc::clone(&shared);
            async move { answer(&shared, uri, headers, body) }
        });
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Ok(())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.shared.lock().expect("receiver lock").behaviour = behaviour;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("receiver lock").received.clone()
    }

    /// Requests to `path` that were accepted.
    pub fn accepted(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path && r.accepted())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn answer(shared: &Mutex<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut shared = shared.lock().expect("receiver lock");
    let path = uri.path().to_string();
    let response = match shared.behaviour {
        Behaviour::Accept if path.ends_with("/enqueue") => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"success","message":"Event processed"}"#,
        )
            .into_response(),
        Behaviour::Accept => (StatusCode::OK, "ok").into_response(),
        Behaviour::Fail(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "receiver failing on purpose",
        )
            .into_response(),
        Behaviour::TooManyRequests {
            retry_after_seconds,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_seconds.to_string())],
            "slow down",
        )
            .into_response(),
    };
    shared.received.push(Received {
        path,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
        status: response.status().as_u16(),
    });
    response
}
