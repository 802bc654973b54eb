//! Parsers: bytes in, a structured [`Document`] out.
//!
//! Owns the parsed-document types, the length-preserving decoding of file bytes, the
//! byte-to-line mapping every span goes through, and the dispatch by [`FileType`]. The formats
//! live in `markdown` (with its YAML in `front_matter`), `text` (plain text and source code) and
//! `html`; the grammar of link targets they share lives in `link`, and the splitting into search
//! chunks in `chunk`.
//!
//! Must not do I/O, touch the store or the index, or know about async runtimes: everything here
//! is a pure, deterministic function of the bytes, so a re-ingest of the same bytes yields the
//! same facts. Must never panic, whatever the bytes: a note that cannot be understood yields
//! diagnostics, never a failed ingest.
//!
//! **Invariant:** every [`Span`] is a byte range into the original file (a BOM and CRLF line ends
//! included), lies on char boundaries of the decoded text, and its lines are counted by `\n`.

mod chunk;
mod comment;
mod front_matter;
mod html;
mod link;
mod markdown;
#[cfg(test)]
mod prop_tests;
mod text;
mod title;
#[cfg(test)]
mod vault_tests;

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

pub use chunk::MAX_CHUNK_BYTES;

/// The facts of one file that a per-file budget counts. Each costs the store a node or an edge
/// (with its citation) and the index a document or a field, so a file stating millions of them
/// would take gigabytes to write; beyond its cap a file is indexed as far as the budget allows
/// and a diagnostic says what was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fact {
    /// A real book has a few thousand; each opens a section with its own node and chunks.
    /// Headings past the cap are read as text of the section before them.
    Headings,
    /// A large index note links a few thousand notes; each link is an edge, and a link to a
    /// note that does not exist yet a placeholder node.
    Links,
    /// Each distinct tag is a shared node with an edge and a citation, and every tag of a note
    /// is indexed again with each of its chunks (a file at the size cap has ~8,400), so the
    /// index holds tags × chunks terms for one note: 200 kept a 15 MiB note of tags under
    /// 256 MiB of peak memory, where 1,000 took 560 MiB. A heavily tagged note has a few dozen.
    Tags,
    /// Inline fields become properties of the note, held in one JSON value.
    Fields,
    BlockIds,
    /// Enough for a file at the size cap (16 MiB / 2,000 bytes ≈ 8,400 chunks of prose) plus
    /// a partial chunk for each of [`Fact::Headings`]' sections.
    Chunks,
}

impl Fact {
    pub const ALL: [Fact; 6] = [
        Fact::Headings,
        Fact::Links,
        Fact::Tags,
        Fact::Fields,
        Fact::BlockIds,
        Fact::Chunks,
    ];

    /// How many of this fact one file may state.
    pub const fn cap(self) -> usize {
        match self {
            Fact::Headings | Fact::Links | Fact::Fields | Fact::BlockIds => 10_000,
            Fact::Tags => 200,
            Fact::Chunks => 20_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fact::Headings => "headings",
            Fact::Links => "links",
            Fact::Tags => "tags",
            Fact::Fields => "fields",
            Fact::BlockIds => "block ids",
            Fact::Chunks => "chunks",
        }
    }
}

/// What one file's parse has left out for [`Fact`] caps so far.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    over: [usize; Fact::ALL.len()],
}

impl Budget {
    /// Whether one more `fact` fits beside the `have` already kept; counts it when not.
    pub fn admit(&mut self, fact: Fact, have: usize) -> bool {
        if have < fact.cap() {
            return true;
        }
        self.over[fact as usize] += 1;
        false
    }

