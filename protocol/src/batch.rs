//! The record batch: the unit a producer sends, the broker stores verbatim and a consumer reads.
//!
//! Layout (big-endian, Kafka v2-like; 61-byte header, then `record_count` varint-encoded records):
//!
//! ```text
//! off size field
//!   0  8   base_offset            stamped by the broker at append (outside the CRC)
//!   8  4   batch_length           bytes after this field (total length - 12)
//!  12  4   partition_leader_epoch stamped by the broker (outside the CRC)
//!  16  1   magic                  always 2
//!  17  4   crc                    CRC32C of bytes 21..end
//!  21  2   attributes             0 (no compression)
//!  23  4   last_offset_delta      record_count - 1
//!  27  8   first_timestamp        ms since the epoch
//!  35  8   max_timestamp
//!  43  8   producer_id            -1 when not idempotent
//!  51  2   producer_epoch
//!  53  4   base_sequence          -1 when not idempotent
//!  57  4   record_count
//!  61  ..  records
//!
//! record: length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//!         key_len varint (-1 = null) | key | value_len varint (-1 = null) | value |
//!         header_count varint | (hkey_len varint | hkey | hval_len varint | hval)*
//! ```
//! Varints are zig-zag encoded, as in protobuf and Kafka.
//!
//! Invariants: a batch that passes [`validate`] has a correct CRC, a `batch_length` equal to its buffer, and
//! exactly `record_count` well-formed records whose offset deltas are `0..record_count`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::{BATCH_SIZE_BYTES_MAX, RECORDS_PER_BATCH_MAX};

pub const BATCH_HEADER_LEN: usize = 61;
pub const MAGIC: u8 = 2;
const CRC_OFFSET: usize = 17;
const CRC_START: usize = 21;
const BASE_OFFSET_OFFSET: usize = 0;
const LEADER_EPOCH_OFFSET: usize = 12;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is incomplete: need {need} bytes, have {have}")]
    Incomplete { need: usize, have: usize },
    #[error("batch of {0} bytes exceeds the limit of {BATCH_SIZE_BYTES_MAX}")]
    TooLarge(usize),
    #[error("unsupported batch magic {0}")]
    BadMagic(u8),
    #[error("batch CRC mismatch: header says {expected:#010x}, data gives {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
}

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub partition_leader_epoch: u32,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl RecordBatchHeader {
    /// Parses the 61-byte header. Checks only that enough bytes are present and the magic; see [`validate`].
    pub fn parse(buf: &[u8]) -> Result<RecordBatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Incomplete {
                need: BATCH_HEADER_LEN,
                have: buf.len(),
            });
        }
        let h = RecordBatchHeader {
            base_offset: be_u64(buf, 0),
            batch_length: be_u32(buf, 8),
            partition_leader_epoch: be_u32(buf, 12),
            magic: buf[16],
            crc: be_u32(buf, 17),
            attributes: be_u16(buf, 21),
            last_offset_delta: be_u32(buf, 23),
            first_timestamp: be_u64(buf, 27) as i64,
            max_timestamp: be_u64(buf, 35) as i64,
            producer_id: be_u64(buf, 43) as i64,
            producer_epoch: be_u16(buf, 51) as i16,
            base_sequence: be_u32(buf, 53) as i32,
            record_count: be_u32(buf, 57),
        };
        if h.magic != MAGIC {
            return Err(BatchError::BadMagic(h.magic));
        }
        Ok(h)
    }

    /// Total bytes of the batch, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + 12
    }

    /// One past the last offset of this batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }
}

/// Bytes at the head of a batch that its CRC does not cover (base offset, length, epoch, magic, the CRC).
pub const CRC_COVERS_FROM: usize = CRC_START;

/// The CRC a batch declares for its bytes `CRC_COVERS_FROM..`, unchecked; `None` if `buf` is shorter
/// than a batch header.
pub fn declared_crc(buf: &[u8]) -> Option<u32> {
    if buf.len() < BATCH_HEADER_LEN {
        return None;
    }
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[CRC_OFFSET..CRC_START]);
    Some(u32::from_be_bytes(a))
}

