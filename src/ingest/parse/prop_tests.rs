//! Property tests of the parsers: generated notes made of the syntax they read (and of bytes
//! that are not UTF-8), checked against the promises the module makes — every span inside the
//! file, on char boundaries, with lines that agree with its bytes; every non-blank byte of the
//! body in exactly one chunk; every link's span holding what it links to.
//!
//! 64 cases each by default, so `cargo test` stays quick; `PROPTEST_CASES=N` runs more.

use std::ops::Range;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::link::{bare_urls, has_scheme, wikilinks};
use super::{Document, FileType, LinkKind, Source, Span, decode, parse};

/// Cases per property: `PROPTEST_CASES` when set, else a budget small enough for every run.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // No regression files written next to the sources: a failure prints its input.
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Pieces of Markdown and Obsidian syntax, joined in any order, so that generated notes hit
/// the parsers' edge cases far more often than random text would.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just(" ".to_owned()),
        Just("# ".to_owned()),
        Just("## H".to_owned()),
        Just("[[".to_owned()),
        Just("]]".to_owned()),
        Just("![[".to_owned()),
        Just("[[Note#H|alias]]".to_owned()),
        Just("[[#^blk]]".to_owned()),
        Just("#tag".to_owned()),
        Just("#a/b ".to_owned()),
        Just("key:: value".to_owned()),
        Just("[k:: v]".to_owned()),
        Just("(k:: v)".to_owned()),
        Just("`".to_owned()),
        Just("```\n".to_owned()),
        Just("$$".to_owned()),
        Just("<div>".to_owned()),
        Just("- ".to_owned()),
        Just("> ".to_owned()),
        Just("| a | b |\n|---|---|\n".to_owned()),
        Just(" ^id".to_owned()),
        Just("\\".to_owned()),
        Just("|".to_owned()),
        Just("https://example.org/p(a)".to_owned()),
        Just("<https://x.y>".to_owned()),
        Just("[t](Other%20Note.md#Sec)".to_owned()),
        Just("![i](img.png)".to_owned()),
        Just("[ref]: http://r.example\n".to_owned()),
        Just("---\n".to_owned()),
        Just("title: T\n".to_owned()),
        Just("tags: [x, y]\n".to_owned()),
        Just("aliases: A, B\n".to_owned()),
        Just("related: \"[[R]]\"\n".to_owned()),
        Just("é".to_owned()),
        Just("😀".to_owned()),
        Just("\u{FEFF}".to_owned()),
        Just("\t".to_owned()),
        "[a-z0-9]{1,6}",
        any::<char>().prop_map(String::from),
    ]
}

/// A note: optional front matter, then pieces; sometimes with bytes that are not UTF-8.
fn note() -> impl Strategy<Value = Vec<u8>> {
    let text = (
        proptest::option::of(prop::collection::vec(piece(), 0..6)),
        prop::collection::vec(piece(), 0..48),
    )
        .prop_map(|(front, body)| {
            let mut s = String::new();
            if let Some(front) = front {
                s.push_str("---\n");
                s.push_str(&front.concat());
                s.push_str("\n---\n");
            }
            s.push_str(&body.concat());
            s.into_bytes()
        });
    prop_oneof![
        4 => text,
        1 => (prop::collection::vec(piece(), 0..24), prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(pieces, junk)| {
                let mut b = pieces.concat().into_bytes();
                let at = b.len() / 2;
                b.splice(at..at, junk);
                b
            }),
    ]
}

/// A span is a range of the file on char boundaries of the decoded text, and its lines are
/// those of its first and last byte.
fn check_span(what: &str, source: &Source<'_>, span: &Span) -> Result<(), TestCaseError> {
    let text = source.text;
    prop_assert!(
        span.byte_start <= span.byte_end && span.byte_end <= text.len(),
        "{what}: {span:?} outside 0..{}",
        text.len()
    );
    prop_assert!(
        text.is_char_boundary(span.byte_start) && text.is_char_boundary(span.byte_end),
        "{what}: {span:?} not on char boundaries"
    );
    let expected = source.span(span.range());
    prop_assert_eq!(
        (span.line_start, span.line_end),
        (expected.line_start, expected.line_end),
        "{}: lines disagree with bytes {:?}",
        what,
        span.range()
    );
    Ok(())
}

