//! The input of the packer: a sorted list of regular files with validated paths and a mode.
//!
//! A [`SourceTree`] is what every input kind (directory, tar, tar.gz, zip, git) is reduced to.
//! It holds no timestamps, owners or permission bits beyond the owner-exec bit, so the packer
//! cannot leak them into the zip even by mistake. File contents stay where they are (a file on
//! disk, or a range of the tree's spool file), so a 250 MB tree is never held in memory.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest path component, in bytes: Linux's `NAME_MAX`, so every entry can be extracted.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a string is not a valid [`EntryPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path has no components at all.
    #[error("the path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("the path is absolute")]
    Absolute,
    /// A component is `..`.
    #[error("the path contains a `..` component")]
    ParentDir,
    /// A component is `.`.
    #[error("the path contains a `.` component")]
    CurrentDir,
    /// Two separators in a row, or a trailing separator on a file.
    #[error("the path contains an empty component")]
    EmptyComponent,
    /// A backslash: a Windows separator that would be a literal character on Linux.
    #[error("the path contains a backslash")]
    Backslash,
    /// NUL or another ASCII control character.
    #[error("the path contains a control character")]
    ControlChar,
    /// The name bytes are not UTF-8.
    #[error("the path is not valid UTF-8")]
    NotUtf8,
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    #[error("a path component is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
}

/// Checks one path component (a file or directory name).
pub fn validate_component(name: &str) -> Result<(), PathError> {
    match name {
        "" => return Err(PathError::EmptyComponent),
        "." => return Err(PathError::CurrentDir),
        ".." => return Err(PathError::ParentDir),
        _ => {}
    }
    if name.len() > MAX_COMPONENT_BYTES {
        return Err(PathError::ComponentTooLong);
    }
    for b in name.bytes() {
        match b {
            b'/' => return Err(PathError::EmptyComponent),
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            _ => {}
        }
    }
    Ok(())
}

/// A path inside the package: relative, `/`-separated, UTF-8, with no `.`, `..` or empty
/// components, no backslashes and no control characters.
///
/// Constructing one is the validation, so code that holds an `EntryPath` cannot hold a path that
/// escapes the extraction directory. Bytes are kept exactly as given (no Unicode normalization),
/// and paths order by their bytes, which is the entry order of the zip.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPath(Arc<str>);

impl EntryPath {
    /// Validates `path`.
    pub fn new(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute);
        }
        path.split('/').try_for_each(validate_component)?;
        Ok(Self(Arc::from(path)))
    }

    /// Validates raw name bytes, which must be UTF-8.
    pub fn from_bytes(path: &[u8]) -> Result<Self, PathError> {
        Self::new(std::str::from_utf8(path).map_err(|_| PathError::NotUtf8)?)
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// Appends one already validated component.
    pub fn join(&self, name: &str) -> Result<Self, PathError> {
        validate_component(name)?;
        Ok(Self(Arc::from(format!("{}/{name}", self.0))))
    }

    /// Every proper ancestor, from the top: `a/b/c` gives `a`, `a/b`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for EntryPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The only permission information that survives packaging: git's rule, owner-execute or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// `0100644`.
    Regular,
    /// `0100755`.
    Executable,
}

impl Mode {
    /// Reduces any Unix mode to git's rule: executable if and only if the owner-exec bit is set.
    /// Group/other bits, setuid/setgid/sticky and the umask do not matter.
    pub fn from_unix(mode: u32) -> Self {
        if mode & 0o100 != 0 { Self::Executable } else { Self::Regular }
    }

    /// The permission bits written to the zip: `0o644` or `0o755`.
    pub fn permissions(self) -> u32 {
        match self {
            Self::Regular => 0o644,
            Self::Executable => 0o755,
        }
    }

    /// The full Unix mode of a regular file with these permissions.
    pub fn unix_mode(self) -> u32 {
        0o100_000 | self.permissions()
    }
}

