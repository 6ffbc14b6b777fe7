//! The vary index on disk: which request headers (besides Accept-Encoding, always in the key) each
//! URL's responses vary on, so a lookup can build the whole key before it has a response.
//! Held in memory, and in one small file per URL under `<cache-dir>/v1/vary/` so it survives
//! restarts. URLs that vary on nothing have no file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::atomic_file;
use crate::cache::disk::DiskError;
use crate::cache::http::key::hex;

/// URLs whose vary names are remembered in memory (most vary on nothing, which is
/// remembered too, so hits need no disk look-up). About 250 bytes each.
const MEMORY_URLS: u64 = 20_000;

/// Header names per URL.
pub struct VaryIndex {
    memory: moka::sync::Cache<String, Arc<Vec<String>>>,
    dir: PathBuf,
    /// Whether any URL may vary on more than Accept-Encoding: the directory held a file when
    /// the index was opened, or this process recorded one since. Until then no lookup needs
    /// the index (most caches never hold a varying answer). Names a neighbouring process
    /// records later are learned from this URL's own next fetch.
    any: AtomicBool,
}

impl VaryIndex {
    /// The index under a disk tier's root.
    pub fn new(root: &Path) -> VaryIndex {
        let dir = root.join("vary");
        VaryIndex {
            memory: moka::sync::Cache::new(MEMORY_URLS),
            any: AtomicBool::new(holds_a_file(&dir)),
            dir,
        }
    }

    /// Whether any URL may vary on headers besides Accept-Encoding; when not, every URL
    /// varies on nothing.
    pub fn may_vary(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// The names `url` varies on, if known without touching the disk.
    pub fn cached(&self, url: &str) -> Option<Arc<Vec<String>>> {
        self.memory.get(url)
    }

    /// The names `url` varies on; reads the disk when memory does not know. Blocking.
    pub fn names(&self, url: &str) -> Arc<Vec<String>> {
        if let Some(names) = self.memory.get(url) {
            return names;
        }
        let names: Vec<String> = fs::read(self.path_of(url))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let names = Arc::new(names);
        self.memory.insert(url.to_owned(), names.clone());
        names
    }

    /// Records the names `url` now varies on. Blocking.
    pub fn record(&self, url: &str, names: &[String]) -> Result<(), DiskError> {
        let path = self.path_of(url);
        let io = |op, source: io::Error| DiskError::Io {
            op,
            path: path.clone(),
            source,
        };
        if names.is_empty() {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io("remove", e)),
                _ => {}
            }
        } else {
            self.any.store(true, Ordering::Relaxed);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| io("create", e))?;
            }
            let json = serde_json::to_vec(names).unwrap_or_default();
            atomic_file::write(&path, &json, 0o600).map_err(|e| io("write", e))?;
        }
        self.memory.insert(url.to_owned(), Arc::new(names.to_vec()));
        Ok(())
    }

    fn path_of(&self, url: &str) -> PathBuf {
        let digest = hex(ring::digest::digest(&ring::digest::SHA256, url.as_bytes()).as_ref());
        self.dir.join(&digest[..2]).join(digest)
    }
}

/// Whether `dir` holds a URL's file (in one of its fan-out directories). A directory that
/// cannot be read may hold one.
fn holds_a_file(dir: &Path) -> bool {
    let fan_out = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return e.kind() != io::ErrorKind::NotFound,
    };
    fan_out
        .flatten()
        .any(|entry| fs::read_dir(entry.path()).map_or(true, |mut files| files.next().is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_a_new_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = VaryIndex::new(dir.path());
        let names = vec!["user-agent".to_owned()];
        index
            .record("https://a.test/x.css", &names)
            .expect("record");
        let reopened = VaryIndex::new(dir.path());
        assert!(reopened.may_vary());
        assert_eq!(*reopened.names("https://a.test/x.css"), names);
        assert!(reopened.names("https://a.test/other.css").is_empty());
    }

    #[test]
    fn an_index_knows_whether_any_url_varies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = VaryIndex::new(dir.path());
        assert!(!index.may_vary(), "a new cache holds no varying answer");
        index.record("https://a.test/x.css", &[]).expect("record");
        assert!(!index.may_vary(), "varying on nothing");
        index
            .record("https://a.test/x.css", &["accept-language".to_owned()])
            .expect("record");
        assert!(index.may_vary());
        // A URL that stopped varying leaves its fan-out directory behind, empty.
        index.record("https://a.test/x.css", &[]).expect("record");
        assert!(!VaryIndex::new(dir.path()).may_vary());
    }
}
