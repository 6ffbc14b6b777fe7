//! The limits client connections are held to: deadlines, and the file descriptors kept free
//! for origins, files and new clients.

use std::time::Duration;

/// Deadlines and limits of client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send its request headers within this time (slowloris).
    pub header_timeout: Duration,
    /// A connection with nothing in flight that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// The process's descriptor limit, when known.
    pub descriptors: Option<u64>,
}

impl ConnectionLimits {
    /// Descriptors kept free for origins, files and new clients: an eighth of the limit,
    /// between 16 and 256.
    pub(super) fn reserve(&self) -> Option<u64> {
        self.descriptors.map(|limit| (limit / 8).clamp(16, 256))
    }
}

/// The process's soft limit on open files, from `/proc/self/limits`; `None` elsewhere.
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors the process has open, from `/proc/self/fd`; `None` elsewhere.
pub(super) fn open_descriptors() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_an_eighth_of_the_limit_within_bounds() {
        let reserve = |limit: Option<u64>| {
            ConnectionLimits {
                header_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                descriptors: limit,
            }
            .reserve()
        };
        assert_eq!(reserve(None), None);
        assert_eq!(reserve(Some(64)), Some(16));
        assert_eq!(reserve(Some(256)), Some(32));
        assert_eq!(reserve(Some(1_048_576)), Some(256));
    }

    #[test]
    fn the_descriptor_limit_is_read() {
        assert!(descriptor_limit().is_some_and(|n| n > 0));
        assert!(open_descriptors().is_some_and(|n| n > 0));
    }
}
