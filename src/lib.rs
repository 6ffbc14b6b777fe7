//! asset-proxy: an intercepting HTTP caching proxy for versioned web assets.
//!
//! One request, and the component that owns each step:
//!
//! ```text
//! client ─TCP─▶ listener::per_core: a serving thread accepts it and runs it and all it spawns
//!               listener (span client) ── first byte 5 ─▶ listener::socks: SOCKS5 CONNECT ─┐
//!                 ▼ anything else: HTTP                                                    │
//!               listener::front: proxy credentials, namespace                              │
//!                 │ CONNECT ─▶ mitm: checks, then the tunnel's first bytes ◀────────────────┘
//!                 │            TLS ─▶ leaf cert from ca ───────────────────────────────────┐
//!                 │            plain HTTP ─────────────────────────────────────────────────┤
//!                 │            anything else ─▶ relayed as it is                           │
//!                 │            listener serves the intercepted tunnel (span tunnel) ◀──────┘
//!                 ▼ every request (span request)
//! proxy::ProxyService: the CA page, loops to itself, the allow-list, block rules; upgrades
//!                 (WebSocket) spliced
//!                 ▼
//! cache::http::policy::classify_request ── not cacheable ─▶ upstream, answer passed on
//!                 ▼ cacheable
//! Cache::lookup: memory ─▶ disk, the entry judged by cache::http::freshness
//!   Fresh(hit) · Revalidating(stale hit, refresh under a Fill) · Offline(hit or 504)
//!   Stale(fill) · Miss(fill): this request leads the fetch — the others for the same key wait
//!                 in cache::inflight and look again; a Miss asks the fleet (shared tier) first
//!   Pass: fetch without the cache
//!                 ▼ a Fill
//! upstream (pooled, rustls; through the upstream proxy a rule or the default names: HTTP
//!          CONNECT or SOCKS5, each counting what it carried) ─▶ 304: Fill::not_modified
//!                 ▼
//! Fill::answered: not storable ─▶ the body streams to the client as it is
//!                 ▼ storable: TeeBody streams it to the client and keeps a copy
//! Tiers::put: memory (followers woken) ─▶ version index ─▶ disk writer ─▶ shared tier
//!                 ▼ writer thread
//! make room (LRU) ─▶ entry file (atomic rename) ─▶ index journal
//! ```
//!
//! The proxy calls the cache three times at most: `lookup`, the fill's answer, and a second
//! `lookup` when a body had to be stored whole first (HEAD, ranges).
//!
//! Beside the requests, the cache's upkeep thread follows the index journal that every
//! process sharing the directory appends to, records which entries were used, evicts, and
//! rebuilds the index when it was lost. With a shared tier, a keeper task holds the Redis
//! connections and applies the version changes other proxies of the fleet announce. Answers
//! that are HTML documents or bootstrap scripts are copied (bounded) as they pass, and
//! `prefetch` fetches the versioned assets they name through the same cache path.
//!
//! Every response carries `Cache-Status` (RFC 9211), and every request is logged once.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod atomic_file;
pub mod auth;
pub mod body;
pub mod ca;
pub mod cache;
pub mod commands;
pub mod config;
pub mod file_lock;
pub mod har;
pub mod listener;
pub mod log_format;
pub mod log_lines;
pub mod loggable;
pub mod mitm;
pub mod open_connections;
pub mod prefetch;
pub mod proxy;
pub mod stats;
pub mod tasks;
pub mod trouble;

pub use app::App;
pub use config::Config;
