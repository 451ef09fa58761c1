//! The on-disk frame: one Raft entry per frame, 8-byte aligned, little-endian header.
//!
//! ```text
//! off size field
//!   0  4   payload_len
//!   4  4   crc32c        over bytes 8..56 of the header and the payload, as stored
//!   8  8   term          Raft term of the entry
//!  16  8   index         Raft log index
//!  24  8   base_offset   Kafka offset of the first record (data); the next offset (other kinds)
//!  32  4   record_count  0 for non-data frames
//!  36  1   kind          1 blank, 2 data, 3 membership, 4 skip (0 never appears in a valid frame)
//!  37  3   reserved      zero
//!  40  8   aux           data: max record timestamp; skip: file position of the next frame
//!  48  8   durable_end   one past the last Raft index known durable when this frame was written
//!  56  ..  payload       data: the client batch with its base_offset field stamped
//! ```
//! A header of 56 zero bytes marks the end of a segment's frames. A skip frame (written by a logical
//! truncation) carries no entry: it says "continue at `aux`", so frames written after a truncation never
//! overwrite bytes a reader may still hold.
//!
//! Invariant: a frame is accepted only if its CRC matches; `durable_end` lets recovery tell a torn tail
//! (never durable: truncate) from corruption of durable bytes (an error).

use runnel_protocol::batch::{declared_crc, CRC_COVERS_FROM};
use runnel_protocol::limits::BATCH_SIZE_BYTES_MAX;

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 56;
/// Payloads from this size on get their frame CRC from the batch's CRC (`crc32c_combine`, ~10 µs
/// whatever the length) rather than from a pass over their bytes (~1 µs per 10 KiB).
pub const CRC_COMBINE_MIN_LEN: usize = 64 * 1024;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: u64 = 8;
/// Largest payload a frame may carry: one client batch (membership payloads are far smaller).
pub const FRAME_PAYLOAD_MAX: usize = BATCH_SIZE_BYTES_MAX;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A Raft blank entry (written by every new leader); takes no offsets.
    Blank = 1,
    /// A record batch; takes `record_count` offsets.
    Data = 2,
    /// A Raft membership entry; takes no offsets.
    Membership = 3,
    /// Not an entry: "the next frame is at `aux`" (left by a logical truncation).
    Skip = 4,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Blank),
            2 => Some(FrameKind::Data),
            3 => Some(FrameKind::Membership),
            4 => Some(FrameKind::Skip),
            _ => None,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub term: u64,
    pub index: u64,
    pub base_offset: u64,
    pub record_count: u32,
    pub kind: FrameKind,
    pub aux: i64,
    pub durable_end: u64,
}

