//! The grammar of link targets, shared by every format: the inside of `[[…]]`, Markdown and
//! HTML destinations (scheme or local path, `#fragment`), and bare URLs in running text.
//!
//! Works on one line at a time and returns byte ranges into the text it was given. Must not
//! decide where links may appear (code, HTML, front matter): that is the format parser's job.

use std::ops::Range;

use super::Subpath;

/// A `[[…]]` or `![[…]]` found in a line.
#[derive(Debug, PartialEq)]
pub(crate) struct RawWikilink {
    /// From `[[` (or the `!` of an embed) to after `]]`.
    pub range: Range<usize>,
    pub embed: bool,
    pub target: String,
    pub subpath: Option<Subpath>,
    pub display: Option<String>,
}

/// The wikilinks in `text[seg]`, which must not hold a line break (a wikilink cannot span
/// lines), found as they are asked for: a line of a million links is never held as a list.
/// `[[` after an odd number of backslashes is escaped and starts nothing.
pub(crate) fn wikilinks(text: &str, seg: Range<usize>) -> impl Iterator<Item = RawWikilink> + '_ {
    let base = seg.start;
    let s = &text[seg];
    let mut from = 0;
    // The next `]]`, kept across openings so `[[[[…` stays linear.
    let mut next_close: Option<usize> = None;
    std::iter::from_fn(move || {
        while let Some(rel) = s[from..].find("[[") {
            let open = from + rel;
            if !backslashes_before(s, open).is_multiple_of(2) {
                from = open + 2;
                continue;
            }
            let close = match next_close {
                Some(c) if c >= open + 2 => c,
                _ => match s[open + 2..].find("]]") {
                    Some(rel) => open + 2 + rel,
                    None => {
                        from = s.len();
                        return None;
                    }
                },
            };
            next_close = Some(close);
            let inner = &s[open + 2..close];
            if inner.starts_with('[') {
                // `[[[x]]`: the link opens at the last of the brackets.
                from = open + 1;
                continue;
            }
            if let Some(nested) = inner.rfind("[[") {
                // `[[a [[b]]`: only the innermost opening can be a link.
                from = open + 2 + nested;
                continue;
            }
            from = close + 2;
            let embed = open > 0
                && s.as_bytes()[open - 1] == b'!'
                && backslashes_before(s, open - 1).is_multiple_of(2);
            let Some((target, subpath, display)) = wikilink_body(inner) else {
                continue;
            };
            let start = if embed { open - 1 } else { open };
            return Some(RawWikilink {
                range: base + start..base + close + 2,
                embed,
                target,
                subpath,
                display,
            });
        }
        None
    })
}

fn backslashes_before(s: &str, at: usize) -> usize {
    s.as_bytes()[..at]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count()
}

/// Splits `Note#H1#H2|alias` into target, subpath and display; `None` when there is nothing
/// to link to (`[[]]`, `[[|x]]`).
pub(crate) fn wikilink_body(inner: &str) -> Option<(String, Option<Subpath>, Option<String>)> {
    let (dest, display) = match inner.find('|') {
        Some(bar) => {
            // Inside a table Obsidian writes `[[Note\|alias]]` so the pipe does not end the cell.
            let dest = &inner[..bar];
            let dest = dest.strip_suffix('\\').unwrap_or(dest);
            let display = inner[bar + 1..].trim();
            (dest, (!display.is_empty()).then(|| display.to_string()))
        }
        None => (inner, None),
    };
    let (path, subpath) = match dest.find('#') {
        Some(hash) => (&dest[..hash], fragment(&dest[hash + 1..])),
        None => (dest, None),
    };
    let target = path.trim();
    if target.is_empty() && subpath.is_none() {
        return None;
    }
    Some((target.to_string(), subpath, display))
}

/// `H1#H2` → heading path, `^id` → block; `None` when empty.
pub(crate) fn fragment(frag: &str) -> Option<Subpath> {
    let frag = frag.trim();
    if let Some(id) = frag.strip_prefix('^') {
        let id = id.trim();
        return (!id.is_empty()).then(|| Subpath::Block(id.to_string()));
    }
    let headings: Vec<String> = frag
        .split('#')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    (!headings.is_empty()).then_some(Subpath::Heading(headings))
}

/// A Markdown or HTML link destination, classified.
#[derive(Debug, PartialEq)]
pub(crate) enum Destination {
    /// Has a scheme (`https:`, `mailto:`, `obsidian:` …) or is protocol-relative.
    External(String),
    /// A path in the vault, URL-decoded, with the fragment split off.
    Local {
        target: String,
        subpath: Option<Subpath>,
    },
}

