//! The operator commands of the `proxy` binary besides running it: `cache stats | ls | purge`
//! (through a running proxy's admin API when one answers, else directly on the cache
//! directory), `cache verify`, `cache export --har` and `cache import` (always on the
//! directory), and `warm` (fetch a list of URLs into the cache through a running proxy, or
//! through one started for the purpose).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, HOST};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::admin::client::AdminClient;
use crate::app::{App, StartError};
use crate::cache::disk::verify::verify_dir;
use crate::cache::Purge;
use crate::cache::{Cache, CachedResponse};
use crate::config::Config;
use crate::stats::Stats;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The running proxy's admin API refused or failed.
    #[error("{0}")]
    Admin(String),
    /// The cache directory or the CA could not be opened.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Reading input or writing output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something the user asked for is wrong.
    #[error("{0}")]
    Usage(String),
}

/// Verifies the cache in `dir`, printing each problem and a summary; `true` when nothing
/// was wrong.
pub async fn verify(dir: &std::path::Path, repair: bool) -> Result<bool, CommandError> {
    let dir = dir.to_owned();
    let report = tokio::task::spawn_blocking(move || verify_dir(&dir, repair))
        .await
        .map_err(|e| CommandError::Io(std::io::Error::other(e)))?
        .map_err(StartError::from)?;
    for finding in &report.findings {
        let repaired = if finding.repaired { " (repaired)" } else { "" };
        println!(
            "bad  {}  {}{repaired}",
            finding.path.display(),
            finding.problem
        );
    }
    let repaired = report.findings.iter().filter(|f| f.repaired).count();
    println!(
        "checked {} entries ({} bytes): {} problems, {} repaired",
        report.entries_checked,
        report.bytes_checked,
        report.findings.len(),
        repaired
    );
    Ok(report.clean())
}

/// Where the cache commands act.
pub enum CacheTarget {
    /// A running proxy, through its admin API.
    Running(AdminClient),
    /// The cache directory itself (no proxy answers).
    Directory(Cache),
}

impl CacheTarget {
    /// The admin API at `admin` when a proxy answers there, else the directory `config` names.
    pub async fn find(
        admin: SocketAddr,
        token: Option<String>,
        config: &Config,
    ) -> Result<CacheTarget, CommandError> {
        if let Some(client) = AdminClient::connect(admin, token).await {
            return Ok(CacheTarget::Running(client));
        }
        // A command reads and removes; filling a memory tier it will not serve from is waste.
        let mut cache_config = config.cache.clone();
        cache_config.prewarm = false;
        let cache =
            Cache::open(&cache_config, Arc::new(Stats::default())).map_err(StartError::from)?;
        // No proxy keeps the index current: make it agree with the files before answering.
        let checking = cache.clone();
        let _ = tokio::task::spawn_blocking(move || checking.reconcile_now()).await;
        Ok(CacheTarget::Directory(cache))
    }

    /// Stats of the running proxy, or what the directory holds; of one namespace when named.
    pub async fn stats(&self, namespace: Option<&str>) -> Result<Value, CommandError> {
        match (self, namespace) {
            (CacheTarget::Running(client), None) => {
                client.get("/stats").await.map_err(CommandError::Admin)
            }
            (CacheTarget::Running(client), Some(name)) => client
                .get(&format!("/stats?{}", query(&[("namespace", name)])))
                .await
                .map_err(CommandError::Admin),
            (CacheTarget::Directory(cache), None) => {
                let assets = cache.assets().await.len();
                Ok(json!({ "tiers": cache.usage().await, "assets": assets, "running": false }))
            }
            (CacheTarget::Directory(cache), Some(name)) => {
                let usage = cache.namespace_usage(name).await;
                Ok(json!({
                    "namespace": name,
                    "entries": usage.entries,
                    "body_bytes": usage.body_bytes,
                    "running": false,
                }))
            }
        }
    }

    /// Entries in `namespace` (every one when `None`) whose URL starts with `prefix`.
    pub async fn entries(
        &self,
        prefix: &str,
        namespace: Option<&str>,
    ) -> Result<Value, CommandError> {
        match self {
            CacheTarget::Running(client) => {
                let mut pairs = vec![("prefix", prefix)];
                pairs.extend(namespace.map(|name| ("namespace", name)));
                client
                    .get(&format!("/entries?{}", query(&pairs)))
                    .await
                    .map_err(CommandError::Admin)
            }
            CacheTarget::Directory(cache) => {
                let namespace = namespace.map(str::to_owned);
                Ok(json!({ "entries": cache.entries(prefix, namespace, usize::MAX).await }))
            }
        }
    }