    /// Drops what is still over a cap (the formats that do not check as they go), and says
    /// in a diagnostic per fact what was left out.
    fn settle(mut self, doc: &mut Document) {
        fn cut<T>(budget: &mut Budget, fact: Fact, items: &mut Vec<T>) {
            if items.len() > fact.cap() {
                budget.over[fact as usize] += items.len() - fact.cap();
                items.truncate(fact.cap());
            }
        }
        cut(&mut self, Fact::Headings, &mut doc.headings);
        cut(&mut self, Fact::Links, &mut doc.links);
        cut(&mut self, Fact::Tags, &mut doc.tags);
        cut(&mut self, Fact::Fields, &mut doc.inline_fields);
        cut(&mut self, Fact::BlockIds, &mut doc.block_ids);
        cut(&mut self, Fact::Chunks, &mut doc.chunks);
        for fact in Fact::ALL {
            let over = self.over[fact as usize];
            if over == 0 {
                continue;
            }
            let rest = match fact {
                Fact::Headings => "read as text",
                Fact::Chunks => "and the text they hold, not indexed",
                _ => "not indexed",
            };
            doc.diagnostics.push(Diagnostic {
                message: format!(
                    "budget: more than {} {} in one file; the {over} after them {rest}",
                    fact.cap(),
                    fact.as_str()
                ),
                span: None,
            });
        }
    }
}

/// Name recorded in provenance for facts this module extracts.
pub const EXTRACTOR: &str = "brain-parse";
/// Bumped whenever the same bytes would yield different facts, so stored facts can be redone.
pub const EXTRACTOR_VERSION: &str = "1";

/// A region of the source file: bytes `byte_start..byte_end` on lines `line_start..=line_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub byte_start: usize,
    /// Exclusive.
    pub byte_end: usize,
    /// 1-based.
    pub line_start: u32,
    /// 1-based, inclusive: the line holding the span's last byte.
    pub line_end: u32,
}

impl Span {
    pub fn range(&self) -> Range<usize> {
        self.byte_start..self.byte_end
    }
}

/// The kinds of file the parsers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Markdown,
    Text,
    Code,
    Html,
}

impl FileType {
    /// The parser for a path, by extension (or by name for `Makefile` and friends);
    /// `None` for files we do not ingest.
    pub fn from_path(path: &Path) -> Option<FileType> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "makefile" | "gnumakefile" | "dockerfile" | "containerfile" | "justfile" | "rakefile"
        ) || name.starts_with("dockerfile.")
        {
            return Some(FileType::Code);
        }
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        let file_type = match ext.as_str() {
            "md" | "markdown" | "mdown" | "mkd" => FileType::Markdown,
            "txt" | "text" | "rst" | "org" | "adoc" | "asciidoc" | "csv" | "tsv" | "log" => {
                FileType::Text
            }
            "htm" | "html" | "xhtml" => FileType::Html,
            "rs" | "py" | "js" | "mjs" | "cjs" | "ts" | "tsx" | "jsx" | "go" | "c" | "h"
            | "cpp" | "hpp" | "cc" | "cxx" | "hh" | "java" | "kt" | "kts" | "rb" | "php" | "sh"
            | "bash" | "zsh" | "fish" | "lua" | "swift" | "scala" | "sql" | "toml" | "yaml"
            | "yml" | "json" | "css" | "scss" | "sass" | "less" | "xml" | "ini" | "cfg"
            | "conf" | "el" | "clj" | "cljs" | "hs" | "ml" | "mli" | "ex" | "exs" | "erl" | "r"
            | "jl" | "dart" | "vue" | "svelte" | "nix" | "zig" | "cs" | "fs" | "pl" | "pm"
            | "ps1" | "mk" | "cmake" | "proto" | "graphql" | "tf" => FileType::Code,
            _ => return None,
        };
        Some(file_type)
    }
}