/// Where a file's bytes are read from at packing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A file on the local disk (directory input), read when the package is built.
    File(PathBuf),
    /// A range of the tree's [`Spool`] ([`Contents::Spool`]), starting at this offset: a raw
    /// tar's upload, or the decompressed contents of a tar.gz.
    Spooled {
        /// Byte offset in the spool.
        offset: u64,
    },
    /// An object of the tree's [`BlobSource`] ([`Contents::Blobs`]): a zip entry inflated from
    /// the upload, a git blob read from its mirror.
    Blob {
        /// The source's own id of the object.
        id: u64,
    },
    /// A range of the tree's [`StreamSource`] ([`Contents::Stream`]), starting at this offset:
    /// the tar stream of a tar.gz that could not be spooled (a full disk).
    Streamed {
        /// Byte offset in the stream.
        offset: u64,
        /// CRC-32 of the bytes, as the decoder read them: every later read must give the same.
        crc32: u32,
    },
}

/// Where the bytes of a tree's entries are, besides files on disk ([`Content::File`]).
///
/// Each input kind reads its contents where they already are when it can: a raw tar's files lie
/// in the upload, a zip's entries can be inflated from the upload one by one, a git blob is in
/// its mirror. Only a tar.gz must be decompressed in its own order, which is not the zip's; its
/// contents go to a spool, or, when the disk has no room for one, stay in the compressed upload
/// and are read in several passes over the stream (see [`StreamSource`]).
#[derive(Debug, Clone, Default)]
pub enum Contents {
    /// Nothing but files on disk (a directory input).
    #[default]
    None,
    /// [`Content::Spooled`] entries.
    Spool(Spool),
    /// [`Content::Blob`] entries.
    Blobs(Arc<dyn BlobSource>),
    /// [`Content::Streamed`] entries.
    Stream(Arc<dyn StreamSource>),
}

/// Objects opened by id at packing time ([`Content::Blob`]).
///
/// The source is shared by the packing threads, and each thread opens its own [`BlobReader`]
/// with [`BlobSource::reader`]: a reader may hold what cannot be shared between threads (a git
/// repository handle is not `Sync`) or what is worth keeping from one object to the next.
pub trait BlobSource: fmt::Debug + Send + Sync {
    /// A reader for the calling thread.
    fn reader(&self) -> io::Result<Box<dyn BlobReader + '_>>;
}

/// One thread's handle on a [`BlobSource`].
pub trait BlobReader {
    /// The bytes of object `id`, which are `size` bytes long. The reader checks what the source
    /// can check (a zip entry's CRC, a git object's kind and size) and fails, rather than ends,
    /// when the bytes are not the ones the decoder accepted.
    fn open(&mut self, id: u64, size: u64) -> io::Result<Box<dyn Read>>;
}

/// A stream of contents that can only be read from its start ([`Content::Streamed`]): the tar
/// inside a tar.gz upload, decompressed again on every read.
///
/// The packer reads it in passes (`package::stream`): each pass decompresses it from the start
/// and reads only the next window of entries in zip order, so that what it holds stays within
/// the packer's memory budget and nothing is written to disk. The source applies the same
/// guards on every pass as the decoder did (size and ratio caps, the request's cancel flag).
pub trait StreamSource: fmt::Debug + Send + Sync {
    /// The stream from its first byte; every call starts over.
    fn open(&self) -> io::Result<Box<dyn Read + '_>>;
}

/// One file of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path in the zip.
    pub path: EntryPath,
    /// Regular or executable.
    pub mode: Mode,
    /// Size in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub content: Content,
}

/// A tree that cannot be packaged as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// Two files with the same path.
    #[error("duplicate path {0:?}")]
    Duplicate(EntryPath),
    /// A file whose path is also the directory of another file (`a` and `a/b`).
    #[error("{0:?} is both a file and a directory")]
    FileDirConflict(EntryPath),
    /// No files.
    #[error("the package would contain no files")]
    Empty,
}

