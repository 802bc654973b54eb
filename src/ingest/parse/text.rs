//! Plain text and source code: no markup to understand, so the document is its chunks (by
//! blank-line separated paragraphs, packed up to the chunk size, long ones cut at line ends)
//! and the bare URLs in it.
//!
//! Must not guess at structure (no headings, tags or front matter): a `#` in a shell script is a
//! comment, not a tag.

use super::chunk::{Section, chunk_sections, paragraphs};
use super::link::bare_urls;
use super::{Document, FileType, Link, LinkKind, Source};

pub(crate) fn parse(source: &Source, body_start: usize, file_type: FileType) -> Document {
    let mut doc = Document::empty(file_type);
    let text = source.text;
    for line in source.lines(body_start..text.len()) {
        for url in bare_urls(text, line) {
            doc.links.push(Link {
                kind: LinkKind::External,
                target: text[url.clone()].to_string(),
                subpath: None,
                display: None,
                property: None,
                span: source.span(url),
            });
        }
    }
    // Code is cut the same way: packing blank-line separated paragraphs prefers cuts between
    // functions over cuts inside them.
    let section = Section {
        heading_path: Vec::new(),
        blocks: paragraphs(source, body_start..text.len()),
    };
    doc.chunks = chunk_sections(source, &[section]);
    doc
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_CHUNK_BYTES, parse as parse_file};
    use super::*;

    /// `expected`: the chunk texts with their line ranges, then the external link targets.
    fn check(input: &str, file_type: FileType, chunks: &[(&str, u32, u32)], links: &[&str]) {
        let doc = parse_file(input.as_bytes(), file_type);
        let got: Vec<_> = doc
            .chunks
            .iter()
            .map(|c| {
                assert_eq!(c.text, input[c.span.range()]);
                (c.text.as_str(), c.span.line_start, c.span.line_end)
            })
            .collect();
        assert_eq!(got, chunks, "input {input:?}");
        let got: Vec<_> = doc.links.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(got, links, "input {input:?}");
        assert_eq!(doc.title, None);
        assert!(doc.headings.is_empty() && doc.tags.is_empty());
    }

    #[test]
    fn text_files() {
        use FileType::Text;
        check("", Text, &[], &[]);
        check(
            "one\ntwo\n\nthree\n",
            Text,
            &[("one\ntwo\n\nthree", 1, 4)],
            &[],
        );
        check("\u{feff}bom", Text, &[("bom", 1, 1)], &[]);
        check("a\r\n\r\nb\r\n", Text, &[("a\r\n\r\nb", 1, 3)], &[]);
        check(
            "#not-a-tag [[not a link]]",
            Text,
            &[("#not-a-tag [[not a link]]", 1, 1)],
            &[],
        );
        check(
            "see https://example.com/x.",
            Text,
            &[("see https://example.com/x.", 1, 1)],
            &["https://example.com/x"],
        );
    }

    #[test]
    fn code_files() {
        use FileType::Code;
        check(
            "# comment\ndef f():\n    pass\n",
            Code,
            &[("# comment\ndef f():\n    pass", 1, 3)],
            &[],
        );
        check(
            "\n\n    indented()\n",
            Code,
            &[("    indented()", 3, 3)],
            &[],
        );
        check(
            "# docs: https://docs.python.org/3/",
            Code,
            &[("# docs: https://docs.python.org/3/", 1, 1)],
            &["https://docs.python.org/3/"],
        );
    }

    #[test]
    fn long_code_is_cut_between_paragraphs() {
        let function = format!("def f():\n{}\n", "    x = 1\n".repeat(60).trim_end());
        let input = [function.as_str(); 5].join("\n");
        let doc = parse_file(input.as_bytes(), FileType::Code);
        assert!(doc.chunks.len() > 1);
        for c in &doc.chunks {
            assert!(c.text.len() <= MAX_CHUNK_BYTES);
            assert!(
                c.text.starts_with("def f():"),
                "cut inside a function: {:?}",
                &c.text[..20]
            );
        }
    }
}
