//! Runnel's wire protocol, sans-IO: frames, headers, one module per message, the record batch layout, the
//! error-code enum and the named limits. No tokio here; the optional `codec` feature adds a tokio-util
//! framing codec.
//!
//! Invariant: nothing in this crate panics on any input bytes, and every length read from input is checked
//! against a limit in [`limits`] before memory is reserved for it.

pub mod batch;
pub mod error;
pub mod frame;
pub mod limits;
pub mod messages;
pub mod wire;

#[cfg(feature = "codec")]
pub mod codec;

pub use error::ErrorCode;
pub use frame::{ApiKey, ErrorResponse, Request, RequestHeader, Response};
