//! Variable targets: `$name`, `$name.field`, `$name[3]`, `$name[_index]`, and writing to them.
//!
//! Owns the meaning of a write path; vars are a JSON object keyed by `$name`.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Field(String),
    Index(usize),
    /// `[_index]`: the enclosing loop's index, filled in when written.
    LoopIndex,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub var: String,
    pub path: Vec<Seg>,
}

impl Target {
    /// Whether the write lands on a per-iteration slot.
    pub fn indexed(&self) -> bool {
        self.path.iter().any(|s| matches!(s, Seg::LoopIndex))
    }
}

pub fn parse_target(t: &str) -> Result<Target, String> {
    let rest = t
        .strip_prefix('$')
        .ok_or_else(|| format!("target {t:?} must start with $"))?;
    let name_end = rest.find(['.', '[']).unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("target {t:?} has no valid variable name"));
    }
    let mut path = Vec::new();
    let mut s = &rest[name_end..];
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(format!("target {t:?} has an empty field"));
            }
            path.push(Seg::Field(r[..end].to_owned()));
            s = &r[end..];
        } else if let Some(r) = s.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("target {t:?} misses ]"))?;
            let inner = r[..end].trim();
            path.push(if inner == "_index" {
                Seg::LoopIndex
            } else {
                Seg::Index(inner.parse().map_err(|_| {
                    format!("target {t:?}: index {inner:?} is not a number or _index")
                })?)
            });
            s = &r[end + 1..];
        } else {
            return Err(format!("target {t:?} is not $var(.field|[n])*"));
        }
    }
    Ok(Target {
        var: format!("${name}"),
        path,
    })
}

/// Writes `value` at `target` in `vars`, creating objects and growing arrays on the way.
pub fn write(
    vars: &mut Map<String, Value>,
    target: &Target,
    loop_index: Option<usize>,
    value: Value,
) -> Result<(), String> {
    let mut slot = vars.entry(target.var.clone()).or_insert(Value::Null);
    for seg in &target.path {
        let seg = match seg {
            Seg::LoopIndex => Seg::Index(loop_index.ok_or("[_index] outside a loop")?),
            s => s.clone(),
        };
        slot = match seg {
            Seg::Field(f) => {
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                slot.as_object_mut()
                    .map(|m| m.entry(f).or_insert(Value::Null))
                    .ok_or("not an object")?
            }
            Seg::Index(i) => {
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let a = slot.as_array_mut().ok_or("not an array")?;
                if i >= 100_000 {
                    return Err(format!("index {i} is too large"));
                }
                if a.len() <= i {
                    a.resize(i + 1, Value::Null);
                }
                &mut a[i]
            }
            Seg::LoopIndex => unreachable!("replaced above"),
        };
    }
    *slot = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_parse_and_write() {
        let mut vars = Map::new();
        let t = parse_target("$a.b[1]").unwrap();
        write(&mut vars, &t, None, json!(5)).unwrap();
        assert_eq!(Value::Object(vars.clone()), json!({"$a": {"b": [null, 5]}}));
        let t = parse_target("$r[_index]").unwrap();
        assert!(t.indexed());
        write(&mut vars, &t, Some(0), json!("x")).unwrap();
        assert_eq!(vars["$r"], json!(["x"]));
        assert!(parse_target("a").is_err());
        assert!(parse_target("$a[x]").is_err());
        assert!(parse_target("$").is_err());
    }
}