/// Everything one file says, each fact with the span it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub file_type: FileType,
    /// Front matter `title`, else an H1 that opens the note (HTML: `<title>`, else the first
    /// `<h1>`); the caller falls back to the file stem.
    pub title: Option<String>,
    /// Front matter `aliases`/`alias` (a list, or one string with commas), then a Markdown
    /// note's first H1 when it is not the title (see `title`).
    pub aliases: Vec<String>,
    /// Front matter `id`.
    pub front_matter_id: Option<String>,
    /// The whole front matter block, `---` lines included.
    pub front_matter: Option<Span>,
    /// Front matter keys typed as YAML gave them, then the inline fields merged in (a key seen
    /// again becomes an array of its values).
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// Headings in file order; for Markdown only top-level ones, since a heading inside a list
    /// or a quote opens no section.
    pub headings: Vec<Heading>,
    /// Front matter links first, then body links in file order.
    pub links: Vec<Link>,
    /// Front matter tags first, then body tags in file order.
    pub tags: Vec<Tag>,
    pub inline_fields: Vec<InlineField>,
    pub block_ids: Vec<BlockId>,
    /// The units of search, in file order; they never overlap.
    pub chunks: Vec<Chunk>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Document {
    fn empty(file_type: FileType) -> Document {
        Document {
            file_type,
            title: None,
            aliases: Vec::new(),
            front_matter_id: None,
            front_matter: None,
            properties: serde_json::Map::new(),
            headings: Vec::new(),
            links: Vec::new(),
            tags: Vec::new(),
            inline_fields: Vec::new(),
            block_ids: Vec::new(),
            chunks: Vec::new(),
            diagnostics: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1..=6.
    pub level: u8,
    /// Without the `#` marks and without a trailing block id.
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `[[Note]]`.
    Wikilink,
    /// `![[Note]]`, and local Markdown or HTML images.
    Embed,
    /// `[text](Note.md)` or a local `<a href>`.
    Markdown,
    /// Anything with a URL scheme, bare URLs and autolinks included.
    External,
}

/// The stable name of a link kind, as stored in the graph.
pub fn link_kind_name(kind: &LinkKind) -> &'static str {
    match kind {
        LinkKind::Wikilink => "wikilink",
        LinkKind::Embed => "embed",
        LinkKind::Markdown => "markdown",
        LinkKind::External => "external",
    }
}

/// The part of a link after `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subpath {
    /// `#H1#H2`: the heading texts, outermost first.
    Heading(Vec<String>),
    /// `#^id`: the block id without the caret.
    Block(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub kind: LinkKind,
    /// The path part as written (URL-decoded for Markdown and HTML links); empty for a link
    /// into the same note (`[[#Heading]]`); the whole URL for external links.
    pub target: String,
    pub subpath: Option<Subpath>,
    /// The alias after `|`, or the link text.
    pub display: Option<String>,
    /// The property the link is the value of: a front matter key (`related: "[[X]]"`) or an
    /// inline field key (`related:: [[X]]`).
    pub property: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Without the `#`, as written: `a/b` for `#a/b`.
    pub name: String,
    pub span: Span,
    pub from_front_matter: bool,
}

/// A Dataview field: `key:: value`, `[key:: value]` or `(key:: value)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineField {
    pub key: String,
    /// The raw text of the value, trimmed.
    pub value: String,
    /// From the key (or the opening bracket) to the end of the value (or the closing bracket).
    pub span: Span,
}

/// `^id` and the block it labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockId {
    /// Without the caret.
    pub id: String,
    /// The paragraph, list item, heading or table the id labels.
    pub span: Span,
}

/// A unit of search: part of one section, at most [`MAX_CHUNK_BYTES`] of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The enclosing heading texts, outermost first; empty before the first heading.
    pub heading_path: Vec<String>,
    /// The exact source slice, except for HTML where it is the visible text of the span.
    pub text: String,
    pub span: Span,
}

/// Something the parser could not understand, reported instead of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
}

/// Parses one file. Never fails and never panics: what cannot be understood becomes a
/// diagnostic and the rest of the file is still read.
pub fn parse(bytes: &[u8], file_type: FileType) -> Document {
    let decoded = decode(bytes);
    let source = Source::new(&decoded.text);
    let mut budget = Budget::default();
    let mut doc = match file_type {
        FileType::Markdown => markdown::parse(&source, decoded.body_start, &mut budget),
        FileType::Text => text::parse(&source, decoded.body_start, FileType::Text),
        FileType::Code => text::parse(&source, decoded.body_start, FileType::Code),
        FileType::Html => html::parse(&source, decoded.body_start),
    };
    if let Some((first, count)) = decoded.invalid {
        doc.diagnostics.insert(
            0,
            Diagnostic {
                message: format!("invalid UTF-8 at byte {first} ({count} bytes replaced)"),
                span: Some(source.span(first..first + 1)),
            },
        );
    }
    budget.settle(&mut doc);
    doc
}

