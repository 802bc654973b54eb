//! Markdown notes, read the way Obsidian reads them: front matter (see `front_matter`),
//! headings, wikilinks, embeds, Markdown links, bare URLs, tags, Dataview inline fields, block
//! ids, and the sections the chunks are cut from.
//!
//! pulldown-cmark gives the block structure and tells what is code, HTML or math; the Obsidian
//! syntax it does not know (wikilinks, tags, fields, block ids) is found by scanning the source
//! lines with those regions cut out, because pulldown-cmark splits text events at brackets and
//! table pipes. Must not resolve links or decide what a link points to: targets stay as written.

use std::cmp::Reverse;
use std::ops::Range;

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag as MdTag};

use super::chunk::{Section, chunk_sections};
use super::link::{Destination, bare_urls, destination, wikilinks};
use super::{
    BlockId, Budget, Document, Fact, FileType, Heading, InlineField, Link, LinkKind, Source, Tag,
    comment, front_matter, title,
};

/// Parses a note; facts past a [`Fact`] cap are counted in `budget` and not collected, so a
/// note stating millions of them costs no more memory than one at the caps.
pub(crate) fn parse(source: &Source, body_start: usize, budget: &mut Budget) -> Document {
    let mut doc = Document::empty(FileType::Markdown);
    let body = front_matter::read(source, body_start, &mut doc);
    let text = source.text;

    // pulldown-cmark builds the tree of all its input before the first event, tens of bytes
    // per byte of dense syntax; past the structure budget the note is read as plain text.
    let structured = structure_end(text, body);
    if structured < text.len() {
        doc.diagnostics.push(super::Diagnostic {
            message: format!(
                "budget: Markdown structure is read for {} bytes (at most \
                 {MAX_STRUCTURED_BYTES}, whole lines); the {} after them are read as plain text",
                structured - body,
                text.len() - structured
            ),
            span: Some(source.span(structured..text.len())),
        });
    }
    let mut tree = Tree::read(source, body, structured, budget);
    tree.excluded.sort_by_key(|r| r.start);
    let code = merge(std::mem::take(&mut tree.excluded));
    // What Obsidian hides is no fact: headings and links inside comments are dropped, and the
    // line scans below skip them like code.
    let comments = comment::ranges(text, body, &code);
    let hidden = |at: usize| overlaps(&comments, at..at + 1);
    tree.headings.retain(|h| !hidden(h.span.byte_start));
    tree.links.retain(|l| !hidden(l.span.byte_start));
    for (start, heading) in &mut tree.top_level {
        if hidden(*start) {
            *heading = None;
        }
    }
    let mut excluded = code;
    excluded.extend(comments.iter().cloned());
    excluded.sort_by_key(|r| r.start);
    let excluded = merge(excluded);
    let mut url_excluded = excluded.clone();
    url_excluded.extend(tree.link_ranges.iter().cloned());
    url_excluded.sort_by_key(|r| r.start);
    let url_excluded = merge(url_excluded);

    let mut body_links = std::mem::take(&mut tree.links);
    let mut fields: Vec<(InlineField, Range<usize>)> = Vec::new();
    let mut ids: Vec<(String, usize)> = Vec::new();
    let mut cut = Cutter::new(&excluded);
    let mut url_cut = Cutter::new(&url_excluded);
    for line in source.lines(body..text.len()) {
        let segments = cut.segments(line.clone());
        let mut line_links: Vec<Range<usize>> = Vec::new();
        for seg in &segments {
            for raw in wikilinks(text, seg.clone()) {
                line_links.push(raw.range.clone());
                if !budget.admit(Fact::Links, doc.links.len() + body_links.len()) {
                    continue;
                }
                body_links.push(Link {
                    kind: if raw.embed {
                        LinkKind::Embed
                    } else {
                        LinkKind::Wikilink
                    },
                    target: raw.target,
                    subpath: raw.subpath,
                    display: raw.display,
                    property: None,
                    span: source.span(raw.range),
                });
            }
        }
        let inside_link = |at: usize| overlaps(&line_links, at..at + 1);

        let line_field = segments
            .first()
            .filter(|seg| seg.start == line.start)
            .and_then(|_| line_start_field(text, line.clone()));
        let field_taken = line_field.as_ref().map(|(span, _, _)| span.clone());
        if let Some((span, key, value)) = line_field
            && budget.admit(Fact::Fields, fields.len())
        {
            fields.push((field(source, span, key, value.clone()), value));
        }
        // The value may hold code (`[x:: `y`]`), so fields are read from the whole line and kept
        // when their opening and key are outside code.
        for (span, key, value) in bracketed_fields(text, line.clone()) {
            let head = span.start..value.start;
            let in_text = segments
                .iter()
                .any(|s| s.start <= head.start && head.end <= s.end);
            let taken = field_taken
                .as_ref()
                .is_some_and(|t| t.contains(&span.start));
            if in_text
                && !taken
                && !inside_link(span.start)
                && budget.admit(Fact::Fields, fields.len())
            {
                fields.push((field(source, span, key, value.clone()), value));
            }
        }
        for seg in &segments {
            for (range, name) in tags(text, seg.clone(), line.start) {
                if !inside_link(range.start) && budget.admit(Fact::Tags, doc.tags.len()) {
                    doc.tags.push(Tag {
                        name,
                        span: source.span(range),
                        from_front_matter: false,
                    });
                }
            }
        }
        for seg in url_cut.segments(line.clone()) {
            for url in bare_urls(text, seg) {
                if !overlaps(&line_links, url.clone())
                    && budget.admit(Fact::Links, doc.links.len() + body_links.len())
                {
                    body_links.push(Link {
                        kind: LinkKind::External,
                        target: text[url.clone()].to_string(),
                        subpath: None,
                        display: None,
                        property: None,
                        span: source.span(url),
                    });
                }
            }
        }
        if let Some((id, caret)) = block_id(text, line.clone())
            && segments.iter().any(|s| s.contains(&caret))
            && budget.admit(Fact::BlockIds, ids.len())
        {
            ids.push((id, caret));
        }
    }

    body_links.sort_by_key(|l| (l.span.byte_start, l.span.byte_end));
    // Field values come in file order and never overlap, so each link looks up at most one.
    for link in &mut body_links {
        // A link that is the value of an inline field is that field's relation, as a link in a
        // front matter property is.
        let after = fields.partition_point(|(_, value)| value.start <= link.span.byte_start);
        if let Some((f, value)) = after.checked_sub(1).and_then(|i| fields.get(i))
            && link.span.byte_end <= value.end
        {
            link.property = Some(f.key.clone());
        }
    }
    doc.links.extend(body_links);

    for (f, _) in &fields {
        let value = serde_json::Value::String(f.value.clone());
        match doc.properties.get_mut(&f.key) {
            Some(serde_json::Value::Array(items)) => items.push(value),
            Some(existing) => *existing = serde_json::Value::Array(vec![existing.take(), value]),
            None => {
                doc.properties.insert(f.key.clone(), value);
            }
        }
    }
    doc.inline_fields = fields.into_iter().map(|(f, _)| f).collect();

    for (id, caret) in ids {
        let block =
            labelled_block(text, &tree.blocks, caret, caret + 1 + id.len()).unwrap_or_else(|| {
                let line = source
                    .lines(caret..text.len())
                    .next()
                    .map_or(caret, |l| l.end);
                let start = text[..caret].rfind('\n').map_or(body, |nl| nl + 1);
                start..line
            });
        doc.block_ids.push(BlockId {
            id,
            span: source.span(block),
        });
    }

    title::apply(
        &mut doc.title,
        &mut doc.aliases,
        title::first_h1(text, body),
    );
    doc.chunks = chunk_sections(source, &sections(text, body, &tree.top_level));
    if !comments.is_empty() {
        // A chunk keeps the span it was cut from, so citations still point into the file; its
        // text is what Obsidian shows of that span.
        for c in &mut doc.chunks {
            if let std::borrow::Cow::Owned(shown) = comment::strip(text, c.span.range(), &comments)
            {
                c.text = shown;
            }
        }
        doc.chunks.retain(|c| !c.text.trim().is_empty());
    }
    doc.headings = tree.headings;
    doc
}

