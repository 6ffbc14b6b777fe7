//! asset-proxy: an intercepting HTTP caching proxy for versioned web assets.
//!
//! One request, and the component that owns each step:
//!
//! ```text
//! client ──TCP──▶ listener ──HTTP/1.1|2──▶ ProxyService
//!                                            │ CONNECT ─▶ mitm: TLS? ── yes ─▶ ca leaf cert ─▶ ProxyService (https://host:port)
//!                                            │                      └─ no ──▶ opaque tunnel
//!                                            ▼
//!                                   cache::policy::classify_request
//!                          bypass ◀──────────┤ cacheable (versioned URL or rule)
//!                            │               ▼
//!                            │        cache.lookup: memory ─▶ disk (promote) ─▶ Hit
//!                            │               ▼ miss
//!                            │        cache.begin_fill: Follower waits ─▶ lookup again
//!                            │               ▼ Leader
//!                            │        shared tier (Redis, if configured): Hit, or the fleet's
//!                            │        fill lock (wait for the proxy that holds it)
//!                            │               ▼
//!                            └────────▶ upstream (pooled, rustls) ─▶ TeeBody: to client + collect
//!                                            ▼ clean end
//!                                   cache.commit: memory ─▶ version index ─▶ write queue,
//!                                            │              shared tier (background)
//!                                            ▼ writer thread
//!                                   make room (LRU) ─▶ entry file (atomic) ─▶ index journal
//! ```
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
pub mod listener;
pub mod mitm;
pub mod prefetch;
pub mod proxy;
pub mod stats;
pub mod tasks;
pub mod trouble;

pub use app::App;
pub use config::Config;
