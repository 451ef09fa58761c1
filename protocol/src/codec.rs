//! tokio-util framing: a length-delimited codec bounded by [`FRAME_SIZE_MAX`]. Frames longer than the limit
//! are an I/O error (the connection is closed: framing cannot be recovered).
use tokio_util::codec::LengthDelimitedCodec;

use crate::limits::FRAME_SIZE_MAX;

/// A codec yielding frames without their 4-byte big-endian length prefix.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(FRAME_SIZE_MAX)
        .new_codec()
}
