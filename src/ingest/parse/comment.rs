//! Obsidian comments: `%%hidden%%`, inline or across lines. Obsidian shows none of their text,
//! so none of it is a fact, searchable, or shown in a snippet. A `%%` inside code is text; an
//! unclosed one hides the rest of the note, as Obsidian's reading view does.
//! Must not know what the rest of the note means: callers pass the code ranges.

use std::ops::Range;

const MARK: &str = "%%";

/// The comments of `text[body..]`, in order, each from its opening `%%` to past its closing
/// one. `code` is sorted and merged; a `%%` starting inside it does not count.
pub(crate) fn ranges(text: &str, body: usize, code: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut at = body;
    let mut next_code = 0;
    while let Some(i) = text.get(at..).and_then(|t| t.find(MARK)) {
        let mark = at + i;
        while code.get(next_code).is_some_and(|r| r.end <= mark) {
            next_code += 1;
        }
        if let Some(r) = code.get(next_code).filter(|r| r.start <= mark) {
            at = r.end.max(mark + 1);
            continue;
        }
        match open.take() {
            Some(start) => out.push(start..mark + MARK.len()),
            None => open = Some(mark),
        }
        at = mark + MARK.len();
    }
    if let Some(start) = open {
        out.push(start..text.len());
    }
    out
}

/// `text[span]` without the parts inside `comments` (sorted, disjoint). Borrowed when no
/// comment meets the span.
pub(crate) fn strip<'t>(
    text: &'t str,
    span: Range<usize>,
    comments: &[Range<usize>],
) -> std::borrow::Cow<'t, str> {
    let first = comments.partition_point(|c| c.end <= span.start);
    let meeting = comments[first..]
        .iter()
        .take_while(|c| c.start < span.end)
        .map(|c| c.start.max(span.start)..c.end.min(span.end));
    let mut out: Option<String> = None;
    let mut at = span.start;
    for c in meeting {
        let s = out.get_or_insert_with(String::new);
        s.push_str(&text[at..c.start]);
        at = c.end;
    }
    match out {
        None => std::borrow::Cow::Borrowed(&text[span]),
        Some(mut s) => {
            s.push_str(&text[at..span.end]);
            std::borrow::Cow::Owned(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, code: &[Range<usize>], expected: &[&str]) {
        let found: Vec<&str> = ranges(text, 0, code)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(found, expected, "{text:?}");
    }

    #[test]
    fn comments_are_found_outside_code() {
        check("a %%b%% c", &[], &["%%b%%"]);
        check("a %%b\nc%% d %%e%%", &[], &["%%b\nc%%", "%%e%%"]);
        check("a %%b", &[], &["%%b"]);
        let code = vec![0..4, 20..21];
        check("`%%` a %%b%%", &code, &["%%b%%"]);
        check("%%%%", &[], &["%%%%"]);
        check("no comment", &[], &[]);
    }

    #[test]
    fn strip_takes_comments_out_of_a_span() {
        let text = "one %%two%% three %%four";
        let comments = ranges(text, 0, &[]);
        assert_eq!(strip(text, 0..text.len(), &comments), "one  three ");
        assert_eq!(strip(text, 6..14, &comments), " th");
        assert_eq!(strip(text, 0..3, &comments), "one");
    }
}
