//! Primitive encoding shared by every message: big-endian integers, `u16`-length strings, `u32`-length byte
//! strings (zero-copy slices of the frame on decode), `u32`-count arrays and `u8`-tagged options.
//!
//! Invariants: decoding never panics and never allocates more than the bytes actually present justify (array
//! capacities are clamped to the remaining input; lengths are checked against [`crate::limits`] first).
//! Running out of input is always [`DecodeError::Incomplete`], so any strict prefix of a valid message is
//! reported as incomplete.

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::{ARRAY_LEN_MAX, FRAME_SIZE_MAX, SHORT_STRING_LEN_MAX};

/// Why a frame or message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete: more bytes are needed")]
    Incomplete,
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("unknown api key {0}")]
    UnknownApi(u16),
    #[error("api {api} does not support version {version}")]
    UnsupportedVersion { api: u16, version: u16 },
}

/// Encodes into a list of chunks: small fields are gathered in one buffer, large byte strings (record
/// batches, mmap slices) are kept as their own `Bytes` so they reach the socket without a copy.
#[derive(Default)]
pub struct Writer {
    parts: Vec<Bytes>,
    cur: BytesMut,
    len: usize,
}

/// Byte strings at least this long are passed by reference rather than copied into the gather buffer.
const SHARE_THRESHOLD: usize = 1024;

impl Writer {
    pub fn new() -> Writer {
        Writer {
            parts: Vec::new(),
            cur: BytesMut::with_capacity(256),
            len: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn put_u8(&mut self, v: u8) {
        self.cur.put_u8(v);
        self.len += 1;
    }
    pub fn put_u16(&mut self, v: u16) {
        self.cur.put_u16(v);
        self.len += 2;
    }
    pub fn put_u32(&mut self, v: u32) {
        self.cur.put_u32(v);
        self.len += 4;
    }
    pub fn put_u64(&mut self, v: u64) {
        self.cur.put_u64(v);
        self.len += 8;
    }
    pub fn put_slice(&mut self, s: &[u8]) {
        self.cur.put_slice(s);
        self.len += s.len();
    }
    /// Appends `b` without copying it when it is large.
    pub fn put_shared(&mut self, b: &Bytes) {
        if b.len() >= SHARE_THRESHOLD {
            if !self.cur.is_empty() {
                self.parts.push(self.cur.split().freeze());
            }
            self.parts.push(b.clone());
            self.len += b.len();
        } else {
            self.put_slice(b);
        }
    }
    /// The encoded chunks, in order.
    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.parts.push(self.cur.freeze());
        }
        self.parts
    }
    /// The encoding as one contiguous buffer (tests, small messages).
    pub fn into_bytes(self) -> Bytes {
        let parts = self.finish();
        if parts.len() == 1 {
            return parts.into_iter().next().unwrap_or_default();
        }
        let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            out.extend_from_slice(&p);
        }
        out.freeze()
    }
}

/// Decodes from a frame held in one `Bytes`; byte strings come out as zero-copy slices.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.remaining() < n {
            Err(DecodeError::Incomplete)
        } else {
            Ok(())
        }
    }
    pub fn get_u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        let v = self.buf[self.pos];
        self.pos += 1;
        Ok(v)
    }
    pub fn get_u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }
    pub fn get_u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        self.pos += 4;
        Ok(u32::from_be_bytes(a))
    }
    pub fn get_u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        Ok(u64::from_be_bytes(a))
    }
    /// A zero-copy slice of the next `n` bytes.
    pub fn get_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
    /// Errors unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::Malformed("trailing bytes after the message"))
        }
    }
}

/// A type with a wire encoding.
pub trait Wire: Sized {
    fn encode(&self, w: &mut Writer);
    fn decode(r: &mut Reader) -> Result<Self, DecodeError>;
}

macro_rules! int_wire {
    ($t:ty, $put:ident, $get:ident, $u:ty) => {
        impl Wire for $t {
            fn encode(&self, w: &mut Writer) {
                w.$put(*self as $u);
            }
            fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                Ok(r.$get()? as $t)
            }
        }
    };
}
int_wire!(u8, put_u8, get_u8, u8);
int_wire!(i8, put_u8, get_u8, u8);
int_wire!(u16, put_u16, get_u16, u16);
int_wire!(i16, put_u16, get_u16, u16);
int_wire!(u32, put_u32, get_u32, u32);
int_wire!(i32, put_u32, get_u32, u32);
int_wire!(u64, put_u64, get_u64, u64);
int_wire!(i64, put_u64, get_u64, u64);

