//! The HTTP side of caching, pure: what a request's key is (`key`), which headers an answer
//! varies on (`vary`), which key space it belongs to (`namespace`), whether a request may use the cache and an answer may be stored
//! (`policy`), whether a stored entry is fresh or may be served stale (`freshness`), what
//! kind of answer it is (`content`), and which URLs carry a version (`version`). No I/O
//! anywhere below.

pub mod content;
pub(crate) mod directives;
pub mod freshness;
pub mod key;
pub mod namespace;
pub mod policy;
pub mod vary;
pub mod version;
