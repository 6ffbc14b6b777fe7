//! The connection to Redis: one multiplexed connection shared by every request (a cluster
//! connection when the node says it belongs to a cluster) and one pub/sub connection. A
//! keeper task opens both, opens them again with backoff after trouble, and hands on the
//! messages that arrive. Requests never wait for a connection: while there is none they skip
//! the shared tier.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::RedisNode;
use crate::stats::Stats;
use crate::trouble::Trouble;

/// First wait before connecting again after trouble; doubled up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Limit for opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit for any command on the connection, background writes of large bodies included.
/// Commands on a request's path have the shorter `shared.timeout_ms` on top.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection for commands, to a single node or a cluster. Cloning shares it.
#[derive(Clone)]
pub struct Connection {
    /// Which connection of the link's life this is: a late failure on an old one must not
    /// close its successor.
    epoch: u64,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// A standalone Redis.
    Single(MultiplexedConnection),
    /// A Redis Cluster: commands are routed by key.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Runs one command.
    pub async fn query<T: FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match &mut self.kind {
            Kind::Single(connection) => command.query_async(connection).await,
            Kind::Cluster(connection) => command.query_async(connection).await,
        }
    }
}

/// A pub/sub message.
pub struct Message {
    /// The channel it came on.
    pub channel: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// The state of the connection to Redis, shared by the requests and the keeper.
pub struct Link {
    nodes: Vec<RedisNode>,
    current: Mutex<Option<Connection>>,
    /// Woken by a request that found the connection broken.
    broken: Notify,
    trouble: Trouble,
    stats: Arc<Stats>,
}

impl Link {
    /// Not connected until the keeper runs.
    pub fn new(nodes: Vec<RedisNode>, stats: Arc<Stats>) -> Link {
        Link {
            nodes,
            current: Mutex::new(None),
            broken: Notify::new(),
            trouble: Trouble::default(),
            stats,
        }
    }

    /// The nodes, for logs and `/stats`.
    pub fn display(&self) -> String {
        let shown: Vec<&str> = self.nodes.iter().map(RedisNode::display).collect();
        shown.join(",")
    }

    /// The connection, if one is open.
    pub fn connection(&self) -> Option<Connection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a connection is open.
    pub fn is_up(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// A command on `connection` failed or timed out: count it, log it (at most once a
    /// minute), and have the keeper connect again, so that requests skip Redis until it
    /// answers.
    pub fn failed(&self, connection: &Connection, error: &dyn fmt::Display) {
        self.stats.shared_errors.inc();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|c| c.epoch == connection.epoch)
        {
            *current = None;
            self.broken.notify_one();
        }
        drop(current);
        self.log_trouble(error);
    }

    fn log_trouble(&self, error: &dyn fmt::Display) {
        if let Some(hidden) = self.trouble.failed() {
            warn!(
                redis = %self.display(),
                error = %error,
                failures_not_logged = hidden,
                "shared cache unreachable; serving from the local tiers and origins until it is back"
            );
        }
    }

    fn set(&self, connection: Option<Connection>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = connection;
    }

    /// Opens a command connection and a pub/sub connection subscribed to `channels`, on the
    /// first node that answers.
    async fn connect(
        &self,
        channels: &[String],
        epoch: u64,
    ) -> Result<(Connection, PubSub), String> {
        let mut errors = Vec::new();
        for node in &self.nodes {
            let opened =
                tokio::time::timeout(CONNECT_TIMEOUT, self.connect_to(node, channels, epoch));
            match opened.await {
                Ok(Ok(opened)) => return Ok(opened),
                Ok(Err(e)) => errors.push(format!("{}: {e}", node.display())),
                Err(_) => errors.push(format!(
                    "{}: no answer within {CONNECT_TIMEOUT:?}",
                    node.display()
                )),
            }
        }
        Err(errors.join("; "))
    }

    async fn connect_to(
        &self,
        node: &RedisNode,
        channels: &[String],
        epoch: u64,
    ) -> redis::RedisResult<(Connection, PubSub)> {
        let client = Client::open(node.connection_info().clone())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut single = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut single)
            .await?;
        let kind = if info.contains("cluster_enabled:1") {
            let cluster =
                ClusterClientBuilder::new(self.nodes.iter().map(|n| n.connection_info().clone()))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(1)
                    .build()?;
            Kind::Cluster(cluster.get_async_connection().await?)
        } else {
            Kind::Single(single)
        };
        // Published messages reach every node of a cluster, so one subscription suffices.
        let mut pubsub = client.get_async_pubsub().await?;
        for channel in channels {
            pubsub.subscribe(channel).await?;
        }
        Ok((Connection { epoch, kind }, pubsub))
    }
}

/// Keeps `link` connected and subscribed to `channels` for as long as its owner lives,
/// handing each message to `deliver`. Must run inside a tokio runtime.
pub async fn keep(link: Weak<Link>, channels: Vec<String>, deliver: impl Fn(Message)) {
    let mut backoff = MIN_BACKOFF;
    let mut epoch = 0;
    loop {
        let Some(owner) = link.upgrade() else { return };
        epoch += 1;
        match owner.connect(&channels, epoch).await {
            Ok((connection, pubsub)) => {
                owner.set(Some(connection));
                backoff = MIN_BACKOFF;
                if let Some(hidden) = owner.trouble.succeeded() {
                    info!(redis = %owner.display(), failures_not_logged = hidden, "shared cache reachable again; sharing resumed");
                } else if epoch == 1 {
                    info!(redis = %owner.display(), "shared cache connected");
                }
                let broken = owner.clone();
                drop(owner);
                tokio::select! {
                    () = relay(pubsub, &deliver) => {}
                    () = broken.broken.notified() => {}
                }
                let lost = "connection lost";
                broken.set(None);
                if !broken.trouble.is_failing() {
                    broken.stats.shared_errors.inc();
                    broken.log_trouble(&lost);
                }
            }
            Err(error) => {
                owner.stats.shared_errors.inc();
                owner.log_trouble(&error);
                drop(owner);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Hands on messages until the pub/sub connection closes.
async fn relay(mut pubsub: PubSub, deliver: &impl Fn(Message)) {
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        deliver(Message {
            channel: message.get_channel_name().to_owned(),
            payload: message.get_payload_bytes().to_vec(),
        });
    }
}
