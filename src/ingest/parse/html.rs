//! HTML pages: title, headings, links (`<a href>`, `<img src>`) and the visible text, cut into
//! chunks by heading sections.
//!
//! A small tolerant scanner, not a browser parser: the parser needs tags, attributes, entities
//! and where text sits in the source, and no well-kept small crate gives source offsets for
//! those; html5ever is large and reshapes the tree. Must not panic on broken markup: unclosed
//! tags, comments and quotes run to the end of the file. Chunk text here is the visible text,
//! not the source slice; the chunk's span still covers the source it came from.

use std::ops::Range;

use super::chunk::MAX_CHUNK_BYTES;
use super::link::{Destination, destination};
use super::{Chunk, Document, FileType, Heading, Link, LinkKind, Source};

/// Elements that end a paragraph of visible text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "br",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hr",
    "html",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tr",
    "ul",
];

/// Elements whose content is not markup; all but `title` are also invisible.
const RAW: &[&str] = &["script", "style", "title", "textarea", "noscript"];

pub(crate) fn parse(source: &Source, body_start: usize) -> Document {
    let mut scan = Scanner {
        source,
        doc: Document::empty(FileType::Html),
        sections: vec![HtmlSection::default()],
        path: Vec::new(),
        paragraph: Vec::new(),
        heading: None,
        anchor: None,
        title: None,
    };
    scan.run(body_start);
    scan.finish()
}

/// Text between two tags, `range` in the source, `text` with entities decoded.
struct Run {
    range: Range<usize>,
    text: String,
}

#[derive(Default)]
struct HtmlSection {
    heading_path: Vec<String>,
    paragraphs: Vec<Vec<Run>>,
}

struct Scanner<'s, 'a> {
    source: &'s Source<'a>,
    doc: Document,
    sections: Vec<HtmlSection>,
    path: Vec<(u8, String)>,
    paragraph: Vec<Run>,
    /// Level, start of the open tag, text so far.
    heading: Option<(u8, usize, String)>,
    /// `href`, start of the open tag, text so far.
    anchor: Option<(String, usize, String)>,
    title: Option<String>,
}

impl Scanner<'_, '_> {
    fn run(&mut self, start: usize) {
        let text = self.source.text;
        let bytes = text.as_bytes();
        // ASCII lowercasing keeps offsets, so searches for closing tags can use it.
        let lower = text.to_ascii_lowercase();
        let mut i = start;
        while i < text.len() {
            if bytes[i] != b'<' {
                let end = text[i..].find('<').map_or(text.len(), |n| i + n);
                self.text(i..end);
                i = end;
                continue;
            }
            let next = bytes.get(i + 1).copied().unwrap_or(b' ');
            if lower[i..].starts_with("<!--") {
                i = lower[i + 4..]
                    .find("-->")
                    .map_or(text.len(), |n| i + 4 + n + 3);
            } else if next == b'!'
                || next == b'?'
                || (next == b'/' && !bytes.get(i + 2).is_some_and(u8::is_ascii_alphabetic))
            {
                // Doctypes, processing instructions and `</ p>`-like bogus comments: skipped,
                // as browsers do.
                i = text[i..].find('>').map_or(text.len(), |n| i + n + 1);
            } else if next == b'/' && bytes.get(i + 2).is_some_and(u8::is_ascii_alphabetic) {
                let name_len = tag_name_len(&lower[i + 2..]);
                let name = &lower[i + 2..i + 2 + name_len];
                let end = text[i..].find('>').map_or(text.len(), |n| i + n + 1);
                self.end_tag(name, end);
                i = end;
            } else if next.is_ascii_alphabetic() {
                let tag = read_tag(text, &lower, i);
                i = tag.end;
                if RAW.contains(&tag.name.as_str()) {
                    let close = format!("</{}", tag.name);
                    let content_end = lower[i..].find(&close).map_or(text.len(), |n| i + n);
                    if tag.name == "title" && self.title.is_none() {
                        self.title = Some(collapse(&decode_entities(&text[i..content_end])));
                    }
                    i = text[content_end..]
                        .find('>')
                        .map_or(text.len(), |n| content_end + n + 1);
                } else {
                    self.start_tag(tag);
                }
            } else {
                // A `<` that opens no tag is text.
                let end = text[i + 1..].find('<').map_or(text.len(), |n| i + 1 + n);
                self.text(i..end);
                i = end;
            }
        }
    }

