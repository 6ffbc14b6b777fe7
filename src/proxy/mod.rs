//! `ProxyService`: the HTTP side of one request — refuse what must not go anywhere, relay
//! upgrades, classify, then ask the cache (`cached`) or go straight to the origin. It owns
//! connection and HTTP concerns only: what to do with a cacheable request is the cache's to
//! say (`Cache::lookup`), the network is `upstream`'s, and building answers from entries is
//! `respond`'s.

mod cached;
pub mod chain;
mod context;
mod counted_body;
mod encoded;
pub mod error;
pub mod headers;
pub mod log;
mod origin_errors;
pub mod origin_tcp;
pub mod own_addrs;
mod prefetch;
pub mod respond;
pub mod splice;
mod stalled_body;
mod target;
mod upgrade;
pub mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HOST, PROXY_AUTHORIZATION};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::field::Empty;
use tracing::{debug_span, Instrument, Span};
use url::Url;

use crate::body::ProxyBody;
use crate::cache::http::namespace::{self, NAMESPACE_HEADER};
use crate::cache::http::policy;
use crate::loggable;
use crate::proxy::error::ProxyError;
pub use context::Context;
pub(crate) use counted_body::CountedBody;
use headers::{add_via, has_host_of, host_of, remove_hop_by_hop, CacheStatus, CACHE_STATUS};
use log::{LoggedBody, RequestSummary};
use upstream::{Route, UpstreamBody};

/// Serves proxy requests: absolute-form from a client, or origin-form inside an intercepted
/// tunnel to `origin`.
#[derive(Clone)]
pub struct ProxyService {
    ctx: Arc<Context>,
    /// `https://host:port` (or `http://`) of the CONNECT tunnel the requests arrive in,
    /// parsed once for all of them.
    origin: Option<Arc<Result<Url, url::ParseError>>>,
    /// The namespace the tunnel's CONNECT named, for requests that name none themselves.
    namespace: Option<Arc<str>>,
    /// The client's address, for its request lines; `None` for a connection that did not
    /// come over a socket (in-process drivers).
    peer: Option<SocketAddr>,
}

impl ProxyService {
    /// A service for the connection of a client at `peer`.
    pub fn new(ctx: Arc<Context>, peer: Option<SocketAddr>) -> ProxyService {
        ProxyService {
            ctx,
            origin: None,
            namespace: None,
            peer,
        }
    }

    /// A service for requests inside a CONNECT tunnel to `origin` (`https://host:port` when
    /// the proxy terminated the client's TLS, `http://host:port` for plain HTTP inside),
    /// opened in `namespace` by the client at `peer`.
    pub fn in_tunnel(
        ctx: Arc<Context>,
        origin: &str,
        namespace: Option<String>,
        peer: Option<SocketAddr>,
    ) -> ProxyService {
        ProxyService {
            ctx,
            origin: Some(Arc::new(Url::parse(origin))),
            namespace: namespace.map(Arc::from),
            peer,
        }
    }

    /// The service as a request handler for `Connections::serve`.
    pub fn handler(
        self,
    ) -> impl Fn(
        Request<Incoming>,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>>
           + Send
           + Sync
           + 'static {
        move |request| Box::pin(self.clone().answer(request))
    }

    /// Answers one request; never fails (errors become responses). A CONNECT reaches it
    /// only inside a tunnel, where it is refused: the front of a client's own connection
    /// hands CONNECTs to `mitm`.
    /// Each request has its own span (method, URL, status and what the cache did), inside
    /// its connection's, at debug level: at info, creating and filling it cost a sixth of a
    /// small hit (BENCHMARKS.md), and the request's own line and its warnings name the URL.
    pub async fn answer(self, request: Request<Incoming>) -> Response<ProxyBody> {
        let span = debug_span!(
            "request",
            method = %request.method(),
            url = Empty,
            status = Empty,
            cache = Empty,
        );
        let response = match self.handle(request).instrument(span.clone()).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        span.record("status", response.status().as_u16());
        response
    }

