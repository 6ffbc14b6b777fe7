//! `App`: builds the components from the configuration and runs them until shutdown. It
//! handles no request itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::cache::disk::DiskError;
use crate::cache::Cache;
use crate::config::Config;
use crate::listener::Connections;
use crate::mitm::ca::{CaError, CertAuthority};
use crate::proxy::upstream::{Upstream, UpstreamSetupError};
use crate::proxy::Context;
use crate::stats::Stats;

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
}

impl App {
    /// Opens the cache and the CA and builds the origin client. Blocking (file system).
    pub fn new(config: Config) -> Result<App, StartError> {
        let provider = install_crypto_provider();
        let stats = Arc::new(Stats::default());
        let cache = Cache::open(&config.cache, stats.clone())?;
        let ca = CertAuthority::load_or_create(&config.mitm.ca_dir, provider.clone())?;
        let upstream = Upstream::new(&config.upstream, provider)?;
        let connections = Connections::default();
        let ctx = Context {
            config,
            cache,
            upstream,
            ca: Arc::new(ca),
            stats,
            connections: connections.clone(),
        };
        Ok(App {
            ctx: Arc::new(ctx),
            connections,
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

    /// Serves clients from `listener` until `shutdown` resolves, then stops accepting, lets
    /// requests in flight and cache writes finish (bounded), and returns.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, ca = %self.ctx.ca.cert_path().display(), "listening");
        }
        tokio::select! {
            () = self.connections.accept(listener, self.ctx.clone()) => {}
            () = shutdown => {}
        }
        info!("shutting down: finishing requests in flight");
        if !self.connections.shutdown(SHUTDOWN_GRACE).await {
            warn!("some connections did not finish in time");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.ctx.cache.settled())
            .await
            .is_err()
        {
            warn!("some cache writes did not finish in time");
        }
        info!("stopped");
    }
}

/// The crypto provider used everywhere (ring), installed as the process default.
pub fn install_crypto_provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = CryptoProvider::install_default((*provider).clone());
    provider
}
