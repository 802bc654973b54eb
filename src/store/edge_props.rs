//! The `props` column of nodes and edges: JSON, absent when empty; a link's props packed.
//!
//! Every link an ingest writes has the same five props in the same order; spelling their names
//! out was about 45 bytes of each link edge (4 MB on a 14k-file docs folder). Such props are
//! stored as a BLOB holding a JSON array of the five values in [`LINK_FIELDS`] order, trailing
//! nulls left out (schema 0014); any other props stay a JSON object as text. Reading the one
//! gives back exactly the object that was packed, keys in the same order. A URL link's target,
//! which is its URL node's key, is packed as a mark the `edges` view replaces with that key
//! (schema 0015): read through the view, it too is the object that was written.
//! Must not: pack anything that does not read back through the view as the same object.

use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Value};

/// The props of a link, in the order the ingester writes them (`ingest::facts::plan_links`).
pub const LINK_FIELDS: [&str; 5] = ["kind", "syntax", "target", "subpath", "display"];

/// What a packed link holds in place of its target when the target is the key of the node the
/// edge points at (a URL link's target is its URL node's key): the `edges` view puts that key
/// back (schema 0015). No link's target is `true`, and [`column`] keeps props whose target is
/// `true` as text, so in a packed column it means nothing else.
const TARGET_IS_DST_KEY: Value = Value::Bool(true);

