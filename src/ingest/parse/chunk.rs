//! Chunks: the units search indexes and cites, cut from sections of source text.
//!
//! Owns the packing rules: blocks of one section are packed together up to
//! [`MAX_CHUNK_BYTES`]; a longer block is cut at line ends, and a longer line at char
//! boundaries. Chunk text is always the exact source slice of its span, and every non-blank
//! byte handed in lands in exactly one chunk. Must not know any format: the callers decide what
//! a section and a block are.

use std::ops::Range;

use super::{Chunk, Source};

/// The most text one chunk holds; a few paragraphs, small enough for a sentence-embedding model.
pub const MAX_CHUNK_BYTES: usize = 2000;

/// Consecutive blocks under one heading path.
pub(crate) struct Section {
    pub heading_path: Vec<String>,
    /// Byte ranges in file order; gaps between them are allowed and must be blank.
    pub blocks: Vec<Range<usize>>,
}

pub(crate) fn chunk_sections(source: &Source, sections: &[Section]) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for section in sections {
        for range in pack(source.text, &section.blocks, MAX_CHUNK_BYTES) {
            chunks.push(Chunk {
                heading_path: section.heading_path.clone(),
                text: source.text[range.clone()].to_string(),
                span: source.span(range),
            });
        }
    }
    chunks
}

/// Packs `blocks` into ranges of at most `max` bytes, trimmed, blank ones dropped.
fn pack(text: &str, blocks: &[Range<usize>], max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for block in blocks {
        let block = trim(text, block.clone());
        if block.is_empty() {
            continue;
        }
        if block.len() > max {
            out.extend(current.take());
            out.extend(split_long(text, block, max));
            continue;
        }
        current = match current {
            Some(c) if block.end - c.start <= max => Some(c.start..block.end),
            Some(c) => {
                out.push(c);
                Some(block)
            }
            None => Some(block),
        };
    }
    out.extend(current);
    out
}

/// Cuts one oversized block at line ends, packing lines up to `max`; a line longer than `max`
/// is cut at char boundaries.
fn split_long(text: &str, block: Range<usize>, max: usize) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for line in super::lines(text, block) {
        if line.len() > max {
            pieces.extend(current.take());
            let mut at = line.start;
            while at < line.end {
                let mut end = (at + max).min(line.end);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                if end < line.end {
                    end = soft_break(text, at, end);
                }
                if end == at {
                    // Unreachable while `max` is at least 4 (the longest char); kept so a tiny
                    // `max` cannot loop forever.
                    end = (at + 1..=line.end)
                        .find(|&e| text.is_char_boundary(e))
                        .unwrap_or(line.end);
                }
                pieces.push(at..end);
                at = end;
            }
            continue;
        }
        current = match current {
            Some(c) if line.end - c.start <= max => Some(c.start..line.end),
            Some(c) => {
                pieces.push(c);
                Some(line)
            }
            None => Some(line),
        };
    }
    pieces.extend(current);
    pieces
        .into_iter()
        .map(|p| trim(text, p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Where to cut `text[at..end]` so that a long line splits between sentences, else between
/// words, rather than inside a word: the last sentence end, else the last space, in the
/// window's second half; `end` itself when there is neither.
fn soft_break(text: &str, at: usize, end: usize) -> usize {
    let window = &text[at..end];
    let half = window.len() / 2;
    let after = |i: usize| at + i + 1;
    let sentence = window
        .char_indices()
        .rev()
        .take_while(|(i, _)| *i > half)
        .find(|(i, c)| {
            c.is_whitespace() && *i > 0 && matches!(window.as_bytes()[i - 1], b'.' | b'?' | b'!')
        });
    if let Some((i, _)) = sentence {
        return after(i);
    }
    match window[half..].rfind(char::is_whitespace) {
        Some(i) => after(half + i),
        None => end,
    }
}

/// Drops leading blank lines and trailing whitespace; the first line keeps its indentation so
/// that indented code still reads as written.
pub(crate) fn trim(text: &str, range: Range<usize>) -> Range<usize> {
    let mut start = range.start;
    let end = range.start + text[range].trim_end().len();
    while start < end {
        let rest = &text[start..end];
        match rest.find('\n') {
            Some(nl) if rest[..nl].trim().is_empty() => start += nl + 1,
            _ => break,
        }
    }
    start..end.max(start)
}

/// Blank-line separated paragraphs of `range`, each from its first line to its last.
pub(crate) fn paragraphs(source: &Source, range: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for line in source.lines(range) {
        if source.text[line.clone()].trim().is_empty() {
            out.extend(current.take());
        } else {
            current = Some(current.map_or(line.clone(), |c| c.start..line.end));
        }
    }
    out.extend(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` is cut into `blocks` at each `¦`; `expected` lists the packed slices.
    fn check(text: &str, max: usize, expected: &[&str]) {
        let mut blocks = Vec::new();
        let mut clean = String::new();
        for piece in text.split('¦') {
            let start = clean.len();
            clean.push_str(piece);
            blocks.push(start..clean.len());
        }
        let got: Vec<_> = pack(&clean, &blocks, max)
            .into_iter()
            .map(|r| &clean[r])
            .collect();
        assert_eq!(got, expected, "text {text:?} max {max}");
    }

    #[test]
    fn packing() {
        check("", 10, &[]);
        check("  \n\n ", 10, &[]);
        check("one", 10, &["one"]);
        check("a\n\n¦b\n", 10, &["a\n\nb"]);
        check("aaaa\n¦bbbb\n¦cccc\n", 10, &["aaaa\nbbbb", "cccc"]);
        check("\n\n  indented\n", 20, &["  indented"]);
        check(
            "aaaa\n¦0123456789abc\n¦dd",
            10,
            &["aaaa", "0123456789", "abc", "dd"],
        );
        check("l1\nl2\nl3\nl4\nl5\n", 5, &["l1\nl2", "l3\nl4", "l5"]);
        check("ééééé", 4, &["éé", "éé", "é"]);
        check("x\n\n\n\ny", 3, &["x", "y"]);
        // Long lines split between sentences, else between words, not inside a word.
        check("ab   cd", 3, &["ab", "cd"]);
        check(
            "One two. Three four five",
            12,
            &["One two.", "Three four", "five"],
        );
        check("abcdefghij", 4, &["abcd", "efgh", "ij"]);
    }

    fn check_trim(text: &str, expected: &str) {
        let r = trim(text, 0..text.len());
        assert_eq!(&text[r], expected, "{text:?}");
    }

    #[test]
    fn trimming() {
        check_trim("", "");
        check_trim("\n \n", "");
        check_trim(" \n  x \n", "  x");
        check_trim("a\n\n", "a");
        check_trim("\r\n\r\nb\r\n", "b");
    }

    fn check_paragraphs(text: &str, expected: &[&str]) {
        let source = Source::new(text);
        let got: Vec<_> = paragraphs(&source, 0..text.len())
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn paragraph_splitting() {
        check_paragraphs("", &[]);
        check_paragraphs("a\nb\n\nc", &["a\nb", "c"]);
        check_paragraphs("\n\n a \n \t\n\nb\r\nc\r\n", &[" a ", "b\r\nc"]);
    }
}
