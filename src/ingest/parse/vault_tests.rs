//! Exact extraction from the fixture vault in `fixtures/vault/`.
//!
//! What the vault covers, note by note:
//! - `Home.md`: front matter with title, aliases (block list), tags (flow list, nested), id,
//!   typed properties (date, integer, float, bool) and link properties (`related: "[[…]]"`,
//!   `up: ["[[…]]", "[[…]]"]`); headings on three levels; every wikilink form (plain, alias,
//!   `#H1#H2`, `#^block`, `[[#Heading]]`, `[[#^block]]`, folder path with `.md`), a link by
//!   alias (`[[Books]]`), a link to a missing note (`[[Someday Maybe]]`), a link to the file
//!   name two folders share (`[[Ideas]]`); embeds (`![[…]]` of an image and of a heading, a
//!   Markdown image); Markdown links (URL-encoded, `<…>` with a fragment), an external link,
//!   an autolink and a bare URL with a `#fragment`; a block id on a paragraph.
//! - `Reading List.md`: aliases and tags as comma strings, a block id on a list item, an inline
//!   field inside a list item.
//! - `Meeting Notes.md`: a list of link properties, a nested inline field whose value is a link,
//!   a table with `[[Note\|alias]]` labelled by a block id on its own line, the three inline
//!   field forms, a link to a block of the same note.
//! - `Projects/Alpha.md` and `Projects/Beta.md`: inline fields holding links and repeated keys,
//!   the non-tag cases (`#123`, `C#sharp`, `foo#bar`, inline code, a URL fragment, fenced code,
//!   math), an escaped `\[[`, a relative wikilink (`[[../Reading List]]`) and a relative
//!   Markdown link, an embed of a block.
//! - `Ideas.md` and `Archive/Ideas.md`: the same file name in two folders.
//! - `Daily/2024-05-01.md` has CRLF line ends, `People/Ana Lima.md` a BOM,
//!   `Drafts/Broken Front Matter.md` invalid YAML, `Empty.md` nothing at all.
//! - `notes.txt`, `script.py` and `page.html`: the other file types; `assets/diagram.png` the
//!   embedded image; `.obsidian/app.json` the vault's settings folder, which is not a note.
//!
//! `.gitattributes` keeps git from rewriting the CRLF and BOM bytes the offsets depend on.

use std::path::Path;

use super::{Document, FileType, Span, Subpath, link_kind_name, parse};

fn read(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/vault")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn at(span: &Span) -> String {
    let lines = if span.line_start == span.line_end {
        format!("L{}", span.line_start)
    } else {
        format!("L{}-{}", span.line_start, span.line_end)
    };
    format!("{}..{} {lines}", span.byte_start, span.byte_end)
}

/// One line per fact, with its byte and line range; the source text of short spans too.
fn render(bytes: &[u8], doc: &Document) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    // Escaped like `{:?}` but in ‹› so that the expectations can be raw strings.
    let src = |s: &Span| {
        let quoted = format!(
            "{:?}",
            text.get(s.range()).unwrap_or("<not on char boundaries>")
        );
        format!("‹{}›", &quoted[1..quoted.len() - 1])
    };
    let mut out = vec![
        format!("title {:?}", doc.title),
        format!("aliases {:?}", doc.aliases),
        format!("id {:?}", doc.front_matter_id),
        format!(
            "front matter {}",
            doc.front_matter.as_ref().map_or("none".to_string(), at)
        ),
        format!(
            "properties {}",
            serde_json::Value::Object(doc.properties.clone())
        ),
    ];
    for h in &doc.headings {
        out.push(format!(
            "h{} {:?} {} {}",
            h.level,
            h.text,
            at(&h.span),
            src(&h.span)
        ));
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
            "{} {:?}{subpath}{display}{property} {} {}",
            link_kind_name(&l.kind),
            l.target,
            at(&l.span),
            src(&l.span)
        ));
    }
    for t in &doc.tags {
        let fm = if t.from_front_matter { " fm" } else { "" };
        out.push(format!(
            "tag {:?}{fm} {} {}",
            t.name,
            at(&t.span),
            src(&t.span)
        ));
    }
    for f in &doc.inline_fields {
        out.push(format!(
            "field {:?}={:?} {} {}",
            f.key,
            f.value,
            at(&f.span),
            src(&f.span)
        ));
    }
    for b in &doc.block_ids {
        out.push(format!("block {:?} {}", b.id, at(&b.span)));
    }
    for c in &doc.chunks {
        out.push(format!(
            "chunk [{}] {}",
            c.heading_path.join(" > "),
            at(&c.span)
        ));
    }
    for d in &doc.diagnostics {
        out.push(format!(
            "diagnostic {:?} {}",
            d.message,
            d.span.as_ref().map_or("none".to_string(), at)
        ));
    }
    out
}