    async fn handle(self, request: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        if request.method() == Method::CONNECT {
            let error = ProxyError::BadRequest("CONNECT inside a tunnel".to_owned());
            return Ok(error.into_response());
        }
        let started = Instant::now();
        self.ctx.stats.requests.inc();
        let method = request.method().clone();
        let url = match self.target_url(request.uri()) {
            Ok(url) => url,
            Err(error) => return Ok(error.into_response()),
        };
        // Only the request span (debug level) has a URL field: with it off, the current span
        // is the connection's, and the URL is not redacted for nothing.
        let span = Span::current();
        if span.has_field("url") {
            span.record("url", &*loggable::url(url.as_str()));
        }
        let mut request = request;
        // RFC 9112 §3.2.2: the target's authority is the request's Host, whatever Host came
        // (in a tunnel: the authority the tunnel was opened to), before anything reads it —
        // the cache's stored policy compares it, and the origin must see the URL's host.
        if !has_host_of(request.headers(), &url) {
            if let Some(host) = host_of(&url) {
                request.headers_mut().insert(HOST, host);
            }
        }
        let request_namespace = match self.settle_namespace(request.headers_mut()) {
            Ok(settled) => settled,
            Err(error) => return Ok(error.into_response()),
        };
        if let Some(response) = self.answer_locally(&url) {
            return Ok(response);
        }
        if let Some(status) = self.ctx.blocked(&url) {
            self.ctx.stats.blocked.inc();
            tracing::debug!(url = %loggable::url(url.as_str()), status, "blocked");
            let error = ProxyError::Blocked {
                target: loggable::url(url.as_str()).into_owned(),
                by: "a block rule or the blocklist",
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            };
            let summary = RequestSummary {
                method,
                asset: url.to_string(),
                namespace: request_namespace,
                url: url.into(),
                status: error.status(),
                cache: error.cache_status(),
                peer: self.peer,
                started,
                stats: self.ctx.stats.clone(),
            };
            return Ok(finish(error.into_response(), summary));
        }
        if upgrade::is_upgrade(&request) {
            self.ctx.stats.bypasses.inc();
            let (response, cache) = Box::pin(upgrade::relay(self.ctx.clone(), request, &url)).await;
            let summary = RequestSummary {
                method,
                asset: url.to_string(),
                namespace: request_namespace.clone(),
                url: url.into(),
                status: response.status(),
                cache,
                peer: self.peer,
                started,
                stats: self.ctx.stats.clone(),
            };
            return Ok(finish(response, summary));
        }
        let plan = policy::classify_request(
            &method,
            &url,
            request.headers(),
            &self.ctx.policy(),
            self.ctx.config.cache.max_age,
        );
        let asset = match &plan {
            Ok(plan) => plan
                .versioned
                .as_ref()
                .map_or(url.as_str(), |v| v.asset.as_str())
                .to_owned(),
            Err(_) => url.as_str().to_owned(),
        };
        let referrer = self.referrer(&request);
        if plan.is_ok() {
            // What the cache may store must not depend on headers it does not key. Looked for
            // first: comparing names is far cheaper than removing each one (hashing it).
            let unkeyed = &self.ctx.policy().unkeyed_headers;
            if request.headers().keys().any(|name| unkeyed.contains(name)) {
                for name in unkeyed {
                    request.headers_mut().remove(name);
                }
            }
        }
        let (response, cache_status) = match plan {
            Ok(plan) => self.cached(request, &url, plan).await,
            Err(_) if self.ctx.policy().offline() => {
                let error = ProxyError::Offline {
                    url: loggable::url(url.as_str()).into_owned(),
                };
                let status = error.cache_status();
                (error.into_response(), status)
            }
            Err(reason) => {
                self.ctx.stats.bypasses.inc();
                // What the cache holds for the URL is out of date once an unsafe request to
                // it succeeded (RFC 9111 §4.4); the keys come from this request's headers.
                let invalidates = (!method.is_safe()).then(|| request.headers().clone());
                let answered =
                    Box::pin(self.forward(request, &url, CacheStatus::Bypass(reason))).await;
                let status = answered.0.status();
                if let Some(headers) =
                    invalidates.filter(|_| status.is_success() || status.is_redirection())
                {
                    self.ctx.cache.invalidate(&url, &headers).await;
                }
                answered
            }
        };
        let response = match referrer {
            Some(referrer) => self.tap(response, &url, referrer),
            None => response,
        };
        let summary = RequestSummary {
            method,
            url: url.into(),
            status: response.status(),
            cache: cache_status,
            asset,
            namespace: request_namespace.clone(),
            peer: self.peer,
            started,
            stats: self.ctx.stats.clone(),
        };
        Ok(finish(response, summary))
    }

