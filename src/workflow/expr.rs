//! Expressions: CEL after a small rewrite (`$x` → a bound name, `===`/`!==` → `==`/`!=`).
//!
//! Owns the caps that keep a hostile expression from crashing or hanging the daemon: length
//! and nesting are checked on the text before the parser sees it, so deep input is a
//! validation error and never a stack overflow. Evaluation time is bounded before it starts:
//! CEL's only iteration is its comprehension macros, so the bound values' element count raised
//! to the number of comprehensions caps the work ([`MAX_EVAL_COST`]).
//! Expressions do no I/O: the functions registered here are pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 2000;
/// Deepest bracket nesting accepted.
pub const MAX_NESTING: usize = 24;
/// Most `?:` conditionals in one expression (the parser recurses on each).
pub const MAX_CONDITIONALS: usize = 16;
/// Longest run of prefix operators (`!!!x`, `- - x`).
pub const MAX_UNARY_RUN: usize = 8;
/// Most comprehension macros (`map`, `filter`, `all`, `exists`) in one expression: each can
/// multiply the work of the next, so this bounds evaluation time together with input sizes.
pub const MAX_COMPREHENSIONS: usize = 3;

/// Largest work bound accepted for one evaluation: (bound elements + 1) ^ comprehensions.
pub const MAX_EVAL_COST: u64 = 20_000_000;

/// Array elements and object members in `v`, all levels.
fn count_elements(v: &Value) -> u64 {
    match v {
        Value::Array(a) => a.len() as u64 + a.iter().map(count_elements).sum::<u64>(),
        Value::Object(m) => m.len() as u64 + m.values().map(count_elements).sum::<u64>(),
        _ => 0,
    }
}

/// Names `$x` is bound to in CEL: `$` is not an identifier character there.
pub fn var_binding(name: &str) -> String {
    format!("_v_{}", name.trim_start_matches('$'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprError {
    TooLong(usize),
    TooDeep(String),
    Invalid(String),
}

impl ExprError {
    pub fn code(&self) -> &'static str {
        match self {
            ExprError::TooLong(_) => "expression_too_long",
            ExprError::TooDeep(_) => "expression_too_deep",
            ExprError::Invalid(_) => "expression_invalid",
        }
    }
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExprError::TooLong(n) => {
                write!(f, "expression is {n} bytes long; the cap is {MAX_LEN}")
            }
            ExprError::TooDeep(w) => write!(f, "expression is too deeply nested: {w}"),
            ExprError::Invalid(m) => write!(f, "expression does not compile: {m}"),
        }
    }
}

/// If `s` is an expression (`=…` but not `==…`), its source; `==x` is the literal `=x`.
pub fn as_expression(s: &str) -> Option<&str> {
    if s.starts_with("==") {
        None
    } else {
        s.strip_prefix('=')
    }
}

/// A string leaf's literal value, unescaping `==`.
pub fn literal(s: &str) -> &str {
    if s.starts_with("==") { &s[1..] } else { s }
}

/// What an expression refers to, found on its text outside string literals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    /// `$name`s, with the `$`.
    pub vars: BTreeSet<String>,
    /// Bare identifiers (`_item`, `RUN`, params, CEL macro variables, functions...).
    pub idents: BTreeSet<String>,
}

/// Rewrites `$x` and `===`/`!==` outside string literals and collects references.
pub fn rewrite(src: &str) -> (String, Refs) {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    let mut refs = Refs::default();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            let end = string_end(b, i);
            out.push_str(&src[i..end]);
            i = end;
        } else if c == b'$' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            refs.vars.insert(format!("${}", &src[start..j]));
            out.push_str(&var_binding(&src[start..j]));
            i = j;
        } else if src[i..].starts_with("===") || src[i..].starts_with("!==") {
            out.push_str(&src[i..i + 2]);
            i += 3;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            // A field after `.` is not a name in scope.
            let after_dot = out.trim_end().ends_with('.');
            // r"..." and b'...' prefixes start strings.
            let word = &src[i..j];
            if j < b.len()
                && (b[j] == b'"' || b[j] == b'\'')
                && matches!(word, "r" | "R" | "b" | "B" | "rb" | "br")
            {
                let end = string_end(b, j);
                out.push_str(&src[i..end]);
                i = end;
                continue;
            }
            if !after_dot {
                refs.idents.insert(word.to_owned());
            }
            out.push_str(word);
            i = j;
        } else {
            // Multi-byte characters only occur in strings or are syntax errors; copy as is.
            let ch_len = src[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&src[i..i + ch_len]);
            i += ch_len;
        }
    }
    (out, refs)
}