fn check(rel: &str, expected: &[&str]) {
    let bytes = read(rel);
    let Some(file_type) = FileType::from_path(Path::new(rel)) else {
        panic!("{rel} is not a supported file");
    };
    let got = render(&bytes, &parse(&bytes, file_type));
    // Line by line first, so a failure names the first fact that differs.
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "{rel}: fact {i} differs");
    }
    assert_eq!(got, expected, "{rel}: facts missing or extra");
}

/// Every file of the vault with a parser, chunks covering every non-blank byte and all.
#[test]
fn every_fixture_keeps_the_invariants() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut parsed = Vec::new();
    for path in &files {
        let Some(file_type) = FileType::from_path(path) else {
            continue;
        };
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        super::tests::check_invariants(&bytes, file_type);
        parsed.push(
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string(),
        );
    }
    assert_eq!(
        parsed,
        [
            ".obsidian/app.json",
            "Archive/Ideas.md",
            "Daily/2024-05-01.md",
            "Drafts/Broken Front Matter.md",
            "Empty.md",
            "Home.md",
            "Ideas.md",
            "Meeting Notes.md",
            "People/Ana Lima.md",
            "Projects/Alpha.md",
            "Projects/Beta.md",
            "Reading List.md",
            "notes.txt",
            "page.html",
            "script.py",
        ],
        "the image and .gitattributes have no parser; everything else is read"
    );
}

