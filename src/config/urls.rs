//! The URLs the configuration names for other servers — the upstream proxy, the shared tier's
//! Redis nodes — parsed once into plain data the parts connect with. Their passwords are
//! kept, but never shown: `display` and `Debug` leave them out.

use std::fmt;

use base64::Engine as _;
use redis::{ConnectionInfo, IntoConnectionInfo};
use url::Url;

/// An upstream proxy, parsed from `http://[user:pass@]host:port`.
#[derive(Clone)]
pub struct ProxyUrl {
    host: String,
    port: u16,
    /// `Basic …` for `Proxy-Authorization`, when the URL carries credentials.
    authorization: Option<String>,
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
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "only http:// upstream proxies are supported (CONNECT), not {}://",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let user = percent_decode(url.username());
        let authorization = (!user.is_empty()).then(|| {
            let password = percent_decode(url.password().unwrap_or(""));
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        let display = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("http://[{ip}]:{port}"),
            _ => format!("http://{host}:{port}"),
        };
        Ok(ProxyUrl {
            host,
            port,
            authorization,
            display,
        })
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

    /// `Basic …` for `Proxy-Authorization`, when the URL carries credentials.
    pub fn basic_authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// Whether the URL carries credentials.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
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
        assert_eq!(proxy.authorization, Some(format!("Basic {token}")));
        assert_eq!(
            ProxyUrl::parse("http://127.0.0.1")
                .expect("valid")
                .display(),
            "http://127.0.0.1:80"
        );
        for bad in ["https://p:1", "socks5://p:1", "not a url", "http://:8080"] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
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
