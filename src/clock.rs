//! Wall-clock timestamps in the one format the store uses: RFC 3339 UTC with milliseconds.
//!
//! Text timestamps of equal width sort as time, so SQL can compare them directly.

use std::time::SystemTime;

/// Now, as `2026-11-21T08:20:00.123Z`.
pub fn now() -> String {
    format(SystemTime::now())
}

pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Now, compact enough for a file name: `20261121T082000Z`.
pub fn file_stamp() -> String {
    let s = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    s.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sort_as_time() {
        let a = format(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_000));
        let b = format(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(10_000));
        assert_eq!(a, "1970-01-01T00:00:01.000Z");
        assert!(a < b);
        assert_eq!(file_stamp().len(), 16);
    }
}