/// Contents up to this many bytes stay in memory; a larger spool rolls over to a temp file.
///
/// Small bundles are the common case of a CI service: keeping them off the file system saves a
/// temp-file create and unlink per request (on a journal-less ext4, inode allocation after many
/// recent deletes dominated a 100 KB request's CPU time, BENCHMARKS.md). With one spool per
/// running pack, memory stays bounded by `pack.workers` x this.
pub const MEMORY_SPOOL_BYTES: usize = 1024 * 1024;

/// Whether an I/O error means the file system (or the user's quota) has no room left: the one
/// failure of temp storage that is worth telling apart, because the client can retry later and
/// the operator must act (HTTP 507 `insufficient_storage`).
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// Bytes that files of a tree are read from by offset: the contents taken out of an archive or
/// a git repository, or the upload itself when its members are stored uncompressed (raw tar).
///
/// One per tree: contents are appended while the input is decoded and read back by offset
/// (`pread` on a file) by the packing threads. Up to [`MEMORY_SPOOL_BYTES`] it is a buffer in
/// memory; beyond, an unlinked temp file. Either way it disappears when the last reference is
/// dropped, whatever happens, so a failed request leaves nothing behind.
#[derive(Debug, Clone)]
pub struct Spool(Arc<SpoolData>);

#[derive(Debug)]
enum SpoolData {
    Memory(Vec<u8>),
    File(File),
}

impl Spool {
    /// Bytes already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Arc::new(SpoolData::Memory(bytes)))
    }

    /// A file read by offset only (its file position is never used or moved).
    pub fn from_file(file: File) -> Self {
        Self(Arc::new(SpoolData::File(file)))
    }

    /// Length in bytes.
    pub fn len(&self) -> io::Result<u64> {
        match &*self.0 {
            SpoolData::Memory(bytes) => Ok(bytes.len() as u64),
            SpoolData::File(file) => file.metadata().map(|m| m.len()),
        }
    }

    /// Whether the spool holds no byte.
    pub fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// A reader of the whole spool, from offset 0, with its own position: any number of readers
    /// can read one spool at once.
    pub fn reader(&self) -> io::Result<SpoolReader> {
        Ok(SpoolReader { spool: self.clone(), pos: 0, len: self.len()? })
    }

    /// Reads bytes at `offset`, like `pread`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match &*self.0 {
            SpoolData::Memory(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let n = buf.len().min(bytes.len() - start);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
            SpoolData::File(file) => file.read_at(buf, offset),
        }
    }

    /// Whether the contents went to a temp file (more than [`MEMORY_SPOOL_BYTES`]).
    pub fn is_on_disk(&self) -> bool {
        matches!(&*self.0, SpoolData::File(_))
    }

    /// The buffer of a spool in memory that nothing else shares, to be used again.
    pub(crate) fn into_bytes(self) -> Option<Vec<u8>> {
        match Arc::try_unwrap(self.0) {
            Ok(SpoolData::Memory(bytes)) => Some(bytes),
            Ok(SpoolData::File(_)) | Err(_) => None,
        }
    }
}

/// Reads a [`Spool`] sequentially, with seeks: what decoders that want `Read + Seek` get.
#[derive(Debug)]
pub struct SpoolReader {
    spool: Spool,
    pos: u64,
    len: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.spool.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SpoolReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start of the input")
        })?;
        Ok(self.pos)
    }
}

/// Appends contents to a new [`Spool`].
#[derive(Debug)]
pub struct SpoolWriter {
    file: BufWriter<tempfile::SpooledTempFile>,
    len: u64,
}

impl SpoolWriter {
    /// Creates a spool that rolls over to an unlinked temp file in `dir` (or the system temp
    /// directory) once it holds more than [`MEMORY_SPOOL_BYTES`].
    pub fn new_in(dir: Option<&Path>) -> io::Result<Self> {
        Self::with_memory_limit(dir, MEMORY_SPOOL_BYTES)
    }