#[test]
fn home_note_covers_every_link_form() {
    check(
        "Home.md",
        &[
            r#"title Some("Home")"#,
            r#"aliases ["Start", "Dashboard", "Welcome home"]"#,
            r#"id Some("home-0001")"#,
            r#"front matter 0..223 L1-14"#,
            r#"properties {"title":"Home","aliases":["Start","Dashboard"],"tags":["hub","meta/index"],"id":"home-0001","created":"2024-03-01","priority":2,"rating":4.5,"pinned":true,"related":"[[Reading List]]","up":["[[Projects/Alpha]]","[[Projects/Beta]]"]}"#,
            r#"h1 "Welcome home" 224..238 L15 ‹# Welcome home›"#,
            r#"h2 "Links of every kind" 425..447 L20 ‹## Links of every kind›"#,
            r#"h3 "Embeds" 782..792 L30 ‹### Embeds›"#,
            r#"h3 "Markdown and web links" 882..908 L36 ‹### Markdown and web links›"#,
            r#"wikilink "Reading List" prop=related 154..170 L12 ‹[[Reading List]]›"#,
            r#"wikilink "Projects/Alpha" prop=up 178..196 L13 ‹[[Projects/Alpha]]›"#,
            r#"wikilink "Projects/Beta" prop=up 200..217 L13 ‹[[Projects/Beta]]›"#,
            r#"wikilink "Projects/Alpha" |the Alpha project 337..373 L18 ‹[[Projects/Alpha|the Alpha project]]›"#,
            r#"wikilink "Meeting Notes" #Decisions 381..408 L18 ‹[[Meeting Notes#Decisions]]›"#,
            r#"wikilink "Reading List" 458..474 L22 ‹[[Reading List]]›"#,
            r#"wikilink "Books" 490..499 L22 ‹[[Books]]›"#,
            r#"wikilink "Meeting Notes" #Decisions#Follow-ups 516..554 L23 ‹[[Meeting Notes#Decisions#Follow-ups]]›"#,
            r#"wikilink "Meeting Notes" #^decision-1 564..593 L24 ‹[[Meeting Notes#^decision-1]]›"#,
            r#"wikilink "" #Links of every kind 607..631 L25 ‹[[#Links of every kind]]›"#,
            r#"wikilink "" #^home-summary 636..654 L25 ‹[[#^home-summary]]›"#,
            r#"wikilink "Projects/Alpha.md" 684..705 L26 ‹[[Projects/Alpha.md]]›"#,
            r#"wikilink "Someday Maybe" 725..742 L27 ‹[[Someday Maybe]]›"#,
            r#"wikilink "Ideas" 771..780 L28 ‹[[Ideas]]›"#,
            r#"embed "diagram.png" 794..810 L32 ‹![[diagram.png]]›"#,
            r#"embed "Projects/Alpha" #Goals 811..836 L33 ‹![[Projects/Alpha#Goals]]›"#,
            r#"embed "assets/diagram.png" |Architecture diagram 837..880 L34 ‹![Architecture diagram](assets/diagram.png)›"#,
            r#"markdown "Meeting Notes.md" |meeting notes 919..954 L38 ‹[meeting notes](Meeting%20Notes.md)›"#,
            r#"markdown "Meeting Notes.md" #Decisions |the decisions 966..1011 L38 ‹[the decisions](<Meeting Notes.md#Decisions>)›"#,
            r#"external "https://help.obsidian.md/Linking+notes+and+files/Internal+links" |Obsidian help 1017..1097 L39 ‹[Obsidian help](https://help.obsidian.md/Linking+notes+and+files/Internal+links)›"#,
            r#"external "https://blacksmithgn.github.io/obsidian-dataview/" 1136..1187 L40 ‹<https://blacksmithgn.github.io/obsidian-dataview/>›"#,
            r#"external "https://forum.obsidian.md/t/tags#nested" 1205..1244 L41 ‹https://forum.obsidian.md/t/tags#nested›"#,
            r#"tag "hub" fm 56..59 L6 ‹hub›"#,
            r#"tag "meta/index" fm 61..71 L6 ‹meta/index›"#,
            r#"tag "hub" 321..325 L17 ‹#hub›"#,
            r#"block "home-summary" 240..423 L17-18"#,
            r#"chunk [Welcome home] 224..423 L15-18"#,
            r#"chunk [Welcome home > Links of every kind] 425..780 L20-28"#,
            r#"chunk [Welcome home > Links of every kind > Embeds] 782..880 L30-34"#,
            r#"chunk [Welcome home > Links of every kind > Markdown and web links] 882..1245 L36-41"#,
        ],
    );
}

#[test]
fn reading_list_comma_properties_and_list_items() {
    check(
        "Reading List.md",
        &[
            r#"title Some("Reading List")"#,
            r#"aliases ["Books", "Reading"]"#,
            r#"id None"#,
            r#"front matter 0..45 L1-4"#,
            r#"properties {"aliases":"Books, Reading","tags":"reading","rating":"5"}"#,
            r#"h1 "Reading List" 46..60 L5 ‹# Reading List›"#,
            r#"wikilink "Ideas" 117..126 L8 ‹[[Ideas]]›"#,
            r#"tag "reading" fm 34..41 L3 ‹reading›"#,
            r#"tag "reading/notes" 150..164 L8 ‹#reading/notes›"#,
            r#"field "rating"="5" 167..177 L9 ‹rating:: 5›"#,
            r#"block "ahrens" 62..114 L7"#,
            r#"chunk [Reading List] 46..177 L5-9"#,
        ],
    );
}