    fn text(&mut self, range: Range<usize>) {
        let text = self.source.text;
        for piece in split_run(text, range, MAX_CHUNK_BYTES) {
            let decoded = decode_entities(&text[piece.clone()]);
            if let Some((_, _, t)) = &mut self.heading {
                t.push_str(&decoded);
            }
            if let Some((_, _, t)) = &mut self.anchor {
                t.push_str(&decoded);
            }
            self.paragraph.push(Run {
                range: piece,
                text: decoded,
            });
        }
    }

    fn start_tag(&mut self, tag: RawTag) {
        let name = tag.name.as_str();
        if let Some(level) = heading_level(name) {
            self.close_heading(tag.start);
            self.end_paragraph();
            self.heading = Some((level, tag.start, String::new()));
            return;
        }
        if BLOCKS.contains(&name) {
            self.break_text();
        } else if matches!(name, "td" | "th") {
            self.text_space();
        }
        match name {
            "a" => {
                self.close_anchor(tag.start);
                if let Some(href) = tag.attr("href") {
                    self.anchor = Some((href.to_string(), tag.start, String::new()));
                }
            }
            "img" => {
                if let Some(src) = tag.attr("src") {
                    let alt = tag.attr("alt").map(collapse).filter(|a| !a.is_empty());
                    self.link(src, alt, tag.start..tag.end, true);
                }
            }
            _ => {}
        }
    }

    fn end_tag(&mut self, name: &str, end: usize) {
        if heading_level(name).is_some() {
            self.close_heading(end);
        } else if name == "a" {
            self.close_anchor(end);
        } else if BLOCKS.contains(&name) {
            self.break_text();
        } else if matches!(name, "td" | "th") {
            self.text_space();
        }
    }

    /// A block boundary: inside a heading only a space, elsewhere the end of a paragraph.
    fn break_text(&mut self) {
        if self.heading.is_some() {
            self.text_space();
        } else {
            self.end_paragraph();
        }
    }

    /// Keeps `a</td><td>b` from reading as one word.
    fn text_space(&mut self) {
        if let Some((_, _, t)) = &mut self.heading {
            t.push(' ');
        }
        if let Some(last) = self.paragraph.last_mut() {
            last.text.push(' ');
        }
    }

    fn end_paragraph(&mut self) {
        let runs = std::mem::take(&mut self.paragraph);
        if runs.iter().any(|r| !r.text.trim().is_empty())
            && let Some(section) = self.sections.last_mut()
        {
            section.paragraphs.push(runs);
        }
    }

    fn close_heading(&mut self, end: usize) {
        let Some((level, start, raw)) = self.heading.take() else {
            return;
        };
        let text = collapse(&raw);
        self.doc.headings.push(Heading {
            level,
            text: text.clone(),
            span: self.source.span(start..end),
        });
        while self.path.last().is_some_and(|(l, _)| *l >= level) {
            self.path.pop();
        }
        self.path.push((level, text));
        // The heading's own text opens the new section, as a Markdown heading line does.
        self.sections.push(HtmlSection {
            heading_path: self.path.iter().map(|(_, t)| t.clone()).collect(),
            paragraphs: Vec::new(),
        });
        self.end_paragraph();
    }

    fn close_anchor(&mut self, end: usize) {
        if let Some((href, start, raw)) = self.anchor.take() {
            let display = Some(collapse(&raw)).filter(|d| !d.is_empty());
            self.link(&href, display, start..end, false);
        }
    }

    fn link(&mut self, dest: &str, display: Option<String>, range: Range<usize>, image: bool) {
        let lower = dest.trim().to_ascii_lowercase();
        if lower.starts_with("javascript:") || lower.starts_with("data:") {
            return;
        }
        let (kind, target, subpath) = match destination(dest) {
            Some(Destination::External(url)) => (LinkKind::External, url, None),
            Some(Destination::Local { target, subpath }) if image => {
                (LinkKind::Embed, target, subpath)
            }
            Some(Destination::Local { target, subpath }) => (LinkKind::Markdown, target, subpath),
            None => return,
        };
        self.doc.links.push(Link {
            kind,
            target,
            subpath,
            display,
            property: None,
            span: self.source.span(range),
        });
    }