    /// Removes what `what` names in `namespace` (every one when `None`); reports what went
    /// from each tier. `body` is the same selection as the admin API's `/purge` takes.
    pub async fn purge(
        &self,
        what: &Purge,
        namespace: Option<&str>,
        body: Value,
    ) -> Result<Value, CommandError> {
        match self {
            CacheTarget::Running(client) => client
                .post("/purge", &body)
                .await
                .map_err(CommandError::Admin),
            CacheTarget::Directory(cache) => {
                let namespace = namespace.map(str::to_owned);
                let report = cache.purge(what.clone(), namespace).await;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
        }
    }
}

/// A URL query of `pairs`, encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The outcome of warming one URL.
#[derive(Debug, Clone)]
pub struct Warmed {
    /// The URL.
    pub url: String,
    /// Status and Cache-Status, or why it failed.
    pub result: Result<(u16, String), String>,
    /// Body bytes received.
    pub bytes: u64,
}

/// What `warm` did.
#[derive(Debug, Default)]
pub struct WarmReport {
    /// Every URL's outcome, in completion order.
    pub outcomes: Vec<Warmed>,
    /// Body bytes received in all.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl WarmReport {
    /// The URLs that failed, with why.
    pub fn failures(&self) -> Vec<&Warmed> {
        self.outcomes.iter().filter(|w| w.result.is_err()).collect()
    }
}

/// Fetches `urls` through the proxy at `proxy`, `concurrency` at a time, showing progress.
pub async fn warm_through(proxy: SocketAddr, urls: Vec<String>, concurrency: usize) -> WarmReport {
    let started = Instant::now();
    let progress = Progress::new(urls.len() as u64);
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for url in urls {
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            fetch_through(proxy, url).await
        });
    }
    let mut report = WarmReport::default();
    while let Some(done) = tasks.join_next().await {
        let Ok(warmed) = done else { continue };
        if warmed.result.is_ok() {
            report.bytes += warmed.bytes;
        }
        progress.advance(&warmed);
        report.outcomes.push(warmed);
    }
    progress.finish();
    report.elapsed = started.elapsed();
    report
}