/// Classifies a destination as written; `None` when it points nowhere (empty, or `#`).
pub(crate) fn destination(dest: &str) -> Option<Destination> {
    let dest = dest.trim();
    if dest.is_empty() {
        return None;
    }
    if has_scheme(dest) || dest.starts_with("//") {
        return Some(Destination::External(dest.to_string()));
    }
    let (path, frag) = match dest.find('#') {
        Some(hash) => (&dest[..hash], Some(&dest[hash + 1..])),
        None => (dest, None),
    };
    let target = url_decode(path);
    let subpath = frag.and_then(|f| fragment(&url_decode(f)));
    if target.is_empty() && subpath.is_none() {
        return None;
    }
    Some(Destination::Local { target, subpath })
}

fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `scheme:` per RFC 3986, at least two letters long so a Windows drive (`C:`) is a path.
pub(crate) fn has_scheme(dest: &str) -> bool {
    let Some(colon) = dest.find(':') else {
        return false;
    };
    let scheme = &dest[..colon];
    scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Bare `http://` and `https://` URLs in `text[seg]` (one line), GFM style: they start at the
/// beginning of the line, after whitespace or after one of `*_~(`, and lose trailing
/// punctuation and unbalanced closing brackets.
pub(crate) fn bare_urls(text: &str, seg: Range<usize>) -> Vec<Range<usize>> {
    let s = &text[seg.clone()];
    let lower = s.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = lower[from..].find("http") {
        let start = from + rel;
        from = start + 4;
        let rest = &lower[start..];
        let scheme_len = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            continue;
        };
        let preceded_ok = s[..start]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '*' | '_' | '~' | '('));
        if !preceded_ok {
            continue;
        }
        let len = s[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '`' | '|'))
            .unwrap_or(s.len() - start);
        let url = trim_url(&s[start..start + len]);
        if url.len() <= scheme_len {
            continue;
        }
        found.push(seg.start + start..seg.start + start + url.len());
        from = start + url.len();
    }
    found
}

