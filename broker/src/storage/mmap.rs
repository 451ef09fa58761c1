//! The only module with `unsafe` code: read-only shared memory maps of segment files.
//!
//! A map is wrapped into a [`Bytes`] (via `Bytes::from_owner`), so every slice handed to a reader keeps the
//! mapping alive and costs no copy. Invariants the rest of the storage code upholds, on which the safety of
//! these maps rests:
//! - Bytes that were ever handed out (entry payloads) are never rewritten: appends go past the published end,
//!   and after a logical truncation new frames are written past the segment's high-water mark.
//! - Frame headers below the end are rewritten only by truncation, under the log's write lock, and are only
//!   ever read (copied out) under its read lock; they are never handed out as slices.
//! - A mapped file is never shrunk, so no reader can touch a page past EOF (SIGBUS); files are only unlinked,
//!   which keeps their pages alive for existing maps.

use std::fs::File;
use std::io;

use bytes::Bytes;

/// Maps the first `len` bytes of `file` read-only and shared. `len == 0` gives an empty buffer.
pub(crate) fn map_readonly(file: &File, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only (PROT_READ, MAP_SHARED) over a file this process owns in its data
    // directory. memmap2 requires that the mapped bytes are not modified while a `&[u8]` over them is alive
    // and that the file is not truncated below the mapped length while accessed. The module invariants
    // above guarantee both for every byte a reader can reach: handed-out payload bytes are never rewritten,
    // header bytes are rewritten only under the write lock that excludes all readers of headers, and files
    // are never shrunk while mapped (the caller passes `len` <= the file's current length).
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}