/// Warms `urls` through the proxy on `port` if one answers there, else through a proxy
/// started here on `config` for as long as it takes.
pub async fn warm(
    config: Config,
    port: u16,
    urls: Vec<String>,
    concurrency: usize,
) -> Result<WarmReport, CommandError> {
    let running: SocketAddr = ([127, 0, 0, 1], port).into();
    if listening(running).await {
        return Ok(warm_through(running, urls, concurrency).await);
    }
    let app = Arc::new(App::new(config)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = app.clone();
    let serving = tokio::spawn(async move {
        runner
            .run(listener, None, async {
                let _ = stopped.await;
            })
            .await
    });
    let report = warm_through(addr, urls, concurrency).await;
    let _ = stop.send(());
    if let Ok(Err(error)) = serving.await {
        return Err(error.into());
    }
    Ok(report)
}

/// Whether something accepts connections at `addr`.
async fn listening(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// One GET through the proxy, absolute-form over plain HTTP: the proxy fetches `https://`
/// URLs itself, so warming needs no trust in the proxy's CA.
async fn fetch_through(proxy: SocketAddr, url: String) -> Warmed {
    let mut warmed = Warmed {
        url: url.clone(),
        result: Err(String::new()),
        bytes: 0,
    };
    let outcome = async {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let host = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or("not an absolute URL")?;
        let stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("cannot reach the proxy: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::get(uri)
            .header(HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let cache = response
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, cache, body.len() as u64))
    }
    .await;
    warmed.result = match outcome {
        Ok((status, cache, bytes)) => {
            warmed.bytes = bytes;
            if status.is_success() {
                Ok((status.as_u16(), cache))
            } else {
                Err(format!("{status} ({cache})"))
            }
        }
        Err(error) => Err(error),
    };
    warmed
}

/// A progress bar on a terminal; one line per URL otherwise.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} URLs  {msg}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress(Some(bar))
    }

    fn advance(&self, warmed: &Warmed) {
        match &self.0 {
            Some(bar) => {
                bar.inc(1);
                let bytes = indicatif::HumanBytes(warmed.bytes);
                let rate = indicatif::HumanBytes(per_second(warmed.bytes, bar.elapsed()));
                bar.set_message(format!("last {bytes}, {rate}/s"));
            }
            None => match &warmed.result {
                Ok((status, cache)) => eprintln!(
                    "ok {status} {} bytes {} ({cache})",
                    warmed.bytes, warmed.url
                ),
                Err(error) => eprintln!("failed {}: {error}", warmed.url),
            },
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn per_second(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

/// URLs from `text`, one a line; blank lines and `#` comments are skipped.
pub fn read_urls(text: &str) -> Result<Vec<String>, CommandError> {
    let mut urls = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match url::Url::parse(line) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => urls.push(url.to_string()),
            _ => {
                return Err(CommandError::Usage(format!(
                    "line {}: not an http(s) URL: {line}",
                    number + 1
                )))
            }
        }
    }
    Ok(urls)
}

/// Opens the cache directory `config` names for a command (no pre-warming).
fn open_directory(config: &Config) -> Result<Cache, CommandError> {
    let mut cache_config = config.cache.clone();
    cache_config.prewarm = false;
    Ok(Cache::open(&cache_config, Arc::new(Stats::default())).map_err(StartError::from)?)
}

/// Writes the entries on the cache directory whose URL starts with `prefix` to `path` as a
/// HAR archive; returns how many. One entry per URL (an archive's bodies are decoded, so the
/// variants of a URL are one answer): a variant stored without a content coding if there is
/// one.
pub async fn export_har(config: &Config, prefix: &str, path: &Path) -> Result<usize, CommandError> {
    let cache = open_directory(config)?;
    let mut entries: Vec<Arc<CachedResponse>> = cache
        .read_entries(prefix)
        .await
        .into_iter()
        .filter(|entry| entry.meta.status == 200)
        .collect();
    // Unencoded variants first; then the first of each URL is kept.
    entries.sort_by_key(|entry| entry.meta.header_map().contains_key(CONTENT_ENCODING));
    let mut chosen: Vec<Arc<CachedResponse>> = Vec::new();
    for entry in entries {
        if !chosen
            .iter()
            .any(|c| c.meta.key.url() == entry.meta.key.url())
        {
            chosen.push(entry);
        }
    }
    chosen.sort_by(|a, b| a.meta.key.url().cmp(b.meta.key.url()));
    let har = crate::har::to_har(&chosen);
    let written = har["log"]["entries"].as_array().map_or(0, Vec::len);
    let text = serde_json::to_vec_pretty(&har).map_err(|e| CommandError::Usage(e.to_string()))?;
    crate::atomic_file::write(path, &text, 0o600)?;
    Ok(written)
}

/// What importing an archive did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Answers stored.
    pub stored: usize,
    /// Answers not stored, with why (the same rules as a fetch).
    pub skipped: Vec<(String, &'static str)>,
}

/// Stores the answers of the HAR archive at `path` into the cache directory, as if fetched
/// now under the same rules. A damaged archive is refused whole before anything is stored.
pub async fn import_har(config: &Config, path: &Path) -> Result<ImportReport, CommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
    let answers = crate::har::from_har(&text)
        .map_err(|e| CommandError::Usage(format!("{}: {e}; nothing imported", path.display())))?;
    let cache = open_directory(config)?;
    let mut report = ImportReport::default();
    for answer in answers {
        let mut request = Request::new(());
        *request.uri_mut() = match answer.url.as_str().parse() {
            Ok(uri) => uri,
            Err(_) => {
                report.skipped.push((answer.url.to_string(), "url"));
                continue;
            }
        };
        *request.method_mut() = match answer.method.parse() {
            Ok(method) => method,
            Err(_) => {
                report.skipped.push((answer.url.to_string(), "method"));
                continue;
            }
        };
        *request.headers_mut() = answer.request_headers;
        let stored = cache
            .store_answer(
                request,
                answer.status,
                answer.headers,
                answer.body,
                &config.policy,
            )
            .await;
        match stored {
            Ok(()) => report.stored += 1,
            Err(reason) => report
                .skipped
                .push((answer.url.to_string(), reason.as_str())),
        }
    }
    cache.settled().await;
    Ok(report)
}