/// Index just past the string literal starting at `start` (a quote), or the end of input.
fn string_end(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let triple = b.len() >= start + 3 && b[start + 1] == q && b[start + 2] == q;
    let mut i = start + if triple { 3 } else { 1 };
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if !triple {
                return i + 1;
            }
            if b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q {
                return i + 3;
            }
        }
        i += 1;
    }
    b.len()
}

/// The caps, checked on the text outside string literals.
fn precheck(src: &str) -> Result<(), ExprError> {
    if src.len() > MAX_LEN {
        return Err(ExprError::TooLong(src.len()));
    }
    let b = src.as_bytes();
    let (mut depth, mut max_depth, mut conds, mut unary, mut max_unary) = (0usize, 0, 0, 0, 0);
    let mut prev_operand = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' => {
                i = string_end(b, i);
                prev_operand = true;
                unary = 0;
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
                prev_operand = false;
                unary = 0;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                prev_operand = true;
            }
            b'?' => {
                conds += 1;
                prev_operand = false;
            }
            b'!' | b'-' if !prev_operand && b.get(i + 1) != Some(&b'=') => {
                unary += 1;
                max_unary = max_unary.max(unary);
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => {
                // After an operator, what follows may be a prefix operator again.
                prev_operand = c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
                unary = 0;
            }
        }
        i += 1;
    }
    if max_depth > MAX_NESTING {
        return Err(ExprError::TooDeep(format!(
            "brackets nest {max_depth} deep; the cap is {MAX_NESTING}"
        )));
    }
    if conds > MAX_CONDITIONALS {
        return Err(ExprError::TooDeep(format!(
            "{conds} conditionals; the cap is {MAX_CONDITIONALS}"
        )));
    }
    if max_unary > MAX_UNARY_RUN {
        return Err(ExprError::TooDeep(format!(
            "{max_unary} prefix operators in a row; the cap is {MAX_UNARY_RUN}"
        )));
    }
    Ok(())
}

/// The CEL environment: the standard library plus the strings, lists and math extensions
/// (`join`, `split`, `lowerAscii`, `flatten`, `math.greatest`...). All pure.
fn env() -> &'static Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        for ext in [
            cel::extensions::strings,
            cel::extensions::lists,
            cel::extensions::math,
        ] {
            // The extensions declare disjoint names; a clash would only drop one extension.
            let _ = env.add_extension(ext);
        }
        Arc::new(env)
    })
}

/// A compiled expression and what it refers to.
pub struct Compiled {
    program: cel::Program,
    pub refs: Refs,
    comprehensions: usize,
}

/// Checks the caps, rewrites and compiles.
pub fn compile(src: &str) -> Result<Compiled, ExprError> {
    precheck(src)?;
    let (rewritten, refs) = rewrite(src);
    let program = env()
        .compile(&rewritten)
        .map_err(|e| ExprError::Invalid(e.to_string().lines().next().unwrap_or("").to_owned()))?;
    let comprehensions = ["map", "filter", "all", "exists", "exists_one"]
        .iter()
        .map(|m| rewritten.matches(&format!(".{m}(")).count())
        .sum::<usize>();
    if comprehensions > MAX_COMPREHENSIONS {
        return Err(ExprError::TooDeep(format!(
            "{comprehensions} comprehensions; the cap is {MAX_COMPREHENSIONS}"
        )));
    }
    Ok(Compiled {
        program,
        refs,
        comprehensions,
    })
}

/// Compiled programs by source, shared by every run: a loop evaluates the same text many times.
#[derive(Default)]
pub struct Cache {
    programs: Mutex<HashMap<String, Arc<Compiled>>>,
}

/// Most programs kept; past it the cache is cleared (cheap to refill, bounded memory).
const CACHE_CAP: usize = 4096;

