//! `Upstream`: the client that talks to origins — hyper-util's pooled client over
//! hyper-rustls (HTTP/1.1 and HTTP/2 by ALPN), trusting the standard web roots plus any extra
//! PEM roots given with `--upstream-ca`; for each upstream proxy configured, a pool whose
//! connections are tunnels through it (`chain`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::chain::{ChainConnector, ChainProxy, OriginTcp, UpstreamFigures};
use super::origin_errors::{check_framing, classify};
use super::own_addrs::{GuardedConnector, OwnAddrs};
use crate::config::UpstreamConfig;
use crate::proxy::error::ProxyError;

/// Header fields an origin's response head may have at most.
const MAX_RESPONSE_HEADERS: usize = 256;
/// Bytes an origin's response head may take at most (hyper's read buffer must hold it).
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024 + 16 * 1024;

/// A request body on its way to an origin.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// The extra roots file could not be used.
    #[error("upstream CA file {path}: {detail}")]
    Roots {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("upstream TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The connection pools to origins: direct, and one through each upstream proxy.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<GuardedConnector>, UpstreamBody>,
    /// One pool per upstream proxy, in the order of `UpstreamConfig::proxies`.
    chained: Vec<(
        ChainProxy,
        Client<HttpsConnector<ChainConnector>, UpstreamBody>,
    )>,
    /// The proxy's own sockets, which no origin connection may reach.
    own: OwnAddrs,
    /// TLS to origins offering HTTP/1.1 only, for connections that carry an upgrade.
    tls_http1: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// A connection of its own to an origin: plain TCP or TLS over it.
pub type OriginStream = Either<OriginTcp, tokio_rustls::client::TlsStream<OriginTcp>>;

/// How a request reaches its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A connection of our own.
    Direct,
    /// A tunnel through the upstream proxy of this index in `UpstreamConfig::proxies`.
    Via(usize),
}

impl Upstream {
    /// A client with the given timeouts and trust.
    pub fn new(
        config: &UpstreamConfig,
        provider: Arc<CryptoProvider>,
        own: OwnAddrs,
    ) -> Result<Upstream, UpstreamSetupError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.extra_roots {
            add_pem_roots(&mut roots, path)?;
        }
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http1_max_headers(MAX_RESPONSE_HEADERS)
            .http1_max_buf_size(MAX_RESPONSE_HEAD_BYTES)
            .build(tls_over(
                GuardedConnector::new(http, own.clone()),
                tls.clone(),
            ));
        let chained = config.proxies.iter().map(ChainProxy::new).map(|proxy| {
            let connector = ChainConnector::new(proxy.clone(), config.connect_timeout);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(config.idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http1_max_headers(MAX_RESPONSE_HEADERS)
                .http1_max_buf_size(MAX_RESPONSE_HEAD_BYTES)
                .build(tls_over(connector, tls.clone()));
            (proxy, client)
        });
        let chained = chained.collect();
        let mut tls_http1 = tls.clone();
        tls_http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Upstream {
            client,
            chained,
            own,
            tls_http1: tokio_rustls::TlsConnector::from(Arc::new(tls_http1)),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        })
    }

    /// The upstream proxy a route goes through, if any.
    pub fn chain(&self, route: Route) -> Option<&ChainProxy> {
        match route {
            Route::Direct => None,
            Route::Via(index) => self.chained.get(index).map(|(proxy, _)| proxy),
        }
    }

    /// Every upstream proxy's figures, in configuration order.
    pub fn figures(&self) -> Vec<UpstreamFigures> {
        self.chained
            .iter()
            .map(|(proxy, _)| proxy.figures())
            .collect()
    }

    /// Counts one request or tunnel sent by `route`.
    pub fn count_request(&self, route: Route) {
        if let Some(proxy) = self.chain(route) {
            proxy
                .counters()
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts `bytes` of a cache hit against the upstream `route` would have fetched it
    /// through.
    pub fn count_kept_off(&self, route: Route, bytes: u64) {
        if let Some(proxy) = self.chain(route) {
            proxy
                .counters()
                .bytes_kept_off
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A TCP stream to `host:port` for a tunnel, by `route`.
    pub async fn dial(&self, host: &str, port: u16, route: Route) -> Result<OriginTcp, ProxyError> {
        let authority = format!("{host}:{port}");
        if let Some(proxy) = self.chain(route) {
            self.count_request(route);
            return proxy
                .dial(host, port, self.connect_timeout)
                .await
                .map_err(|e| ProxyError::UpstreamProxy {
                    proxy: e.proxy,
                    detail: e.detail,
                });
        }
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(stream)) => match self.own.check(&stream) {
                Ok(()) => Ok(OriginTcp::direct(stream)),
                Err(refused) => Err(ProxyError::Loop {
                    target: refused.target.to_string(),
                }),
            },
            Ok(Err(e)) => Err(ProxyError::Connect {
                origin: authority,
                detail: e.to_string(),
            }),
            Err(_) => Err(ProxyError::Timeout {
                origin: authority,
                after: self.connect_timeout,
            }),
        }
    }

    /// A connection of its own to `host:port` by `route`, with TLS (HTTP/1.1 only) when
    /// `tls`: for a request that upgrades its connection, which a pooled one cannot carry.
    pub async fn dial_http1(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        route: Route,
    ) -> Result<OriginStream, ProxyError> {
        let tcp = self.dial(host, port, route).await?;
        if !tls {
            return Ok(Either::Left(tcp));
        }
        let origin = format!("{host}:{port}");
        let name = ServerName::try_from(host.to_owned()).map_err(|e| ProxyError::Tls {
            origin: origin.clone(),
            detail: e.to_string(),
        })?;
        match tokio::time::timeout(self.connect_timeout, self.tls_http1.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(Either::Right(stream)),
            Ok(Err(error)) => Err(ProxyError::Tls {
                origin,
                detail: error.to_string(),
            }),
            Err(_) => Err(ProxyError::Timeout {
                origin,
                after: self.connect_timeout,
            }),
        }
    }

    /// The limit for an origin's response headers to arrive.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Sends `request` (absolute URI) by `route` and waits for the response headers, within
    /// the limit.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        route: Route,
    ) -> Result<Response<Incoming>, ProxyError> {
        let origin = request
            .uri()
            .authority()
            .map_or_else(String::new, |a| a.to_string());
        let sent = match route {
            Route::Via(index) => match self.chained.get(index) {
                Some((_, client)) => {
                    self.count_request(route);
                    client.request(request)
                }
                None => self.client.request(request),
            },
            Route::Direct => self.client.request(request),
        };
        match tokio::time::timeout(self.response_timeout, sent).await {
            Ok(Ok(response)) => check_framing(origin, response),
            Ok(Err(error)) => Err(classify(origin, &error, self.connect_timeout)),
            Err(_) => Err(ProxyError::Timeout {
                origin,
                after: self.response_timeout,
            }),
        }
    }
}

/// TLS (or plain HTTP) over `connector`'s streams, HTTP/2 or HTTP/1.1 by ALPN.
fn tls_over<C>(connector: C, tls: ClientConfig) -> HttpsConnector<C> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector)
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), UpstreamSetupError> {
    let roots_error = |detail: String| UpstreamSetupError::Roots {
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| roots_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| roots_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(roots_error("no PEM certificate in the file".to_owned()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| roots_error(e.to_string()))?;
    }
    Ok(())
}
