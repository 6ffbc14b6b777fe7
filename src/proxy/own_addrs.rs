//! The proxy's own listening sockets, and the refusal of any origin connection that lands on
//! one of them: such a request would loop through the proxy, or reach its admin API from a
//! web page. The check is made on the address a connection actually reached, so every
//! spelling of a target — `0.0.0.0`, `[::ffff:127.0.0.1]`, `127.1`, a name that resolves to
//! loopback — is caught alike, whatever DNS says.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The addresses the proxy listens on (its proxy port and admin port). Cloning shares them.
#[derive(Clone, Default)]
pub struct OwnAddrs {
    addrs: Arc<RwLock<Vec<SocketAddr>>>,
}

/// A connection reached one of the proxy's own listening sockets.
#[derive(Debug, thiserror::Error)]
#[error("{target} is this proxy itself")]
pub struct SelfConnect {
    /// The address reached.
    pub target: SocketAddr,
}

impl OwnAddrs {
    /// Records the addresses listened on.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *self.addrs.write().unwrap_or_else(PoisonError::into_inner) = addrs;
    }

    /// Whether a connection to `reached` arrives at one of the proxy's own sockets: the same
    /// address (IPv4-mapped or not), or any local address for a socket listening on all.
    pub fn is_own(&self, reached: SocketAddr) -> bool {
        let ip = reached.ip().to_canonical();
        let own = self.addrs.read().unwrap_or_else(PoisonError::into_inner);
        own.iter()
            .filter(|own| own.port() == reached.port())
            .any(|own| {
                let own_ip = own.ip().to_canonical();
                own_ip == ip
                    || ip.is_unspecified()
                    || own_ip.is_unspecified() && (ip.is_loopback() || is_local(ip))
            })
    }

    /// `Err` when `stream` reached one of the proxy's own sockets.
    pub fn check(&self, stream: &TcpStream) -> Result<(), SelfConnect> {
        match stream.peer_addr() {
            Ok(target) if self.is_own(target) => Err(SelfConnect { target }),
            _ => Ok(()),
        }
    }
}

/// Whether `ip` is an address of this host: only a local address can be bound.
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind((ip, 0)).is_ok()
}

/// The origin client's connector, refusing connections that reached the proxy itself.
#[derive(Clone)]
pub struct GuardedConnector {
    inner: HttpConnector,
    own: OwnAddrs,
}

impl GuardedConnector {
    /// `inner`, guarded by `own`.
    pub fn new(inner: HttpConnector, own: OwnAddrs) -> GuardedConnector {
        GuardedConnector { inner, own }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, io::Error>> + Send>>;

impl tower_service::Service<http::Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.inner.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let connecting = self.inner.call(uri);
        let own = self.own.clone();
        Box::pin(async move {
            let stream = connecting.await.map_err(io::Error::other)?;
            own.check(stream.inner()).map_err(io::Error::other)?;
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_proxy_itself_is_its_own() {
        let own = OwnAddrs::default();
        own.set(vec!["127.0.0.1:8080".parse().expect("addr")]);
        for reached in [
            "127.0.0.1:8080",
            "[::ffff:127.0.0.1]:8080",
            "0.0.0.0:8080",
            "[::]:8080",
        ] {
            assert!(own.is_own(reached.parse().expect("addr")), "{reached}");
        }
        for other in [
            "127.0.0.1:8081",
            "127.0.0.2:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
        ] {
            assert!(!own.is_own(other.parse().expect("addr")), "{other}");
        }
        let everywhere = OwnAddrs::default();
        everywhere.set(vec!["0.0.0.0:9000".parse().expect("addr")]);
        assert!(everywhere.is_own("127.0.0.1:9000".parse().expect("addr")));
        assert!(everywhere.is_own("127.0.0.2:9000".parse().expect("addr")));
        assert!(
            !everywhere.is_own("192.0.2.1:9000".parse().expect("addr")),
            "not local"
        );
    }
}
