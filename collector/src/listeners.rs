//! Network segments: which listener serves which routes, with which certificate, to whom.
//!
//! By default one listener (`listen`) serves everything. `[listeners.ingest]`,
//! `[listeners.shop]` and `[listeners.console]` each move a segment to a listener of its
//! own — its own address, certificate and CIDR allowlist — so agents reach ingest from the
//! endpoint networks, customers reach the shop in a DMZ, and only the management network
//! reaches the console, the API and `/metrics`. A route a listener does not serve is a
//! 404 there, exactly as if it did not exist. A connection from an address outside the
//! listener's allowlist is closed before the TLS handshake (no certificate, no banner) and
//! counted in `yagura_http_connections_refused_total{listener}`.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::api::Segments;
use crate::api::metrics::HttpMetrics;
use crate::config::CollectorConfig;
use crate::tls::TlsIdentity;

/// One listener to bind: what it serves, where, to whom.
#[derive(Debug, Clone)]
pub struct ListenerPlan {
    /// `main`, or the segment's name.
    pub name: &'static str,
    pub segments: Segments,
    pub listen: SocketAddr,
    /// Client addresses admitted; empty: every address.
    pub allow: Vec<IpNet>,
    /// Its own certificate chain and key (PEM); `None`: the collector's identity.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The listeners a configuration asks for: one per segment given its own, and the main
/// listener for the segments left (none when every segment has its own).
pub fn plan(config: &CollectorConfig) -> Vec<ListenerPlan> {
    let own = &config.listeners;
    let rest = Segments {
        ingest: own.ingest.is_none(),
        shop: own.shop.is_none(),
        console: own.console.is_none(),
    };
    let mut plans = Vec::new();
    if !rest.is_empty() {
        plans.push(ListenerPlan {
            name: "main",
            segments: rest,
            listen: config.listen,
            allow: config.allow.clone(),
            tls: None,
        });
    }
    for (name, listener) in own.named() {
        let segments = Segments {
            ingest: name == "ingest",
            shop: name == "shop",
            console: name == "console",
        };
        plans.push(ListenerPlan {
            name,
            segments,
            listen: listener.listen,
            allow: listener.allow.clone(),
            tls: listener.cert_path.clone().zip(listener.key_path.clone()),
        });
    }
    plans
}

/// A bound listener, as the start banner and the callers of [`crate::server::run`] see it.
#[derive(Debug, Clone)]
pub struct Listening {
    pub name: &'static str,
    pub segments: Segments,
    pub address: SocketAddr,
    pub url: String,
    /// SHA-256 of the certificate this listener presents (agents pin the ingest one).
    pub fingerprint: String,
}

/// A listener bound and ready to serve.
pub struct BoundListener {
    pub info: Listening,
    tcp: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    allow: Arc<Vec<IpNet>>,
}

/// Binds `plan`'s address with its certificate, or `default` when it has none of its own.
pub fn bind(plan: &ListenerPlan, default: &TlsIdentity) -> anyhow::Result<BoundListener> {
    let own;
    let identity = match &plan.tls {
        Some((cert, key)) => {
            own = TlsIdentity::load(cert, key)
                .with_context(|| format!("the {} listener's certificate", plan.name))?;
            &own
        }
        None => default,
    };
    let tcp = TcpListener::bind(plan.listen)
        .with_context(|| format!("binding {} ({} listener)", plan.listen, plan.name))?;
    tcp.set_nonblocking(true)?;
    let address = tcp.local_addr()?;
    Ok(BoundListener {
        info: Listening {
            name: plan.name,
            segments: plan.segments,
            address,
            url: format!("https://{address}"),
            fingerprint: identity.fingerprint.clone(),
        },
        tcp,
        tls: identity.server_config()?,
        allow: Arc::new(plan.allow.clone()),
    })
}

impl BoundListener {
    /// Serves `app` until `handle` shuts it down.
    pub async fn serve(
        self,
        app: Router,
        handle: axum_server::Handle<SocketAddr>,
        http: Arc<HttpMetrics>,
    ) -> io::Result<()> {
        http.watch_listener(self.info.name);
        // TCP_NODELAY: an ack is a small write after a large read; without it Nagle's
        // algorithm and delayed ACKs add tens of milliseconds to every acknowledgement.
        let tls = RustlsAcceptor::new(RustlsConfig::from_config(self.tls))
            .acceptor(NoDelayAcceptor::new());
        let acceptor = AdmitAcceptor {
            inner: tls,
            allow: self.allow,
            listener: self.info.name,
            http,
        };
        axum_server::from_tcp(self.tcp)?
            .acceptor(acceptor)
            .handle(handle)
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
    }
}

/// Whether `peer` is admitted by `allow` (empty: everyone). An IPv4 client of a dual-stack
/// listener arrives as `::ffff:a.b.c.d` and is matched as the IPv4 address it is.
pub fn admitted(allow: &[IpNet], peer: std::net::IpAddr) -> bool {
    let peer = peer.to_canonical();
    allow.is_empty() || allow.iter().any(|net| net.contains(&peer))
}

/// Closes connections from outside the allowlist before the inner acceptor (TLS) sees
/// them.
#[derive(Clone)]
struct AdmitAcceptor<A> {
    inner: A,
    allow: Arc<Vec<IpNet>>,
    listener: &'static str,
    http: Arc<HttpMetrics>,
}

type Accepted<T, U> = Pin<Box<dyn Future<Output = io::Result<(T, U)>> + Send>>;

impl<A, S> Accept<TcpStream, S> for AdmitAcceptor<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Accepted<A::Stream, A::Service>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let peer = stream.peer_addr().map(|a| a.ip());
        match peer {
            Ok(peer) if admitted(&self.allow, peer) => Box::pin(self.inner.accept(stream, service)),
            _ => {
                self.http.refused_connection(self.listener);
                tracing::debug!(
                    listener = self.listener,
                    ?peer,
                    "connection refused: not in the listener's allowlist"
                );
                drop(stream);
                Box::pin(std::future::ready(Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "client address not in the listener's allowlist",
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn allowlists_admit_only_their_networks() {
        let allow: Vec<IpNet> = ["10.9.0.0/24", "fd00::/8"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        assert!(admitted(&allow, ip("10.9.0.7")));
        assert!(admitted(&allow, ip("::ffff:10.9.0.7")), "IPv4-mapped");
        assert!(admitted(&allow, ip("fd12::1")));
        assert!(!admitted(&allow, ip("10.9.1.7")));
        assert!(!admitted(&allow, ip("127.0.0.1")));
        assert!(!admitted(&allow, ip("2001:db8::1")));
        assert!(admitted(&[], ip("203.0.113.9")), "empty: everyone");
    }

    #[test]
    fn plan_gives_the_main_listener_only_what_is_left() {
        let mut config = CollectorConfig::with_data_dir("/d".into());
        let all = plan(&config);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].segments, Segments::ALL);

        let own = |listen: &str| crate::config::SegmentListenerConfig {
            listen: listen.parse().expect("address"),
            allow: Vec::new(),
            cert_path: None,
            key_path: None,
        };
        config.listeners.shop = Some(own("127.0.0.1:9001"));
        let two = plan(&config);
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].name, "main");
        assert!(two[0].segments.ingest && two[0].segments.console && !two[0].segments.shop);
        assert_eq!(two[1].name, "shop");
        assert_eq!(two[1].segments.names(), ["shop"]);

        config.listeners.ingest = Some(own("127.0.0.1:9002"));
        config.listeners.console = Some(own("127.0.0.1:9003"));
        let three = plan(&config);
        assert_eq!(
            three.iter().map(|p| p.name).collect::<Vec<_>>(),
            ["ingest", "shop", "console"],
            "no main listener when every segment has its own"
        );
    }
}