    /// Like [`SpoolWriter::new_in`] with another memory limit (0: always a file).
    pub fn with_memory_limit(dir: Option<&Path>, memory: usize) -> io::Result<Self> {
        let file = match dir {
            Some(dir) => tempfile::spooled_tempfile_in(memory, dir),
            None => tempfile::spooled_tempfile(memory),
        };
        Ok(Self { file: BufWriter::with_capacity(64 * 1024, file), len: 0 })
    }

    /// Appends everything `reader` yields; returns the offset and the number of bytes.
    pub fn append(&mut self, reader: &mut impl Read) -> io::Result<(u64, u64)> {
        let offset = self.len;
        let n = io::copy(reader, &mut self.file)?;
        self.len += n;
        Ok((offset, n))
    }

    /// Appends a byte slice; returns its offset.
    pub fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let offset = self.len;
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(offset)
    }

    /// Bytes appended so far: the offset of the next append.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and turns the writer into a readable spool.
    pub fn finish(self) -> io::Result<Spool> {
        let spooled = self.file.into_inner().map_err(io::IntoInnerError::into_error)?;
        let data = match spooled.into_inner() {
            tempfile::SpooledData::InMemory(cursor) => SpoolData::Memory(cursor.into_inner()),
            tempfile::SpooledData::OnDisk(file) => SpoolData::File(file),
        };
        Ok(Spool(Arc::new(data)))
    }
}

/// Reads one file's bytes, wherever they are.
pub enum ContentReader {
    /// A file on disk.
    File(File),
    /// A range of the spool.
    Spooled {
        /// The spool.
        spool: Spool,
        /// Next offset to read.
        pos: u64,
        /// End offset (exclusive).
        end: u64,
    },
    /// An object of a [`BlobSource`].
    Blob(Box<dyn Read>),
}

impl fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(file) => f.debug_tuple("File").field(file).finish(),
            Self::Spooled { pos, end, .. } => {
                f.debug_struct("Spooled").field("pos", pos).field("end", end).finish_non_exhaustive()
            }
            Self::Blob(_) => f.write_str("Blob(..)"),
        }
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::File(f) => f.read(buf),
            Self::Spooled { spool, pos, end } => {
                let left = usize::try_from(*end - *pos).unwrap_or(usize::MAX);
                let want = buf.len().min(left);
                if want == 0 {
                    return Ok(0);
                }
                let n = spool.read_at(&mut buf[..want], *pos)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spool truncated"));
                }
                *pos += n as u64;
                Ok(n)
            }
            Self::Blob(r) => r.read(buf),
        }
    }
}

/// The files of one package, sorted by path bytes, with no duplicates and at least one file.
#[derive(Debug, Clone)]
pub struct SourceTree {
    entries: Vec<Entry>,
    contents: Contents,
}