#[test]
fn meeting_notes_fields_tables_and_block_ids() {
    check(
        "Meeting Notes.md",
        &[
            r#"title Some("Meeting Notes")"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter 0..113 L1-7"#,
            r#"properties {"tags":["meeting","project/alpha"],"date":"2024-05-02","attendees":["[[People/Ana Lima]]","[[Ben Okafor]]"],"with finance":"[[People/Ana Lima|Ana]]","status":"done","mood":"optimistic","energy":"high"}"#,
            r#"h1 "Meeting Notes" 114..129 L8 ‹# Meeting Notes›"#,
            r#"h2 "Agenda" 184..193 L12 ‹## Agenda›"#,
            r#"h2 "Decisions" 240..252 L17 ‹## Decisions›"#,
            r#"h3 "Follow-ups" 407..421 L25 ‹### Follow-ups›"#,
            r#"wikilink "People/Ana Lima" prop=attendees 70..89 L6 ‹[[People/Ana Lima]]›"#,
            r#"wikilink "Ben Okafor" prop=attendees 93..107 L6 ‹[[Ben Okafor]]›"#,
            r#"wikilink "Projects/Alpha" 147..165 L10 ‹[[Projects/Alpha]]›"#,
            r#"wikilink "People/Ana Lima" |Ana prop=with finance 382..405 L23 ‹[[People/Ana Lima|Ana]]›"#,
            r#"wikilink "People/Ana Lima" |Ana 469..493 L29 ‹[[People/Ana Lima\\|Ana]]›"#,
            r#"wikilink "" #^decision-1 605..621 L35 ‹[[#^decision-1]]›"#,
            r#"tag "meeting" fm 14..21 L3 ‹meeting›"#,
            r#"tag "project/alpha" fm 26..39 L4 ‹project/alpha›"#,
            r#"tag "meeting/weekly" 167..182 L10 ‹#meeting/weekly›"#,
            r#"field "with finance"="[[People/Ana Lima|Ana]]" 367..405 L23 ‹with finance:: [[People/Ana Lima|Ana]]›"#,
            r#"field "status"="done" 532..545 L34 ‹status:: done›"#,
            r#"field "mood"="optimistic" 564..583 L35 ‹[mood:: optimistic]›"#,
            r#"field "energy"="high" 584..599 L35 ‹(energy:: high)›"#,
            r#"block "decision-1" 254..296 L19"#,
            r#"block "decision-2" 298..337 L21"#,
            r#"block "follow-up-table" 423..512 L27-30"#,
            r#"chunk [Meeting Notes] 114..182 L8-10"#,
            r#"chunk [Meeting Notes > Agenda] 184..238 L12-15"#,
            r#"chunk [Meeting Notes > Decisions] 240..405 L17-23"#,
            r#"chunk [Meeting Notes > Decisions > Follow-ups] 407..622 L25-35"#,
        ],
    );
}

#[test]
fn alpha_non_tags_and_code() {
    check(
        "Projects/Alpha.md",
        &[
            r#"title Some("Project Alpha")"#,
            r#"aliases ["Alpha"]"#,
            r#"id Some("proj-alpha")"#,
            r#"front matter 0..88 L1-7"#,
            r#"properties {"id":"proj-alpha","aliases":["Alpha"],"status":"active","budget":12000,"tags":"project/alpha","owner":"[[People/Ana Lima]]","started":"2024-02-12"}"#,
            r#"h1 "Project Alpha" 89..104 L8 ‹# Project Alpha›"#,
            r#"h2 "Goals" 195..203 L15 ‹## Goals›"#,
            r#"h2 "Not tags, not links" 318..340 L20 ‹## Not tags, not links›"#,
            r#"wikilink "People/Ana Lima" prop=owner 153..172 L12 ‹[[People/Ana Lima]]›"#,
            r#"external "https://example.com/guide#setup" 419..450 L23 ‹https://example.com/guide#setup›"#,
            r#"tag "project/alpha" fm 71..84 L6 ‹project/alpha›"#,
            r#"tag "project/alpha/design" 295..316 L18 ‹#project/alpha/design›"#,
            r#"field "owner"="[[People/Ana Lima]]" 145..172 L12 ‹owner:: [[People/Ana Lima]]›"#,
            r#"field "started"="2024-02-12" 173..193 L13 ‹started:: 2024-02-12›"#,
            r#"block "goal-sync" 205..261 L17"#,
            r#"chunk [Project Alpha] 89..193 L8-13"#,
            r#"chunk [Project Alpha > Goals] 195..316 L15-18"#,
            r#"chunk [Project Alpha > Not tags, not links] 318..593 L20-32"#,
        ],
    );
}