/// Checks only that `buf` holds a batch header whose CRC matches the bytes after it (what a replica
/// checks of a batch the leader already validated whole). Never panics.
pub fn check_crc(buf: &[u8]) -> Result<(), BatchError> {
    let Some(expected) = declared_crc(buf) else {
        return Err(BatchError::Incomplete {
            need: BATCH_HEADER_LEN,
            have: buf.len(),
        });
    };
    let actual = crc32c::crc32c(&buf[CRC_START..]);
    if actual != expected {
        return Err(BatchError::BadCrc { expected, actual });
    }
    Ok(())
}

/// Full validation of one batch that must span exactly `buf`: header, length, CRC, and every record
/// (the record count must match what is actually encoded). Never panics on any input.
pub fn validate(buf: &[u8]) -> Result<RecordBatchHeader, BatchError> {
    if buf.len() > BATCH_SIZE_BYTES_MAX {
        return Err(BatchError::TooLarge(buf.len()));
    }
    let h = RecordBatchHeader::parse(buf)?;
    if h.total_len() != buf.len() {
        return Err(BatchError::Malformed(
            "batch_length does not match the bytes sent",
        ));
    }
    let actual = crc32c::crc32c(&buf[CRC_START..]);
    if actual != h.crc {
        return Err(BatchError::BadCrc {
            expected: h.crc,
            actual,
        });
    }
    if h.record_count == 0 || h.record_count > RECORDS_PER_BATCH_MAX {
        return Err(BatchError::Malformed(
            "record_count is zero or above the limit",
        ));
    }
    if h.last_offset_delta != h.record_count - 1 {
        return Err(BatchError::Malformed(
            "last_offset_delta != record_count - 1",
        ));
    }
    if h.max_timestamp < h.first_timestamp {
        return Err(BatchError::Malformed("max_timestamp < first_timestamp"));
    }
    let mut pos = BATCH_HEADER_LEN;
    for i in 0..h.record_count {
        let (rec_len, n) =
            read_varint(&buf[pos..]).ok_or(BatchError::Malformed("truncated record length"))?;
        pos += n;
        if rec_len < 0 || pos + rec_len as usize > buf.len() {
            return Err(BatchError::Malformed("record length runs past the batch"));
        }
        let end = pos + rec_len as usize;
        let rec =
            parse_record_body(&buf[pos..end]).ok_or(BatchError::Malformed("malformed record"))?;
        if rec.offset_delta != i as i64 {
            return Err(BatchError::Malformed("record offset deltas are not dense"));
        }
        pos = end;
    }
    if pos != buf.len() {
        return Err(BatchError::Malformed("bytes after the last record"));
    }
    Ok(h)
}

/// Overwrites the broker-owned fields (base offset, leader epoch) of an encoded batch. They lie outside the CRC.
pub fn stamp(buf: &mut [u8], base_offset: u64, leader_epoch: u32) {
    buf[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    buf[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// The 8 big-endian bytes a stamped batch starts with; lets a writer stamp without copying the batch.
pub fn base_offset_bytes(base_offset: u64) -> [u8; 8] {
    base_offset.to_be_bytes()
}

struct RecordBody<'a> {
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers_at: usize,
    header_count: usize,
}

fn take<'a>(b: &'a [u8], pos: &mut usize, len: i64) -> Option<Option<&'a [u8]>> {
    if len == -1 {
        return Some(None);
    }
    if len < 0 {
        return None;
    }
    let end = pos.checked_add(len as usize)?;
    let s = b.get(*pos..end)?;
    *pos = end;
    Some(Some(s))
}