fn field(source: &Source, span: Range<usize>, key: String, value: Range<usize>) -> InlineField {
    InlineField {
        key,
        value: source.text[value].to_string(),
        span: source.span(span),
    }
}

/// What the pulldown-cmark pass learns about the body.
#[derive(Default)]
struct Tree {
    /// Code, HTML, math, footnote references, link destinations and reference definitions:
    /// never scanned for Obsidian syntax.
    excluded: Vec<Range<usize>>,
    /// Whole Markdown links and images, so bare-URL scanning does not count them twice.
    link_ranges: Vec<Range<usize>>,
    links: Vec<Link>,
    /// Top-level headings only: a heading inside a list or quote does not open a section.
    headings: Vec<Heading>,
    /// Blocks a `^id` can label, trimmed of trailing whitespace.
    blocks: Vec<(BlockKind, Range<usize>)>,
    /// Starts of top-level blocks, with the level and text of those that are headings.
    top_level: Vec<(usize, Option<(u8, String)>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BlockKind {
    Paragraph,
    Heading,
    Item,
    Table,
    Other,
}

struct Frame {
    kind: FrameKind,
    range: Range<usize>,
    /// End of the last event seen inside; for a link, where its text stops.
    child_end: usize,
    /// Collected text, for headings and links.
    text: String,
}

enum FrameKind {
    Heading(u8),
    Link {
        image: bool,
        link_type: LinkType,
        dest: String,
    },
    Block(BlockKind),
}

impl Tree {
    fn read(source: &Source, body: usize, end: usize, budget: &mut Budget) -> Tree {
        let text = source.text;
        let options = Options::ENABLE_TABLES
            | Options::ENABLE_STRIKETHROUGH
            | Options::ENABLE_TASKLISTS
            | Options::ENABLE_FOOTNOTES
            | Options::ENABLE_MATH;
        let mut events = Parser::new_ext(&text[body..end], options).into_offset_iter();
        let mut tree = Tree::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Frames collecting text (headings, links), so text is not pushed through every level
        // of a deeply nested list.
        let mut collecting: Vec<usize> = Vec::new();
        for (event, rel) in events.by_ref() {
            let range = body + rel.start..body + rel.end;
            if stack.is_empty() && !matches!(event, Event::End(_)) {
                tree.top_level.push((range.start, None));
            }
            if let Some(top) = stack.last_mut()
                && !matches!(event, Event::End(_))
            {
                top.child_end = top.child_end.max(range.end);
            }
            match event {
                Event::Start(tag) => {
                    let kind = match tag {
                        MdTag::Heading { level, .. } => FrameKind::Heading(level as u8),
                        MdTag::Link {
                            link_type,
                            dest_url,
                            ..
                        } => FrameKind::Link {
                            image: false,
                            link_type,
                            dest: dest_url.to_string(),
                        },
                        MdTag::Image {
                            link_type,
                            dest_url,
                            ..
                        } => FrameKind::Link {
                            image: true,
                            link_type,
                            dest: dest_url.to_string(),
                        },
                        MdTag::Paragraph => FrameKind::Block(BlockKind::Paragraph),
                        MdTag::Item => FrameKind::Block(BlockKind::Item),
                        MdTag::Table(_) => FrameKind::Block(BlockKind::Table),
                        MdTag::CodeBlock(_) | MdTag::HtmlBlock => {
                            tree.excluded.push(range.clone());
                            FrameKind::Block(BlockKind::Other)
                        }
                        _ => FrameKind::Block(BlockKind::Other),
                    };
                    if matches!(kind, FrameKind::Heading(_) | FrameKind::Link { .. }) {
                        collecting.push(stack.len());
                    }
                    stack.push(Frame {
                        kind,
                        child_end: range.start,
                        range,
                        text: String::new(),
                    });
                }
                Event::End(_) => {
                    let Some(frame) = stack.pop() else {
                        continue;
                    };
                    if collecting.last() == Some(&stack.len()) {
                        collecting.pop();
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.child_end = parent.child_end.max(frame.range.end);
                    }
                    let top = stack.is_empty();
                    tree.close(source, frame, top, budget);
                }
                Event::Text(s) => collect(&mut stack, &collecting, &s),
                Event::Code(s) | Event::InlineMath(s) | Event::DisplayMath(s) => {
                    tree.excluded.push(range);
                    collect(&mut stack, &collecting, &s);
                }
                Event::Html(_) | Event::InlineHtml(_) | Event::FootnoteReference(_) => {
                    tree.excluded.push(range);
                }
                Event::SoftBreak | Event::HardBreak => collect(&mut stack, &collecting, " "),
                _ => {}
            }
        }
        for (_, def) in events.reference_definitions().iter() {
            tree.excluded
                .push(body + def.span.start..body + def.span.end);
        }
        tree
    }

    fn close(&mut self, source: &Source, frame: Frame, top: bool, budget: &mut Budget) {
        let text = source.text;
        let trimmed =
            frame.range.start..frame.range.start + text[frame.range.clone()].trim_end().len();
        match frame.kind {
            FrameKind::Heading(level) => {
                let heading_text = strip_block_id(frame.text.trim()).to_string();
                self.blocks.push((BlockKind::Heading, trimmed.clone()));
                // Past the cap a heading opens no section: its line is text of the one before.
                if top && budget.admit(Fact::Headings, self.headings.len()) {
                    if let Some(last) = self.top_level.last_mut() {
                        last.1 = Some((level, heading_text.clone()));
                    }
                    self.headings.push(Heading {
                        level,
                        text: heading_text,
                        span: source.span(trimmed),
                    });
                }
            }
            FrameKind::Link {
                image,
                link_type,
                dest,
            } => {
                self.link_ranges.push(frame.range.clone());
                let display = Some(frame.text.trim().to_string()).filter(|d| !d.is_empty());
                let (kind, target, subpath, display) = match link_type {
                    LinkType::Autolink => {
                        self.excluded.push(frame.range.clone());
                        (LinkKind::External, dest, None, None)
                    }
                    LinkType::Email => {
                        self.excluded.push(frame.range.clone());
                        (LinkKind::External, format!("mailto:{dest}"), None, None)
                    }
                    _ if !budget.admit(Fact::Links, self.links.len()) => {
                        self.excluded
                            .push(frame.child_end.max(frame.range.start)..frame.range.end);
                        return;
                    }
                    _ => {
                        // The destination and title are not note text: `#x` or `[[x]]` there
                        // are neither tags nor links.
                        self.excluded
                            .push(frame.child_end.max(frame.range.start)..frame.range.end);
                        match destination(&dest) {
                            Some(Destination::External(url)) => {
                                (LinkKind::External, url, None, display)
                            }
                            Some(Destination::Local { target, subpath }) => {
                                let kind = if image {
                                    LinkKind::Embed
                                } else {
                                    LinkKind::Markdown
                                };
                                (kind, target, subpath, display)
                            }
                            None => return,
                        }
                    }
                };
                self.links.push(Link {
                    kind,
                    target,
                    subpath,
                    display,
                    property: None,
                    span: source.span(frame.range),
                });
            }
            FrameKind::Block(kind) => self.blocks.push((kind, trimmed)),
        }
    }
}

fn collect(stack: &mut [Frame], collecting: &[usize], s: &str) {
    for &i in collecting {
        if let Some(frame) = stack.get_mut(i) {
            frame.text.push_str(s);
        }
    }
}

/// Sorted ranges, overlapping or touching ones joined.
fn merge(sorted: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Whether `range` meets any of `sorted`, which are in order and do not overlap.
fn overlaps(sorted: &[Range<usize>], range: Range<usize>) -> bool {
    let i = sorted.partition_point(|r| r.end <= range.start);
    sorted.get(i).is_some_and(|r| r.start < range.end)
}

/// Cuts lines into the parts outside a sorted, merged list of ranges; lines must come in order.
struct Cutter<'r> {
    excluded: &'r [Range<usize>],
    next: usize,
}

impl<'r> Cutter<'r> {
    fn new(excluded: &'r [Range<usize>]) -> Cutter<'r> {
        Cutter { excluded, next: 0 }
    }

    fn segments(&mut self, line: Range<usize>) -> Vec<Range<usize>> {
        while self
            .excluded
            .get(self.next)
            .is_some_and(|r| r.end <= line.start)
        {
            self.next += 1;
        }
        let mut out = Vec::new();
        let mut at = line.start;
        for r in self.excluded[self.next..]
            .iter()
            .take_while(|r| r.start < line.end)
        {
            if r.start > at {
                out.push(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < line.end {
            out.push(at..line.end);
        }
        out
    }
}

pub(crate) fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/')
}

/// A tag name as Obsidian accepts it: tag characters only, and not only digits (`#2024` is not
/// a tag, `#y2024` is).
pub(crate) fn is_tag_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(is_tag_char)
        && name.chars().any(|c| !c.is_numeric() && c != '/')
}

/// `#tags` in `text[seg]`: each `#` at the start of the line or after whitespace.
/// The tags in `text[seg]`, found as they are asked for: a line of a million tags is never
/// held as a list.
fn tags(
    text: &str,
    seg: Range<usize>,
    line_start: usize,
) -> impl Iterator<Item = (Range<usize>, String)> + '_ {
    let start = seg.start;
    let end = seg.end;
    text[seg].match_indices('#').filter_map(move |(i, _)| {
        let hash = start + i;
        let after_space = hash == line_start
            || text[..hash]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace);
        if !after_space {
            return None;
        }
        let rest = &text[hash + 1..end];
        let len = rest.find(|c: char| !is_tag_char(c)).unwrap_or(rest.len());
        let name = rest[..len].trim_end_matches('/');
        is_tag_name(name).then(|| (hash..hash + 1 + name.len(), name.to_string()))
    })
}

/// Where the content of a line starts after quote markers, a list marker and a task box.
fn content_start(line: &str) -> usize {
    let mut i = 0;
    loop {
        i += line[i..].len() - line[i..].trim_start().len();
        if line[i..].starts_with('>') {
            i += 1;
        } else {
            break;
        }
    }
    let rest = &line[i..];
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if rest.starts_with(['-', '*', '+']) && rest[1..].starts_with([' ', '\t']) {
        i += 2;
    } else if (1..=9).contains(&digits)
        && rest[digits..].starts_with(['.', ')'])
        && rest[digits + 1..].starts_with([' ', '\t'])
    {
        i += digits + 2;
    }
    i += line[i..].len() - line[i..].trim_start().len();
    let rest = &line[i..];
    let mut chars = rest.char_indices();
    if let (Some((_, '[')), Some(_), Some((close, ']'))) =
        (chars.next(), chars.next(), chars.next())
        && rest[close + 1..].starts_with([' ', '\t'])
    {
        i += close + 2;
    }
    i
}

/// A Dataview field key: letters, digits, spaces, `_` and `-`, starting with a letter, digit or
/// `_`; returns the trimmed key.
fn field_key(key: &str) -> Option<&str> {
    let key = key.trim();
    let ok = key.starts_with(|c: char| c.is_alphanumeric() || c == '_')
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-'));
    ok.then_some(key)
}

/// `key:: value` filling the line: (span, key, value range).
fn line_start_field(
    text: &str,
    line: Range<usize>,
) -> Option<(Range<usize>, String, Range<usize>)> {
    let l = &text[line.clone()];
    let start = content_start(l);
    let sep = start + l[start..].find("::")?;
    if l[sep + 2..].starts_with(':') {
        return None;
    }
    let key = field_key(&l[start..sep])?;
    let key_start = line.start + start + (l[start..].len() - l[start..].trim_start().len());
    let value = trim_range(text, line.start + sep + 2..line.end);
    let value = value.start..value.start + strip_block_id(&text[value.clone()]).len();
    let end = if value.is_empty() {
        line.start + sep + 2
    } else {
        value.end
    };
    Some((key_start..end, key.to_string(), value))
}

/// `[key:: value]` and `(key:: value)` in `text[seg]`: (span, key, value range); an empty
/// value's range starts right after the `::`. Linear in the line: brackets are matched once
/// up front, and a key stops at the first character a key cannot hold.
fn bracketed_fields(text: &str, seg: Range<usize>) -> Vec<(Range<usize>, String, Range<usize>)> {
    let s = &text[seg.clone()];
    let closes = matching_brackets(s);
    let mut found = Vec::new();
    let mut from = 0;
    for (open, _) in s.match_indices(['[', '(']) {
        if open < from {
            continue;
        }
        let key_len = s[open + 1..]
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, ' ' | '_' | '-')))
            .unwrap_or(s.len() - open - 1);
        let sep = open + 1 + key_len;
        if !s[sep..].starts_with("::") || s[sep + 2..].starts_with(':') {
            continue;
        }
        let (Some(key), Some(&close)) = (field_key(&s[open + 1..sep]), closes.get(&open)) else {
            continue;
        };
        let value = trim_range(text, seg.start + sep + 2..seg.start + close);
        let value = if value.is_empty() {
            seg.start + sep + 2..seg.start + sep + 2
        } else {
            value
        };
        found.push((
            seg.start + open..seg.start + close + 1,
            key.to_string(),
            value,
        ));
        from = close + 1;
    }
    found
}