    fn finish(mut self) -> Document {
        let end = self.source.text.len();
        self.close_anchor(end);
        self.close_heading(end);
        self.end_paragraph();
        self.doc.title = self
            .title
            .take()
            .filter(|t| !t.is_empty())
            .or_else(|| {
                self.doc
                    .headings
                    .iter()
                    .find(|h| h.level == 1)
                    .map(|h| h.text.clone())
            })
            .filter(|t| !t.is_empty());
        for section in &self.sections {
            self.doc.chunks.extend(chunks(self.source, section));
        }
        self.doc
            .links
            .sort_by_key(|l| (l.span.byte_start, l.span.byte_end));
        self.doc
    }
}

/// Packs a section's paragraphs into chunks of at most [`MAX_CHUNK_BYTES`] of text, one
/// paragraph a line; a longer paragraph is cut between its runs of text.
fn chunks(source: &Source, section: &HtmlSection) -> Vec<Chunk> {
    let mut units: Vec<(Range<usize>, String)> = Vec::new();
    for paragraph in &section.paragraphs {
        let mut start = 0;
        while start < paragraph.len() {
            // Every run is at most MAX_CHUNK_BYTES of source, and decoding and collapsing only
            // shrink text, so each unit takes at least one run.
            let mut text = Collapsed::default();
            text.push(&paragraph[start].text);
            let mut end = start + 1;
            while let Some(run) = paragraph.get(end) {
                let mut grown = text.clone();
                grown.push(&run.text);
                if grown.text.len() > MAX_CHUNK_BYTES {
                    break;
                }
                text = grown;
                end += 1;
            }
            if !text.text.is_empty() {
                units.push((
                    paragraph[start].range.start..paragraph[end - 1].range.end,
                    text.text,
                ));
            }
            start = end;
        }
    }
    let mut out: Vec<Chunk> = Vec::new();
    let mut current: Option<(Range<usize>, String)> = None;
    for (range, text) in units {
        current = match current {
            Some((r, mut t)) if t.len() + 1 + text.len() <= MAX_CHUNK_BYTES => {
                t.push('\n');
                t.push_str(&text);
                Some((r.start..range.end, t))
            }
            Some(done) => {
                out.push(chunk(source, section, done));
                Some((range, text))
            }
            None => Some((range, text)),
        };
    }
    out.extend(current.map(|done| chunk(source, section, done)));
    out
}

fn chunk(source: &Source, section: &HtmlSection, (range, text): (Range<usize>, String)) -> Chunk {
    Chunk {
        heading_path: section.heading_path.clone(),
        text,
        span: source.span(range),
    }
}

/// Cuts a run of text longer than `max` source bytes, at whitespace where it can and never
/// inside an entity.
fn split_run(text: &str, range: Range<usize>, max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = range.start;
    while range.end - at > max {
        let mut end = at + max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let window = &text[at..end];
        if let Some(amp) = window
            .rfind('&')
            .filter(|&a| !window[a..].contains(';') && window.len() - a < 12)
        {
            end = at + amp;
        }
        if let Some(space) = text[at..end].rfind(char::is_whitespace).filter(|&s| s > 0) {
            end = at + space;
        }
        if end <= at {
            // Only a run opening with `&` and no `;` in reach gets here; cut at a char boundary.
            end = at + max;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
        }
        out.push(at..end);
        at = end;
    }
    if at < range.end {
        out.push(at..range.end);
    }
    out
}

struct RawTag {
    name: String,
    attrs: Vec<(String, String)>,
    start: usize,
    /// After the closing `>`, or the end of the file.
    end: usize,
}

impl RawTag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn tag_name_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == ':'))
        .unwrap_or(s.len())
}