fn parse_record_body(b: &[u8]) -> Option<RecordBody<'_>> {
    let mut pos = 1; // attributes
    if b.is_empty() {
        return None;
    }
    let (timestamp_delta, n) = read_varint(&b[pos..])?;
    pos += n;
    let (offset_delta, n) = read_varint(&b[pos..])?;
    pos += n;
    let (klen, n) = read_varint(&b[pos..])?;
    pos += n;
    let key = take(b, &mut pos, klen)?;
    let (vlen, n) = read_varint(&b[pos..])?;
    pos += n;
    let value = take(b, &mut pos, vlen)?;
    let (hc, n) = read_varint(&b[pos..])?;
    pos += n;
    if hc < 0 || hc as usize > b.len() {
        return None;
    }
    let headers_at = pos;
    for _ in 0..hc {
        let (hk, n) = read_varint(&b[pos..])?;
        pos += n;
        take(b, &mut pos, hk)??;
        let (hv, n) = read_varint(&b[pos..])?;
        pos += n;
        take(b, &mut pos, hv)?;
    }
    if pos != b.len() {
        return None;
    }
    Some(RecordBody {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_at,
        header_count: hc as usize,
    })
}

/// One decoded record. `key`/`value` are zero-copy slices of the fetched buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Iterates over the batches in a buffer of concatenated batches (a fetch response), yielding each batch's
/// header and bytes. Stops with an error at the first malformed batch; a trailing partial batch (a fetch cut at
/// `max_bytes`) ends iteration quietly.
pub struct BatchIter {
    buf: Bytes,
    pos: usize,
}

impl BatchIter {
    pub fn new(buf: Bytes) -> BatchIter {
        BatchIter { buf, pos: 0 }
    }
}

impl Iterator for BatchIter {
    type Item = Result<(RecordBatchHeader, Bytes), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        if rest.len() < BATCH_HEADER_LEN {
            return None;
        }
        let h = match RecordBatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.pos = self.buf.len();
                return Some(Err(e));
            }
        };
        let len = h.total_len();
        if len > rest.len() {
            return None;
        }
        let b = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Some(Ok((h, b)))
    }
}

/// Decodes every record of one validated batch. Allocates only the returned vector (and header vectors for
/// records that have headers).
pub fn records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    let mut out = Vec::with_capacity((h.record_count as usize).min(batch.len() / 7 + 1));
    let mut pos = BATCH_HEADER_LEN;
    for _ in 0..h.record_count {
        let (rec_len, n) = read_varint(batch.get(pos..).unwrap_or(&[]))
            .ok_or(BatchError::Malformed("record length"))?;
        pos += n;
        let end = pos
            .checked_add(
                usize::try_from(rec_len)
                    .map_err(|_| BatchError::Malformed("negative record length"))?,
            )
            .filter(|&e| e <= batch.len())
            .ok_or(BatchError::Malformed("record runs past the batch"))?;
        let body = &batch[pos..end];
        let r = parse_record_body(body).ok_or(BatchError::Malformed("malformed record"))?;
        let slice = |s: Option<&[u8]>| s.map(|s| batch.slice_ref(s));
        let mut headers = Vec::new();
        if r.header_count > 0 {
            let mut hp = r.headers_at;
            for _ in 0..r.header_count {
                let (hk, n) = read_varint(&body[hp..]).ok_or(BatchError::Malformed("header"))?;
                hp += n;
                let k = take(body, &mut hp, hk)
                    .flatten()
                    .ok_or(BatchError::Malformed("header key"))?;
                let (hv, n) = read_varint(&body[hp..]).ok_or(BatchError::Malformed("header"))?;
                hp += n;
                let v = take(body, &mut hp, hv).ok_or(BatchError::Malformed("header value"))?;
                headers.push((batch.slice_ref(k), slice(v)));
            }
        }
        out.push(Record {
            offset: h.base_offset.wrapping_add(r.offset_delta as u64),
            timestamp: h.first_timestamp.wrapping_add(r.timestamp_delta),
            key: slice(r.key),
            value: slice(r.value),
            headers,
        });
        pos = end;
    }
    Ok(out)
}

