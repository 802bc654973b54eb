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

/// Milliseconds since the Unix epoch of a timestamp in the store's text format (0 when it is
/// not one), the form integer time columns hold (schema 0010).
pub fn millis(text: &str) -> i64 {
    humantime::parse_rfc3339(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An integer time column back in the store's text format.
pub fn from_millis(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    format(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
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
        assert_eq!(millis(&a), 1_000);
        assert_eq!(from_millis(10_000), b);
        assert_eq!(millis("not a time"), 0);
    }
}