/// A `props` column of nodes and edges as JSON text: absent (NULL) when empty, as readers
/// take a missing object to be empty (schema 0011).
pub fn text_column(props: &Value) -> Option<String> {
    match props {
        Value::Object(m) if m.is_empty() => None,
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// An edge's `props` column: as [`text_column`], except a link's five props in
/// [`LINK_FIELDS`] order, which are packed.
pub fn column(props: &Value) -> Option<SqlValue> {
    match props {
        Value::Object(m)
            if m.keys().map(String::as_str).eq(LINK_FIELDS) && m["target"] != TARGET_IS_DST_KEY =>
        {
            Some(pack(m.values()))
        }
        other => text_column(other).map(SqlValue::Text),
    }
}

/// [`column`] of a link whose target is the key of the node it points at, packed without it;
/// props that are not a link's are stored as [`column`] stores them.
pub fn column_to_dst_key(props: &Value) -> Option<SqlValue> {
    match props {
        Value::Object(m) if m.keys().map(String::as_str).eq(LINK_FIELDS) => {
            Some(pack(m.iter().map(|(k, v)| {
                if k == "target" { &TARGET_IS_DST_KEY } else { v }
            })))
        }
        other => column(other),
    }
}

/// Values in [`LINK_FIELDS`] order as a packed column, trailing nulls left out.
fn pack<'a>(values: impl Iterator<Item = &'a Value>) -> SqlValue {
    let mut values: Vec<&Value> = values.collect();
    while values.last().is_some_and(|v| v.is_null()) {
        values.pop();
    }
    SqlValue::Blob(
        Value::from_iter(values.into_iter().cloned())
            .to_string()
            .into_bytes(),
    )
}

/// The props object a stored column holds; anything unreadable is taken as empty, as a missing
/// column is.
pub fn read(stored: ValueRef<'_>) -> Value {
    let found = match stored {
        ValueRef::Text(text) => serde_json::from_slice::<Value>(text).ok(),
        ValueRef::Blob(packed) => unpack(packed),
        _ => None,
    };
    match found {
        Some(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// SQL for prop `field` of the props in `column`, as `json_extract` gives it, whether packed or
/// not (a packed column has only [`LINK_FIELDS`]). For statements and tools that read the
/// store directly; `json_extract` on a packed BLOB fails, as it takes a BLOB for JSONB.
pub fn sql_field(column: &str, field: &str) -> String {
    let packed = match LINK_FIELDS.iter().position(|f| *f == field) {
        Some(i) => format!("json_extract(CAST({column} AS TEXT), '$[{i}]')"),
        None => "NULL".to_owned(),
    };
    format!(
        "CASE WHEN typeof({column}) = 'blob' THEN {packed} ELSE json_extract({column}, '$.{field}') END"
    )
}

/// A packed link's props as their object; `None` when the bytes are not such an array.
fn unpack(packed: &[u8]) -> Option<Value> {
    let values: Vec<Value> = serde_json::from_slice(packed).ok()?;
    if values.len() > LINK_FIELDS.len() {
        return None;
    }
    let mut values = values.into_iter();
    let map: Map<String, Value> = LINK_FIELDS
        .iter()
        .map(|k| ((*k).to_owned(), values.next().unwrap_or(Value::Null)))
        .collect();
    Some(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes `props` as its column and reads it back; returns what was stored and what was read.
    fn round_trip(props: Value) -> (Option<SqlValue>, Value) {
        let stored = column(&props);
        let read = match &stored {
            None => read(ValueRef::Null),
            Some(SqlValue::Text(t)) => read(ValueRef::Text(t.as_bytes())),
            Some(SqlValue::Blob(b)) => read(ValueRef::Blob(b)),
            Some(other) => panic!("unexpected column {other:?}"),
        };
        (stored, read)
    }

    fn check(props: Value, stored: Option<&str>, packed: bool) {
        let (column, back) = round_trip(props.clone());
        let text = column.as_ref().map(|c| match c {
            SqlValue::Text(t) => t.clone(),
            SqlValue::Blob(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("unexpected column {other:?}"),
        });
        assert_eq!(text.as_deref(), stored, "{props}");
        assert_eq!(matches!(column, Some(SqlValue::Blob(_))), packed, "{props}");
        let want = if props.is_null() { json!({}) } else { props };
        assert_eq!(back, want);
        // Keys come back in the order they were written.
        assert_eq!(back.to_string(), want.to_string());
    }

    #[test]
    fn links_are_packed_and_read_back_as_the_same_object() {
        let link = |subpath: Value, display: Value| {
            json!({"kind": "heading", "syntax": "wikilink", "target": "A \"b\"",
                   "subpath": subpath, "display": display})
        };
        check(
            link(json!({"heading": "H"}), json!("shown")),
            Some(r#"["heading","wikilink","A \"b\"",{"heading":"H"},"shown"]"#),
            true,
        );
        check(
            link(Value::Null, Value::Null),
            Some(r#"["heading","wikilink","A \"b\""]"#),
            true,
        );
        check(
            link(Value::Null, json!("x")),
            Some(r#"["heading","wikilink","A \"b\"",null,"x"]"#),
            true,
        );
        // Other props, the same keys in another order, or one key more stay text.
        check(
            json!({"from_front_matter": true}),
            Some(r#"{"from_front_matter":true}"#),
            false,
        );
        let reordered =
            json!({"syntax": "w", "kind": "k", "target": "t", "subpath": null, "display": null});
        check(reordered.clone(), Some(&reordered.to_string()), false);
        let mut more = link(Value::Null, Value::Null);
        more.as_object_mut()
            .unwrap()
            .insert("extra".into(), json!(1));
        check(more.clone(), Some(&more.to_string()), false);
        // Empty props are absent.
        check(json!({}), None, false);
        check(Value::Null, None, false);
    }

    /// A URL link's target is its URL node's key: it is packed as `true`, and the `edges` view
    /// reads the key back in its place, byte for byte the object that was written. Props whose
    /// own target is `true` are kept as text, so the mark means nothing else.
    #[test]
    fn a_target_that_is_the_destinations_key_is_left_to_the_view() {
        let url = "https://example.org/a?b=\"c\"&d=é";
        let link = json!({"kind": "external", "syntax": "external", "target": url,
                          "subpath": null, "display": "x"});
        let stored = column_to_dst_key(&link);
        let Some(SqlValue::Blob(packed)) = &stored else {
            panic!("not packed: {stored:?}");
        };
        assert_eq!(
            packed.as_slice(),
            br#"["external","external",true,null,"x"]"#
        );

        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::apply(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO nodes(id, kind, key, owner_id, valid_from, created_at, updated_at)
             VALUES ('n', 'note', 'n', 'u', 't', 't', 't'), ('m', 'url', ?1, 'u', 't', 't', 't')",
            [url],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO edge_rows(id, src, dst, type, key, props, valid_from)
             VALUES ('e', (SELECT rid FROM nodes WHERE id = 'n'),
                     (SELECT rid FROM nodes WHERE id = 'm'), 'links_to', 'k#1', ?1, 't')",
            [&stored],
        )
        .unwrap();
        let read_back = conn
            .query_row("SELECT props FROM edges WHERE id = 'e'", [], |r| {
                Ok(read(r.get_ref(0)?))
            })
            .unwrap();
        assert_eq!(read_back.to_string(), link.to_string());
        let target: String = conn
            .query_row(
                &format!(
                    "SELECT {} FROM edges WHERE id = 'e'",
                    sql_field("props", "target")
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(target, url);

        let odd = json!({"kind": "k", "syntax": "s", "target": true, "subpath": null,
                         "display": null});
        check(odd.clone(), Some(&odd.to_string()), false);
        // What is not a link's props is stored as `column` stores it.
        assert_eq!(
            column_to_dst_key(&json!({"a": 1})),
            Some(SqlValue::Text(r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn sql_reads_a_field_packed_or_not() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let link = json!({"kind": "heading", "syntax": "wikilink", "target": "a",
                          "subpath": {"heading": "H"}, "display": null});
        for props in [link, json!({"syntax": "md", "other": 1}), json!({})] {
            let stored = column(&props);
            for field in ["syntax", "subpath", "display", "other"] {
                let got: Option<String> = conn
                    .query_row(
                        &format!("SELECT CAST({} AS TEXT)", sql_field("?1", field)),
                        [&stored],
                        |r| r.get(0),
                    )
                    .unwrap();
                let want = match &props[field] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                assert_eq!(got, want, "{props} {field}");
            }
        }
    }

    #[test]
    fn unreadable_columns_read_as_empty() {
        for stored in [
            ValueRef::Blob(b"not json"),
            ValueRef::Blob(b"[1,2,3,4,5,6]"),
            ValueRef::Blob(b"{\"a\":1}"),
            ValueRef::Text(b"[1]"),
            ValueRef::Text(b"nope"),
            ValueRef::Integer(3),
        ] {
            assert_eq!(read(stored), json!({}), "{stored:?}");
        }
    }
}
