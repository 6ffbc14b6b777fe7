//! The admin API's data: `/stats` (JSON), `/metrics` (Prometheus text), `/activity` (what the
//! status page draws), `/entries`.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cache::http::namespace;
use crate::cache::{InNamespace, Purge};
use crate::proxy::chain::UpstreamFigures;
use crate::proxy::Context;
use crate::stats::{insert_at, FigureKind, Histogram};

/// Entries listed when the query names no limit.
const DEFAULT_ENTRY_LIMIT: usize = 1000;

/// Every figure of `/stats`: the declared figures (`stats.rs`), and what is computed or
/// read from the parts (ratios, tier usage, latency, which Redis and upstream proxy).
pub async fn stats(ctx: &Context) -> Value {
    ctx.prefetcher.sweep(std::time::Instant::now());
    let s = &ctx.stats;
    let usage = ctx.cache.usage().await;
    let tier = ctx.cache.shared();
    let mut out = s.figures_json();
    let computed = [
        ("uptime_secs", json!(s.started.elapsed().as_secs())),
        ("hit_ratio", json!(round(s.hit_ratio()))),
        (
            "bandwidth_saved_percent",
            json!(round(s.bandwidth_saved() * 100.0)),
        ),
        ("tiers", json!(usage)),
        (
            "latency",
            json!({ "hits": s.latency_hits, "misses": s.latency_misses }),
        ),
        (
            "upstream_proxy.url",
            json!(ctx.config.upstream.default_proxy().map(|p| p.url.display())),
        ),
        ("upstreams", json!(ctx.upstream.figures())),
        (
            "upstream_proxy.bytes_not_through",
            json!(s.bytes_from_cache.get()),
        ),
        ("shared.redis", json!(tier.map(|t| t.display()))),
        ("shared.up", json!(tier.is_some_and(|t| t.is_up()))),
        ("shared.hits", json!(s.hits_shared.get())),
        ("prefetch.enabled", json!(ctx.prefetcher.config().enabled)),
        ("namespaces", json!(namespace_figures(s))),
        ("clients.per_thread", json!(s.thread_loads.now())),
    ];
    for (path, value) in computed {
        insert_at(&mut out, path, value);
    }
    out
}

/// Requests per namespace, the default one under its name once it has had any.
fn namespace_figures(stats: &crate::stats::Stats) -> Value {
    let mut all = stats.namespaces.named();
    let default = stats.namespaces.of(None);
    if default.requests > 0 {
        all.insert(namespace::DEFAULT_NAMESPACE.to_owned(), default);
    }
    json!(all)
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// What the status page draws besides `/stats`.
pub fn activity(ctx: &Context) -> Value {
    let activity = &ctx.stats.activity;
    let top: Vec<Value> = activity
        .top_assets(10)
        .into_iter()
        .map(|(asset, bytes)| json!({ "asset": asset, "bytes": bytes }))
        .collect();
    json!({
        "requests_per_second": activity.per_second(),
        "top_assets": top,
        "version_changes": activity.changes(),
    })
}

/// `/entries?prefix=P&namespace=N&limit=N`.
pub async fn entries(ctx: &Context, query: &str) -> Result<Value, String> {
    let mut prefix = String::new();
    let mut limit = DEFAULT_ENTRY_LIMIT;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "prefix" => prefix = value.into_owned(),
            "limit" => limit = value.parse().unwrap_or(DEFAULT_ENTRY_LIMIT),
            _ => {}
        }
    }
    let namespace = namespace_in(query)?;
    Ok(json!({ "entries": ctx.cache.entries(&prefix, namespace, limit).await }))
}

/// `/stats?namespace=N`: one namespace's requests, and the entries it holds on disk.
pub async fn namespace_stats(ctx: &Context, name: &str) -> Value {
    let figures = ctx
        .stats
        .namespaces
        .of(Some(name).filter(|n| *n != namespace::DEFAULT_NAMESPACE));
    let usage = ctx.cache.namespace_usage(name).await;
    json!({
        "namespace": name,
        "requests": figures,
        "entries": usage.entries,
        "body_bytes": usage.body_bytes,
    })
}

/// The `namespace` a query names, checked.
pub fn namespace_in(query: &str) -> Result<InNamespace, String> {
    let named = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "namespace")
        .map(|(_, value)| value.into_owned());
    if let Some(name) = &named {
        namespace::check(name)?;
    }
    Ok(named)
}

/// What a `/purge` body selects: one of `url`, `prefix`, `host`, `asset`, `all`, and
/// optionally the `namespace` to purge it in (every namespace when none).
pub fn purge_selection(mut body: Value) -> Result<(Purge, InNamespace), String> {
    let namespace = match body.as_object_mut().and_then(|o| o.remove("namespace")) {
        None => None,
        Some(Value::String(name)) => {
            namespace::check(&name)?;
            Some(name)
        }
        Some(_) => return Err("namespace must be a string".to_owned()),
    };
    let what = serde_json::from_value(body).map_err(|e| {
        format!("purge wants one of {{\"url\"}}, {{\"prefix\"}}, {{\"host\"}}, {{\"asset\"}}, {{\"all\": true}}, and optionally \"namespace\": {e}")
    })?;
    Ok((what, namespace))
}

