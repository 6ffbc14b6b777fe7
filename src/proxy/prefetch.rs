//! The proxy's side of predictive prefetch: which answers are scanned, and one prefetch run
//! through the ordinary cache path — so it coalesces with the browser's own request for the
//! same asset, uses the shared tier, and is stored like any fetch.

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, AUTHORIZATION, COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::debug;
use url::Url;

use super::ProxyService;
use crate::body::ProxyBody;
use crate::cache::http::namespace::NAMESPACE_HEADER;
use crate::cache::http::policy;
use crate::cache::{CacheRequest, Lookup};
use crate::loggable;
use crate::prefetch::refs::{self, Kind};
use crate::prefetch::{body_text, tap::TapBody};

/// How many request headers a prefetch copies.
const COPIED: usize = 5;

/// Request headers a prefetch copies from the request of the document that named the asset:
/// the same coding class and namespace (so the browser's request finds the entry) and the
/// same client.
const COPIED_HEADERS: [http::HeaderName; COPIED] = [
    ACCEPT_ENCODING,
    NAMESPACE_HEADER,
    USER_AGENT,
    ACCEPT_LANGUAGE,
    ACCEPT,
];

/// What a prefetch takes from the request of an answer that may be scanned: the values of
/// `COPIED_HEADERS` it carried, in that order. Taken for every GET, so nothing is allocated
/// until an answer is scanned.
pub(super) struct Referrer {
    copied: [Option<HeaderValue>; COPIED],
}

impl Referrer {
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in COPIED_HEADERS.iter().zip(&self.copied) {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
        headers
    }
}

impl ProxyService {
    /// The referrer for prefetches, when the request's answer may be scanned: a GET without
    /// credentials (what it refers to may be the user's own), prefetch on.
    pub(super) fn referrer(&self, request: &Request<Incoming>) -> Option<Referrer> {
        if request.method() != Method::GET || !self.ctx.prefetcher.config().enabled {
            return None;
        }
        // One pass over the few headers a request has, comparing names: cheaper than looking
        // up each name wanted.
        let mut copied: [Option<HeaderValue>; COPIED] = Default::default();
        for (name, value) in request.headers() {
            if name == COOKIE || name == AUTHORIZATION {
                return None;
            }
            if let Some(at) = COPIED_HEADERS.iter().position(|copied| copied == name) {
                copied[at].get_or_insert_with(|| value.clone());
            }
        }
        Some(Referrer { copied })
    }

    /// Has the answer's body scanned as it passes, if it is a document or bootstrap script.
    pub(super) fn tap(
        &self,
        response: Response<ProxyBody>,
        url: &Url,
        referrer: Referrer,
    ) -> Response<ProxyBody> {
        let prefetcher = &self.ctx.prefetcher;
        let kind = match response.status() {
            StatusCode::OK => prefetcher.scan_kind(url, response.headers()),
            _ => None,
        };
        let Some(kind) = kind else {
            return response;
        };
        let (parts, body) = response.into_parts();
        let (this, document, headers) = (self.clone(), url.clone(), parts.headers.clone());
        let body = TapBody::new(body, prefetcher.scan_limit(), move |copy| {
            this.scan(document, referrer, headers, kind, copy);
        });
        Response::from_parts(parts, body.boxed())
    }

    /// Finds what the scanned body of `document` refers to (in the background) and submits
    /// the prefetches.
    fn scan(&self, document: Url, referrer: Referrer, headers: HeaderMap, kind: Kind, body: Bytes) {
        self.ctx.stats.prefetch_scans.inc();
        let this = self.clone();
        tokio::spawn(async move {
            let (base, policy) = (document.clone(), this.ctx.policy());
            let found = tokio::task::spawn_blocking(move || {
                let text = body_text(&headers, &body)?;
                Some(refs::references(&text, &base, kind, &policy))
            })
            .await;
            let Ok(Some(urls)) = found else { return };
            let origin = document.origin().ascii_serialization();
            for url in urls {
                let (one, headers) = (this.clone(), referrer.headers());
                if !this
                    .ctx
                    .prefetcher
                    .submit(&origin, one.prefetch(url, headers))
                {
                    break;
                }
            }
        });
    }

    /// Fetches `url` into the cache unless it is held, being fetched, or not to be fetched
    /// ahead (a rule excludes it, it is not a versioned or rule-named asset, it is a retired
    /// version, offline, a host outside the allow-list).
    async fn prefetch(self, url: Url, headers: HeaderMap) {
        let ctx = &self.ctx;
        let policy = ctx.policy();
        let host = url.host_str().unwrap_or("");
        if policy.offline() || ctx.check_allowed(host).is_err() {
            return;
        }
        let max_age = ctx.config.cache.max_age;
        let Ok(plan) = policy::classify_request(&Method::GET, &url, &headers, &policy, max_age)
        else {
            return;
        };
        if plan.pinned_ttl.is_none() && !ctx.prefetcher.config().all_cacheable {
            return;
        }
        let mut head = Request::new(());
        *head.uri_mut() = url.as_str().parse().unwrap_or_default();
        *head.headers_mut() = headers;
        let ask = CacheRequest {
            head: &head,
            url: &url,
            plan: &plan,
            policy: &policy,
            fresh_since: None,
            // A prefetch never waits on another fetch of the asset: that one will store it.
            wait: false,
            prefetch: Some(ctx.prefetcher.mark()),
        };
        // Anything held, even stale, is left alone: only a cold miss is fetched ahead.
        let Lookup::Miss(fill) = ctx.cache.lookup(&ask).await else {
            return;
        };
        ctx.stats.prefetch_fetches.inc();
        debug!(url = %loggable::url(url.as_str()), "prefetching");
        self.fill_in_background(&head, &url, fill).await;
    }
}