#[test]
fn beta_relative_links_and_repeated_fields() {
    check(
        "Projects/Beta.md",
        &[
            r#"title Some("Project Beta")"#,
            r#"aliases []"#,
            r#"id Some("proj-beta")"#,
            r#"front matter 0..57 L1-5"#,
            r#"properties {"id":"proj-beta","tags":["project/beta"],"up":"[[Home]]","reviewer":["[[People/Ana Lima]]","[[Ben Okafor]]"]}"#,
            r#"h1 "Project Beta" 58..72 L6 ‹# Project Beta›"#,
            r#"h2 "Open questions" 303..320 L14 ‹## Open questions›"#,
            r#"wikilink "Home" prop=up 44..52 L4 ‹[[Home]]›"#,
            r#"wikilink "Projects/Alpha" |Alpha 114..138 L8 ‹[[Projects/Alpha|Alpha]]›"#,
            r#"wikilink "../Reading List" 159..178 L9 ‹[[../Reading List]]›"#,
            r#"markdown "./Alpha.md" #Goals |the Alpha goals 184..219 L9 ‹[the Alpha goals](./Alpha.md#Goals)›"#,
            r#"wikilink "Dashboard" |home 224..242 L9 ‹[[Dashboard|home]]›"#,
            r#"wikilink "People/Ana Lima" prop=reviewer 256..275 L11 ‹[[People/Ana Lima]]›"#,
            r#"wikilink "Ben Okafor" prop=reviewer 287..301 L12 ‹[[Ben Okafor]]›"#,
            r#"wikilink "Someday Maybe" 329..346 L16 ‹[[Someday Maybe]]›"#,
            r#"embed "Meeting Notes" #^decision-2 392..422 L17 ‹![[Meeting Notes#^decision-2]]›"#,
            r#"tag "project/beta" fm 25..37 L3 ‹project/beta›"#,
            r#"tag "question" 360..369 L16 ‹#question›"#,
            r#"field "reviewer"="[[People/Ana Lima]]" 245..275 L11 ‹reviewer:: [[People/Ana Lima]]›"#,
            r#"field "reviewer"="[[Ben Okafor]]" 276..301 L12 ‹reviewer:: [[Ben Okafor]]›"#,
            r#"chunk [Project Beta] 58..301 L6-12"#,
            r#"chunk [Project Beta > Open questions] 303..422 L14-17"#,
        ],
    );
}

#[test]
fn ideas_at_the_root() {
    check(
        "Ideas.md",
        &[
            r#"title Some("Ideas")"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter none"#,
            r#"properties {}"#,
            r#"h1 "Ideas" 0..7 L1 ‹# Ideas›"#,
            r#"wikilink "Meeting Notes" 31..48 L3 ‹[[Meeting Notes]]›"#,
            r#"tag "idea" 60..65 L3 ‹#idea›"#,
            r#"block "idea-review" 66..105 L4"#,
            r#"chunk [Ideas] 0..105 L1-4"#,
        ],
    );
}

#[test]
fn ideas_in_the_archive() {
    check(
        "Archive/Ideas.md",
        &[
            r#"title Some("Ideas (2023)")"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter 0..22 L1-3"#,
            r#"properties {"archived":true}"#,
            r#"h1 "Ideas (2023)" 23..37 L4 ‹# Ideas (2023)›"#,
            r#"tag "archive" 70..78 L6 ‹#archive›"#,
            r#"chunk [Ideas (2023)] 23..78 L4-6"#,
        ],
    );
}

#[test]
fn daily_note_with_crlf() {
    check(
        "Daily/2024-05-01.md",
        &[
            r#"title Some("2024-05-01")"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter 0..30 L1-4"#,
            r#"properties {"tags":"daily","mood":7,"sleep":"7h"}"#,
            r#"h1 "2024-05-01" 32..44 L5 ‹# 2024-05-01›"#,
            r#"h2 "Tasks" 132..140 L10 ‹## Tasks›"#,
            r#"wikilink "People/Ana Lima" |Ana 57..80 L7 ‹[[People/Ana Lima|Ana]]›"#,
            r#"wikilink "Projects/Beta" 87..104 L7 ‹[[Projects/Beta]]›"#,
            r#"wikilink "Meeting Notes" #Decisions 157..184 L12 ‹[[Meeting Notes#Decisions]]›"#,
            r#"tag "daily" fm 11..16 L2 ‹daily›"#,
            r#"tag "daily/log" 106..116 L7 ‹#daily/log›"#,
            r#"field "sleep"="7h" 118..128 L8 ‹sleep:: 7h›"#,
            r#"block "task-1" 144..192 L12"#,
            r#"chunk [2024-05-01] 32..128 L5-8"#,
            r#"chunk [2024-05-01 > Tasks] 132..213 L10-13"#,
        ],
    );
}