/// Requests, bytes both ways and bytes kept off, per upstream proxy (label `upstream`).
fn upstream_lines(out: &mut String, upstreams: &[UpstreamFigures]) {
    if upstreams.is_empty() {
        return;
    }
    type Series = (&'static str, &'static str, fn(&UpstreamFigures) -> u64);
    let series: [Series; 4] = [
        (
            "upstream_requests_total",
            "Requests and tunnels sent through the upstream proxy.",
            |f| f.requests,
        ),
        (
            "upstream_sent_bytes_total",
            "Bytes written to the upstream proxy's connections.",
            |f| f.bytes_sent,
        ),
        (
            "upstream_received_bytes_total",
            "Bytes read from the upstream proxy's connections.",
            |f| f.bytes_received,
        ),
        (
            "upstream_kept_off_bytes_total",
            "Body bytes cache hits kept off the upstream proxy their URLs are routed through.",
            |f| f.bytes_kept_off,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP asset_proxy_{name} {help}\n# TYPE asset_proxy_{name} counter"
        );
        for figures in upstreams {
            let _ = writeln!(
                out,
                "asset_proxy_{name}{{upstream=\"{}\"}} {}",
                figures.name.replace(['\\', '"', '\n'], "_"),
                value(figures)
            );
        }
    }
}

/// Client connections open on each serving thread, labelled by the thread's number.
fn per_thread_lines(out: &mut String, loads: &[usize]) {
    let name = "asset_proxy_clients_open_per_thread";
    let _ = writeln!(
        out,
        "# HELP {name} Client connections open now on each serving thread.\n# TYPE {name} gauge"
    );
    for (thread, open) in loads.iter().enumerate() {
        let _ = writeln!(out, "{name}{{thread=\"{thread}\"}} {open}");
    }
}

/// The Prometheus text exposition of every figure.
pub async fn metrics(ctx: &Context) -> String {
    let s = &ctx.stats;
    let usage = ctx.cache.usage().await;
    let mut out = String::new();
    ctx.prefetcher.sweep(std::time::Instant::now());
    for figure in s.figures() {
        let (name, help, value) = (figure.prometheus, figure.help, figure.value);
        let _ = match figure.kind {
            FigureKind::Counter => writeln!(out, "# HELP asset_proxy_{name}_total {help}\n# TYPE asset_proxy_{name}_total counter\nasset_proxy_{name}_total {value}"),
            FigureKind::Gauge => writeln!(out, "# HELP asset_proxy_{name} {help}\n# TYPE asset_proxy_{name} gauge\nasset_proxy_{name} {value}"),
        };
    }
    let shared_up = ctx.cache.shared().is_some_and(|t| t.is_up());
    let gauges: [(&str, &str, f64); 9] = [
        (
            "memory_entries",
            "Entries in the memory tier.",
            usage.memory_entries as f64,
        ),
        (
            "memory_bytes",
            "Bytes in the memory tier.",
            usage.memory_bytes as f64,
        ),
        (
            "disk_entries",
            "Entries in the disk tier.",
            usage.disk_entries as f64,
        ),
        (
            "disk_bytes",
            "Bytes in the disk tier.",
            usage.disk_bytes as f64,
        ),
        (
            "disk_max_bytes",
            "Capacity of the disk tier (disk.max_mb).",
            usage.disk_max_bytes as f64,
        ),
        (
            "disk_write_queue_entries",
            "Entries waiting for the disk writer.",
            usage.write_queue_entries as f64,
        ),
        (
            "shared_up",
            "1 when the shared tier (Redis) is connected.",
            f64::from(u8::from(shared_up)),
        ),
        ("hit_ratio", "Hits over cacheable requests.", s.hit_ratio()),
        (
            "uptime_seconds",
            "Seconds since start.",
            s.started.elapsed().as_secs_f64(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP asset_proxy_{name} {help}\n# TYPE asset_proxy_{name} gauge\nasset_proxy_{name} {value}");
    }
    per_thread_lines(&mut out, &s.thread_loads.now());
    upstream_lines(&mut out, &ctx.upstream.figures());
    let name = "asset_proxy_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from request to the end of the response body.\n# TYPE {name} histogram"
    );
    for (outcome, histogram) in [("hit", &s.latency_hits), ("miss", &s.latency_misses)] {
        histogram_lines(&mut out, name, outcome, histogram);
    }
    out
}

fn histogram_lines(out: &mut String, name: &str, outcome: &str, histogram: &Histogram) {
    let (buckets, count) = histogram.cumulative();
    for (bound_ms, n) in buckets {
        let le = bound_ms as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{name}_bucket{{outcome=\"{outcome}\",le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{outcome=\"{outcome}\",le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "{name}_sum{{outcome=\"{outcome}\"}} {}",
        histogram.sum_secs()
    );
    let _ = writeln!(out, "{name}_count{{outcome=\"{outcome}\"}} {count}");
}
