//! What travels down the pipeline: a file to write ([`Job`]), one recorded without being read
//! ([`Mark`]), and the names of what they become (outcomes, node kinds, file types).

use std::path::Path;

use crate::ingest::facts::Prepared;
use crate::ingest::parse::{self, FileType};
use crate::ingest::status::SourceStatus;
use crate::ingest::walk::{self, DiskFile};

/// Files whose first bytes hold a NUL are binary.
const BINARY_SNIFF_BYTES: usize = 8000;

/// Why a file under a root is recorded as `skipped`; [`SkipReason::as_str`] is what
/// `sources.reason` holds and users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Ignored,
    /// A symlink, to a file or a folder, whose target is outside the root.
    SymlinkLeavesRoot,
    /// A symlink to a folder inside the root, whose files are indexed at their real paths.
    SymlinkedFolder,
    /// A FIFO, socket or device, never opened.
    NotARegularFile,
    TooLarge,
    Binary,
    UnsupportedType,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Ignored => "ignored",
            SkipReason::SymlinkLeavesRoot => "symlink leaves the root",
            SkipReason::SymlinkedFolder => "symlinked_folder",
            SkipReason::NotARegularFile => "not_a_regular_file",
            SkipReason::TooLarge => "too_large",
            SkipReason::Binary => "binary",
            SkipReason::UnsupportedType => "unsupported_type",
        }
    }
}

/// What becomes of a file that was listed for writing.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Parse(FileType),
    Skip(SkipReason),
    Fail(String),
}

impl Outcome {
    /// What a refused read makes of a file.
    pub fn unread(e: walk::ReadError) -> Outcome {
        match e {
            walk::ReadError::NotRegular => Outcome::Skip(SkipReason::NotARegularFile),
            walk::ReadError::TooLarge { .. } => Outcome::Skip(SkipReason::TooLarge),
            walk::ReadError::Io(e) => Outcome::Fail(format!("cannot read: {e}")),
        }
    }

    /// The node a file with this outcome has: a note when it is parsed, a plain file otherwise.
    pub fn node_kind(&self) -> NodeKind {
        match self {
            Outcome::Parse(_) => NodeKind::Note,
            Outcome::Skip(_) | Outcome::Fail(_) => NodeKind::File,
        }
    }

    /// The status and reason a source row takes once the file's facts are written.
    pub fn final_status(&self) -> (SourceStatus, Option<String>) {
        match self {
            Outcome::Parse(_) => (SourceStatus::Indexed, None),
            Outcome::Skip(r) => (SourceStatus::Skipped, Some(r.as_str().to_owned())),
            Outcome::Fail(m) => (SourceStatus::Failed, Some(m.clone())),
        }
    }
}

/// The kind of a file's own node (`nodes.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Note,
    File,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Note => "note",
            NodeKind::File => "file",
        }
    }
}

/// `sources.file_type`: what kind of file the parser took it for, `other` when none.
pub fn file_type_name(t: Option<FileType>) -> &'static str {
    match t {
        Some(FileType::Markdown) => "markdown",
        Some(FileType::Text) => "text",
        Some(FileType::Code) => "code",
        Some(FileType::Html) => "html",
        None => "other",
    }
}

/// A file that is recorded without being read: skipped or failed, with why.
pub struct Mark {
    pub source_id: Option<i64>,
    pub rel: String,
    pub status: SourceStatus,
    pub reason: String,
}

/// A file to (re)write.
pub struct Job {
    pub source_id: Option<i64>,
    pub file: DiskFile,
    pub outcome: Outcome,
    pub hash: Option<String>,
    /// Lines in the file as read.
    pub lines: u32,
    /// Front matter aliases, read with the hash so that the names are registered before any
    /// link is written, and every link then resolves against the final names the first time.
    pub aliases: Vec<String>,
    /// What the parser made of the file, read again for its write batch, with its writes
    /// planned. Bytes are not kept between the two reads: a sync over a large folder holds a
    /// few batches of files in memory, not the folder.
    pub doc: Option<Prepared>,
}

impl Job {
    /// Reads and classifies one file: hash, lines, aliases, and whether it will be parsed.
    pub fn read(source_id: Option<i64>, file: DiskFile, max_file_bytes: u64) -> Job {
        let unread = |file, outcome| Job {
            source_id,
            file,
            outcome,
            hash: None,
            lines: 1,
            aliases: Vec::new(),
            doc: None,
        };
        if file.size > max_file_bytes {
            return unread(file, Outcome::Skip(SkipReason::TooLarge));
        }
        match walk::read_regular(&file.abs, max_file_bytes) {
            Err(e) => unread(file, Outcome::unread(e)),
            Ok(bytes) => {
                let sniff = &bytes[..bytes.len().min(BINARY_SNIFF_BYTES)];
                let outcome = if sniff.contains(&0) {
                    Outcome::Skip(SkipReason::Binary)
                } else {
                    match FileType::from_path(Path::new(&file.rel)) {
                        Some(t) => Outcome::Parse(t),
                        None => Outcome::Skip(SkipReason::UnsupportedType),
                    }
                };
                let mut file = file;
                file.size = bytes.len() as u64;
                let aliases = match outcome {
                    Outcome::Parse(t) => parse::aliases(&bytes, t),
                    _ => Vec::new(),
                };
                Job {
                    source_id,
                    file,
                    outcome,
                    hash: Some(blake3::hash(&bytes).to_hex().to_string()),
                    lines: line_count(&bytes),
                    aliases,
                    doc: None,
                }
            }
        }
    }

    /// Reads a parseable file again and parses it. The file may have changed since it was
    /// hashed; what is written then cites the bytes actually parsed (and the watcher brings
    /// the rest of the change).
    pub fn parse(&mut self, max_file_bytes: u64, failpoint: Option<&str>) {
        let Outcome::Parse(t) = self.outcome else {
            return;
        };
        match walk::read_regular(&self.file.abs, max_file_bytes) {
            Err(e) => self.outcome = Outcome::unread(e),
            Ok(bytes) => {
                if failpoint == Some(self.file.rel.as_str()) {
                    tracing::error!(path = %self.file.rel, "failpoint: aborting");
                    std::process::abort();
                }
                self.hash = Some(blake3::hash(&bytes).to_hex().to_string());
                self.file.size = bytes.len() as u64;
                self.lines = line_count(&bytes);
                self.doc = Some(Prepared::new(parse::parse(&bytes, t), &self.file.rel));
            }
        }
    }

    /// The `sources.file_type` this file is recorded with.
    pub fn file_type_name(&self) -> &'static str {
        match &self.outcome {
            Outcome::Parse(t) => file_type_name(Some(*t)),
            _ => file_type_name(FileType::from_path(Path::new(&self.file.rel))),
        }
    }
}

/// Lines as the parser counts them: one more than the newlines.
fn line_count(bytes: &[u8]) -> u32 {
    bytes.iter().filter(|&&c| c == b'\n').count() as u32 + 1
}