impl SourceTree {
    /// Sorts `entries` into the canonical order and checks that the set can be extracted: no
    /// duplicate paths, no path that is both a file and a directory, and at least one file.
    /// `contents` holds the bytes of the entries that are not files on disk.
    pub fn new(mut entries: Vec<Entry>, contents: Contents) -> Result<Self, TreeError> {
        if entries.is_empty() {
            return Err(TreeError::Empty);
        }
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let mut files: HashSet<&str> = HashSet::with_capacity(entries.len());
        for pair in entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(TreeError::Duplicate(pair[0].path.clone()));
            }
        }
        for e in &entries {
            files.insert(e.path.as_str());
        }
        for e in &entries {
            if let Some(a) = e.path.ancestors().find(|a| files.contains(a)) {
                let path = EntryPath::new(a).map_err(|_| TreeError::Duplicate(e.path.clone()))?;
                return Err(TreeError::FileDirConflict(path));
            }
        }
        Ok(Self { entries, contents })
    }

    /// Builds a tree from in-memory files, spooled to a temp file. Meant for tests and tools.
    pub fn from_memory<'a>(
        files: impl IntoIterator<Item = (&'a str, Mode, &'a [u8])>,
    ) -> Result<Self, FromMemoryError> {
        let mut spool = SpoolWriter::new_in(None)?;
        let mut entries = Vec::new();
        for (path, mode, bytes) in files {
            let path = EntryPath::new(path)?;
            let offset = spool.append_bytes(bytes)?;
            entries.push(Entry {
                path,
                mode,
                size: bytes.len() as u64,
                content: Content::Spooled { offset },
            });
        }
        Ok(Self::new(entries, Contents::Spool(spool.finish()?))?)
    }

    /// The files, in canonical order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Where the bytes of entries that are not files on disk are.
    pub fn contents(&self) -> &Contents {
        &self.contents
    }

    /// The tree's contents, the tree dropped.
    pub(crate) fn into_contents(self) -> Contents {
        self.contents
    }

    /// Sum of all file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// A reader of entries for the calling thread (the packer makes one per thread). A
    /// [`BlobSource`]'s own reader is opened when the first blob is.
    pub fn reader(&self) -> TreeReader<'_> {
        TreeReader { tree: self, blobs: None }
    }

    /// Opens one entry's bytes for reading (with a reader of its own: to read many entries,
    /// open them through one [`SourceTree::reader`]).
    ///
    /// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
    pub fn open(&self, entry: &Entry) -> io::Result<ContentReader> {
        self.reader().open(entry)
    }
}

/// Opens the entries of one [`SourceTree`] on one thread.
pub struct TreeReader<'t> {
    tree: &'t SourceTree,
    blobs: Option<Box<dyn BlobReader + 't>>,
}

impl fmt::Debug for TreeReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeReader").field("contents", &self.tree.contents).finish_non_exhaustive()
    }
}

impl TreeReader<'_> {
    /// Opens one entry's bytes for reading. A [`Content::Streamed`] entry cannot be opened on
    /// its own: the packer reads those in passes over the stream.
    ///
    /// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
    pub fn open(&mut self, entry: &Entry) -> io::Result<ContentReader> {
        let missing = |what: &str| io::Error::new(io::ErrorKind::NotFound, format!("the tree has no {what}"));
        match (&entry.content, &self.tree.contents) {
            (Content::File(path), _) => File::open(path).map(ContentReader::File),
            (Content::Spooled { offset }, Contents::Spool(spool)) => {
                Ok(ContentReader::Spooled { spool: spool.clone(), pos: *offset, end: offset + entry.size })
            }
            (Content::Blob { id }, Contents::Blobs(source)) => {
                let blobs = match &mut self.blobs {
                    Some(blobs) => blobs,
                    None => self.blobs.insert(source.reader()?),
                };
                blobs.open(*id, entry.size).map(ContentReader::Blob)
            }
            (Content::Spooled { .. }, _) => Err(missing("spool")),
            (Content::Blob { .. }, _) => Err(missing("blob source")),
            (Content::Streamed { .. }, _) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an entry of a stream is read by the packer, in passes over the stream",
            )),
        }
    }
}