/// For each `[` and `(` in `s`, the offset of the bracket closing it.
fn matching_brackets(s: &str) -> std::collections::HashMap<usize, usize> {
    let mut pairs = std::collections::HashMap::new();
    let mut squares = Vec::new();
    let mut rounds = Vec::new();
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'[' => squares.push(i),
            b'(' => rounds.push(i),
            b']' => {
                if let Some(open) = squares.pop() {
                    pairs.insert(open, i);
                }
            }
            b')' => {
                if let Some(open) = rounds.pop() {
                    pairs.insert(open, i);
                }
            }
            _ => {}
        }
    }
    pairs
}

fn trim_range(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    start..start + s.trim().len()
}

/// A `^block-id` ending the line: (id, offset of the caret).
fn block_id(text: &str, line: Range<usize>) -> Option<(String, usize)> {
    let l = text[line.clone()].trim_end();
    let caret = l.rfind('^')?;
    let id = &l[caret + 1..];
    let before_ok = caret == 0 || l[..caret].ends_with(char::is_whitespace);
    let id_ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (before_ok && id_ok).then(|| (id.to_string(), line.start + caret))
}

/// `text` without a trailing ` ^block-id`.
fn strip_block_id(text: &str) -> &str {
    match block_id(text, 0..text.len()) {
        Some((_, caret)) => text[..caret].trim_end(),
        None => text,
    }
}

