//! Where origin connections go: timeouts, trusted roots, the hosts the proxy may contact, and
//! the upstream proxies — named, and the default one — with the hosts reached directly.

use std::path::PathBuf;
use std::time::Duration;

use globset::GlobMatcher;

use super::{ProxyUrl, DEFAULT_PROXY_NAME};

/// Connections to origins.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Extra PEM roots trusted for origin TLS, on top of the standard web roots.
    pub extra_roots: Option<PathBuf>,
    /// Limit for opening a TCP connection.
    pub connect_timeout: Duration,
    /// Limit for an origin's response headers to arrive.
    pub response_timeout: Duration,
    /// Limit for a body being stored to send nothing: a stalled fill is given up, so the
    /// requests waiting for it are not held with it.
    pub body_timeout: Duration,
    /// Pooled connections unused this long are closed.
    pub idle_timeout: Duration,
    /// Hosts the proxy may contact; empty means any.
    pub allow_hosts: Vec<GlobMatcher>,
    /// The upstream proxies origin connections may go through: `upstreams` by name, and
    /// `upstream.proxy` as `default` when it is a URL.
    pub proxies: Vec<NamedProxy>,
    /// The one (an index into `proxies`) origin connections go through unless a rule or
    /// `no_proxy` says otherwise; none: direct.
    pub default_proxy: Option<usize>,
    /// Hosts reached directly even with a default proxy set.
    pub no_proxy: Vec<GlobMatcher>,
}

/// An upstream proxy and the name stats and rules know it by.
#[derive(Debug, Clone)]
pub struct NamedProxy {
    /// `upstreams` key, or `default` for a URL given as `upstream.proxy`.
    pub name: String,
    /// Where it is and how to speak to it.
    pub url: ProxyUrl,
}

impl UpstreamConfig {
    /// The upstream proxy (an index into `proxies`) connections to `host` go through when no
    /// rule names one: the default, unless `host` is in `no_proxy`.
    pub fn default_for(&self, host: &str) -> Option<usize> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.default_proxy
            .filter(|_| !self.no_proxy.iter().any(|glob| glob.is_match(&host)))
    }

    /// The index of the upstream proxy named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.proxies.iter().position(|p| p.name == name)
    }

    /// The default upstream proxy.
    pub fn default_proxy(&self) -> Option<&NamedProxy> {
        self.default_proxy.and_then(|i| self.proxies.get(i))
    }

    /// Makes `text` the default upstream proxy: the name of one of `upstreams`, or a URL
    /// (then named `default`, replacing a URL given before).
    pub fn set_default_proxy(&mut self, text: &str) -> Result<(), String> {
        if let Some(index) = self.index_of(text) {
            self.default_proxy = Some(index);
            return Ok(());
        }
        let url = ProxyUrl::parse(text)?;
        let named = NamedProxy {
            name: DEFAULT_PROXY_NAME.to_owned(),
            url,
        };
        match self.index_of(DEFAULT_PROXY_NAME) {
            Some(index) => {
                self.proxies[index] = named;
                self.default_proxy = Some(index);
            }
            None => {
                self.proxies.push(named);
                self.default_proxy = Some(self.proxies.len() - 1);
            }
        }
        Ok(())
    }

    /// Whether the proxy may contact `host` (`allow_hosts` empty, or one of them matches).
    pub fn allows_host(&self, host: &str) -> bool {
        if self.allow_hosts.is_empty() {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.allow_hosts.iter().any(|glob| glob.is_match(&host))
    }
}