/// The aliases [`parse`] would find, from the front matter alone: what a sync needs of every
/// file before it writes any, at a fraction of a whole parse.
pub fn aliases(bytes: &[u8], file_type: FileType) -> Vec<String> {
    if file_type != FileType::Markdown {
        return Vec::new();
    }
    let decoded = decode(bytes);
    let source = Source::new(&decoded.text);
    let mut doc = Document::empty(file_type);
    let body = front_matter::read(&source, decoded.body_start, &mut doc);
    title::apply(
        &mut doc.title,
        &mut doc.aliases,
        title::first_h1(source.text, body),
    );
    doc.aliases
}

/// File bytes as text of exactly the same length.
pub(crate) struct Decoded<'a> {
    /// Each byte that is not part of valid UTF-8 replaced by one `?`, so that offsets into the
    /// text are offsets into the file. Borrowed when the file is valid UTF-8 (nearly always):
    /// a copy of every file, made and freed on each parsing thread, was a good part of their
    /// time in the allocator.
    pub text: Cow<'a, str>,
    /// 3 after a UTF-8 byte order mark, else 0: where the content starts.
    pub body_start: usize,
    /// The first replaced byte and how many were replaced.
    pub invalid: Option<(usize, usize)>,
}

pub(crate) fn decode(bytes: &[u8]) -> Decoded<'_> {
    let (text, invalid) = match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), None),
        Err(_) => {
            let (text, invalid) = replace_invalid(bytes);
            (Cow::Owned(text), invalid)
        }
    };
    let body_start = if text.starts_with('\u{FEFF}') { 3 } else { 0 };
    Decoded {
        text,
        body_start,
        invalid,
    }
}

/// `bytes` as text with each byte that is not part of valid UTF-8 replaced by `?`, and the
/// first replaced byte with how many were replaced.
fn replace_invalid(bytes: &[u8]) -> (String, Option<(usize, usize)>) {
    let mut text = String::with_capacity(bytes.len());
    let mut invalid: Option<(usize, usize)> = None;
    for piece in bytes.utf8_chunks() {
        text.push_str(piece.valid());
        let bad = piece.invalid().len();
        if bad > 0 {
            // U+FFFD would be three bytes per bad byte and shift every later offset; `?` keeps
            // byte offsets exact.
            let at = text.len();
            invalid = Some(match invalid {
                Some((first, count)) => (first, count + bad),
                None => (at, bad),
            });
            text.extend(std::iter::repeat_n('?', bad));
        }
    }
    (text, invalid)
}

/// The decoded text of a file and where its lines start; turns byte ranges into [`Span`]s.
pub(crate) struct Source<'a> {
    pub text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Source<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Source { text, line_starts }
    }

    /// The 1-based line holding byte `at`.
    pub fn line_of(&self, at: usize) -> u32 {
        let line = self.line_starts.partition_point(|&start| start <= at);
        u32::try_from(line).unwrap_or(u32::MAX)
    }

    /// The span of `range`; an empty range sits on the line of its start.
    pub fn span(&self, range: Range<usize>) -> Span {
        let end = range.end.max(range.start);
        Span {
            byte_start: range.start,
            byte_end: end,
            line_start: self.line_of(range.start),
            line_end: self.line_of(if end > range.start { end - 1 } else { end }),
        }
    }

    /// The lines of `range`, each without its `\n` and any `\r` before it.
    pub fn lines(&self, range: Range<usize>) -> impl Iterator<Item = Range<usize>> + 'a {
        lines(self.text, range)
    }
}

