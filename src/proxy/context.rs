//! `Context`: everything a request may need, built once by `App` and shared by every
//! connection — and the checks made against it before a request goes anywhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use url::Url;

use crate::auth::ProxyAuth;
use crate::ca::CertAuthority;
use crate::cache::Cache;
use crate::config::{Config, PolicyConfig};
use crate::open_connections::OpenConnections;
use crate::prefetch::Prefetcher;
use crate::proxy::error::ProxyError;
use crate::proxy::own_addrs::OwnAddrs;
use crate::proxy::upstream::{Route, Upstream};
use crate::stats::Stats;
use crate::tasks::Tasks;

/// Everything a request may need, built once by `App`.
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// The cache.
    pub cache: Cache,
    /// The origin client.
    pub upstream: Upstream,
    /// The certificate authority.
    pub ca: Arc<CertAuthority>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Background work shutdown waits for (sockets, refreshes).
    pub tasks: Tasks,
    /// Every open client connection and relay: relays register here.
    pub open_connections: OpenConnections,
    /// Rules and cache policy; replaced whole when the config is reloaded.
    pub policy: RwLock<Arc<PolicyConfig>>,
    /// Credentials clients must present.
    pub auth: ProxyAuth,
    /// The proxy's own listening addresses: requests to them would loop.
    pub own_addrs: OwnAddrs,
    /// Limits and accounting of predictive prefetch.
    pub prefetcher: Prefetcher,
}

impl Context {
    /// The policy in force now.
    pub fn policy(&self) -> Arc<PolicyConfig> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How a request for `url` reaches its origin: through the upstream the first rule that
    /// names one (or `direct`) says; else through the default upstream proxy unless none is
    /// set or the host is in `upstream.no_proxy`.
    pub fn route(&self, url: &Url) -> Route {
        let upstream = &self.config.upstream;
        let text = crate::cache::http::policy::match_text(url);
        let policy = self.policy();
        let routing = policy
            .rules
            .iter()
            .find(|rule| (rule.direct || rule.upstream.is_some()) && rule.pattern.is_match(&text));
        if let Some(rule) = routing {
            // A rule naming an upstream this process did not start with (a reload added it)
            // falls back to the default.
            let named = rule.upstream.as_deref().and_then(|n| upstream.index_of(n));
            match (rule.direct, named) {
                (true, _) => return Route::Direct,
                (false, Some(index)) => return Route::Via(index),
                (false, None) => {}
            }
        }
        let host = url.host_str().unwrap_or("");
        upstream.default_for(host).map_or(Route::Direct, Route::Via)
    }

    /// The status a block rule or the blocklist answers a request for `url` with; `None`
    /// when nothing blocks it.
    pub fn blocked(&self, url: &Url) -> Option<u16> {
        let policy = self.policy();
        if policy.blocklist.contains(url.host_str().unwrap_or("")) {
            return Some(403);
        }
        let block = Some(crate::config::RuleAction::Block);
        if !policy.rules.iter().any(|rule| rule.action == block) {
            return None;
        }
        // The first matching rule with an action decides: a rule that only routes or shares
        // does not unblock what a later block rule names.
        let text = crate::cache::http::policy::match_text(url);
        let rule = policy
            .rules
            .iter()
            .find(|rule| rule.action.is_some() && rule.pattern.is_match(&text))?;
        (rule.action == block).then_some(rule.block_status)
    }

    /// Whether a tunnel to `host` is refused by the blocklist.
    pub fn host_blocked(&self, host: &str) -> bool {
        self.policy().blocklist.contains(host)
    }

    /// Refuses a host outside `upstream.allow_hosts`, before any DNS lookup or connection.
    pub fn check_allowed(&self, host: &str) -> Result<(), ProxyError> {
        if self.config.upstream.allows_host(host) {
            return Ok(());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        Err(ProxyError::HostNotAllowed { host })
    }

    /// Refuses at once a target that is plainly this proxy itself (or its admin API): an IP
    /// literal or `localhost`. Any other name is caught where its connection lands (see
    /// `own_addrs`), which no spelling escapes.
    pub fn check_not_self(&self, host: &str, port: u16) -> Result<(), ProxyError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let own = |ip: IpAddr| self.own_addrs.is_own(SocketAddr::new(ip, port));
        let looped = match host.parse::<IpAddr>() {
            Ok(ip) => own(ip),
            Err(_) if host.eq_ignore_ascii_case("localhost") => {
                own(IpAddr::from([127, 0, 0, 1]))
                    || own(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
            }
            Err(_) => false,
        };
        if looped {
            return Err(ProxyError::Loop {
                target: format!("{host}:{port}"),
            });
        }
        Ok(())
    }
}
