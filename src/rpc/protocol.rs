//! Wire types: every shape a client sees, and the conversions from engine types.
//!
//! Architecture Invariant: engine types are never serialized directly; they are converted here,
//! so renaming a field inside the engine cannot break a client.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::brain::Status;
use crate::error::{Error, Kind};
use crate::store::UserRow;

pub const JSONRPC: &str = "2.0";

/// A parsed request. `id` is `None` for a notification (no answer is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

/// Parses one line. On failure returns the id to answer with (null when unknown) and the error.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, Error)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            Error::new(Kind::ParseError, format!("invalid JSON: {e}")),
        )
    })?;
    let Value::Object(mut obj) = value else {
        let what = if value.is_array() {
            "batch requests are not supported; send one object per line"
        } else {
            "a request must be a JSON object"
        };
        return Err((Value::Null, Error::new(Kind::InvalidRequest, what)));
    };
    let id = obj.remove("id");
    let answer_id = id.clone().unwrap_or(Value::Null);
    let invalid = |msg: &str| (answer_id.clone(), Error::new(Kind::InvalidRequest, msg));
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err((
            Value::Null,
            Error::new(Kind::InvalidRequest, "id must be a string, number or null"),
        ));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some(JSONRPC) {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(invalid("\"method\" must be a non-empty string")),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return Err(invalid("\"params\" must be an object or an array")),
    };
    Ok(Request { id, method, params })
}

pub fn ok_response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": JSONRPC, "id": id, "result": result })
}

pub fn error_response(id: Value, e: &Error) -> Value {
    json!({
        "jsonrpc": JSONRPC,
        "id": id,
        "error": { "code": e.kind.code(), "message": e.message, "data": { "kind": e.kind.as_str() } },
    })
}

/// Decodes params into a method's parameter type, as an `invalid_params` error on mismatch.
pub fn params<T: serde::de::DeserializeOwned>(method: &str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| {
        Error::new(
            Kind::InvalidParams,
            format!("invalid params for {method}: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityIdParams {
    pub email: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdentityIdResult {
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CountsWire {
    pub users: i64,
    pub nodes: std::collections::BTreeMap<String, i64>,
    pub edges: std::collections::BTreeMap<String, i64>,
    pub sources: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusWire {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: f64,
    pub data_dir: String,
    pub store_path: String,
    pub store_bytes: u64,
    pub schema_version: u32,
    pub user_id: String,
    pub user_email: String,
    pub counts: CountsWire,
}

impl From<Status> for StatusWire {
    fn from(s: Status) -> StatusWire {
        StatusWire {
            version: s.version.to_owned(),
            pid: s.pid,
            uptime_secs: s.uptime_secs,
            data_dir: s.data_dir.display().to_string(),
            store_path: s.store_path.display().to_string(),
            store_bytes: s.store_bytes,
            schema_version: s.schema_version,
            user_id: s.user_id.to_string(),
            user_email: s.user_email,
            counts: CountsWire {
                users: s.counts.users,
                nodes: s.counts.nodes,
                edges: s.counts.edges,
                sources: s.counts.sources,
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UserWire {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub created_at: String,
}

impl From<UserRow> for UserWire {
    fn from(u: UserRow) -> UserWire {
        UserWire {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UserListResult {
    pub users: Vec<UserWire>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(line: &str, kind: Kind, id: Value) {
        let (got_id, e) = parse_request(line.as_bytes()).unwrap_err();
        assert_eq!(e.kind, kind, "{line}: {}", e.message);
        assert_eq!(got_id, id, "{line}");
    }

    #[test]
    fn malformed_requests() {
        check_err("not json", Kind::ParseError, Value::Null);
        check_err("{\"jsonrpc\":\"2.0\",", Kind::ParseError, Value::Null);
        check_err("[1,2]", Kind::InvalidRequest, Value::Null);
        check_err("42", Kind::InvalidRequest, Value::Null);
        check_err(r#"{"id":1,"method":"x"}"#, Kind::InvalidRequest, json!(1));
        check_err(
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            Kind::InvalidRequest,
            json!(1),
        );
        check_err(
            r#"{"jsonrpc":"2.0","id":"a","method":7}"#,
            Kind::InvalidRequest,
            json!("a"),
        );
        check_err(
            r#"{"jsonrpc":"2.0","id":2,"method":"x","params":3}"#,
            Kind::InvalidRequest,
            json!(2),
        );
        check_err(
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            Kind::InvalidRequest,
            Value::Null,
        );
    }

    #[test]
    fn well_formed_requests() {
        let r = parse_request(br#"{"jsonrpc":"2.0","id":7,"method":"daemon.status"}"#).unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.method, "daemon.status");
        assert_eq!(r.params, json!({}));
        let n = parse_request(br#"{"jsonrpc":"2.0","method":"x","params":[1]}"#).unwrap();
        assert_eq!(n.id, None);
        assert_eq!(n.params, json!([1]));
    }

    #[test]
    fn error_responses_carry_kind_and_code() {
        let v = error_response(
            json!(3),
            &Error::new(Kind::MethodNotFound, "no such method"),
        );
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["error"]["data"]["kind"], "method_not_found");
        assert_eq!(v["id"], 3);
    }
}