/// The block a `^id` at `caret..id_end` labels: the heading, list item or table holding it, else
/// its paragraph; a paragraph holding nothing but the id labels the block before it (Obsidian's
/// way of labelling tables, lists and quotes).
fn labelled_block(
    text: &str,
    blocks: &[(BlockKind, Range<usize>)],
    caret: usize,
    id_end: usize,
) -> Option<Range<usize>> {
    let holding = || {
        blocks
            .iter()
            .filter(|(_, r)| r.start <= caret && caret < r.end)
    };
    let innermost = |kind: BlockKind| {
        holding()
            .filter(|(k, _)| *k == kind)
            .min_by_key(|(_, r)| r.len())
            .map(|(_, r)| r.clone())
    };
    if let Some(r) = innermost(BlockKind::Heading)
        .or_else(|| innermost(BlockKind::Item))
        .or_else(|| innermost(BlockKind::Table))
    {
        return Some(r);
    }
    if let Some(p) = innermost(BlockKind::Paragraph) {
        if text[p.clone()].trim() != &text[caret..id_end] {
            return Some(p);
        }
        let previous = blocks
            .iter()
            .filter(|(_, r)| r.end <= p.start)
            .max_by_key(|(_, r)| (r.end, Reverse(r.start)))
            .map(|(_, r)| r.clone());
        return Some(previous.unwrap_or(p));
    }
    holding()
        .min_by_key(|(_, r)| r.len())
        .map(|(_, r)| r.clone())
}

