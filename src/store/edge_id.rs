//! The public ids of the link edges the ingester writes, derived from their row.
//!
//! A link edge read from a file keeps its row (`edge_rows.rid`, an `INTEGER PRIMARY KEY`, which
//! VACUUM never renumbers) for as long as the file still says it, so its id can be that row
//! number, and no id is stored or indexed for it (schema 0015: 36 bytes and an index entry an
//! edge, 6.5 MB of obsidian-hub's store). Edges written by workflows, tags and tag hierarchies
//! keep a stored id, since citations (`provenance.edge_id`) name them.
//!
//! The id spells the row number in decimal digits inside a UUID of version 8:
//! `62656467-0000-8000-80DD-DDDDDDDDDDDD`, the fourteen `D`s the row number zero-padded. Decimal
//! rather than hex so that SQL alone can print it (the `edges` view) and read it back ([`row_of`],
//! by which a lookup by id goes straight to the row); every decimal digit is a hex digit, so it
//! is a well-formed UUID. Zero-padded to a fixed width, the ids sort as their rows do.

/// What every derived edge id starts with ("bedg" in hex, then the version and variant).
pub const PREFIX: &str = "62656467-0000-8000-80";

/// Row numbers a derived id can spell: fourteen decimal digits.
#[cfg(test)]
const MAX_ROW: i64 = 99_999_999_999_999;

/// SQL for the row of the edge whose id is `?1`, stored or derived; NULL when no edge can have
/// it. A statement pairs it with `id = ?1` on the `edges` view, which a row whose stored id is
/// another does not pass. A macro, so that statements built with `concat!` can hold it.
macro_rules! row_of {
    () => {
        "coalesce((SELECT rid FROM edge_rows WHERE id = ?1),
            CASE WHEN ?1 GLOB '62656467-0000-8000-80[0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
                 THEN CAST(substr(?1, 22, 2) || substr(?1, 25) AS INTEGER) END)"
    };
}
pub(crate) use row_of;

/// SQL for the id derived from the edge row number in `column`, spelt as the `edges` view
/// (schema 0015) spells it.
pub fn sql_id(column: &str) -> String {
    format!("printf('{PREFIX}%02d-%012d', {column} / 1000000000000, {column} % 1000000000000)")
}

/// The id of the edge in row `rid` that has no stored id, as SQL spells it; `None` past the
/// rows an id can spell. The reference [`parse`] and [`sql_id`] are tested against.
#[cfg(test)]
fn format(rid: i64) -> Option<String> {
    (0..=MAX_ROW).contains(&rid).then(|| {
        format!(
            "{PREFIX}{:02}-{:012}",
            rid / 1_000_000_000_000,
            rid % 1_000_000_000_000
        )
    })
}

/// The row a derived id names; `None` for any other id.
pub fn parse(id: &str) -> Option<i64> {
    let rest = id.strip_prefix(PREFIX)?;
    let (high, low) = rest.split_once('-')?;
    if high.len() != 2
        || low.len() != 12
        || !(high.bytes().chain(low.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    format!("{high}{low}").parse().ok()
}

/// The smallest row whose derived id sorts after `cursor`, or 0 when that is not known from
/// the cursor alone (a statement then also compares the ids themselves).
pub fn first_row_after(cursor: &str) -> i64 {
    parse(cursor).map_or(0, |rid| rid + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_sort_as_rows_and_sql_reads_them_as_rust_writes_them() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE edge_rows(rid INTEGER PRIMARY KEY, id TEXT)")
            .unwrap();
        let mut last = String::new();
        for rid in [
            0,
            1,
            9,
            10,
            999_999_999_999,
            1_000_000_000_000,
            4_321_000_000_007,
            MAX_ROW,
        ] {
            let id = format(rid).unwrap();
            assert_eq!(id.len(), 36, "{id}");
            let uuid = uuid::Uuid::try_parse(&id).unwrap();
            assert_eq!(uuid.get_version_num(), 8, "{id}");
            assert_eq!(parse(&id), Some(rid));
            assert!(id > last, "{id} sorts after {last}");
            last = id.clone();
            // The SQL spelling, and `row_of!`'s reading.
            let (printed, read): (String, i64) = conn
                .query_row(
                    &format!("SELECT {}, {}", sql_id("?2"), row_of!()),
                    rusqlite::params![id, rid],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(printed, id);
            assert_eq!(read, rid);
        }
        assert_eq!(format(MAX_ROW + 1), None);
        assert_eq!(format(-1), None);
        for other in [
            uuid::Uuid::now_v7().to_string(),
            "62656467-0000-8000-80ab-000000000001".to_owned(),
            "62656467-0000-8000-8000-00000000001".to_owned(),
            "not an id".to_owned(),
        ] {
            assert_eq!(parse(&other), None, "{other}");
        }
        assert_eq!(first_row_after(&format(41).unwrap()), 42);
        assert_eq!(first_row_after("01a25315-6780-736b-92ec-75324d3bcf35"), 0);
    }
}
