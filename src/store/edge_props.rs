//! The `props` column of nodes and edges: JSON, absent when empty; a link's props packed.
//!
//! Every link an ingest writes has the same five props in the same order; spelling their names
//! out was about 45 bytes of each link edge (4 MB on a 14k-file docs folder). Such props are
//! stored as a BLOB holding a JSON array of the five values in [`LINK_FIELDS`] order, trailing
//! nulls left out (schema 0014); any other props stay a JSON object as text. Reading the one
//! gives back exactly the object that was packed, keys in the same order.
//! Must not: pack anything that does not unpack to the same object.

use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Value};

/// The props of a link, in the order the ingester writes them (`ingest::facts::plan_links`).
pub const LINK_FIELDS: [&str; 5] = ["kind", "syntax", "target", "subpath", "display"];

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
    let map = match props {
        Value::Object(m) if m.keys().map(String::as_str).eq(LINK_FIELDS) => m,
        other => return text_column(other).map(SqlValue::Text),
    };
    let mut values: Vec<&Value> = map.values().collect();
    while values.last().is_some_and(|v| v.is_null()) {
        values.pop();
    }
    Some(SqlValue::Blob(
        Value::from_iter(values.into_iter().cloned())
            .to_string()
            .into_bytes(),
    ))
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