impl Wire for bool {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self as u8);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("bool is neither 0 nor 1")),
        }
    }
}

impl Wire for String {
    fn encode(&self, w: &mut Writer) {
        // Callers validate lengths; an over-long string is cut rather than corrupting the frame.
        let n = self.len().min(u16::MAX as usize);
        w.put_u16(n as u16);
        w.put_slice(&self.as_bytes()[..n]);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let n = r.get_u16()? as usize;
        if n > SHORT_STRING_LEN_MAX {
            return Err(DecodeError::TooLarge {
                what: "string",
                len: n,
                max: SHORT_STRING_LEN_MAX,
            });
        }
        let b = r.get_bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed("string is not UTF-8"))
    }
}

impl Wire for Bytes {
    fn encode(&self, w: &mut Writer) {
        w.put_u32(self.len() as u32);
        w.put_shared(self);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let n = r.get_u32()? as usize;
        if n > FRAME_SIZE_MAX {
            return Err(DecodeError::TooLarge {
                what: "byte string",
                len: n,
                max: FRAME_SIZE_MAX,
            });
        }
        r.get_bytes(n)
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.put_u8(0),
            Some(v) => {
                w.put_u8(1);
                v.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.get_u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            _ => Err(DecodeError::Malformed("option tag is neither 0 nor 1")),
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, w: &mut Writer) {
        w.put_u32(self.len() as u32);
        for v in self {
            v.encode(w);
        }
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let n = r.get_u32()? as usize;
        if n > ARRAY_LEN_MAX {
            return Err(DecodeError::TooLarge {
                what: "array",
                len: n,
                max: ARRAY_LEN_MAX,
            });
        }
        // Every element takes at least one byte: never reserve more than the input could hold.
        let mut v = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            v.push(T::decode(r)?);
        }
        Ok(v)
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn encode(&self, w: &mut Writer) {
        self.0.encode(w);
        self.1.encode(w);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok((A::decode(r)?, B::decode(r)?))
    }
}

/// Declares a struct whose wire encoding is its fields in order.
#[macro_export]
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        #[cfg_attr(test, derive(proptest_derive::Arbitrary))]
        pub struct $name { $( $(#[$fm])* pub $f: $t ),* }

        impl $crate::wire::Wire for $name {
            #[allow(unused_variables)]
            fn encode(&self, w: &mut $crate::wire::Writer) {
                $( $crate::wire::Wire::encode(&self.$f, w); )*
            }
            #[allow(unused_variables)]
            fn decode(r: &mut $crate::wire::Reader) -> Result<Self, $crate::wire::DecodeError> {
                Ok($name { $( $f: $crate::wire::Wire::decode(r)? ),* })
            }
        }
    };
}

/// Encodes a value into one contiguous buffer.
pub fn to_bytes<T: Wire>(v: &T) -> Bytes {
    let mut w = Writer::new();
    v.encode(&mut w);
    w.into_bytes()
}

/// Decodes a value that must span exactly `b`.
pub fn from_bytes<T: Wire>(b: Bytes) -> Result<T, DecodeError> {
    let mut r = Reader::new(b);
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared property-test helpers: every message round-trips and every strict prefix is incomplete.
    use super::*;
    use proptest::prelude::*;

    pub fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
    }

    pub fn small_vec<T: Arbitrary>() -> impl Strategy<Value = Vec<T>> {
        proptest::collection::vec(any::<T>(), 0..4)
    }

    pub fn small_opt_vec<T: Arbitrary>() -> impl Strategy<Value = Option<Vec<T>>> {
        proptest::option::of(small_vec())
    }

    pub fn check_round_trip<T: Wire + PartialEq + std::fmt::Debug>(
        v: &T,
    ) -> Result<(), TestCaseError> {
        let b = to_bytes(v);
        let back: T = from_bytes(b.clone()).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&back, v);
        // Every strict prefix for small encodings; a stride through large ones keeps this O(n · 64).
        let step = (b.len() / 64).max(1);
        for cut in (0..b.len())
            .step_by(step)
            .chain(b.len().saturating_sub(16)..b.len())
        {
            let mut r = Reader::new(b.slice(..cut));
            match T::decode(&mut r) {
                Err(DecodeError::Incomplete) => {}
                other => prop_assert!(false, "prefix {cut}/{} decoded as {:?}", b.len(), other),
            }
        }
        Ok(())
    }
}