/// A copy of a finished batch numbered anew for an idempotent producer (`producer_id`, `producer_epoch`,
/// `base_sequence`), its CRC recomputed. Used only when a producer starts a new epoch and re-sends the
/// batches it still holds; `None` if `batch` is shorter than a header.
pub fn restamp(
    batch: &[u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Option<Bytes> {
    if batch.len() < BATCH_HEADER_LEN {
        return None;
    }
    let mut b = BytesMut::from(batch);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Some(b.freeze())
}

/// Builds one batch in place: records are appended straight into the final buffer, no per-record allocation.
pub struct RecordBatchBuilder {
    buf: BytesMut,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl RecordBatchBuilder {
    pub fn new(capacity: usize) -> RecordBatchBuilder {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_HEADER_LEN + 16));
        buf.put_bytes(0, BATCH_HEADER_LEN);
        RecordBatchBuilder {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Marks the batch as idempotent: `(producer_id, epoch)` and the sequence of its first record.
    pub fn idempotent(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch occupies so far.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Upper bound of the bytes a record adds (for batch-size decisions before appending).
    pub fn record_size_estimate(
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&[u8], &[u8])],
    ) -> usize {
        let h: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        5 + 1 + 10 + 5 + 5 + key.map_or(0, |k| k.len()) + 5 + value.len() + 5 + h
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&[u8], &[u8])],
    ) {
        if self.count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp - self.first_timestamp;
        let body_len = 1
            + varint_len(ts_delta)
            + varint_len(self.count as i64)
            + key.map_or(varint_len(-1), |k| varint_len(k.len() as i64) + k.len())
            + varint_len(value.len() as i64)
            + value.len()
            + varint_len(headers.len() as i64)
            + headers
                .iter()
                .map(|(k, v)| {
                    varint_len(k.len() as i64) + k.len() + varint_len(v.len() as i64) + v.len()
                })
                .sum::<usize>();
        put_varint(&mut self.buf, body_len as i64);
        self.buf.put_u8(0);
        put_varint(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, self.count as i64);
        match key {
            Some(k) => {
                put_varint(&mut self.buf, k.len() as i64);
                self.buf.put_slice(k);
            }
            None => put_varint(&mut self.buf, -1),
        }
        put_varint(&mut self.buf, value.len() as i64);
        self.buf.put_slice(value);
        put_varint(&mut self.buf, headers.len() as i64);
        for (k, v) in headers {
            put_varint(&mut self.buf, k.len() as i64);
            self.buf.put_slice(k);
            put_varint(&mut self.buf, v.len() as i64);
            self.buf.put_slice(v);
        }
        self.count += 1;
    }

    /// Writes the header (length, CRC, counts) and returns the finished batch.
    pub fn finish(mut self) -> Bytes {
        let total = self.buf.len();
        let b = &mut self.buf[..];
        b[0..8].copy_from_slice(&0u64.to_be_bytes());
        b[8..12].copy_from_slice(&((total - 12) as u32).to_be_bytes());
        b[12..16].copy_from_slice(&0u32.to_be_bytes());
        b[16] = MAGIC;
        b[21..23].copy_from_slice(&0u16.to_be_bytes());
        b[23..27].copy_from_slice(&self.count.saturating_sub(1).to_be_bytes());
        b[27..35].copy_from_slice(&self.first_timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        self.buf.freeze()
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint_len(v: i64) -> usize {
    let mut u = zigzag(v);
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

/// Appends a zig-zag varint.
pub fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut u = zigzag(v);
    while u >= 0x80 {
        buf.put_u8((u as u8) | 0x80);
        u >>= 7;
    }
    buf.put_u8(u as u8);
}

/// Reads a zig-zag varint; `None` if truncated or longer than 10 bytes.
pub fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut u: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        u |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            let v = ((u >> 1) as i64) ^ -((u & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    #[test]
    fn a_restamped_batch_is_valid_and_carries_the_new_numbers() {
        let mut b = RecordBatchBuilder::new(256).idempotent(7, 0, 40);
        b.push(1, Some(b"k"), b"v1", &[]);
        b.push(2, None, b"v2", &[]);
        let first = b.finish();
        let again = restamp(&first, 7, 1, 0).expect("a whole batch");
        let h = validate(&again).expect("valid after restamp");
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 0)
        );
        assert_eq!(h.record_count, 2);
        assert_eq!(&again[BATCH_HEADER_LEN..], &first[BATCH_HEADER_LEN..]);
        assert!(restamp(&first[..BATCH_HEADER_LEN - 1], 7, 1, 0).is_none());
    }

    fn build(recs: &[Rec]) -> Bytes {
        let mut b = RecordBatchBuilder::new(256);
        for (ts, k, v, hs) in recs {
            let hs: Vec<(&[u8], &[u8])> = hs
                .iter()
                .map(|(a, b)| (a.as_slice(), b.as_slice()))
                .collect();
            b.push(*ts, k.as_deref(), v, &hs);
        }
        b.finish()
    }

    fn arb_rec() -> impl Strategy<Value = Rec> {
        (
            0i64..1_000_000_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..8),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ),
                0..3,
            ),
        )
    }

    proptest! {
        #[test]
        fn round_trip(recs in proptest::collection::vec(arb_rec(), 1..50), base in 0u64..1<<40) {
            let b = build(&recs);
            let h = validate(&b).unwrap();
            prop_assert_eq!(h.record_count as usize, recs.len());
            let mut stamped = b.to_vec();
            stamp(&mut stamped, base, 7);
            let stamped = Bytes::from(stamped);
            // Stamping leaves the CRC valid.
            let h2 = validate(&stamped).unwrap();
            prop_assert_eq!(h2.base_offset, base);
            let out = records(&stamped).unwrap();
            prop_assert_eq!(out.len(), recs.len());
            for (i, (r, (ts, k, v, hs))) in out.iter().zip(&recs).enumerate() {
                prop_assert_eq!(r.offset, base + i as u64);
                prop_assert_eq!(r.timestamp, *ts);
                prop_assert_eq!(r.key.as_deref(), k.as_deref());
                prop_assert_eq!(r.value.as_deref(), Some(v.as_slice()));
                prop_assert_eq!(r.headers.len(), hs.len());
            }
            prop_assert_eq!(h.max_timestamp, recs.iter().map(|r| r.0).max().unwrap());
        }

        #[test]
        fn any_bit_flip_in_crc_range_is_detected(recs in proptest::collection::vec(arb_rec(), 1..5), at in any::<usize>(), bit in 0u8..8) {
            let b = build(&recs);
            let mut v = b.to_vec();
            let i = CRC_START + at % (v.len() - CRC_START);
            v[i] ^= 1 << bit;
            prop_assert!(validate(&v).is_err());
        }

        #[test]
        fn garbage_never_panics(v in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = validate(&v);
            let _ = records(&Bytes::from(v.clone()));
            for x in BatchIter::new(Bytes::from(v)) { let _ = x; }
        }

        #[test]
        fn every_strict_prefix_is_rejected(recs in proptest::collection::vec(arb_rec(), 1..5)) {
            let b = build(&recs);
            for cut in 0..b.len() {
                prop_assert!(validate(&b[..cut]).is_err());
            }
        }

        #[test]
        fn varint_round_trip(v in any::<i64>()) {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            prop_assert_eq!(b.len(), varint_len(v));
            prop_assert_eq!(read_varint(&b), Some((v, b.len())));
        }
    }

    #[test]
    fn lying_record_count_is_rejected() {
        let b = build(&[
            (1, None, b"a".to_vec(), vec![]),
            (2, None, b"b".to_vec(), vec![]),
        ]);
        let mut v = b.to_vec();
        v[57..61].copy_from_slice(&3u32.to_be_bytes());
        v[23..27].copy_from_slice(&2u32.to_be_bytes());
        let crc = crc32c::crc32c(&v[CRC_START..]);
        v[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate(&v), Err(BatchError::Malformed(_))));
    }

    #[test]
    fn batch_iter_walks_concatenated_batches_and_ignores_a_partial_tail() {
        let a = build(&[(1, None, b"a".to_vec(), vec![])]);
        let b = build(&[(2, Some(b"k".to_vec()), b"bb".to_vec(), vec![])]);
        let mut all = BytesMut::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        all.extend_from_slice(&a[..20]);
        let got: Vec<_> = BatchIter::new(all.freeze())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1, b);
    }
}