/// Why [`SourceTree::from_memory`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FromMemoryError {
    /// A path was invalid.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The tree was invalid.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The spool could not be written.
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_reject_everything_that_could_escape_or_alias() {
        for (bad, why) in [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("////x", PathError::Absolute),
            ("../x", PathError::ParentDir),
            ("a/../../x", PathError::ParentDir),
            ("./a", PathError::CurrentDir),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a\\b", PathError::Backslash),
            ("a\0b", PathError::ControlChar),
            ("a\nb", PathError::ControlChar),
        ] {
            assert_eq!(EntryPath::new(bad), Err(why), "{bad:?}");
        }
        assert_eq!(EntryPath::new(&"x".repeat(256)), Err(PathError::ComponentTooLong));
        assert_eq!(EntryPath::from_bytes(b"caf\xe9"), Err(PathError::NotUtf8));
    }

    #[test]
    fn entry_paths_keep_unicode_bytes_as_given() {
        let nfc = EntryPath::new("caf\u{e9}.py").expect("valid");
        let nfd = EntryPath::new("cafe\u{301}.py").expect("valid");
        assert_ne!(nfc, nfd);
        assert_eq!(nfd.as_str().as_bytes(), b"cafe\xcc\x81.py");
    }

    #[test]
    fn only_the_owner_exec_bit_decides_the_mode() {
        assert_eq!(Mode::from_unix(0o100), Mode::Executable);
        assert_eq!(Mode::from_unix(0o4744), Mode::Executable);
        assert_eq!(Mode::from_unix(0o677), Mode::Regular);
        assert_eq!(Mode::from_unix(0o7677), Mode::Regular);
        assert_eq!(Mode::Regular.unix_mode(), 0o100644);
        assert_eq!(Mode::Executable.unix_mode(), 0o100755);
    }

    #[test]
    fn trees_sort_by_path_bytes_not_by_depth() {
        let tree = SourceTree::from_memory([
            ("a/b", Mode::Regular, &b"1"[..]),
            ("a.b", Mode::Regular, b"2"),
            ("a-b/c", Mode::Regular, b"3"),
            ("a.txt", Mode::Regular, b"4"),
            ("B.txt", Mode::Regular, b"5"),
        ])
        .expect("valid tree");
        let order: Vec<_> = tree.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(order, ["B.txt", "a-b/c", "a.b", "a.txt", "a/b"]);
    }

    #[test]
    fn trees_refuse_duplicates_conflicts_and_emptiness() {
        let dup = SourceTree::from_memory([("a", Mode::Regular, &b""[..]), ("a", Mode::Regular, b"")]);
        assert!(matches!(dup, Err(FromMemoryError::Tree(TreeError::Duplicate(_)))));
        let conflict = SourceTree::from_memory([("a", Mode::Regular, &b""[..]), ("a/b", Mode::Regular, b"")]);
        assert!(
            matches!(conflict, Err(FromMemoryError::Tree(TreeError::FileDirConflict(p))) if p.as_str() == "a")
        );
        let empty = SourceTree::from_memory(std::iter::empty());
        assert!(matches!(empty, Err(FromMemoryError::Tree(TreeError::Empty))));
    }

    #[test]
    fn spooled_content_reads_back_exactly() {
        let tree = SourceTree::from_memory([
            ("x", Mode::Regular, &b"hello"[..]),
            ("y", Mode::Regular, b""),
            ("z", Mode::Executable, b"world!"),
        ])
        .expect("valid tree");
        let read = |i: usize| {
            let mut out = Vec::new();
            tree.open(&tree.entries()[i]).expect("open").read_to_end(&mut out).expect("read");
            out
        };
        assert_eq!(read(0), b"hello");
        assert_eq!(read(1), b"");
        assert_eq!(read(2), b"world!");
    }

    #[test]
    fn a_spool_stays_in_memory_up_to_its_limit_then_rolls_to_disk_with_the_same_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let mut spools = Vec::new();
        for limit in [usize::MAX, 10_000, 0] {
            let mut writer = SpoolWriter::with_memory_limit(Some(dir.path()), limit).expect("spool");
            let offsets: Vec<u64> = chunks.iter().map(|c| writer.append_bytes(c).expect("append")).collect();
            let spool = writer.finish().expect("finish");
            for (chunk, offset) in chunks.iter().zip(&offsets) {
                let mut back = vec![0u8; chunk.len()];
                assert_eq!(spool.read_at(&mut back, *offset).expect("read"), chunk.len());
                assert_eq!(&back, chunk, "limit {limit}, offset {offset}");
            }
            spools.push(spool);
        }
        assert!(!spools[0].is_on_disk(), "46 KB under an unlimited budget stays in memory");
        assert!(spools[1].is_on_disk() && spools[2].is_on_disk(), "over the limit goes to a file");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "spool files are unlinked");
    }
}