fn trim_url(mut url: &str) -> &str {
    // Unmatched closers, counted once: trimming punctuation never changes them.
    let mut extra_rounds = url.matches(')').count() as isize - url.matches('(').count() as isize;
    let mut extra_squares = url.matches(']').count() as isize - url.matches('[').count() as isize;
    loop {
        let before = url.len();
        url = url.trim_end_matches(['?', '!', '.', ',', ':', ';', '*', '_', '~', '\'', '"']);
        if url.ends_with(')') && extra_rounds > 0 {
            url = &url[..url.len() - 1];
            extra_rounds -= 1;
        }
        if url.ends_with(']') && extra_squares > 0 {
            url = &url[..url.len() - 1];
            extra_squares -= 1;
        }
        if url.len() == before {
            return url;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heading(path: &[&str]) -> Option<Subpath> {
        Some(Subpath::Heading(
            path.iter().map(|s| s.to_string()).collect(),
        ))
    }

    fn block(id: &str) -> Option<Subpath> {
        Some(Subpath::Block(id.to_string()))
    }

    /// Source text of the link, embed, target, subpath, display.
    type Expected<'a> = (&'a str, bool, &'a str, Option<Subpath>, Option<&'a str>);

    fn check(line: &str, expected: &[Expected<'_>]) {
        let got: Vec<_> = wikilinks(line, 0..line.len())
            .map(|l| {
                (
                    line[l.range].to_string(),
                    l.embed,
                    l.target,
                    l.subpath,
                    l.display,
                )
            })
            .collect();
        let expected: Vec<_> = expected
            .iter()
            .map(|(src, embed, target, subpath, display)| {
                (
                    src.to_string(),
                    *embed,
                    target.to_string(),
                    subpath.clone(),
                    display.map(str::to_string),
                )
            })
            .collect();
        assert_eq!(got, expected, "line {line:?}");
    }

    #[test]
    fn wikilink_grammar() {
        check("[[Note]]", &[("[[Note]]", false, "Note", None, None)]);
        check(
            "see [[Note|the note]].",
            &[("[[Note|the note]]", false, "Note", None, Some("the note"))],
        );
        check(
            "[[Note#Heading]]",
            &[(
                "[[Note#Heading]]",
                false,
                "Note",
                heading(&["Heading"]),
                None,
            )],
        );
        check(
            "[[Note#H1#H2]]",
            &[(
                "[[Note#H1#H2]]",
                false,
                "Note",
                heading(&["H1", "H2"]),
                None,
            )],
        );
        check(
            "[[Note#^block-1]]",
            &[("[[Note#^block-1]]", false, "Note", block("block-1"), None)],
        );
        check(
            "[[#Heading]]",
            &[("[[#Heading]]", false, "", heading(&["Heading"]), None)],
        );
        check("[[#^id]]", &[("[[#^id]]", false, "", block("id"), None)]);
        check(
            "[[folder/Note.md]]",
            &[("[[folder/Note.md]]", false, "folder/Note.md", None, None)],
        );
        check(
            "![[diagram.png]]",
            &[("![[diagram.png]]", true, "diagram.png", None, None)],
        );
        check(
            "![[Note#Part|x]]",
            &[(
                "![[Note#Part|x]]",
                true,
                "Note",
                heading(&["Part"]),
                Some("x"),
            )],
        );
        check(
            "| [[Note\\|alias]] |",
            &[("[[Note\\|alias]]", false, "Note", None, Some("alias"))],
        );
        check(
            "[[ Note | spaced ]]",
            &[("[[ Note | spaced ]]", false, "Note", None, Some("spaced"))],
        );
        check("[[Note|]]", &[("[[Note|]]", false, "Note", None, None)]);
        check("[[Note#]]", &[("[[Note#]]", false, "Note", None, None)]);
        check(
            "[[a]] and [[b]]",
            &[
                ("[[a]]", false, "a", None, None),
                ("[[b]]", false, "b", None, None),
            ],
        );
        check("[[a [[b]]", &[("[[b]]", false, "b", None, None)]);
        check("\\![[x]]", &[("[[x]]", false, "x", None, None)]);
        check("[[日本語]]", &[("[[日本語]]", false, "日本語", None, None)]);
        check("\\[[not a link]]", &[]);
        check("\\\\[[x]]", &[("[[x]]", false, "x", None, None)]);
        check("[[[x]]", &[("[[x]]", false, "x", None, None)]);
        check("[[]]", &[]);
        check("[[|alias]]", &[]);
        check("[[unclosed", &[]);
        check("[single]", &[]);
        check("]] [[", &[]);
    }

    fn local(target: &str, subpath: Option<Subpath>) -> Option<Destination> {
        Some(Destination::Local {
            target: target.to_string(),
            subpath,
        })
    }

    fn external(url: &str) -> Option<Destination> {
        Some(Destination::External(url.to_string()))
    }

    fn check_dest(dest: &str, expected: Option<Destination>) {
        assert_eq!(destination(dest), expected, "destination {dest:?}");
    }

    #[test]
    fn destinations() {
        check_dest("Note.md", local("Note.md", None));
        check_dest("My%20Note.md", local("My Note.md", None));
        check_dest(
            "folder/My%20Note.md#Some%20Heading",
            local("folder/My Note.md", heading(&["Some Heading"])),
        );
        check_dest("Note.md#^abc", local("Note.md", block("abc")));
        check_dest("#Heading", local("", heading(&["Heading"])));
        check_dest("../up.md", local("../up.md", None));
        check_dest("%E6%97%A5.md", local("日.md", None));
        check_dest("bad%ff.md", local("bad\u{fffd}.md", None));
        check_dest(
            "https://example.com/a#frag",
            external("https://example.com/a#frag"),
        );
        check_dest("mailto:me@example.com", external("mailto:me@example.com"));
        check_dest(
            "obsidian://open?vault=x",
            external("obsidian://open?vault=x"),
        );
        check_dest("//cdn.example.com/x.js", external("//cdn.example.com/x.js"));
        check_dest("C:/notes/x.md", local("C:/notes/x.md", None));
        check_dest("", None);
        check_dest("#", None);
        check_dest("  ", None);
    }

    fn check_urls(line: &str, expected: &[&str]) {
        let got: Vec<_> = bare_urls(line, 0..line.len())
            .into_iter()
            .map(|r| &line[r])
            .collect();
        assert_eq!(got, expected, "line {line:?}");
    }

    #[test]
    fn bare_url_boundaries() {
        check_urls("see https://example.com.", &["https://example.com"]);
        check_urls(
            "https://example.com/a?b=1&c=2",
            &["https://example.com/a?b=1&c=2"],
        );
        check_urls(
            "(https://en.wikipedia.org/wiki/Foo_(bar))",
            &["https://en.wikipedia.org/wiki/Foo_(bar)"],
        );
        check_urls("(see http://x.org)", &["http://x.org"]);
        check_urls("*https://x.org*", &["https://x.org"]);
        check_urls("HTTPS://X.ORG/", &["HTTPS://X.ORG/"]);
        check_urls("a http://a.b b https://c.d", &["http://a.b", "https://c.d"]);
        check_urls("| https://x.org| y |", &["https://x.org"]);
        check_urls("http://x.org/#frag", &["http://x.org/#frag"]);
        check_urls("xhttps://x.org", &[]);
        check_urls("https://", &[]);
        check_urls("https://.", &[]);
        check_urls("http", &[]);
        check_urls("ftp://x.org", &[]);
    }
}