impl Cache {
    pub fn get(&self, src: &str) -> Result<Arc<Compiled>, ExprError> {
        if let Some(c) = self
            .programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(src)
        {
            return Ok(c.clone());
        }
        let c = Arc::new(compile(src)?);
        let mut m = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_CAP {
            m.clear();
        }
        m.insert(src.to_owned(), c.clone());
        Ok(c)
    }
}

/// Names in scope for an evaluation. `$x` are looked up in `vars` by their `$name`.
pub struct Scope<'a> {
    pub names: &'a BTreeMap<String, Value>,
    pub vars: &'a serde_json::Map<String, Value>,
}

/// Evaluates a compiled expression to JSON.
pub fn eval(c: &Compiled, scope: &Scope<'_>) -> Result<Value, String> {
    let mut ctx = cel::Context::with_env(env().clone());
    register_functions(&mut ctx);
    // Elements the expression can iterate: everything bound, counted once.
    let mut elements = 0u64;
    for v in &c.refs.vars {
        let val = scope.vars.get(v).cloned().unwrap_or(Value::Null);
        elements += count_elements(&val);
        bind(&mut ctx, &var_binding(v), val)?;
    }
    for name in &c.refs.idents {
        if let Some(val) = scope.names.get(name) {
            elements += count_elements(val);
            bind(&mut ctx, name, val.clone())?;
        }
    }
    // CEL has no loops but comprehensions, so nested comprehensions over the bound values
    // bound the work: refuse what could take too long instead of finding out.
    let cost = (elements + 1).saturating_pow(c.comprehensions.max(1) as u32);
    if cost > MAX_EVAL_COST {
        return Err(format!(
            "evaluation could take {cost} steps over {elements} bound elements; the cap is {MAX_EVAL_COST}"
        ));
    }
    let out = c.program.execute(&ctx).map_err(|e| e.to_string())?;
    out.json().map_err(|e| format!("result is not JSON: {e}"))
}

fn bind(ctx: &mut cel::Context<'_, '_>, name: &str, v: Value) -> Result<(), String> {
    ctx.add_variable_from_value(name.to_owned(), to_cel(&v));
    Ok(())
}

