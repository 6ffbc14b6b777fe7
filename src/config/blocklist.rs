//! `blocklist_file`: hosts answered at once without contacting them — exact names and globs,
//! one a line, as users download them for ads and trackers.

/// Hosts answered at once without contacting them: exact names and globs, one a line of
/// `blocklist_file`.
#[derive(Clone, Default)]
pub struct Blocklist {
    exact: std::collections::HashSet<String>,
    globs: Option<globset::GlobSet>,
    /// Lines read, for the log.
    pub entries: usize,
}

impl std::fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A list may hold a hundred thousand hosts: its size says enough.
        write!(f, "Blocklist({} hosts)", self.entries)
    }
}

impl Blocklist {
    /// Reads a list of host names or globs: one a line, `#` comments, hosts-file lines
    /// (`0.0.0.0 ads.example`) taken by their last name.
    pub fn parse(text: &str) -> Result<Blocklist, String> {
        let mut list = Blocklist::default();
        let mut globs = globset::GlobSetBuilder::new();
        let mut any_glob = false;
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(host) = line.split_whitespace().last() else {
                continue;
            };
            let host = host.to_ascii_lowercase();
            if host.contains(['*', '?', '[']) {
                let glob = globset::GlobBuilder::new(&host)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("line {}: {e}", number + 1))?;
                globs.add(glob);
                any_glob = true;
            } else {
                list.exact.insert(host);
            }
            list.entries += 1;
        }
        if any_glob {
            list.globs = Some(globs.build().map_err(|e| e.to_string())?);
        }
        Ok(list)
    }

    /// Whether `host` is on the list.
    pub fn contains(&self, host: &str) -> bool {
        if self.entries == 0 {
            return false;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.exact.contains(&host) || self.globs.as_ref().is_some_and(|g| g.is_match(&host))
    }
}