/// Reads `<name attr=value …>` starting at `start`; quoted values may hold `>`.
fn read_tag(text: &str, lower: &str, start: usize) -> RawTag {
    let bytes = text.as_bytes();
    let name_len = tag_name_len(&lower[start + 1..]);
    let name = lower[start + 1..start + 1 + name_len].to_string();
    let mut attrs = Vec::new();
    let mut i = start + 1 + name_len;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        match bytes.get(i) {
            None => break,
            Some(b'>') => {
                i += 1;
                break;
            }
            Some(_) => {}
        }
        let name_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        let attr_name = lower[name_start..i].to_string();
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let mut value = String::new();
        if bytes.get(j) == Some(&b'=') {
            j += 1;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            match bytes.get(j) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    let close = text[j + 1..]
                        .find(q as char)
                        .map_or(text.len(), |n| j + 1 + n);
                    value = decode_entities(&text[j + 1..close]);
                    j = (close + 1).min(text.len());
                }
                _ => {
                    let end = text[j..]
                        .find(|c: char| c.is_ascii_whitespace() || c == '>')
                        .map_or(text.len(), |n| j + n);
                    value = decode_entities(&text[j..end]);
                    j = end;
                }
            }
            i = j;
        }
        if i == name_start {
            // A stray `=`: step over it so the loop always advances.
            i += 1;
        }
        if !attr_name.is_empty() {
            attrs.push((attr_name, value));
        }
    }
    RawTag {
        name,
        attrs,
        start,
        end: i.min(text.len()),
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Text with runs of whitespace collapsed to one space and none at either end, built a piece
/// at a time so that a long paragraph is not collapsed again for every run.
#[derive(Clone, Default)]
struct Collapsed {
    text: String,
    pending_space: bool,
}

impl Collapsed {
    fn push(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.pending_space = true;
            } else {
                if self.pending_space && !self.text.is_empty() {
                    self.text.push(' ');
                }
                self.pending_space = false;
                self.text.push(c);
            }
        }
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes the entities notes actually contain; unknown ones stay as written.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest[1..]
            .find(';')
            .filter(|&semi| semi <= 10)
            .and_then(|semi| entity(&rest[1..1 + semi]).map(|c| (c, semi + 2)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        // A plain space: search should see two words, not one.
        "nbsp" => ' ',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            return char::from_u32(code).filter(|&c| c != '\0');
        }
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::super::{Subpath, link_kind_name, parse as parse_file};
    use super::*;

    /// Renders every fact of the page on one line each: title, headings, links, chunks.
    fn check(input: &str, expected: &[&str]) {
        let doc = parse_file(input.as_bytes(), FileType::Html);
        let mut got = vec![format!("title {:?}", doc.title)];
        for h in &doc.headings {
            got.push(format!(
                "h{} {:?} @{:?}",
                h.level,
                h.text,
                &input[h.span.range()]
            ));
        }
        for l in &doc.links {
            let subpath = match &l.subpath {
                Some(Subpath::Heading(p)) => format!(" #{}", p.join("#")),
                Some(Subpath::Block(b)) => format!(" #^{b}"),
                None => String::new(),
            };
            let display = l
                .display
                .as_ref()
                .map_or(String::new(), |d| format!(" |{d}"));
            got.push(format!(
                "{} {:?}{subpath}{display} @{:?}",
                link_kind_name(&l.kind),
                l.target,
                &input[l.span.range()]
            ));
        }
        for c in &doc.chunks {
            got.push(format!(
                "chunk [{}] {:?} @{:?}",
                c.heading_path.join(" > "),
                c.text,
                &input[c.span.range()]
            ));
        }
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn pages() {
        check("", &["title None"]);
        check("plain", &["title None", "chunk [] \"plain\" @\"plain\""]);
        check(
            "<html><head><title>The &amp; Page</title><style>p{}</style></head><body><p>Hi</p></body></html>",
            &["title Some(\"The & Page\")", "chunk [] \"Hi\" @\"Hi\""],
        );
        check(
            "<h1>Top</h1><p>a &lt;b&gt; &quot;c&quot; &#39;d&#39;&nbsp;e &#x263A; &bogus; & f</p>",
            &[
                "title Some(\"Top\")",
                "h1 \"Top\" @\"<h1>Top</h1>\"",
                "chunk [Top] \"Top\\na <b> \\\"c\\\" 'd' e ☺ &bogus; & f\" @\"Top</h1><p>a &lt;b&gt; &quot;c&quot; &#39;d&#39;&nbsp;e &#x263A; &bogus; & f\"",
            ],
        );
        check(
            "<h2>A</h2>x<h3>B</h3>y<h2>C</h2>",
            &[
                "title None",
                "h2 \"A\" @\"<h2>A</h2>\"",
                "h3 \"B\" @\"<h3>B</h3>\"",
                "h2 \"C\" @\"<h2>C</h2>\"",
                "chunk [A] \"A\\nx\" @\"A</h2>x\"",
                "chunk [A > B] \"B\\ny\" @\"B</h3>y\"",
                "chunk [C] \"C\" @\"C\"",
            ],
        );
        check(
            "<script>var s = '<p>[[no]]</p>';</script><!-- <a href='x.md'>no</a> --><p>b<b>old</b> text</p>",
            &["title None", "chunk [] \"bold text\" @\"b<b>old</b> text\""],
        );
        check(
            "<table><tr><td>a</td><td>b</td></tr></table>",
            &["title None", "chunk [] \"a b\" @\"a</td><td>b\""],
        );
    }

    #[test]
    fn links() {
        check(
            "<a href=\"My%20Note.md#Part\">the note</a> <A HREF='https://x.org/?a=1&amp;b=2'>x</A> <a href=#top>up</a>",
            &[
                "title None",
                "markdown \"My Note.md\" #Part |the note @\"<a href=\\\"My%20Note.md#Part\\\">the note</a>\"",
                "external \"https://x.org/?a=1&b=2\" |x @\"<A HREF='https://x.org/?a=1&amp;b=2'>x</A>\"",
                "markdown \"\" #top |up @\"<a href=#top>up</a>\"",
                "chunk [] \"the note x up\" @\"the note</a> <A HREF='https://x.org/?a=1&amp;b=2'>x</A> <a href=#top>up\"",
            ],
        );
        check(
            "<img src=\"assets/d.png\" alt=\"A diagram\"><img src='https://x.org/i.png'/><img alt=none>",
            &[
                "title None",
                "embed \"assets/d.png\" |A diagram @\"<img src=\\\"assets/d.png\\\" alt=\\\"A diagram\\\">\"",
                "external \"https://x.org/i.png\" @\"<img src='https://x.org/i.png'/>\"",
            ],
        );
        check(
            "<a href=\"javascript:alert(1)\">js</a><a name=x>anchor</a><a href=''>empty</a>",
            &[
                "title None",
                "chunk [] \"jsanchorempty\" @\"js</a><a name=x>anchor</a><a href=''>empty\"",
            ],
        );
        check(
            "<a href=\"a.md\">open",
            &[
                "title None",
                "markdown \"a.md\" |open @\"<a href=\\\"a.md\\\">open\"",
                "chunk [] \"open\" @\"open\"",
            ],
        );
    }

    #[test]
    fn broken_markup() {
        check(
            "<p>1 < 2 and 3 > 2</p>",
            &[
                "title None",
                "chunk [] \"1 < 2 and 3 > 2\" @\"1 < 2 and 3 > 2\"",
            ],
        );
        check(
            "<a href=\"unclosed>text",
            &[
                "title None",
                "markdown \"unclosed>text\" @\"<a href=\\\"unclosed>text\"",
            ],
        );
        check("<!-- never closed <p>x</p>", &["title None"]);
        check("<title>t", &["title Some(\"t\")"]);
        check(
            "<h1>never closed",
            &[
                "title Some(\"never closed\")",
                "h1 \"never closed\" @\"<h1>never closed\"",
                "chunk [never closed] \"never closed\" @\"never closed\"",
            ],
        );
        check(
            "<p =x>y</p><p a=\"b\"c>d",
            &[
                "title None",
                "chunk [] \"y\\nd\" @\"y</p><p a=\\\"b\\\"c>d\"",
            ],
        );
        check("</ p><br/>x</>", &["title None", "chunk [] \"x\" @\"x\""]);
    }

    #[test]
    fn long_text_is_cut_at_whitespace() {
        let body = "word ".repeat(1000);
        let input = format!("<p>{body}</p>");
        let doc = parse_file(input.as_bytes(), FileType::Html);
        assert!(doc.chunks.len() >= 3);
        for c in &doc.chunks {
            assert!(c.text.len() <= MAX_CHUNK_BYTES);
            assert!(c.text.split(' ').all(|w| w == "word"), "a word was cut");
        }
        let entities = "&amp;".repeat(1000);
        let doc = parse_file(format!("<p>{entities}</p>").as_bytes(), FileType::Html);
        assert!(
            doc.chunks
                .iter()
                .all(|c| c.text.chars().all(|ch| ch == '&'))
        );
    }
}