    /// The answer to a request the proxy does not forward: its own CA page, a loop back to
    /// itself, a host outside the allow-list. `None` for everything else.
    fn answer_locally(&self, url: &Url) -> Option<Response<ProxyBody>> {
        let host = url.host_str().unwrap_or("");
        if host == crate::ca::page::CA_HOST {
            return Some(crate::ca::page::response(&self.ctx.ca, url.path()));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let refused = self
            .ctx
            .check_not_self(host, port)
            .and_then(|()| self.ctx.check_allowed(host));
        refused.err().map(ProxyError::into_response)
    }

    /// Leaves in the request's namespace header the namespace it is served in (none for the
    /// default one): its own, else its tunnel's, and returns it. The cache keys by it; it
    /// never goes upstream.
    fn settle_namespace(
        &self,
        headers: &mut http::HeaderMap,
    ) -> Result<Option<String>, ProxyError> {
        let from_user = self.ctx.auth.is_open() && headers.contains_key(PROXY_AUTHORIZATION);
        if self.namespace.is_none() && !from_user && !headers.contains_key(&NAMESPACE_HEADER) {
            // The common case, a proxy without namespaces: nothing to settle.
            return Ok(None);
        }
        let named = namespace::named_by(headers, self.ctx.auth.is_open())
            .map_err(ProxyError::BadRequest)?;
        let settled = named
            .or_else(|| self.namespace.as_deref().map(str::to_owned))
            .filter(|name| name != namespace::DEFAULT_NAMESPACE);
        headers.remove(NAMESPACE_HEADER);
        if let Some(value) = settled
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            headers.insert(NAMESPACE_HEADER, value);
        }
        Ok(settled)
    }

    fn target_url(&self, uri: &Uri) -> Result<Url, ProxyError> {
        match &self.origin {
            Some(origin) => target::in_tunnel(origin.as_ref().as_ref(), uri),
            None => target::absolute(uri),
        }
    }

    /// Forwards a request as it is, streaming both bodies.
    async fn forward(
        &self,
        request: Request<Incoming>,
        url: &Url,
        status: CacheStatus,
    ) -> (Response<ProxyBody>, CacheStatus) {
        self.relay(request.map(|body| body.boxed()), url, status)
            .await
    }

    /// Sends `outgoing` and streams the origin's answer back, counted, under `status`.
    async fn relay(
        &self,
        outgoing: Request<UpstreamBody>,
        url: &Url,
        status: CacheStatus,
    ) -> (Response<ProxyBody>, CacheStatus) {
        match self.send(outgoing, url).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                let chained = matches!(parts.extensions.get::<Route>(), Some(Route::Via(_)));
                let body = CountedBody::new(body, self.ctx.stats.clone(), chained)
                    .map_err(Into::into)
                    .boxed();
                (Response::from_parts(parts, body), status)
            }
            Err(error) => self.failed(error, url),
        }
    }

    /// Sends a request to the origin named by `url`, with end-to-end headers only.
    async fn send(
        &self,
        request: Request<UpstreamBody>,
        url: &Url,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        parts.uri = url
            .as_str()
            .parse()
            .map_err(|e| ProxyError::BadRequest(format!("invalid URL: {e}")))?;
        remove_hop_by_hop(&mut parts.headers);
        // The client sets Host from the URI (HTTP/1.1) or sends :authority (HTTP/2).
        parts.headers.remove(HOST);
        add_via(&mut parts.headers, parts.version);
        parts.version = http::Version::HTTP_11;
        let route = self.ctx.route(url);
        let mut response = self
            .ctx
            .upstream
            .send(Request::from_parts(parts, body), route)
            .await?;
        response.extensions_mut().insert(route);
        Ok(response)
    }

    fn failed(&self, error: ProxyError, url: &Url) -> (Response<ProxyBody>, CacheStatus) {
        let status = error.cache_status();
        if matches!(status, CacheStatus::Refused(_)) {
            // The request itself was at fault (its body, a loop): not the origin's failure.
            tracing::debug!(error = %error, url = %loggable::url(url.as_str()), "request refused");
        } else {
            self.ctx.stats.upstream_errors.inc();
            tracing::warn!(error = %error, url = %loggable::url(url.as_str()), "upstream request failed");
        }
        (error.into_response(), status)
    }
}

/// Adds `Cache-Status` and `Via`, and the log line when the body is done.
fn finish(response: Response<ProxyBody>, summary: RequestSummary) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let cache_status = summary.cache.header_value();
    Span::current().record("cache", &*cache_status);
    let value = match cache_status {
        Cow::Borrowed(constant) => Ok(HeaderValue::from_static(constant)),
        Cow::Owned(text) => HeaderValue::try_from(text),
    };
    if let Ok(value) = value {
        parts.headers.insert(CACHE_STATUS, value);
    }
    add_via(&mut parts.headers, parts.version);
    // The origin's protocol version says nothing about the client's connection.
    parts.version = http::Version::HTTP_11;
    let body = LoggedBody::new(body, summary).boxed();
    Response::from_parts(parts, body)
}