#[test]
fn person_note_with_bom() {
    check(
        "People/Ana Lima.md",
        &[
            r#"title Some("Ana Lima")"#,
            r#"aliases ["Ana"]"#,
            r#"id None"#,
            r#"front matter 3..40 L1-4"#,
            r#"properties {"aliases":["Ana"],"role":"engineer","email":"ana@example.com"}"#,
            r#"h1 "Ana Lima" 41..51 L5 ‹# Ana Lima›"#,
            r#"wikilink "Projects/Alpha" 62..80 L7 ‹[[Projects/Alpha]]›"#,
            r#"wikilink "Projects/Beta" 85..102 L7 ‹[[Projects/Beta]]›"#,
            r#"tag "person" 104..111 L7 ‹#person›"#,
            r#"field "email"="ana@example.com" 112..135 L8 ‹email:: ana@example.com›"#,
            r#"chunk [Ana Lima] 41..135 L5-8"#,
        ],
    );
}

#[test]
fn broken_front_matter_still_reads_the_body() {
    check(
        "Drafts/Broken Front Matter.md",
        &[
            r#"title Some("Still parsed")"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter 0..57 L1-5"#,
            r#"properties {}"#,
            r#"h1 "Still parsed" 58..72 L6 ‹# Still parsed›"#,
            r#"wikilink "Home" 130..138 L8 ‹[[Home]]›"#,
            r#"tag "draft" 139..145 L8 ‹#draft›"#,
            r#"chunk [Still parsed] 58..145 L6-8"#,
            r#"diagnostic "invalid YAML front matter at line 4, column 8: illegal placement of ':' indicator" 34..53 L4"#,
        ],
    );
}

#[test]
fn empty_note() {
    check(
        "Empty.md",
        &[
            r#"title None"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter none"#,
            r#"properties {}"#,
        ],
    );
}

#[test]
fn plain_text() {
    check(
        "notes.txt",
        &[
            r#"title None"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter none"#,
            r#"properties {}"#,
            r#"external "https://library.example.org/holds?id=42" 54..93 L3 ‹https://library.example.org/holds?id=42›"#,
            r#"chunk [] 0..166 L1-6"#,
        ],
    );
}

#[test]
fn source_code() {
    check(
        "script.py",
        &[
            r#"title None"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter none"#,
            r#"properties {}"#,
            r#"external "https://docs.python.org/3/library/csv.html" 62..104 L2 ‹https://docs.python.org/3/library/csv.html›"#,
            r#"chunk [] 0..345 L1-16"#,
        ],
    );
}

#[test]
fn html_page() {
    check(
        "page.html",
        &[
            r#"title Some("Alpha & Beta status")"#,
            r#"aliases []"#,
            r#"id None"#,
            r#"front matter none"#,
            r#"properties {}"#,
            r#"h1 "Status" 139..154 L8 ‹<h1>Status</h1>›"#,
            r#"h2 "Diagram" 298..314 L11 ‹<h2>Diagram</h2>›"#,
            r#"markdown "Projects/Alpha.md" #Goals |Alpha goals 192..241 L9 ‹<a href=\"Projects/Alpha.md#Goals\">Alpha goals</a>›"#,
            r#"external "https://obsidian.md" |Obsidian 248..290 L10 ‹<a href=\"https://obsidian.md\">Obsidian</a>›"#,
            r#"embed "assets/diagram.png" |Architecture diagram 320..377 L12 ‹<img src=\"assets/diagram.png\" alt=\"Architecture diagram\">›"#,
            r#"chunk [Status] 143..291 L8-10"#,
            r#"chunk [Status > Diagram] 302..391 L11-12"#,
        ],
    );
}
