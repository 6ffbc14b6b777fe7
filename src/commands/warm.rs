//! `warm`: fetching a list of URLs into the cache through a running proxy, or through one
//! started for the purpose, with progress shown.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::Config;

use super::CommandError;

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
