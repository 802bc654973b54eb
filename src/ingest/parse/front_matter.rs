//! YAML front matter of a Markdown note: finding the block, reading it as typed properties, and
//! the facts Obsidian gives special meaning (`title`, `aliases`, `id`, `tags`, and `[[links]]`
//! inside property values).
//!
//! Must not read the body: whatever the front matter holds, even invalid YAML, the body after
//! it is parsed the same way. Spans of values are found by searching the block's text for what
//! YAML gave back, because the YAML parser reports no value offsets; when a value cannot be
//! found verbatim (escapes, folding), the span falls back to the property's whole value.

use std::ops::Range;

use serde_json::Value;

use super::link::wikilinks;
use super::markdown::{is_tag_char, is_tag_name};
use super::{Diagnostic, Document, Link, LinkKind, Source, Span, Tag, lines};

/// Reads the front matter starting at `start` (after any BOM) into `doc`; returns where the
/// body starts.
pub(crate) fn read(source: &Source, start: usize, doc: &mut Document) -> usize {
    let text = source.text;
    let block = match find_block(text, start) {
        Some(Ok(block)) => block,
        Some(Err(opening)) => {
            doc.diagnostics.push(Diagnostic {
                message: "front matter is not closed by `---`; reading it as body text".into(),
                span: Some(source.span(opening)),
            });
            return start;
        }
        None => return start,
    };
    let block_span = source.span(start..block.end);
    doc.front_matter = Some(block_span);

    let yaml = &text[block.yaml.clone()];
    if yaml.trim().is_empty() {
        return block.body;
    }
    let options = serde_saphyr::Options {
        // Obsidian reads YAML 1.2: `yes` and `no` are text, not booleans.
        strict_booleans: true,
        // One-line messages; a diagnostic is not a terminal.
        with_snippet: false,
        // Real front matter is a few levels deep; the default (2,000) lets a hostile note
        // overflow the stack of a small thread.
        budget: Some(serde_saphyr::Budget {
            max_depth: 64,
            ..serde_saphyr::Budget::default()
        }),
        ..serde_saphyr::Options::default()
    };
    let properties = match serde_saphyr::from_str_with_options::<Value>(yaml, options) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => return block.body,
        Ok(_) => {
            doc.diagnostics.push(Diagnostic {
                message: "front matter is not a mapping of keys to values".into(),
                span: Some(block_span),
            });
            return block.body;
        }
        Err(e) => {
            doc.diagnostics
                .push(yaml_error(source, &block, block_span, &e));
            return block.body;
        }
    };

    let mut regions = std::collections::HashMap::new();
    for (key, region) in key_regions(text, block.yaml.clone()) {
        regions.entry(key).or_insert(region);
    }
    let region_of = |key: &str| regions.get(key).cloned().unwrap_or(block.yaml.clone());

    doc.title = properties
        .get("title")
        .and_then(scalar)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    doc.front_matter_id = properties
        .get("id")
        .and_then(scalar)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    for key in ["aliases", "alias"] {
        if let Some(value) = properties.get(key) {
            doc.aliases.extend(words(value, |c| c == ',', false));
        }
    }
    for key in ["tags", "tag"] {
        let Some(value) = properties.get(key) else {
            continue;
        };
        let region = region_of(key);
        let mut cursor = region.start;
        for word in words(value, |c| c == ',' || c.is_whitespace(), true) {
            let name = word.trim_start_matches('#');
            if !is_tag_name(name) {
                doc.diagnostics.push(Diagnostic {
                    message: format!("front matter tag {word:?} is not a valid tag"),
                    span: Some(source.span(trimmed(text, region.clone()))),
                });
                continue;
            }
            let range = match find_word(text, region.clone(), name, &mut cursor) {
                Some(r) if r.start > 0 && text.as_bytes()[r.start - 1] == b'#' => {
                    r.start - 1..r.end
                }
                Some(r) => r,
                None => trimmed(text, region.clone()),
            };
            doc.tags.push(Tag {
                name: name.to_string(),
                span: source.span(range),
                from_front_matter: true,
            });
        }
    }
    for (key, value) in &properties {
        let region = region_of(key);
        let mut cursor = region.start;
        let mut strings = Vec::new();
        collect_strings(value, &mut strings);
        for s in strings {
            for line in lines(s, 0..s.len()) {
                for raw in wikilinks(s, line) {
                    let literal = &s[raw.range.clone()];
                    let range = match text[cursor..region.end].find(literal) {
                        Some(at) => {
                            cursor += at + literal.len();
                            cursor - literal.len()..cursor
                        }
                        None => trimmed(text, region.clone()),
                    };
                    doc.links.push(Link {
                        kind: if raw.embed {
                            LinkKind::Embed
                        } else {
                            LinkKind::Wikilink
                        },
                        target: raw.target,
                        subpath: raw.subpath,
                        display: raw.display,
                        property: Some(key.clone()),
                        span: source.span(range),
                    });
                }
            }
        }
    }
    doc.properties = properties;
    block.body
}