/// Rounds `n` up to the frame alignment.
pub fn align(n: u64) -> u64 {
    n.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

impl FrameHeader {
    /// Bytes the frame occupies in the file, padding included.
    pub fn frame_len(&self) -> u64 {
        align(FRAME_HEADER_LEN as u64 + self.payload_len as u64)
    }

    /// One past the last offset this frame covers (the next offset for non-data frames).
    pub fn end_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }

    /// Encodes the header; the CRC field is left as is in `self.crc` (see [`crc_of`]).
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&self.payload_len.to_le_bytes());
        b[4..8].copy_from_slice(&self.crc.to_le_bytes());
        b[8..16].copy_from_slice(&self.term.to_le_bytes());
        b[16..24].copy_from_slice(&self.index.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        b[32..36].copy_from_slice(&self.record_count.to_le_bytes());
        b[36] = self.kind as u8;
        b[40..48].copy_from_slice(&self.aux.to_le_bytes());
        b[48..56].copy_from_slice(&self.durable_end.to_le_bytes());
        b
    }

    /// Encodes the header with its CRC computed over the header and `payload_parts` (the payload as it
    /// will be stored, possibly in pieces).
    pub fn encode_with_crc(&mut self, payload_parts: &[&[u8]]) -> [u8; FRAME_HEADER_LEN] {
        self.crc = 0;
        let b = self.encode();
        let mut crc = crc32c::crc32c(&b[8..]);
        for p in payload_parts {
            crc = crc32c::crc32c_append(crc, p);
        }
        self.crc = crc;
        let mut b = b;
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Encodes the header of a data frame whose payload is `stamp` (the stamped base offset) followed by
    /// `batch[8..]`, deriving the CRC from the CRC the batch declares for its bytes from
    /// [`CRC_COVERS_FROM`] on instead of reading them again: the caller guarantees that declared CRC was
    /// checked (at the network boundary), so a frame CRC computed this way is what a full pass would give.
    /// Falls back to the full pass for a payload too short to be a batch, or shorter than
    /// [`CRC_COMBINE_MIN_LEN`] (the combine step costs about as much as a pass over that many bytes).
    pub fn encode_with_batch_crc(
        &mut self,
        stamp: &[u8; 8],
        batch: &[u8],
    ) -> [u8; FRAME_HEADER_LEN] {
        let declared = match declared_crc(batch) {
            Some(c) if batch.len() >= CRC_COMBINE_MIN_LEN => c,
            _ => return self.encode_with_crc(&[stamp, batch.get(8..).unwrap_or_default()]),
        };
        debug_assert_eq!(
            declared,
            crc32c::crc32c(&batch[CRC_COVERS_FROM..]),
            "data entry with an unchecked batch CRC"
        );
        self.crc = 0;
        let mut b = self.encode();
        let mut crc = crc32c::crc32c(&b[8..]);
        crc = crc32c::crc32c_append(crc, stamp);
        crc = crc32c::crc32c_append(crc, &batch[8..CRC_COVERS_FROM]);
        crc = crc32c::crc32c_combine(crc, declared, batch.len() - CRC_COVERS_FROM);
        self.crc = crc;
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// What sits at a frame position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A header of zeros (or no room for a header): the end of the frames.
    End,
    /// A frame whose CRC matched.
    Frame(FrameHeader),
    /// Something that is not a valid frame.
    Bad(&'static str),
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes and CRC-checks the frame at `pos` of `buf` (a segment map), looking no further than `limit`.
/// Never panics, whatever the bytes.
pub fn read_slot(buf: &[u8], pos: u64, limit: u64) -> Slot {
    read_slot_with(buf, pos, limit, true)
}

/// [`read_slot`] without the payload CRC: every other check holds. Only for frames this process wrote
/// (the CRC guards against the disk, and these bytes have not been back to it).
pub fn read_slot_unverified(buf: &[u8], pos: u64, limit: u64) -> Slot {
    read_slot_with(buf, pos, limit, false)
}

fn read_slot_with(buf: &[u8], pos: u64, limit: u64, check_crc: bool) -> Slot {
    let limit = limit.min(buf.len() as u64);
    if !pos.is_multiple_of(FRAME_ALIGN) {
        return Slot::Bad("misaligned frame position");
    }
    let Some(hend) = pos.checked_add(FRAME_HEADER_LEN as u64) else {
        return Slot::Bad("position overflow");
    };
    if hend > limit {
        // Not even a header fits: whatever is here (zeros or a torn header) ends the frames.
        return Slot::End;
    }
    let h = &buf[pos as usize..hend as usize];
    if h.iter().all(|&x| x == 0) {
        return Slot::End;
    }
    let Some(kind) = FrameKind::from_u8(h[36]) else {
        return Slot::Bad("unknown frame kind");
    };
    if h[37..40] != [0, 0, 0] {
        return Slot::Bad("reserved header bytes are not zero");
    }
    let hdr = FrameHeader {
        payload_len: le_u32(h, 0),
        crc: le_u32(h, 4),
        term: le_u64(h, 8),
        index: le_u64(h, 16),
        base_offset: le_u64(h, 24),
        record_count: le_u32(h, 32),
        kind,
        aux: le_u64(h, 40) as i64,
        durable_end: le_u64(h, 48),
    };
    if hdr.payload_len as usize > FRAME_PAYLOAD_MAX {
        return Slot::Bad("payload length above the limit");
    }
    let end = hend + hdr.payload_len as u64;
    if end > limit {
        return Slot::Bad("frame runs past the written bytes");
    }
    if check_crc && crc32c::crc32c(&buf[pos as usize + 8..end as usize]) != hdr.crc {
        return Slot::Bad("CRC mismatch");
    }
    match kind {
        FrameKind::Data if hdr.payload_len < 8 || hdr.record_count == 0 => {
            Slot::Bad("data frame without a batch")
        }
        FrameKind::Blank | FrameKind::Membership | FrameKind::Skip if hdr.record_count != 0 => {
            Slot::Bad("non-data frame claims records")
        }
        FrameKind::Skip if hdr.aux < 0 || !(hdr.aux as u64).is_multiple_of(FRAME_ALIGN) => {
            Slot::Bad("skip target is misaligned")
        }
        _ => Slot::Frame(hdr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut h = FrameHeader {
            payload_len: payload.len() as u32,
            crc: 0,
            term: 3,
            index: 7,
            base_offset: 100,
            record_count: if kind == FrameKind::Data { 2 } else { 0 },
            kind,
            aux: 55,
            durable_end: 5,
        };
        let hb = h.encode_with_crc(&[payload]);
        let mut v = hb.to_vec();
        v.extend_from_slice(payload);
        v.resize(h.frame_len() as usize, 0);
        v
    }

    #[test]
    fn round_trip_and_end_marker() {
        let v = frame(FrameKind::Data, b"0123456789abcdef");
        match read_slot(&v, 0, v.len() as u64) {
            Slot::Frame(h) => {
                assert_eq!(
                    (h.term, h.index, h.base_offset, h.record_count),
                    (3, 7, 100, 2)
                );
                assert_eq!(h.end_offset(), 102);
                assert_eq!(h.frame_len(), 72);
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(read_slot(&[0u8; 64], 0, 64), Slot::End);
        assert_eq!(read_slot(&[0u8; 10], 0, 10), Slot::End);
    }

    proptest! {
        #[test]
        fn a_crc_derived_from_the_batch_crc_equals_a_full_pass(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8000), 1..30),
            offset in any::<u64>(),
        ) {
            let mut b = runnel_protocol::batch::RecordBatchBuilder::new(256 * 1024);
            for (i, v) in values.iter().enumerate() {
                b.push(i as i64, None, v, &[]);
            }
            let batch = b.finish();
            let stamp = offset.to_be_bytes();
            let mut h = FrameHeader {
                payload_len: batch.len() as u32,
                crc: 0,
                term: 2,
                index: 9,
                base_offset: offset,
                record_count: values.len() as u32,
                kind: FrameKind::Data,
                aux: 0,
                durable_end: 3,
            };
            let mut h2 = h;
            prop_assert_eq!(
                h.encode_with_batch_crc(&stamp, &batch),
                h2.encode_with_crc(&[&stamp, &batch[8..]])
            );
        }

        #[test]
        fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 8..200), at in any::<usize>(), bit in 0u8..8) {
            let mut v = frame(FrameKind::Data, &payload);
            let len = FRAME_HEADER_LEN + payload.len();
            v[at % len] ^= 1 << bit;
            prop_assert!(!matches!(read_slot(&v, 0, v.len() as u64), Slot::Frame(_)));
        }

        #[test]
        fn garbage_never_panics(v in proptest::collection::vec(any::<u8>(), 0..300), pos in 0u64..400, limit in 0u64..400) {
            let _ = read_slot(&v, pos, limit);
        }
    }
}