/// JSON to CEL. Whole numbers become `int` (not `uint`, which serde would pick for positive
/// ones), so `days + 1` works on a JSON `7`.
fn to_cel(v: &Value) -> cel::Value {
    use cel::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => V::Int(i),
            (None, Some(u)) => V::UInt(u),
            _ => V::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => V::String(Arc::new(s.clone())),
        Value::Array(a) => V::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<cel::objects::Key, cel::Value> = m
                .iter()
                .map(|(k, v)| (cel::objects::Key::from(k.clone()), to_cel(v)))
                .collect();
            V::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

fn register_functions(ctx: &mut cel::Context<'_, '_>) {
    use cel::Value as V;
    // Names that clash with the standard library are left to it (`size`, `string`, `has`).
    let _ = ctx.add_function("lower", |s: Arc<String>| s.to_lowercase());
    let _ = ctx.add_function("upper", |s: Arc<String>| s.to_uppercase());
    let _ = ctx.add_function("default", |v: V, d: V| if v == V::Null { d } else { v });
    // Date helpers over RFC 3339 text (what RUN.startedAt and the store hold): the date
    // part, and a date moved by whole days. Text dates compare as dates.
    let _ = ctx.add_function("date", |s: Arc<String>| {
        s.chars().take(10).collect::<String>()
    });
    let _ = ctx.add_function(
        "addDays",
        |ftx: &cel::FunctionContext, s: Arc<String>, days: i64| -> cel::ResolveResult {
            add_days(&s, days)
                .map(V::from)
                .ok_or_else(|| ftx.error(format!("{s:?} is not a YYYY-MM-DD date")))
        },
    );
}

/// `2026-11-21` moved by `days`, or None when `s` does not start with a date.
fn add_days(s: &str, days: i64) -> Option<String> {
    let day = s.get(..10)?;
    let t = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).ok()?;
    let shift = std::time::Duration::from_secs(days.unsigned_abs().checked_mul(86_400)?);
    let t = if days >= 0 {
        t.checked_add(shift)?
    } else {
        t.checked_sub(shift)?
    };
    Some(humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, names: Value, vars: Value) -> Result<Value, String> {
        let c = compile(src).map_err(|e| e.to_string())?;
        let names: BTreeMap<String, Value> = serde_json::from_value(names).unwrap();
        let vars = vars.as_object().cloned().unwrap_or_default();
        eval(
            &c,
            &Scope {
                names: &names,
                vars: &vars,
            },
        )
    }

    fn check(src: &str, expected: Value) {
        let got = run(
            src,
            json!({"days": 7, "_item": {"title": "A"}}),
            json!({"$n": [1, 2, 3], "$s": "Hi"}),
        );
        assert_eq!(got, Ok(expected), "{src}");
    }

    #[test]
    fn evaluates_with_the_rewrite() {
        check("days + 1", json!(8));
        check("size($n)", json!(3));
        check("$n.map(x, x * 2)", json!([2, 4, 6]));
        check("days === 7", json!(true));
        check("days !== 7", json!(false));
        check("'$n === 1'", json!("$n === 1"));
        check("_item.title", json!("A"));
        check("lower($s)", json!("hi"));
        check("default($missing, 5)", json!(5));
        check("$s + \"!\"", json!("Hi!"));
        check("[\"a\", \"b\"].join(\"-\")", json!("a-b"));
        check("addDays(\"2026-03-01\", -1)", json!("2026-02-28"));
        check(
            "addDays(\"2026-11-21T10:00:00.000Z\", 7)",
            json!("2026-11-28"),
        );
        check(
            "date(\"2026-11-21T10:00:00.000Z\") > \"2026-11-20\"",
            json!(true),
        );
    }

    #[test]
    fn evaluation_work_is_bounded() {
        let big: Vec<i64> = (0..10_000).collect();
        let vars = json!({ "$big": big });
        assert_eq!(
            run("size($big)", json!({}), vars.clone()),
            Ok(json!(10_000))
        );
        assert_eq!(
            run("$big.filter(x, x < 3)", json!({}), vars.clone()),
            Ok(json!([0, 1, 2]))
        );
        let err = run("$big.map(x, $big.map(y, x + y))", json!({}), vars).unwrap_err();
        assert!(err.contains("the cap is"), "{err}");
    }

    #[test]
    fn references_skip_strings_and_fields() {
        let (_, r) = rewrite("$a.b + size(_item) + 'x $c' + RUN.id");
        assert_eq!(r.vars, BTreeSet::from(["$a".to_owned()]));
        assert!(r.idents.contains("_item") && r.idents.contains("RUN"));
        assert!(!r.idents.contains("id") && !r.idents.contains("b"));
    }

    #[test]
    fn escapes() {
        assert_eq!(as_expression("=1+1"), Some("1+1"));
        assert_eq!(as_expression("==x"), None);
        assert_eq!(literal("==x"), "=x");
        assert_eq!(as_expression("plain"), None);
    }

    fn code(src: &str) -> &'static str {
        compile(src).err().map_or("ok", |e| e.code())
    }

    #[test]
    fn pathological_expressions_are_errors_not_crashes() {
        assert_eq!(
            code(&format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000))),
            "expression_too_long"
        );
        assert_eq!(
            code(&format!("{}1{}", "(".repeat(500), ")".repeat(500))),
            "expression_too_deep"
        );
        assert_eq!(
            code(&format!("{}1{}", "[".repeat(100), "]".repeat(100))),
            "expression_too_deep"
        );
        assert_eq!(
            code(&format!("{}true", "!".repeat(900))),
            "expression_too_deep"
        );
        assert_eq!(
            code(&format!("{}1", "- ".repeat(300))),
            "expression_too_deep"
        );
        assert_eq!(
            code(&"a ? b : ".repeat(100).to_string()),
            "expression_too_deep"
        );
        assert_eq!(
            code("[1].map(a, [1].map(b, [1].map(c, [1].map(d, 1))))"),
            "expression_too_deep"
        );
        assert_eq!(code("1 +"), "expression_invalid");
        assert_eq!(code("((((1))))"), "ok");
        assert_eq!(code("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p"), "ok");
        assert_eq!(code("x - -1"), "ok");
        // Many chained operators stay iterative in the parser; the length cap bounds them.
        assert_eq!(code(&"1 + ".repeat(400).to_string()), "expression_invalid");
    }
}
