//! `App`: builds the components from the configuration and runs them until shutdown. It
//! handles no request itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use std::pin::Pin;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::ca::{CaError, CertAuthority};
use crate::cache::disk::DiskError;
use crate::cache::Cache;
use crate::config::Config;
use crate::listener::per_core::{thread_count, ServingThreads};
use crate::listener::{front, ConnectionLimits, Connections};
use crate::open_connections::OpenConnections;
use crate::proxy::upstream::{Upstream, UpstreamSetupError};
use crate::proxy::Context;
use crate::stats::Stats;
use crate::tasks::Tasks;

/// How long shutdown waits for requests in flight and cache writes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cache directory is unusable.
    #[error("cache: {0}")]
    Cache(#[from] DiskError),
    /// The CA could not be loaded or created.
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// The origin client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
}

/// A configured proxy, ready to serve.
pub struct App {
    ctx: Arc<Context>,
    connections: Connections,
    tasks: Tasks,
}

impl App {
    /// Opens the cache and the CA and builds the origin client. Blocking (file system).
    pub fn new(config: Config) -> Result<App, StartError> {
        let provider = install_crypto_provider();
        let stats = Arc::new(Stats::default());
        let cache = Cache::open(&config.cache, stats.clone())?;
        let ca = CertAuthority::load_or_create(&config.mitm.ca_dir, provider.clone())?;
        let own_addrs = crate::proxy::own_addrs::OwnAddrs::default();
        let upstream = Upstream::new(&config.upstream, provider, own_addrs.clone())?;
        if let Some(proxy) = config.upstream.default_proxy() {
            tracing::info!(
                proxy = proxy.url.display(),
                name = proxy.name,
                "origin connections go through an upstream proxy"
            );
        }
        for proxy in &config.upstream.proxies {
            tracing::debug!(
                name = proxy.name,
                proxy = proxy.url.display(),
                "upstream proxy"
            );
        }
        if config.policy.blocklist.entries > 0 {
            tracing::info!(hosts = config.policy.blocklist.entries, "blocklist loaded");
        }
        let limits = ConnectionLimits {
            header_timeout: config.clients.header_timeout,
            idle_timeout: config.clients.idle_timeout,
            descriptors: crate::listener::descriptor_limit(),
        };
        let tasks = Tasks::default();
        let open_connections = OpenConnections::new(stats.clone());
        let connections = Connections::new(
            limits,
            tasks.clone(),
            open_connections.clone(),
            stats.clone(),
        );
        let policy = RwLock::new(Arc::new(config.policy.clone()));
        let prefetcher = crate::prefetch::Prefetcher::new(config.prefetch.clone(), stats.clone());
        let ctx = Context {
            policy,
            auth: crate::auth::ProxyAuth::new(config.clients.credentials.as_ref()),
            own_addrs,
            config,
            cache,
            upstream,
            ca: Arc::new(ca),
            stats,
            tasks: tasks.clone(),
            open_connections,
            prefetcher,
        };
        Ok(App {
            ctx: Arc::new(ctx),
            connections,
            tasks,
        })
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.ctx.cache
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.ctx.stats
    }

    /// The certificate authority.
    pub fn ca(&self) -> &CertAuthority {
        &self.ctx.ca
    }

    /// Serves the admin API on one connection given as a byte stream, as from a loopback
    /// client. For in-process drivers such as the fuzzer.
    pub async fn serve_admin_stream<I>(&self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 8081));
        crate::admin::serve_stream(self.ctx.clone(), self.connections.clone(), io, local).await;
    }

    /// Serves one client connection given as a byte stream (what the listener does for each
    /// TCP connection). For in-process drivers such as the fuzzer.
    pub async fn serve_stream<I>(&self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handler = front::handler(self.ctx.clone(), self.connections.clone(), None);
        self.connections.serve(io, handler).await;
    }

    /// Serves one client connection that speaks SOCKS5, given as a byte stream. For in-process
    /// drivers such as the fuzzer.
    pub async fn serve_socks_stream<I>(&self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        crate::listener::socks::serve(self.ctx.clone(), self.connections.clone(), io, None).await;
    }

    /// Applies a reloaded configuration's rules and cache policy (listeners, directories and
    /// limits stay as they started); returns the keys that changed.
    pub fn reload(&self, config: &Config) -> Vec<&'static str> {
        let mut new = config.policy.clone();
        let mut slot = self
            .ctx
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // The command line's --mode is not a config key; keep it.
        new.mode = slot.mode;
        let changed = slot.changed_keys(&new);
        *slot = Arc::new(new);
        changed
    }

    /// Serves clients from `listener` (and the admin API from `admin`) until `shutdown`
    /// resolves, then stops accepting, lets requests in flight and cache writes finish
    /// (bounded), and returns; an error when the threads serving clients cannot start.
    pub async fn run(
        &self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let own: Vec<_> = [Some(&listener), admin.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        self.ctx.own_addrs.set(own);
        self.ctx.cache.start_background();
        if let Some(shared) = self.ctx.cache.shared() {
            info!(redis = %shared.display(), "shared cache tier configured");
        }
        if let Some(addr) = admin.as_ref().and_then(|a| a.local_addr().ok()) {
            info!(%addr, "admin API listening");
        }
        let addr = listener.local_addr();
        let admin = async {
            match admin {
                Some(listener) => {
                    crate::admin::serve(listener, self.ctx.clone(), self.connections.clone()).await
                }
                None => std::future::pending().await,
            }
        };
        let threads = thread_count(self.ctx.config.clients.threads);
        let serving = ServingThreads::start(listener, threads, &self.connections, || {
            Box::new(serve_client(self.ctx.clone()))
        })?;
        if let Ok(addr) = addr {
            info!(%addr, threads, ca = %self.ctx.ca.cert_path().display(), "listening");
        }
        tokio::select! {
            () = admin => {}
            () = sample_activity(&self.ctx.stats) => {}
            () = shutdown => {}
        }
        info!("shutting down: finishing requests in flight");
        if !self.tasks.shutdown(SHUTDOWN_GRACE).await {
            warn!("some connections did not finish in time");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.ctx.cache.settled())
            .await
            .is_err()
        {
            warn!("some cache writes did not finish in time");
        }
        serving.finish().await;
        info!("stopped");
        Ok(())
    }
}

/// What the accept loop does with each client connection: serve a SOCKS5 client (its first
/// byte is 5), else proxy requests.
fn serve_client(
    ctx: Arc<Context>,
) -> impl Fn(TcpStream, SocketAddr, Connections) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    move |stream, peer, connections| {
        let ctx = ctx.clone();
        Box::pin(async move {
            let socks = if ctx.config.clients.socks {
                let limit = ctx.config.clients.header_timeout;
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(limit, stream.peek(&mut first));
                match connections.before_first_bytes(peeked).await {
                    Some(Ok(Ok(1))) => first[0] == crate::listener::socks::SOCKS5_VERSION,
                    // Nothing in time, idle, closed for descriptors, shutdown, or gone.
                    _ => return,
                }
            } else {
                false
            };
            if socks {
                crate::listener::socks::serve(ctx, connections, stream, Some(peer)).await;
            } else {
                let handler = front::handler(ctx, connections.clone(), Some(peer));
                connections.serve(stream, handler).await;
            }
        })
    }
}

/// Records the request rate once a second, for the status page.
async fn sample_activity(stats: &Stats) {
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every_second.tick().await;
        stats.activity.tick(stats.requests.get());
    }
}

/// The crypto provider used everywhere (ring), installed as the process default.
pub fn install_crypto_provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = CryptoProvider::install_default((*provider).clone());
    provider
}
