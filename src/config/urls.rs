//! The URLs the configuration names for other servers — the upstream proxy, the shared tier's
//! Redis nodes — parsed once into plain data the parts connect with. Their passwords are
//! kept, but never shown: `display` and `Debug` leave them out.

use std::fmt;

use base64::Engine as _;
use redis::{ConnectionInfo, IntoConnectionInfo};
use url::Url;

/// How an upstream proxy is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// An HTTP proxy, with `CONNECT`.
    HttpConnect,
    /// A SOCKS5 proxy (RFC 1928), with username/password authentication (RFC 1929) when the
    /// URL carries credentials; `remote_dns` (`socks5h://`): the proxy resolves host names,
    /// so no lookup leaves this machine.
    Socks5 {
        /// Whether the proxy resolves names (`socks5h`).
        remote_dns: bool,
    },
}

/// An upstream proxy, parsed from `http://`, `socks5://` or `socks5h://[user:pass@]host:port`.
#[derive(Clone)]
pub struct ProxyUrl {
    kind: ProxyKind,
    host: String,
    port: u16,
    /// User name and password, when the URL carries them.
    credentials: Option<(String, String)>,
    /// The URL without its password, for messages and logs.
    display: String,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.write_str(&self.display)
    }
}

impl ProxyUrl {
    /// Parses the proxy URL; the message says what is wrong with it.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        // The message never repeats the text: it may hold a password.
        let url = Url::parse(text).map_err(|e| format!("not a proxy URL: {e}"))?;
        let (kind, default_port) = match url.scheme() {
            "http" => (ProxyKind::HttpConnect, 80),
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            other => {
                return Err(format!(
                "upstream proxies are http:// (CONNECT), socks5:// or socks5h://, not {other}://"
            ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "the proxy URL names no host".to_owned())?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(default_port);
        let user = percent_decode(url.username());
        let password = percent_decode(url.password().unwrap_or(""));
        if matches!(kind, ProxyKind::Socks5 { .. }) && (user.len() > 255 || password.len() > 255) {
            return Err("SOCKS5 user names and passwords are at most 255 bytes".to_owned());
        }
        let credentials = (!user.is_empty()).then_some((user, password));
        let display = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("{}://[{ip}]:{port}", url.scheme()),
            _ => format!("{}://{host}:{port}", url.scheme()),
        };
        Ok(ProxyUrl {
            kind,
            host,
            port,
            credentials,
            display,
        })
    }

    /// How the proxy is spoken to.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's URL without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// User name and password, when the URL carries them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// `Basic …` for `Proxy-Authorization`, when the URL carries credentials.
    pub fn basic_authorization(&self) -> Option<String> {
        self.credentials().map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        })
    }

    /// Whether the URL carries credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// One Redis node from the configuration.
#[derive(Clone)]
pub struct RedisNode {
    info: ConnectionInfo,
    shown: String,
}

impl RedisNode {
    /// Parses comma-separated `redis://[user:password@]host:port[/db]` URLs.
    pub fn parse_list(urls: &str) -> Result<Vec<RedisNode>, String> {
        let nodes = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(RedisNode::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err("names no redis:// URL".to_owned());
        }
        Ok(nodes)
    }

    fn parse(url: &str) -> Result<RedisNode, String> {
        if !url.starts_with("redis://") {
            return Err(format!(
                "{}: only redis://host:port URLs are supported",
                shown_without_password(url)
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| format!("{}: {e}", shown_without_password(url)))?;
        let shown = format!("redis://{}", info.addr());
        Ok(RedisNode { info, shown })
    }

    /// The node for logs and `/stats`: scheme, host and port, never the password.
    pub fn display(&self) -> &str {
        &self.shown
    }

    /// How to connect to it.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A URL that did not parse, shown without anything between `//` and `@`.
fn shown_without_password(url: &str) -> String {
    match (url.find("//"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}{}", &url[..start + 2], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_parsed_and_their_passwords_kept_out_of_sight() {
        let proxy = ProxyUrl::parse("http://fleet:s%40cret@proxy.example:3128").expect("valid");
        assert_eq!(proxy.display(), "http://proxy.example:3128");
        assert_eq!(format!("{proxy:?}"), "http://proxy.example:3128");
        let token = base64::engine::general_purpose::STANDARD.encode("fleet:s@cret");
        assert_eq!(proxy.basic_authorization(), Some(format!("Basic {token}")));
        assert_eq!(proxy.kind(), ProxyKind::HttpConnect);
        assert_eq!(
            ProxyUrl::parse("http://127.0.0.1")
                .expect("valid")
                .display(),
            "http://127.0.0.1:80"
        );
        let socks = ProxyUrl::parse("socks5h://u:p%3Ass@[::1]").expect("valid");
        assert_eq!(socks.kind(), ProxyKind::Socks5 { remote_dns: true });
        assert_eq!(socks.display(), "socks5h://[::1]:1080");
        assert_eq!(socks.credentials(), Some(("u", "p:ss")));
        let local = ProxyUrl::parse("socks5://10.0.0.1:9050").expect("valid");
        assert_eq!(local.kind(), ProxyKind::Socks5 { remote_dns: false });
        assert_eq!(local.credentials(), None);
        for bad in ["https://p:1", "socks4://p:1", "not a url", "http://:8080"] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("socks5://{}:x@p:1", "u".repeat(300));
        assert!(ProxyUrl::parse(&long).is_err());
        let error = ProxyUrl::parse("ftp://user:hunter2@p:1").expect_err("refused");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn nodes_are_shown_without_passwords() {
        let nodes = RedisNode::parse_list("redis://user:secret@10.0.0.1:7000, redis://h:6380/2")
            .expect("valid");
        let shown: Vec<&str> = nodes.iter().map(RedisNode::display).collect();
        assert_eq!(shown, ["redis://10.0.0.1:7000", "redis://h:6380"]);
        let error = RedisNode::parse_list("rediss://user:secret@h:1").expect_err("tls");
        assert!(!error.contains("secret"), "{error}");
        assert!(RedisNode::parse_list(" , ").is_err());
        assert!(RedisNode::parse_list("redis://").is_err());
    }
}
