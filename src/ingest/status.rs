//! What the sources table says of a file: the one place its status names are spelled.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A live source row's status (the schema's `CHECK` lists the same four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// Registered; its facts are not written yet (or a crash interrupted them).
    Pending,
    Indexed,
    Skipped,
    Failed,
}

impl SourceStatus {
    pub const ALL: [SourceStatus; 4] = [
        SourceStatus::Indexed,
        SourceStatus::Skipped,
        SourceStatus::Failed,
        SourceStatus::Pending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceStatus::Pending => "pending",
            SourceStatus::Indexed => "indexed",
            SourceStatus::Skipped => "skipped",
            SourceStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SourceStatus> {
        SourceStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl ToSql for SourceStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for SourceStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        SourceStatus::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown source status {s:?}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        for s in SourceStatus::ALL {
            assert_eq!(SourceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SourceStatus::parse("done"), None);
    }
}