/// Every span of a document, named.
fn spans(doc: &Document) -> Vec<(String, Span)> {
    let mut out: Vec<(String, Span)> = Vec::new();
    out.extend(doc.front_matter.map(|s| ("front matter".to_owned(), s)));
    out.extend(
        doc.headings
            .iter()
            .map(|h| (format!("heading {:?}", h.text), h.span)),
    );
    out.extend(
        doc.links
            .iter()
            .map(|l| (format!("link {:?}", l.target), l.span)),
    );
    out.extend(
        doc.tags
            .iter()
            .map(|t| (format!("tag {:?}", t.name), t.span)),
    );
    out.extend(
        doc.inline_fields
            .iter()
            .map(|f| (format!("field {:?}", f.key), f.span)),
    );
    out.extend(
        doc.block_ids
            .iter()
            .map(|b| (format!("block id {:?}", b.id), b.span)),
    );
    out.extend(doc.chunks.iter().map(|c| ("chunk".to_owned(), c.span)));
    out.extend(
        doc.diagnostics
            .iter()
            .filter_map(|d| d.span.map(|s| (format!("diagnostic {:?}", d.message), s))),
    );
    out
}

/// The promises every format makes about spans and chunks.
fn check_document(bytes: &[u8], file_type: FileType) -> Result<(), TestCaseError> {
    let doc = parse(bytes, file_type);
    let decoded = decode(bytes);
    let source = Source::new(&decoded.text);
    let text = source.text;
    for (what, span) in spans(&doc) {
        check_span(&what, &source, &span)?;
    }
    // Chunks come in file order and never overlap.
    for pair in doc.chunks.windows(2) {
        prop_assert!(
            pair[0].span.byte_end <= pair[1].span.byte_start,
            "chunks overlap or are out of order: {:?} then {:?}",
            pair[0].span,
            pair[1].span
        );
    }
    if file_type == FileType::Html {
        return Ok(());
    }
    for c in &doc.chunks {
        prop_assert_eq!(
            &c.text,
            &text[c.span.range()],
            "chunk text is not its slice"
        );
        prop_assert!(!c.text.trim().is_empty(), "blank chunk {:?}", c.span);
    }
    // Every non-blank byte of the body is in exactly one chunk (the front matter is the
    // note's properties, not its text).
    let body = doc
        .front_matter
        .map_or(decoded.body_start, |s| s.byte_end.max(decoded.body_start));
    let covering = |at: usize| -> Vec<Range<usize>> {
        doc.chunks
            .iter()
            .map(|c| c.span.range())
            .filter(|r| r.contains(&at))
            .collect()
    };
    for (at, ch) in text[body..].char_indices() {
        if ch.is_whitespace() {
            continue;
        }
        let at = body + at;
        let found = covering(at);
        prop_assert_eq!(
            found.len(),
            1,
            "byte {} ({:?}) is in {:?} chunks of {:?}",
            at,
            ch,
            found,
            text
        );
    }
    for link in &doc.links {
        let written = &text[link.span.range()];
        match link.kind {
            LinkKind::Wikilink | LinkKind::Embed if written.ends_with("]]") => {
                prop_assert!(
                    written.contains(link.target.as_str()),
                    "{written:?} does not hold its target {:?}",
                    link.target
                );
            }
            // A reference link (`[text][ref]`) holds its label, not its URL; an e-mail
            // autolink gains `mailto:`.
            LinkKind::External
                if !link.target.starts_with("mailto:") && !written.ends_with(']') =>
            {
                prop_assert!(
                    written.contains(link.target.as_str()),
                    "{written:?} does not hold its URL {:?}",
                    link.target
                );
            }
            _ => {}
        }
    }
    for tag in doc.tags.iter().filter(|t| !t.from_front_matter) {
        prop_assert_eq!(
            &text[tag.span.range()],
            format!("#{}", tag.name),
            "a tag's span is `#` and its name"
        );
    }
    for field in &doc.inline_fields {
        let written = &text[field.span.range()];
        prop_assert!(
            written.contains(field.key.as_str()) && written.contains(field.value.as_str()),
            "{written:?} does not hold its key {:?} and value {:?}",
            field.key,
            field.value
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn markdown_spans_and_chunks_keep_their_promises(bytes in note()) {
        check_document(&bytes, FileType::Markdown)?;
    }

    #[test]
    fn text_and_code_chunks_cover_every_line(bytes in note()) {
        check_document(&bytes, FileType::Text)?;
        check_document(&bytes, FileType::Code)?;
    }

    #[test]
    fn html_spans_lie_inside_the_file(
        bytes in prop::collection::vec(
            prop_oneof![
                Just("<h1>T</h1>".to_owned()),
                Just("<a href=\"x.md\">x</a>".to_owned()),
                Just("<p>".to_owned()),
                Just("<script>".to_owned()),
                Just("<!--".to_owned()),
                Just("&amp;".to_owned()),
                piece(),
            ],
            0..40,
        ).prop_map(|p| p.concat().into_bytes())
    ) {
        check_document(&bytes, FileType::Html)?;
    }

    /// Front matter: its block starts where the note does, and what it states lies inside it.
    #[test]
    fn front_matter_facts_lie_in_the_block(
        keys in prop::collection::vec(piece(), 0..8),
        body in prop::collection::vec(piece(), 0..8),
    ) {
        let text = format!("---\n{}\n---\n{}", keys.concat(), body.concat());
        let doc = parse(text.as_bytes(), FileType::Markdown);
        let source = Source::new(&text);
        for (what, span) in spans(&doc) {
            check_span(&what, &source, &span)?;
        }
        if let Some(block) = doc.front_matter {
            prop_assert_eq!(block.byte_start, 0);
            prop_assert!(text[block.range()].starts_with("---"));
            for tag in doc.tags.iter().filter(|t| t.from_front_matter) {
                prop_assert!(block.byte_start <= tag.span.byte_start && tag.span.byte_end <= block.byte_end);
            }
            for link in doc.links.iter().filter(|l| l.property.is_some() && l.span.byte_end <= block.byte_end) {
                prop_assert!(text[link.span.range()].contains(link.target.as_str()) || link.target.is_empty());
            }
        }
    }

    /// The link grammar on one line: every wikilink is inside the segment, bracketed, in order
    /// and apart; every bare URL has a scheme and is inside the segment.
    #[test]
    fn link_scanners_stay_in_their_segment(
        pieces in prop::collection::vec(piece(), 0..32),
        lead in 0usize..4,
    ) {
        let line: String = pieces.concat().replace(['\n', '\r'], " ");
        let text = format!("{}{line}", "x".repeat(lead));
        let seg = lead..text.len();
        let mut last_end = seg.start;
        for w in wikilinks(&text, seg.clone()) {
            prop_assert!(seg.start <= w.range.start && w.range.end <= seg.end, "{w:?}");
            prop_assert!(w.range.start >= last_end, "wikilinks overlap: {w:?}");
            last_end = w.range.end;
            let written = &text[w.range.clone()];
            prop_assert!(written.ends_with("]]"));
            prop_assert_eq!(written.starts_with("![["), w.embed);
            prop_assert!(written.contains(w.target.as_str()));
        }
        for url in bare_urls(&text, seg.clone()) {
            prop_assert!(seg.start <= url.start && url.end <= seg.end, "{url:?}");
            prop_assert!(has_scheme(&text[url.clone()]), "{:?}", &text[url]);
        }
    }
}
