//! How Obsidian names a Markdown note: the front matter `title`, else an H1 that opens the
//! note, else the file name (which the caller supplies). A first H1 that is not the title is
//! kept as an alias, so the note is still found by it.
//!
//! The H1 is found by a line scan, not by the Markdown parser, so that [`super::aliases`]
//! (which a sync runs on every changed file before writing any) and [`super::parse`] find the
//! same one at a fraction of a parse's cost. Must not look at anything but the text.

/// The note's first ATX H1 (`# Text`) outside fenced code and `%%comments%%`, and whether it
/// opens the note (nothing but blank lines and comments before it, from `body` on).
pub(crate) fn first_h1(text: &str, body: usize) -> Option<(String, bool)> {
    let mut fence: Option<(u8, usize)> = None;
    let mut in_comment = false;
    let mut opens = true;
    for line in text.get(body..)?.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((ch, len)) = fence {
            if fence_marker(line).is_some_and(|(c, l)| c == ch && l >= len) {
                fence = None;
            }
            continue;
        }
        // What is outside comments on this line; `%%` toggles.
        let mut visible = String::new();
        for (i, piece) in line.split("%%").enumerate() {
            if i > 0 {
                in_comment = !in_comment;
            }
            if !in_comment {
                visible.push_str(piece);
            }
        }
        let visible = visible.trim_end();
        if visible.trim().is_empty() {
            continue;
        }
        if let Some(marker) = fence_marker(visible) {
            fence = Some(marker);
            opens = false;
            continue;
        }
        if let Some(h) = h1_text(visible) {
            return Some((h, opens)).filter(|(h, _)| !h.is_empty());
        }
        opens = false;
    }
    None
}

/// The text of an ATX H1 line (up to three spaces of indent, `#`, a space or the line end),
/// without closing `#`s and a trailing block id.
fn h1_text(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = line[indent..].strip_prefix('#')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut t = rest.trim();
    // Closing sequence: `# Title ##`.
    let closed = t.trim_end_matches('#');
    if closed.is_empty() || closed.ends_with([' ', '\t']) {
        t = closed.trim_end();
    }
    // A block id labels the heading; it is not part of its name.
    if let Some(at) = t.rfind(" ^")
        && t[at + 2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        && at + 2 < t.len()
    {
        t = t[..at].trim_end();
    }
    // What Obsidian renders as emphasis, code or highlight is not part of the name people see.
    Some(
        t.replace("**", "")
            .replace("==", "")
            .replace(['*', '`'], ""),
    )
}

/// A code fence opening or closing line: its character and length.
fn fence_marker(line: &str) -> Option<(u8, usize)> {
    let t = line.trim_start_matches(' ');
    if line.len() - t.len() > 3 {
        return None;
    }
    let ch = *t.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = t.bytes().take_while(|&b| b == ch).count();
    (len >= 3).then_some((ch, len))
}

/// Applies the title rule to what the front matter gave: an opening H1 becomes the title when
/// the front matter has none; otherwise the first H1 joins the aliases (once, and not when it
/// is the title itself).
pub(crate) fn apply(
    title: &mut Option<String>,
    aliases: &mut Vec<String>,
    h1: Option<(String, bool)>,
) {
    let Some((h1, opens)) = h1 else {
        return;
    };
    if title.is_none() && opens {
        *title = Some(h1);
        return;
    }
    let same = |a: &str| a.to_lowercase() == h1.to_lowercase();
    if !title.as_deref().is_some_and(same) && !aliases.iter().any(|a| same(a)) {
        aliases.push(h1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<(&str, bool)>) {
        assert_eq!(
            first_h1(input, 0),
            expected.map(|(t, o)| (t.to_owned(), o)),
            "{input:?}"
        );
    }

    #[test]
    fn first_h1_and_whether_it_opens_the_note() {
        check("# One\ntext\n", Some(("One", true)));
        check("\n\n  # One #\n", Some(("One", true)));
        check("# One ^id\n", Some(("One", true)));
        check(
            "# **Bold** `code` ==mark== *it*\n",
            Some(("Bold code mark it", true)),
        );
        check("%% hidden %%\n# One\n", Some(("One", true)));
        check("text\n# One\n", Some(("One", false)));
        check("## Two\n# One\n# Other\n", Some(("One", false)));
        check("```\n# code\n```\n# One\n", Some(("One", false)));
        check("%%\n# hidden\n%%\n# One\n", Some(("One", true)));
        check("#tag\n", None);
        check("    # indented code\n", None);
        check("no heading\n", None);
        check("#\n", None);
    }

    fn rule(fm: Option<&str>, h1: Option<(&str, bool)>) -> (Option<String>, Vec<String>) {
        let mut title = fm.map(str::to_owned);
        let mut aliases = vec!["Kept".to_owned()];
        apply(&mut title, &mut aliases, h1.map(|(t, o)| (t.to_owned(), o)));
        (title, aliases)
    }

    #[test]
    fn title_rule() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rule(None, Some(("H", true))),
            (Some("H".into()), s(&["Kept"]))
        );
        assert_eq!(rule(None, Some(("H", false))), (None, s(&["Kept", "H"])));
        assert_eq!(
            rule(Some("F"), Some(("H", true))),
            (Some("F".into()), s(&["Kept", "H"]))
        );
        assert_eq!(
            rule(Some("F"), Some(("f", true))),
            (Some("F".into()), s(&["Kept"]))
        );
        assert_eq!(rule(None, Some(("kept", false))), (None, s(&["Kept"])));
        assert_eq!(rule(Some("F"), None), (Some("F".into()), s(&["Kept"])));
    }

    /// The rule on the notes of `fixtures/titles/`, through the whole parse and the sync's
    /// alias read: (file, title, aliases). A `None` title is the file name's, given by ingest.
    #[test]
    fn title_rule_on_fixtures() {
        let cases: [(&str, Option<&str>, &[&str]); 5] = [
            (
                "front-matter.md",
                Some("Front Matter Wins"),
                &["Opening Heading"],
            ),
            ("opening-h1.md", Some("Opening Heading"), &[]),
            ("late-h1.md", None, &["This note in GitHub"]),
            ("comment-first.md", Some("After A Comment"), &[]),
            ("no-heading.md", None, &[]),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/titles");
        for (file, title, aliases) in cases {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let doc = super::super::parse(&bytes, super::super::FileType::Markdown);
            assert_eq!(doc.title.as_deref(), title, "{file}");
            assert_eq!(doc.aliases, aliases, "{file}");
            assert_eq!(
                super::super::aliases(&bytes, super::super::FileType::Markdown),
                aliases,
                "{file}"
            );
        }
    }
}