/// Points a YAML error at its line in the file, not in the YAML text.
fn yaml_error(
    source: &Source,
    block: &Block,
    block_span: Span,
    e: &serde_saphyr::Error,
) -> Diagnostic {
    let message = e.to_string();
    let located = e.location().and_then(|loc| {
        let line = lines(source.text, block.yaml.clone())
            .nth(usize::try_from(loc.line()).ok()?.checked_sub(1)?)?;
        let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
        let what = message.strip_suffix(&suffix).unwrap_or(&message);
        let span = source.span(line);
        Some(Diagnostic {
            message: format!(
                "invalid YAML front matter at line {}, column {}: {what}",
                span.line_start,
                loc.column()
            ),
            span: Some(span),
        })
    });
    located.unwrap_or_else(|| Diagnostic {
        message: format!("invalid YAML front matter: {message}"),
        span: Some(block_span),
    })
}

struct Block {
    /// The YAML between the delimiter lines.
    yaml: Range<usize>,
    /// After the closing `---` or `...`.
    end: usize,
    /// After the closing line's line break.
    body: usize,
}

/// `None` when the file does not open with `---`; `Err(opening line)` when no line closes it.
fn find_block(text: &str, start: usize) -> Option<Result<Block, Range<usize>>> {
    let first = lines(text, start..text.len()).next()?;
    if text[first.clone()].trim_end() != "---" {
        return None;
    }
    let yaml_start = text[first.end..].find('\n').map(|i| first.end + i + 1)?;
    for line in lines(text, yaml_start..text.len()) {
        let content = text[line.clone()].trim_end();
        if content == "---" || content == "..." {
            let body = text[line.end..]
                .find('\n')
                .map_or(text.len(), |i| line.end + i + 1);
            return Some(Ok(Block {
                yaml: yaml_start..line.start,
                end: line.start + 3,
                body,
            }));
        }
    }
    Some(Err(first))
}

/// Where each top-level key's value is written: from after `key:` up to the next top-level key.
fn key_regions(text: &str, yaml: Range<usize>) -> Vec<(String, Range<usize>)> {
    let mut regions: Vec<(String, Range<usize>)> = Vec::new();
    for line in lines(text, yaml.clone()) {
        let l = &text[line.clone()];
        if l.is_empty() || l.starts_with(|c: char| c.is_whitespace() || c == '-' || c == '#') {
            continue;
        }
        let Some((key, colon)) = top_level_key(l) else {
            continue;
        };
        if let Some(last) = regions.last_mut() {
            last.1.end = line.start;
        }
        regions.push((key, line.start + colon + 1..yaml.end));
    }
    regions
}

