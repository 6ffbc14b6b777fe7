//! The HTTP side of caching, pure: what a request's key is, which headers an answer varies
//! on, whether a request may use the cache and an answer may be stored, how fresh an entry
//! is (`policy`), what kind of answer it is (`content`), and which URLs carry a version
//! (`version`). No I/O anywhere below.

pub mod content;
pub mod key;
pub mod policy;
pub mod vary;
pub mod version;