/// How much of a note's body pulldown-cmark reads: its block tree costs up to ~40 bytes per
/// byte of input (a line of `[[links]]`, a file of one-word headings), so a 16 MiB note would
/// take gigabytes. Notes are rarely past a few hundred KiB; the rest of a larger one is still
/// chunked and scanned for tags, links and fields, without code and headings told apart.
/// (2 MiB of nested quotes took 380 MiB, so 1 MiB keeps one note's parse near 200 MiB.)
pub(crate) const MAX_STRUCTURED_BYTES: usize = 1024 * 1024;

/// Where the structured part of a body that starts at `body` ends: at the last line end within
/// [`MAX_STRUCTURED_BYTES`] (at `body` when there is none), or the end of the text.
fn structure_end(text: &str, body: usize) -> usize {
    let limit = body.saturating_add(MAX_STRUCTURED_BYTES);
    if text.len() <= limit {
        return text.len();
    }
    text.as_bytes()[body..limit]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(body, |i| body + i + 1)
}

/// Sections for chunking: each top-level heading opens one, with the path of headings above it.
fn sections(text: &str, body: usize, top_level: &[(usize, Option<(u8, String)>)]) -> Vec<Section> {
    let mut sections = vec![Section {
        heading_path: Vec::new(),
        blocks: Vec::new(),
    }];
    let mut path: Vec<(u8, String)> = Vec::new();
    let first = top_level.first().map_or(text.len(), |(start, _)| *start);
    if first > body {
        sections[0].blocks.push(body..first);
    }
    for (i, (start, heading)) in top_level.iter().enumerate() {
        // A block runs to the next one, so text pulldown-cmark gives no event (reference
        // definitions) still lands in a chunk.
        let end = top_level.get(i + 1).map_or(text.len(), |(next, _)| *next);
        if let Some((level, heading_text)) = heading {
            while path.last().is_some_and(|(l, _)| l >= level) {
                path.pop();
            }
            path.push((*level, heading_text.clone()));
            sections.push(Section {
                heading_path: path.iter().map(|(_, t)| t.clone()).collect(),
                blocks: Vec::new(),
            });
        }
        if let Some(section) = sections.last_mut() {
            section.blocks.push(*start..end);
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::super::{Document, MAX_CHUNK_BYTES, Subpath, link_kind_name, parse as parse_file};
    use super::*;

    /// Every fact of `doc` but its chunks, one line each, with the source text of its span.
    fn facts(input: &str, doc: &Document) -> Vec<String> {
        let at = |span: &super::super::Span| &input[span.range()];
        let mut out = Vec::new();
        for h in &doc.headings {
            out.push(format!("h{} {:?} @{:?}", h.level, h.text, at(&h.span)));
        }
        for l in &doc.links {
            let subpath = match &l.subpath {
                Some(Subpath::Heading(path)) => format!(" #{}", path.join("#")),
                Some(Subpath::Block(id)) => format!(" #^{id}"),
                None => String::new(),
            };
            let display = l
                .display
                .as_ref()
                .map_or(String::new(), |d| format!(" |{d}"));
            let property = l
                .property
                .as_ref()
                .map_or(String::new(), |p| format!(" prop={p}"));
            out.push(format!(
                "{} {:?}{subpath}{display}{property} @{:?}",
                link_kind_name(&l.kind),
                l.target,
                at(&l.span)
            ));
        }
        for t in &doc.tags {
            let fm = if t.from_front_matter { " fm" } else { "" };
            out.push(format!("tag {:?}{fm} @{:?}", t.name, at(&t.span)));
        }
        for f in &doc.inline_fields {
            out.push(format!(
                "field {:?}={:?} @{:?}",
                f.key,
                f.value,
                at(&f.span)
            ));
        }
        for b in &doc.block_ids {
            out.push(format!("block {:?} @{:?}", b.id, at(&b.span)));
        }
        out
    }

    fn check(input: &str, expected: &[&str]) {
        let doc = parse_file(input.as_bytes(), FileType::Markdown);
        assert_eq!(facts(input, &doc), expected, "input {input:?}");
    }

    #[test]
    fn headings() {
        check("# Title\n", &["h1 \"Title\" @\"# Title\""]);
        check("## Two ##\n", &["h2 \"Two\" @\"## Two ##\""]);
        check(
            "Setext\n======\n\nSub\n---\n",
            &[
                "h1 \"Setext\" @\"Setext\\n======\"",
                "h2 \"Sub\" @\"Sub\\n---\"",
            ],
        );
        check(
            "### With `code` and *em*\n",
            &["h3 \"With code and em\" @\"### With `code` and *em*\""],
        );
        check(
            "## Part ^part-1\n",
            &[
                "h2 \"Part\" @\"## Part ^part-1\"",
                "block \"part-1\" @\"## Part ^part-1\"",
            ],
        );
        check("#NotHeading\n", &["tag \"NotHeading\" @\"#NotHeading\""]);
        check("> # Quoted\n", &[]);
        check(
            "###### Six\n####### seven\n",
            &["h6 \"Six\" @\"###### Six\""],
        );
        check("# C\\# tips\n", &["h1 \"C# tips\" @\"# C\\\\# tips\""]);
    }

    #[test]
    fn wikilinks_in_body() {
        check("See [[Note]].", &["wikilink \"Note\" @\"[[Note]]\""]);
        check(
            "[[Note|alias]] ![[pic.png]]",
            &[
                "wikilink \"Note\" |alias @\"[[Note|alias]]\"",
                "embed \"pic.png\" @\"![[pic.png]]\"",
            ],
        );
        check(
            "[[Note#H1#H2]] [[#^b1]]",
            &[
                "wikilink \"Note\" #H1#H2 @\"[[Note#H1#H2]]\"",
                "wikilink \"\" #^b1 @\"[[#^b1]]\"",
            ],
        );
        check("\\[[not]] `[[code]]`", &[]);
        check("```\n[[fenced]]\n```\n", &[]);
        check("    [[indented code]]\n", &[]);
        check("<div>[[html]]</div>\n", &[]);
        check("<!-- [[comment]] -->\n", &[]);
        check("$[[math]]$ and $$\n[[display]]\n$$\n", &[]);
        check("[[split\nline]]", &[]);
        check(
            "| a | [[Note\\|alias]] |\n|---|---|\n| [[X]] | y |\n",
            &[
                "wikilink \"Note\" |alias @\"[[Note\\\\|alias]]\"",
                "wikilink \"X\" @\"[[X]]\"",
            ],
        );
        check(
            "- [ ] task [[T]]\n> quote [[Q]]\n",
            &["wikilink \"T\" @\"[[T]]\"", "wikilink \"Q\" @\"[[Q]]\""],
        );
        check(
            "# About [[Note]]\n",
            &[
                "h1 \"About [[Note]]\" @\"# About [[Note]]\"",
                "wikilink \"Note\" @\"[[Note]]\"",
            ],
        );
    }

    #[test]
    fn markdown_links() {
        check(
            "[text](My%20Note.md)",
            &["markdown \"My Note.md\" |text @\"[text](My%20Note.md)\""],
        );
        check(
            "[t](<Other Note.md#Some Part>)",
            &["markdown \"Other Note.md\" #Some Part |t @\"[t](<Other Note.md#Some Part>)\""],
        );
        check(
            "[t](Note.md#^blk)",
            &["markdown \"Note.md\" #^blk |t @\"[t](Note.md#^blk)\""],
        );
        check(
            "[same](#Heading)",
            &["markdown \"\" #Heading |same @\"[same](#Heading)\""],
        );
        check(
            "![alt](img/a.png)",
            &["embed \"img/a.png\" |alt @\"![alt](img/a.png)\""],
        );
        check(
            "![](https://x.org/a.png)",
            &["external \"https://x.org/a.png\" @\"![](https://x.org/a.png)\""],
        );
        check(
            "[site](https://x.org/#top)",
            &["external \"https://x.org/#top\" |site @\"[site](https://x.org/#top)\""],
        );
        check(
            "[mail](mailto:a@b.c) <https://auto.link/x>",
            &[
                "external \"mailto:a@b.c\" |mail @\"[mail](mailto:a@b.c)\"",
                "external \"https://auto.link/x\" @\"<https://auto.link/x>\"",
            ],
        );
        check(
            "<me@example.com>",
            &["external \"mailto:me@example.com\" @\"<me@example.com>\""],
        );
        check(
            "[ref][r]\n\n[r]: Target.md \"title #nottag\"\n",
            &["markdown \"Target.md\" |ref @\"[ref][r]\""],
        );
        check(
            "[x](a.md \"#nottag [[no]]\")",
            &["markdown \"a.md\" |x @\"[x](a.md \\\"#nottag [[no]]\\\")\""],
        );
        check("[x]()", &[]);
        check(
            "[#tag [[In]]](b.md)",
            &[
                "markdown \"b.md\" |#tag [[In]] @\"[#tag [[In]]](b.md)\"",
                "wikilink \"In\" @\"[[In]]\"",
            ],
        );
        check("`[x](y.md)`", &[]);
        check(
            "[![i](i.png)](t.md)",
            &[
                "markdown \"t.md\" |i @\"[![i](i.png)](t.md)\"",
                "embed \"i.png\" |i @\"![i](i.png)\"",
            ],
        );
    }

    #[test]
    fn bare_urls() {
        check(
            "see https://example.com/a#frag.",
            &["external \"https://example.com/a#frag\" @\"https://example.com/a#frag\""],
        );
        check(
            "[https://x.org](https://x.org)",
            &["external \"https://x.org\" |https://x.org @\"[https://x.org](https://x.org)\""],
        );
        check("`https://x.org`", &[]);
        check(
            "[[https://x.org]]",
            &["wikilink \"https://x.org\" @\"[[https://x.org]]\""],
        );
        check(
            "[r]: https://ref.org\n\n[r]\n",
            &["external \"https://ref.org\" |r @\"[r]\""],
        );
    }

    #[test]
    fn tags_in_body() {
        check(
            "#tag and #a/b/c, #1a",
            &[
                "tag \"tag\" @\"#tag\"",
                "tag \"a/b/c\" @\"#a/b/c\"",
                "tag \"1a\" @\"#1a\"",
            ],
        );
        check(
            "#123 foo#bar http://x.org/#frag",
            &["external \"http://x.org/#frag\" @\"http://x.org/#frag\""],
        );
        check("`#code` #ok", &["tag \"ok\" @\"#ok\""]);
        check("```\n#fenced\n```\n", &[]);
        check(
            "# Heading #inline",
            &[
                "h1 \"Heading #inline\" @\"# Heading #inline\"",
                "tag \"inline\" @\"#inline\"",
            ],
        );
        check(
            "#日本語 #émoji_ok #trail/",
            &[
                "tag \"日本語\" @\"#日本語\"",
                "tag \"émoji_ok\" @\"#émoji_ok\"",
                "tag \"trail\" @\"#trail\"",
            ],
        );
        check(
            "- #in-list\n> #in-quote",
            &[
                "tag \"in-list\" @\"#in-list\"",
                "tag \"in-quote\" @\"#in-quote\"",
            ],
        );
        check(
            "[[Note#Head]] [[x|see #no]]",
            &[
                "wikilink \"Note\" #Head @\"[[Note#Head]]\"",
                "wikilink \"x\" |see #no @\"[[x|see #no]]\"",
            ],
        );
        check(
            "#2024/05 #- #_",
            &["tag \"-\" @\"#-\"", "tag \"_\" @\"#_\""],
        );
        check("a\t#tab", &["tag \"tab\" @\"#tab\""]);
    }

    #[test]
    fn inline_fields() {
        check("rating:: 5", &["field \"rating\"=\"5\" @\"rating:: 5\""]);
        check(
            "Due Date:: 2024-05-01 ^d1",
            &[
                "field \"Due Date\"=\"2024-05-01\" @\"Due Date:: 2024-05-01\"",
                "block \"d1\" @\"Due Date:: 2024-05-01 ^d1\"",
            ],
        );
        check(
            "- [x] done-by:: [[Ann]]",
            &[
                "wikilink \"Ann\" prop=done-by @\"[[Ann]]\"",
                "field \"done-by\"=\"[[Ann]]\" @\"done-by:: [[Ann]]\"",
            ],
        );
        check(
            "> quoted:: yes",
            &["field \"quoted\"=\"yes\" @\"quoted:: yes\""],
        );
        check(
            "I rate it [rating:: 9] and (mood:: calm).",
            &[
                "field \"rating\"=\"9\" @\"[rating:: 9]\"",
                "field \"mood\"=\"calm\" @\"(mood:: calm)\"",
            ],
        );
        check(
            "[rel:: [[X]]]",
            &[
                "wikilink \"X\" prop=rel @\"[[X]]\"",
                "field \"rel\"=\"[[X]]\" @\"[rel:: [[X]]]\"",
            ],
        );
        check("empty::", &["field \"empty\"=\"\" @\"empty::\""]);
        check(
            "`code:: no` [x:: `y`]",
            &["field \"x\"=\"`y`\" @\"[x:: `y`]\""],
        );
        check("```\nk:: v\n```\n", &[]);
        check("a::: b\n[a::: b]\n", &[]);
        check("**bold**:: no\n(not a field)\n[k: v]\n", &[]);
        check(
            "k:: v [inner:: w]",
            &["field \"k\"=\"v [inner:: w]\" @\"k:: v [inner:: w]\""],
        );
        check("[open:: never closed", &[]);
    }

    #[test]
    fn inline_fields_merge_into_properties() {
        let doc = parse_file(
            b"---\nk: front\n---\nk:: a\nk:: b\nn:: 1\n",
            FileType::Markdown,
        );
        assert_eq!(
            serde_json::Value::Object(doc.properties),
            serde_json::json!({"k": ["front", "a", "b"], "n": "1"})
        );
    }

    #[test]
    fn block_ids() {
        check(
            "A paragraph\nover lines ^p1\n",
            &["block \"p1\" @\"A paragraph\\nover lines ^p1\""],
        );
        check(
            "- one\n- two ^i2\n  - nested ^i3\n",
            &[
                "block \"i2\" @\"- two ^i2\\n  - nested ^i3\"",
                "block \"i3\" @\"- nested ^i3\"",
            ],
        );
        check(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n^tbl\n",
            &["block \"tbl\" @\"| a | b |\\n|---|---|\\n| 1 | 2 |\""],
        );
        check("> quote\n\n^q\n", &["block \"q\" @\"> quote\""]);
        check("^alone\n", &["block \"alone\" @\"^alone\""]);
        check("x^2 and [^1] and `code ^c`\n\n[^1]: note\n", &[]);
        check("bad ^id! and ^under_score\n", &[]);
        check("```\ncode ^c\n```\n", &[]);
        check("text ^a\r\n", &["block \"a\" @\"text ^a\""]);
    }

    fn check_chunks(input: &str, expected: &[(&str, &str)]) {
        let doc = parse_file(input.as_bytes(), FileType::Markdown);
        let got: Vec<(String, String)> = doc
            .chunks
            .iter()
            .map(|c| {
                assert_eq!(
                    c.text,
                    input[c.span.range()],
                    "chunk text is the source slice"
                );
                (c.heading_path.join(" > "), c.text.clone())
            })
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn chunks_follow_sections() {
        check_chunks("", &[]);
        check_chunks("\n\n  \n", &[]);
        check_chunks(
            "intro\n\n# A\ntext a\n\n## B\ntext b\n\n# C\n",
            &[
                ("", "intro"),
                ("A", "# A\ntext a"),
                ("A > B", "## B\ntext b"),
                ("C", "# C"),
            ],
        );
        check_chunks("---\ntitle: x\n---\n\nbody\n", &[("", "body")]);
        check_chunks(
            "### Deep\nd\n# Top\nt\n",
            &[("Deep", "### Deep\nd"), ("Top", "# Top\nt")],
        );
        check_chunks("> # Quoted\n> text\n", &[("", "> # Quoted\n> text")]);
        check_chunks(
            "[r]: https://x.org\n\n# H\n",
            &[("", "[r]: https://x.org"), ("H", "# H")],
        );
        check_chunks("\u{feff}# T\nx", &[("T", "# T\nx")]);
    }

    #[test]
    fn long_sections_are_cut() {
        let para = format!("{}\n", "word ".repeat(100).trim_end());
        let input = format!("# H\n{}", [para.as_str(); 10].join("\n"));
        let doc = parse_file(input.as_bytes(), FileType::Markdown);
        assert!(doc.chunks.len() > 1);
        for c in &doc.chunks {
            assert!(c.text.len() <= MAX_CHUNK_BYTES);
            assert_eq!(c.heading_path, ["H"]);
        }
        assert!(doc.chunks[0].text.starts_with("# H\nword"));
        let huge = "x".repeat(MAX_CHUNK_BYTES * 2 + 10);
        let doc = parse_file(huge.as_bytes(), FileType::Markdown);
        let lens: Vec<_> = doc.chunks.iter().map(|c| c.text.len()).collect();
        assert_eq!(lens, [MAX_CHUNK_BYTES, MAX_CHUNK_BYTES, 10]);
    }

    #[test]
    fn title_is_front_matter_else_an_opening_h1_and_another_first_h1_is_an_alias() {
        let check = |s: &str, title: Option<&str>, aliases: &[&str]| {
            let doc = parse_file(s.as_bytes(), FileType::Markdown);
            assert_eq!(doc.title.as_deref(), title, "{s:?}");
            assert_eq!(doc.aliases, aliases, "{s:?}");
            assert_eq!(
                super::super::aliases(s.as_bytes(), FileType::Markdown),
                aliases
            );
        };
        check("# One\ntext\n", Some("One"), &[]);
        check("## Two\n# One\n# Other\n", None, &["One"]);
        check("---\ntitle: Front\n---\n# One\n", Some("Front"), &["One"]);
        check("---\naliases: [A]\n---\n\n# One\n", Some("One"), &["A"]);
        check(
            "intro\n\n# This note in GitHub\n",
            None,
            &["This note in GitHub"],
        );
        check("no heading", None, &[]);
    }

    #[test]
    fn comments_are_neither_facts_nor_chunk_text() {
        let doc = parse_file(
            b"keep %%secret [[Hidden]] #hidden%% this\n\n%%\n# Not a heading\n%%\n\nafter\n",
            FileType::Markdown,
        );
        assert!(doc.links.is_empty(), "{:?}", doc.links);
        assert!(doc.tags.is_empty(), "{:?}", doc.tags);
        assert!(doc.headings.is_empty(), "{:?}", doc.headings);
        let texts: Vec<&str> = doc.chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["keep  this\n\n\n\nafter"]);
        assert_eq!(doc.chunks[0].span.byte_start, 0);
    }
}