/// The key of `key: value` (plain or quoted) and the offset of its colon.
fn top_level_key(line: &str) -> Option<(String, usize)> {
    if let Some(quote) = line.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let close = line[1..].find(quote)? + 1;
        let rest = &line[close + 1..];
        let colon = close + 1 + rest.find(':')?;
        return line[close + 1..colon]
            .trim()
            .is_empty()
            .then(|| (line[1..close].to_string(), colon));
    }
    let colon = line
        .char_indices()
        .find(|&(i, c)| c == ':' && line[i + 1..].chars().next().is_none_or(char::is_whitespace))?
        .0;
    Some((line[..colon].trim().to_string(), colon))
}

/// The next occurrence of `word` in `text[region]` at or after `cursor`, not inside a longer
/// tag-like word.
fn find_word(
    text: &str,
    region: Range<usize>,
    word: &str,
    cursor: &mut usize,
) -> Option<Range<usize>> {
    let mut from = (*cursor).max(region.start);
    while from < region.end {
        let at = from + text[from..region.end].find(word)?;
        let end = at + word.len();
        let before_ok = !text[..at].chars().next_back().is_some_and(is_tag_char);
        let after_ok = !text[end..].chars().next().is_some_and(is_tag_char);
        if before_ok && after_ok {
            *cursor = end;
            return Some(at..end);
        }
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

fn trimmed(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    start..start + s.trim().len()
}

/// Text of a scalar; numbers and booleans as YAML wrote them.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The non-empty words of a scalar split at `sep`, or of a list of scalars (each item split
/// too when `split_items`: an alias in a list may hold a comma, a tag may not).
fn words(value: &Value, sep: impl Fn(char) -> bool + Copy, split_items: bool) -> Vec<String> {
    let pieces: Vec<String> = match value {
        Value::Array(items) if !split_items => items.iter().filter_map(scalar).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(scalar)
            .flat_map(|item| item.split(sep).map(str::to_string).collect::<Vec<_>>())
            .collect(),
        other => scalar(other)
            .map(|s| s.split(sep).map(str::to_string).collect())
            .unwrap_or_default(),
    };
    pieces
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn collect_strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ingest::parse::Subpath;

    /// What front matter reading yields, compared as one value so failures show everything.
    fn check(input: &str, expected: serde_json::Value) {
        let source = Source::new(input);
        let mut doc = Document::empty(super::super::FileType::Markdown);
        let body = read(&source, 0, &mut doc);
        let span = |s: &Span| json!([&input[s.range()], s.line_start, s.line_end]);
        let got = json!({
            "body": &input[body..],
            "block": doc.front_matter.as_ref().map(span),
            "title": doc.title,
            "id": doc.front_matter_id,
            "aliases": doc.aliases,
            "properties": doc.properties,
            "tags": doc.tags.iter().map(|t| json!([t.name, span(&t.span)])).collect::<Vec<_>>(),
            "links": doc.links.iter().map(|l| json!([
                l.target,
                match &l.subpath { Some(Subpath::Heading(h)) => json!(h), Some(Subpath::Block(b)) => json!(b), None => json!(null) },
                l.display,
                l.property,
                span(&l.span),
            ])).collect::<Vec<_>>(),
            "diagnostics": doc.diagnostics.iter().map(|d| d.message.clone()).collect::<Vec<_>>(),
        });
        let mut expected = expected;
        let full = json!({
            "body": input, "block": null, "title": null, "id": null, "aliases": [],
            "properties": {}, "tags": [], "links": [], "diagnostics": [],
        });
        if let (Some(e), Some(f)) = (expected.as_object_mut(), full.as_object()) {
            for (k, v) in f {
                e.entry(k.clone()).or_insert(v.clone());
            }
        }
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn no_front_matter() {
        check("", json!({}));
        check("# Title\n", json!({}));
        check("---", json!({}));
        check(" ---\na: 1\n---\n", json!({}));
        check("---x\na: 1\n---\n", json!({}));
    }

    #[test]
    fn block_boundaries() {
        check(
            "---\n---\nbody",
            json!({"body": "body", "block": ["---\n---", 1, 2]}),
        );
        check(
            "---\r\na: 1\r\n---\r\nbody",
            json!({
                "body": "body", "block": ["---\r\na: 1\r\n---", 1, 3], "properties": {"a": 1},
            }),
        );
        check(
            "--- \na: 1\n...\n",
            json!({"body": "", "block": ["--- \na: 1\n...", 1, 3], "properties": {"a": 1}}),
        );
        check(
            "---\na: 1\n---",
            json!({"body": "", "block": ["---\na: 1\n---", 1, 3], "properties": {"a": 1}}),
        );
        check(
            "---\na: |\n  ---\n---\nb",
            json!({
                "body": "b", "block": ["---\na: |\n  ---\n---", 1, 4], "properties": {"a": "---\n"},
            }),
        );
    }

    #[test]
    fn typed_properties() {
        check(
            "---\ntitle: My Title\nid: n-1\ncount: 3\nratio: 0.5\ndone: true\nmaybe: yes\ndate: 2024-05-01\nlist: [a, 1]\nempty:\n---\n",
            json!({
                "body": "",
                "block": ["---\ntitle: My Title\nid: n-1\ncount: 3\nratio: 0.5\ndone: true\nmaybe: yes\ndate: 2024-05-01\nlist: [a, 1]\nempty:\n---", 1, 11],
                "title": "My Title",
                "id": "n-1",
                "properties": {"title": "My Title", "id": "n-1", "count": 3, "ratio": 0.5, "done": true,
                    "maybe": "yes", "date": "2024-05-01", "list": ["a", 1], "empty": null},
            }),
        );
        check(
            "---\nid: 42\n---\n",
            json!({"body": "", "block": ["---\nid: 42\n---", 1, 3], "id": "42", "properties": {"id": 42}}),
        );
    }

    #[test]
    fn aliases() {
        check(
            "---\naliases: [One, Two]\n---\n",
            json!({
                "body": "", "block": ["---\naliases: [One, Two]\n---", 1, 3], "aliases": ["One", "Two"],
                "properties": {"aliases": ["One", "Two"]},
            }),
        );
        check(
            "---\nalias: One, Two\n---\n",
            json!({
                "body": "", "block": ["---\nalias: One, Two\n---", 1, 3], "aliases": ["One", "Two"],
                "properties": {"alias": "One, Two"},
            }),
        );
        check(
            "---\naliases: [\"Smith, John\", Jo]\n---\n",
            json!({
                "body": "", "block": ["---\naliases: [\"Smith, John\", Jo]\n---", 1, 3],
                "aliases": ["Smith, John", "Jo"], "properties": {"aliases": ["Smith, John", "Jo"]},
            }),
        );
        check(
            "---\naliases:\n  - Long Name\n---\n",
            json!({
                "body": "", "block": ["---\naliases:\n  - Long Name\n---", 1, 4], "aliases": ["Long Name"],
                "properties": {"aliases": ["Long Name"]},
            }),
        );
    }

    #[test]
    fn tags() {
        check(
            "---\ntags: [a, '#b/c']\n---\n",
            json!({
                "body": "", "block": ["---\ntags: [a, '#b/c']\n---", 1, 3],
                "properties": {"tags": ["a", "#b/c"]},
                "tags": [["a", ["a", 2, 2]], ["b/c", ["#b/c", 2, 2]]],
            }),
        );
        check(
            "---\ntags: ab a, x\n---\n",
            json!({
                "body": "", "block": ["---\ntags: ab a, x\n---", 1, 3],
                "properties": {"tags": "ab a, x"},
                "tags": [["ab", ["ab", 2, 2]], ["a", ["a", 2, 2]], ["x", ["x", 2, 2]]],
            }),
        );
        check(
            "---\ntag:\n- project\n- 2024\n---\n",
            json!({
                "body": "", "block": ["---\ntag:\n- project\n- 2024\n---", 1, 5],
                "properties": {"tag": ["project", 2024]},
                "tags": [["project", ["project", 3, 3]]],
                "diagnostics": ["front matter tag \"2024\" is not a valid tag"],
            }),
        );
    }

    #[test]
    fn links_in_properties() {
        check(
            "---\nrelated: \"[[Other Note]]\"\n---\n",
            json!({
                "body": "", "block": ["---\nrelated: \"[[Other Note]]\"\n---", 1, 3],
                "properties": {"related": "[[Other Note]]"},
                "links": [["Other Note", null, null, "related", ["[[Other Note]]", 2, 2]]],
            }),
        );
        check(
            "---\nup: [\"[[A]]\", \"[[B#Part|b]]\"]\nx: \"[[A]]\"\n---\n",
            json!({
                "body": "", "block": ["---\nup: [\"[[A]]\", \"[[B#Part|b]]\"]\nx: \"[[A]]\"\n---", 1, 4],
                "properties": {"up": ["[[A]]", "[[B#Part|b]]"], "x": "[[A]]"},
                "links": [
                    ["A", null, null, "up", ["[[A]]", 2, 2]],
                    ["B", ["Part"], "b", "up", ["[[B#Part|b]]", 2, 2]],
                    ["A", null, null, "x", ["[[A]]", 3, 3]],
                ],
            }),
        );
        check(
            "---\nsee:\n  - \"[[A]]\"\n  - \"[[A]]\"\n---\n",
            json!({
                "body": "", "block": ["---\nsee:\n  - \"[[A]]\"\n  - \"[[A]]\"\n---", 1, 5],
                "properties": {"see": ["[[A]]", "[[A]]"]},
                "links": [
                    ["A", null, null, "see", ["[[A]]", 3, 3]],
                    ["A", null, null, "see", ["[[A]]", 4, 4]],
                ],
            }),
        );
        // Unquoted, YAML reads `[[X]]` as a list in a list: no link, as in Obsidian.
        check(
            "---\nrel: [[X]]\n---\n",
            json!({
                "body": "", "block": ["---\nrel: [[X]]\n---", 1, 3], "properties": {"rel": [["X"]]},
            }),
        );
    }

    #[test]
    fn broken_front_matter() {
        check(
            "---\na: [unclosed\nb: 2\n---\nbody [[X]]\n",
            json!({
                "body": "body [[X]]\n", "block": ["---\na: [unclosed\nb: 2\n---", 1, 4],
                "diagnostics": ["invalid YAML front matter at line 3, column 2: illegal placement of ':' indicator"],
            }),
        );
        check(
            "---\na: 1\nno end\n",
            json!({
                "diagnostics": ["front matter is not closed by `---`; reading it as body text"],
            }),
        );
        check(
            "---\n- a\n- b\n---\n",
            json!({
                "body": "", "block": ["---\n- a\n- b\n---", 1, 4],
                "diagnostics": ["front matter is not a mapping of keys to values"],
            }),
        );
        check(
            "---\na: 1\na: 2\n---\n",
            json!({
                "body": "", "block": ["---\na: 1\na: 2\n---", 1, 4],
                "diagnostics": ["invalid YAML front matter at line 3, column 1: duplicate mapping key: a"],
            }),
        );
    }

    fn check_key(line: &str, expected: Option<(&str, usize)>) {
        assert_eq!(
            top_level_key(line),
            expected.map(|(k, c)| (k.to_string(), c)),
            "{line:?}"
        );
    }

    #[test]
    fn keys() {
        check_key("title: x", Some(("title", 5)));
        check_key("tags:", Some(("tags", 4)));
        check_key("\"odd: key\": 1", Some(("odd: key", 10)));
        check_key("'k': 1", Some(("k", 3)));
        check_key("url:x", None);
        check_key("plain text", None);
        check_key("\"unclosed: 1", None);
    }
}
