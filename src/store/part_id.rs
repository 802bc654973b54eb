//! The public ids of sections and chunks, derived from their row.
//!
//! A section or chunk keeps its row (`rid`, an `INTEGER PRIMARY KEY`, which `VACUUM` never
//! renumbers) for as long as the note still says it, so its id can be the row number itself,
//! shaped as a UUID like every other id (version 8, a kind tag in the first bytes): no id
//! column and no index on one, about 80 bytes a row on a docs folder of 700k parts. Rows
//! carried over from before schema 0010 answer to the UUID they had (`legacy_id`).

/// Bytes of a chunk's text hash its key keeps (128 bits of blake3).
pub const CHUNK_HASH_BYTES: usize = 16;

/// A chunk's key as stored (schema 0013): its text hash's first [`CHUNK_HASH_BYTES`] bytes and
/// its occurrence's decimal digits. [`chunk_key_text`] spells it out as `<hex>#<n>`.
pub fn chunk_key_blob(hash: &[u8; 32], occurrence: i64) -> Vec<u8> {
    let mut key = hash[..CHUNK_HASH_BYTES].to_vec();
    key.extend_from_slice(occurrence.to_string().as_bytes());
    key
}

/// SQL for the text of the chunk key in `column`: a stored BLOB (see [`chunk_key_blob`]) as
/// `<hex>#<n>`, a key of an older shape, kept as text, as it is.
pub fn chunk_key_text(column: &str) -> String {
    format!(
        "CASE WHEN typeof({column}) = 'blob'
              THEN lower(hex(substr({column}, 1, {CHUNK_HASH_BYTES}))) || '#'
                   || CAST(substr({column}, {}) AS TEXT)
              ELSE {column} END",
        CHUNK_HASH_BYTES + 1
    )
}

/// Which table a part lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    Section,
    Chunk,
}

impl PartKind {
    pub fn table(self) -> &'static str {
        match self {
            PartKind::Section => "sections",
            PartKind::Chunk => "chunks",
        }
    }

    /// The first four bytes of the ids of this kind.
    fn tag(self) -> [u8; 4] {
        match self {
            PartKind::Section => *b"bsec",
            PartKind::Chunk => *b"bchk",
        }
    }
}

/// The id of the part in row `rid` of `kind`'s table.
pub fn format(kind: PartKind, rid: i64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&kind.tag());
    // Bytes 9..16 hold the row number; byte 8 takes the variant bits.
    let rid = u64::try_from(rid).unwrap_or(0).to_be_bytes();
    bytes[9..16].copy_from_slice(&rid[1..]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A part's id: the one it had before schema 0010 if any, else the one its row gives it.
pub fn of_row(kind: PartKind, rid: i64, legacy_id: Option<String>) -> String {
    legacy_id.unwrap_or_else(|| format(kind, rid))
}

/// The kind and row an id made by [`format`] names; None for any other id.
pub fn parse(id: &str) -> Option<(PartKind, i64)> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    if uuid.get_version_num() != 8 {
        return None;
    }
    let bytes = uuid.as_bytes();
    let kind = [PartKind::Section, PartKind::Chunk]
        .into_iter()
        .find(|k| bytes[..4] == k.tag())?;
    if bytes[4..9] != [0, 0, 0x80, 0, 0x80] {
        return None;
    }
    let mut rid = [0u8; 8];
    rid[1..].copy_from_slice(&bytes[9..16]);
    Some((kind, i64::try_from(u64::from_be_bytes(rid)).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_other_ids_are_not_parts() {
        for kind in [PartKind::Section, PartKind::Chunk] {
            for rid in [1, 2, 255, 1 << 40, (1 << 56) - 1] {
                let id = format(kind, rid);
                assert_eq!(id.len(), 36);
                assert_eq!(parse(&id), Some((kind, rid)), "{id}");
            }
        }
        assert_ne!(format(PartKind::Section, 7), format(PartKind::Chunk, 7));
        assert_eq!(parse(&uuid::Uuid::now_v7().to_string()), None);
        assert_eq!(parse("not an id"), None);
        assert_eq!(of_row(PartKind::Chunk, 3, Some("old".into())), "old");
    }
}