/// The lines of `text[range]`, each without its `\n` and any `\r` before it.
pub(crate) fn lines<'a>(
    text: &'a str,
    range: Range<usize>,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let mut at = range.start;
    let stop = range.end.min(text.len());
    std::iter::from_fn(move || {
        if at >= stop {
            return None;
        }
        let start = at;
        let end = text[start..stop].find('\n').map_or(stop, |i| start + i);
        at = end + 1;
        let content_end = if text[start..end].ends_with('\r') {
            end - 1
        } else {
            end
        };
        Some(start..content_end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_decode(
        input: &[u8],
        expected_text: &str,
        expected_body: usize,
        invalid: Option<(usize, usize)>,
    ) {
        let decoded = decode(input);
        assert_eq!(decoded.text, expected_text, "input {input:?}");
        assert_eq!(
            decoded.text.len(),
            input.len(),
            "length must not change: {input:?}"
        );
        assert_eq!(decoded.body_start, expected_body, "input {input:?}");
        assert_eq!(decoded.invalid, invalid, "input {input:?}");
    }

    #[test]
    fn decoding_keeps_offsets() {
        check_decode(b"", "", 0, None);
        check_decode(b"plain", "plain", 0, None);
        check_decode(b"a\xffb", "a?b", 0, Some((1, 1)));
        check_decode(b"\xff\xfe\x00", "??\0", 0, Some((0, 2)));
        check_decode(b"x\xe2\x82", "x??", 0, Some((1, 2)));
        check_decode(b"\xef\xbb\xbf# T", "\u{feff}# T", 3, None);
        check_decode("é\u{1F600}".as_bytes(), "é\u{1F600}", 0, None);
        check_decode(b"a\xc0b\xc1c", "a?b?c", 0, Some((1, 2)));
    }

    fn check_span(text: &str, range: Range<usize>, lines: (u32, u32)) {
        let span = Source::new(text).span(range.clone());
        assert_eq!(
            (span.line_start, span.line_end),
            lines,
            "{text:?} {range:?}"
        );
        assert_eq!(span.range(), range);
    }

    #[test]
    fn spans_count_lines_by_newline() {
        check_span("", 0..0, (1, 1));
        check_span("abc", 0..3, (1, 1));
        check_span("a\nb\n", 0..2, (1, 1));
        check_span("a\nb\n", 0..3, (1, 2));
        check_span("a\nb\n", 2..2, (2, 2));
        check_span("a\r\nb\r\nc", 3..8, (2, 3));
        check_span("a\n\n\nb", 4..5, (4, 4));
    }

    fn check_type(path: &str, expected: Option<FileType>) {
        assert_eq!(FileType::from_path(Path::new(path)), expected, "{path}");
    }

    /// `n` repetitions of `unit(i)` parse to `kept` of `fact` and one diagnostic naming the
    /// cap and what was left out.
    fn check_budget(unit: fn(usize) -> String, n: usize, fact: Fact, kept: usize, rest: &str) {
        let text: String = (0..n).map(unit).collect();
        let doc = parse(text.as_bytes(), FileType::Markdown);
        let count = match fact {
            Fact::Headings => doc.headings.len(),
            Fact::Links => doc.links.len(),
            Fact::Tags => doc.tags.len(),
            Fact::Fields => doc.inline_fields.len(),
            Fact::BlockIds => doc.block_ids.len(),
            Fact::Chunks => doc.chunks.len(),
        };
        assert_eq!(count, kept, "{fact:?}");
        let messages: Vec<&str> = doc.diagnostics.iter().map(|d| d.message.as_str()).collect();
        let over = n - kept;
        let expected = if over == 0 {
            Vec::new()
        } else {
            vec![format!(
                "budget: more than {} {} in one file; the {over} after them {rest}",
                fact.cap(),
                fact.as_str()
            )]
        };
        assert_eq!(messages, expected, "{fact:?}");
    }

    #[test]
    fn a_file_past_its_budget_is_read_up_to_it() {
        let cap = 10_000;
        check_budget(|i| format!("# H{i}\n"), cap, Fact::Headings, cap, "");
        check_budget(
            |i| format!("# H{i}\n"),
            cap + 7,
            Fact::Headings,
            cap,
            "read as text",
        );
        check_budget(|i| format!("#t{i} "), 203, Fact::Tags, 200, "not indexed");
        check_budget(
            |i| format!("k{i}:: v{i}\n"),
            cap + 2,
            Fact::Fields,
            cap,
            "not indexed",
        );
        check_budget(
            |i| format!("[[n{i}]] "),
            cap + 5,
            Fact::Links,
            cap,
            "not indexed",
        );
        check_budget(
            |i| format!("[t](n{i}.md) "),
            cap + 4,
            Fact::Links,
            cap,
            "not indexed",
        );
        check_budget(
            |i| format!("https://x.org/{i} "),
            cap + 1,
            Fact::Links,
            cap,
            "not indexed",
        );
        check_budget(
            |i| format!("p{i} ^b{i}\n\n"),
            cap + 6,
            Fact::BlockIds,
            cap,
            "not indexed",
        );
    }

    /// Headings past the cap open no section: their lines are text of the last one, so they
    /// are still searchable and the chunks stay few.
    #[test]
    fn headings_past_the_cap_are_text_of_the_last_section() {
        let text: String = (0..30_000).map(|i| format!("# H{i}\n")).collect();
        let doc = parse(text.as_bytes(), FileType::Markdown);
        assert_eq!(doc.headings.last().map(|h| h.text.as_str()), Some("H9999"));
        let last = doc.chunks.last().unwrap();
        assert_eq!(last.heading_path, ["H9999"]);
        assert!(last.text.ends_with("# H29999"), "{:?}", last.text);
        assert!(doc.chunks.len() < 10_000 + 200, "{}", doc.chunks.len());
    }

    /// Past the structure budget a note is plain text: no headings, but its text is chunked
    /// to the end and its tags and links are still found.
    #[test]
    fn a_note_past_the_structure_budget_is_read_as_text() {
        let filler = "word\n".repeat(markdown::MAX_STRUCTURED_BYTES / 5 + 1);
        let text = format!("# Top\n\n{filler}# Late\n\n#late-tag [[Far]]\n");
        let doc = parse(text.as_bytes(), FileType::Markdown);
        let headings: Vec<&str> = doc.headings.iter().map(|h| h.text.as_str()).collect();
        assert_eq!(headings, ["Top"]);
        assert_eq!(doc.tags.last().map(|t| t.name.as_str()), Some("late-tag"));
        assert_eq!(doc.links.last().map(|l| l.target.as_str()), Some("Far"));
        assert_eq!(
            doc.chunks.last().map(|c| c.span.byte_end),
            Some(text.len() - 1)
        );
        assert!(
            doc.diagnostics.iter().any(|d| d
                .message
                .starts_with("budget: Markdown structure is read for")),
            "{:?}",
            doc.diagnostics
        );
    }

    #[test]
    fn file_types_by_extension_and_name() {
        use FileType::*;
        check_type("a/Note.md", Some(Markdown));
        check_type("Note.MARKDOWN", Some(Markdown));
        check_type("x.mdown", Some(Markdown));
        check_type("x.mkd", Some(Markdown));
        check_type("notes.txt", Some(Text));
        check_type("data.csv", Some(Text));
        check_type("server.log", Some(Text));
        check_type("doc.rst", Some(Text));
        check_type("page.html", Some(Html));
        check_type("page.HTM", Some(Html));
        check_type("main.rs", Some(Code));
        check_type("script.py", Some(Code));
        check_type("config.yaml", Some(Code));
        check_type("Makefile", Some(Code));
        check_type("build/Dockerfile", Some(Code));
        check_type("Dockerfile.dev", Some(Code));
        check_type("diagram.png", None);
        check_type("archive.tar.gz", None);
        check_type("README", None);
        check_type("", None);
    }

    #[test]
    fn link_kind_names_are_stable() {
        use LinkKind::*;
        let names: Vec<_> = [Wikilink, Embed, Markdown, External]
            .iter()
            .map(link_kind_name)
            .collect();
        assert_eq!(names, ["wikilink", "embed", "markdown", "external"]);
    }

    /// Checks what must hold for any input: spans inside the text and on char boundaries, line
    /// numbers that agree with the bytes, chunks in order, within the size cap, equal to their
    /// source slice (HTML and Markdown with comments aside) and together holding every non-blank byte of the body; and
    /// the aliases a sync reads up front are the ones the whole parse finds.
    pub(super) fn check_invariants(bytes: &[u8], file_type: FileType) {
        let doc = parse(bytes, file_type);
        assert_eq!(aliases(bytes, file_type), doc.aliases);
        let decoded = decode(bytes);
        let text = &*decoded.text;
        let source = Source::new(text);
        let mut spans: Vec<(&str, Span)> = Vec::new();
        spans.extend(doc.front_matter.map(|s| ("front matter", s)));
        spans.extend(doc.headings.iter().map(|h| ("heading", h.span)));
        spans.extend(doc.links.iter().map(|l| ("link", l.span)));
        spans.extend(doc.tags.iter().map(|t| ("tag", t.span)));
        spans.extend(doc.inline_fields.iter().map(|f| ("field", f.span)));
        spans.extend(doc.block_ids.iter().map(|b| ("block id", b.span)));
        spans.extend(doc.chunks.iter().map(|c| ("chunk", c.span)));
        spans.extend(
            doc.diagnostics
                .iter()
                .filter_map(|d| d.span.map(|s| ("diagnostic", s))),
        );
        // Inputs run to megabytes: failure messages name the input only when they fire.
        let input = || String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        for (what, span) in spans {
            assert!(
                span.byte_start <= span.byte_end && span.byte_end <= text.len(),
                "{what} {span:?} out of bounds in {file_type:?} {:?}",
                input()
            );
            assert!(
                text.is_char_boundary(span.byte_start) && text.is_char_boundary(span.byte_end),
                "{what} {span:?} not on char boundaries in {file_type:?} {:?}",
                input()
            );
            assert!(
                span.byte_start >= decoded.body_start || what == "diagnostic",
                "{what} {span:?} inside the BOM in {file_type:?} {:?}",
                input()
            );
            assert_eq!(
                source.span(span.range()),
                span,
                "{what} lines wrong in {file_type:?} {:?}",
                input()
            );
        }
        let mut covered = vec![false; text.len()];
        let mut last_end = 0;
        for c in &doc.chunks {
            assert!(
                c.span.byte_start >= last_end,
                "chunks overlap at {:?} in {file_type:?} {:?}",
                c.span,
                input()
            );
            last_end = c.span.byte_end;
            assert!(
                c.text.len() <= MAX_CHUNK_BYTES,
                "chunk too long in {file_type:?} {:?}",
                input()
            );
            assert!(
                !c.text.trim().is_empty(),
                "blank chunk in {file_type:?} {:?}",
                input()
            );
            // Markdown chunks leave out `%%comments%%`, the only text they drop.
            let commented = file_type == FileType::Markdown && text.contains("%%");
            if file_type != FileType::Html && !commented {
                assert!(
                    c.text == text[c.span.range()],
                    "chunk text is not its source in {file_type:?} {:?}",
                    input()
                );
            }
            covered[c.span.range()].iter_mut().for_each(|b| *b = true);
        }
        if file_type == FileType::Html || (file_type == FileType::Markdown && text.contains("%%")) {
            return;
        }
        let body = doc.front_matter.map_or(decoded.body_start, |s| s.byte_end);
        for (i, ch) in text[body..].char_indices() {
            assert!(
                ch.is_whitespace() || covered[body + i],
                "byte {} ({ch:?}) in no chunk: {file_type:?} {:?}",
                body + i,
                input()
            );
        }
    }

    const ALL_TYPES: [FileType; 4] = [
        FileType::Markdown,
        FileType::Text,
        FileType::Code,
        FileType::Html,
    ];

    #[test]
    fn nasty_inputs_never_panic() {
        let long_line = "word [[x]] #t ".repeat(20_000);
        let nested_list: String = (0..2_000)
            .map(|d| format!("{}- item\n", "  ".repeat(d)))
            .collect();
        let mut nasty: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"\r\r\r".to_vec(),
            b"\xef\xbb\xbf".to_vec(),
            b"\xef\xbb\xbf---\na: 1\n---\n# T ^x\n".to_vec(),
            b"\xef\xbb".to_vec(),
            b"---".to_vec(),
            b"---\n".to_vec(),
            b"---\n---".to_vec(),
            b"---\r\n---\r\n".to_vec(),
            b"---\n: : :\n---\n".to_vec(),
            b"---\n[[\n---\n".to_vec(),
            b"---\na: *nope\n---\n".to_vec(),
            b"---\nx: &a [*a, *a]\n---\n".to_vec(),
            b"---\ntags: [[[[]]]]\n---\n".to_vec(),
            b"---\n\xff\xfe: \x00\n---\n".to_vec(),
            b"\x00\x00[[\x00]]#\x00".to_vec(),
            b"\xff\xfe\xfd".to_vec(),
            b"a\xe2\x82".to_vec(),
            b"\xe2\x82# head".to_vec(),
            long_line.into_bytes(),
            "a".repeat(100_000).into_bytes(),
            "\u{1F600}".repeat(5_000).into_bytes(),
            nested_list.into_bytes(),
            ">".repeat(20_000).into_bytes(),
            "> ".repeat(5_000).into_bytes(),
            "[".repeat(20_000).into_bytes(),
            "[[".repeat(10_000).into_bytes(),
            "]]".repeat(10_000).into_bytes(),
            "*".repeat(20_000).into_bytes(),
            "`".repeat(20_000).into_bytes(),
            "#".repeat(20_000).into_bytes(),
            "^".repeat(20_000).into_bytes(),
            "::".repeat(20_000).into_bytes(),
            "(".repeat(20_000).into_bytes(),
            "<".repeat(20_000).into_bytes(),
            "<a href=".repeat(5_000).into_bytes(),
            "&#".repeat(10_000).into_bytes(),
            "| a |\n|---|\n".repeat(2_000).into_bytes(),
            "$$\n".repeat(2_000).into_bytes(),
            "```\n".repeat(2_001).into_bytes(),
            "[k:: [[".repeat(5_000).into_bytes(),
            format!("---\n{}\n---\n", "[".repeat(10_000)).into_bytes(),
            format!("---\n{}\n---\n", "- ".repeat(10_000)).into_bytes(),
            format!("---\nk: \"{}\"\n---\n", "[[a]]".repeat(5_000)).into_bytes(),
        ];
        nasty.push(nasty.concat());
        for bytes in &nasty {
            for file_type in ALL_TYPES {
                check_invariants(bytes, file_type);
            }
        }
    }

    /// Deterministic xorshift fuzzing over a Markdown-ish alphabet of characters and tokens.
    #[test]
    fn random_inputs_keep_invariants() {
        const PIECES: &[&str] = &[
            "[",
            "]",
            "#",
            "|",
            "^",
            "!",
            ":",
            "(",
            ")",
            "\n",
            "-",
            "*",
            "`",
            " ",
            "a",
            "b",
            "1",
            "<",
            ">",
            "/",
            "$",
            "&",
            ";",
            "\r",
            "\\",
            "\"",
            "'",
            "=",
            "%",
            "_",
            "~",
            "é",
            "日",
            "\u{FEFF}",
            "\t",
            "\0",
            "[[",
            "]]",
            "---\n",
            "...\n",
            "https://x.org/",
            "key:: ",
            "^id",
            "#tag",
            "#1",
            "![[",
            "<a href=\"",
            "</a>",
            "<h1>",
            "</h1>",
            "```\n",
            "$$",
            "> ",
            "- ",
            "1. ",
            "- [ ] ",
            "| a |",
            "|---|",
            "&amp;",
            "<!--",
            "-->",
            "\r\n",
            "    ",
            "\n\n",
            "[x](y.md)",
            "<https://a.b>",
            "[r]: /u\n",
            "title: x\n",
            "tags: ",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2_000 {
            let len = (next() % 80) as usize;
            let mut bytes: Vec<u8> = Vec::new();
            if round % 4 == 0 {
                bytes.extend_from_slice(b"---\n");
            }
            for _ in 0..len {
                let r = next();
                if r % 53 == 0 {
                    // A stray byte that is never valid UTF-8.
                    bytes.push(0xff);
                } else {
                    bytes.extend_from_slice(PIECES[(r % PIECES.len() as u64) as usize].as_bytes());
                }
            }
            for file_type in ALL_TYPES {
                check_invariants(&bytes, file_type);
            }
        }
    }

    #[test]
    fn invalid_utf8_is_reported_once() {
        let doc = parse(b"ok \xff\xfe then #tag \xc0", FileType::Markdown);
        let messages: Vec<_> = doc.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages, ["invalid UTF-8 at byte 3 (3 bytes replaced)"]);
        let tags: Vec<_> = doc
            .tags
            .iter()
            .map(|t| (t.name.as_str(), t.span.range()))
            .collect();
        assert_eq!(tags, [("tag", 11..15)]);
    }
}
