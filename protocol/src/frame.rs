//! Frames, headers and the request/response enums.
//!
//! ```text
//! frame:           length u32 (big-endian, bytes that follow; ≤ FRAME_SIZE_MAX) | header | body
//! request header:  api_key u16 | api_version u16 | correlation_id u32 | client_id string
//! response header: correlation_id u32 | error_code u16 | (error_code ≠ 0: message string, no body)
//! ```
//! A request-level error (unknown api or version, malformed body, throttling) is answered with a non-zero
//! `error_code` in the response header; per-partition errors live in the bodies. Requests on a connection are
//! pipelined; responses carry the request's correlation id and may come back in any order.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::limits::FRAME_SIZE_MAX;
use crate::messages::*;
use crate::wire::{DecodeError, Reader, Wire, Writer};

macro_rules! apis {
    ($( $variant:ident = $key:literal, $req:ty, $resp:ty, $min:literal ..= $max:literal; )*) => {
        /// API keys. The numbers are stable on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ApiKey { $( $variant = $key ),* }

        impl ApiKey {
            pub const ALL: &'static [ApiKey] = &[$( ApiKey::$variant ),*];

            pub fn from_u16(k: u16) -> Option<ApiKey> {
                match k { $( $key => Some(ApiKey::$variant), )* _ => None }
            }
            /// Supported versions, inclusive.
            pub fn versions(self) -> (u16, u16) {
                match self { $( ApiKey::$variant => ($min, $max), )* }
            }
        }

        /// A decoded request body.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request { $( $variant($req) ),* }

        /// A decoded response body.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Response { $( $variant($resp) ),* }

        impl Request {
            pub fn api_key(&self) -> ApiKey {
                match self { $( Request::$variant(_) => ApiKey::$variant ),* }
            }
            fn encode_body(&self, w: &mut Writer) {
                match self { $( Request::$variant(m) => m.encode(w) ),* }
            }
            fn decode_body(api: ApiKey, r: &mut Reader) -> Result<Request, DecodeError> {
                Ok(match api { $( ApiKey::$variant => Request::$variant(<$req>::decode(r)?) ),* })
            }
        }

        impl Response {
            pub fn api_key(&self) -> ApiKey {
                match self { $( Response::$variant(_) => ApiKey::$variant ),* }
            }
            fn encode_body(&self, w: &mut Writer) {
                match self { $( Response::$variant(m) => m.encode(w) ),* }
            }
            fn decode_body(api: ApiKey, r: &mut Reader) -> Result<Response, DecodeError> {
                Ok(match api { $( ApiKey::$variant => Response::$variant(<$resp>::decode(r)?) ),* })
            }
        }
    };
}

apis! {
    ApiVersions = 0, ApiVersionsRequest, ApiVersionsResponse, 0..=0;
    Metadata = 1, MetadataRequest, MetadataResponse, 0..=0;
    CreateTopics = 2, CreateTopicsRequest, CreateTopicsResponse, 0..=0;
    DeleteTopics = 3, DeleteTopicsRequest, DeleteTopicsResponse, 0..=0;
    Produce = 4, ProduceRequest, ProduceResponse, 0..=0;
    Fetch = 5, FetchRequest, FetchResponse, 0..=0;
    ListOffsets = 6, ListOffsetsRequest, ListOffsetsResponse, 0..=0;
    CreatePartitions = 7, CreatePartitionsRequest, CreatePartitionsResponse, 0..=0;
    FindCoordinator = 8, FindCoordinatorRequest, FindCoordinatorResponse, 0..=0;
    GroupHeartbeat = 9, GroupHeartbeatRequest, GroupHeartbeatResponse, 0..=0;
    OffsetCommit = 10, OffsetCommitRequest, OffsetCommitResponse, 0..=0;
    OffsetFetch = 11, OffsetFetchRequest, OffsetFetchResponse, 0..=0;
    ListGroups = 12, ListGroupsRequest, ListGroupsResponse, 0..=0;
    DescribeGroup = 13, DescribeGroupRequest, DescribeGroupResponse, 0..=0;
    RaftRpc = 100, RaftRpcRequest, RaftRpcResponse, 0..=0;
    AlterConfigs = 14, AlterConfigsRequest, AlterConfigsResponse, 0..=0;
    InitProducerId = 15, InitProducerIdRequest, InitProducerIdResponse, 0..=0;
}

/// The header of every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
    pub client_id: String,
}

/// A request-level error: the response header's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
}

/// Reads the length prefix at the start of `buf`: `Ok(None)` if fewer than 4 bytes, an error if the frame is
/// larger than [`FRAME_SIZE_MAX`] (the caller closes the connection: framing is lost).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if n > FRAME_SIZE_MAX {
        return Err(DecodeError::TooLarge {
            what: "frame",
            len: n,
            max: FRAME_SIZE_MAX,
        });
    }
    Ok(Some(n))
}

fn with_length_prefix(w: Writer) -> Vec<Bytes> {
    let len = w.len() as u32;
    let mut parts = w.finish();
    parts.insert(0, Bytes::copy_from_slice(&len.to_be_bytes()));
    parts
}

/// Encodes a whole request frame (length prefix included) as chunks for a vectored write.
pub fn encode_request(correlation_id: u32, client_id: &str, req: &Request) -> Vec<Bytes> {
    let api = req.api_key();
    let mut w = Writer::new();
    w.put_u16(api as u16);
    w.put_u16(api.versions().1);
    w.put_u32(correlation_id);
    client_id.to_string().encode(&mut w);
    req.encode_body(&mut w);
    with_length_prefix(w)
}

/// Decodes a request frame (without its length prefix). The outer error means even the header is unreadable
/// (close the connection); the inner one is a bad body, answerable with an error response.
#[allow(clippy::type_complexity)]
pub fn decode_request(
    frame: Bytes,
) -> Result<(RequestHeader, Result<Request, DecodeError>), DecodeError> {
    let mut r = Reader::new(frame);
    let header = RequestHeader {
        api_key: r.get_u16()?,
        api_version: r.get_u16()?,
        correlation_id: r.get_u32()?,
        client_id: String::decode(&mut r)?,
    };
    let body = (|| {
        let api =
            ApiKey::from_u16(header.api_key).ok_or(DecodeError::UnknownApi(header.api_key))?;
        let (min, max) = api.versions();
        if header.api_version < min || header.api_version > max {
            return Err(DecodeError::UnsupportedVersion {
                api: header.api_key,
                version: header.api_version,
            });
        }
        let req = Request::decode_body(api, &mut r)?;
        r.finish()?;
        Ok(req)
    })();
    Ok((header, body))
}

/// Encodes a whole response frame (length prefix included).
pub fn encode_response(correlation_id: u32, resp: Result<&Response, &ErrorResponse>) -> Vec<Bytes> {
    let mut w = Writer::new();
    w.put_u32(correlation_id);
    match resp {
        Ok(body) => {
            w.put_u16(0);
            body.encode_body(&mut w);
        }
        Err(e) => {
            w.put_u16(e.code.as_u16());
            e.message.encode(&mut w);
        }
    }
    with_length_prefix(w)
}

/// The correlation id of a response frame (without its length prefix), to find the request it answers.
pub fn response_correlation_id(frame: &[u8]) -> Result<u32, DecodeError> {
    if frame.len() < 4 {
        return Err(DecodeError::Incomplete);
    }
    Ok(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
}

/// Decodes a response frame (without its length prefix) to a request of kind `api`.
pub fn decode_response(
    api: ApiKey,
    frame: Bytes,
) -> Result<(u32, Result<Response, ErrorResponse>), DecodeError> {
    let mut r = Reader::new(frame);
    let correlation_id = r.get_u32()?;
    let code = r.get_u16()?;
    if code != 0 {
        let message = String::decode(&mut r)?;
        r.finish()?;
        return Ok((
            correlation_id,
            Err(ErrorResponse {
                code: ErrorCode::from_u16(code),
                message,
            }),
        ));
    }
    let body = Response::decode_body(api, &mut r)?;
    r.finish()?;
    Ok((correlation_id, Ok(body)))
}

/// Concatenates frame chunks (tests and small writes).
pub fn concat(parts: &[Bytes]) -> Bytes {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(parts: &[Bytes]) -> Bytes {
        let all = concat(parts);
        let n = frame_len(&all).unwrap().unwrap();
        assert_eq!(n + 4, all.len());
        all.slice(4..)
    }

    proptest! {
        #[test]
        fn produce_frame_round_trips_and_prefixes_are_incomplete(req in any::<ProduceRequest>(), cid in any::<u32>()) {
            let frame = strip(&encode_request(cid, "cli", &Request::Produce(req.clone())));
            let (h, body) = decode_request(frame.clone()).unwrap();
            prop_assert_eq!(h.correlation_id, cid);
            prop_assert_eq!(body.unwrap(), Request::Produce(req));
            let step = (frame.len() / 64).max(1);
            for cut in (0..frame.len()).step_by(step) {
                match decode_request(frame.slice(..cut)) {
                    Err(DecodeError::Incomplete) | Ok((_, Err(DecodeError::Incomplete))) => {}
                    other => prop_assert!(false, "prefix {} decoded as {:?}", cut, other),
                }
            }
        }

        #[test]
        fn fetch_response_frame_round_trips(resp in any::<FetchResponse>(), cid in any::<u32>()) {
            let r = Response::Fetch(resp);
            let frame = strip(&encode_response(cid, Ok(&r)));
            let (c, back) = decode_response(ApiKey::Fetch, frame).unwrap();
            prop_assert_eq!(c, cid);
            prop_assert_eq!(back.unwrap(), r);
        }

        #[test]
        fn garbage_frames_never_panic(v in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(Bytes::from(v.clone()));
            for api in ApiKey::ALL {
                let _ = decode_response(*api, Bytes::from(v.clone()));
            }
        }
    }

    #[test]
    fn unknown_api_and_version_are_body_errors() {
        let mut w = Writer::new();
        w.put_u16(999);
        w.put_u16(0);
        w.put_u32(7);
        "x".to_string().encode(&mut w);
        let (h, body) = decode_request(w.into_bytes()).unwrap();
        assert_eq!(h.correlation_id, 7);
        assert_eq!(body, Err(DecodeError::UnknownApi(999)));

        let mut w = Writer::new();
        w.put_u16(ApiKey::Fetch as u16);
        w.put_u16(42);
        w.put_u32(8);
        "x".to_string().encode(&mut w);
        let (_, body) = decode_request(w.into_bytes()).unwrap();
        assert!(matches!(body, Err(DecodeError::UnsupportedVersion { .. })));
    }

    #[test]
    fn error_response_round_trips() {
        let e = ErrorResponse {
            code: ErrorCode::Throttled,
            message: "slow down".into(),
        };
        let frame = strip(&encode_response(5, Err(&e)));
        assert_eq!(
            decode_response(ApiKey::Produce, frame).unwrap(),
            (5, Err(e))
        );
    }

    #[test]
    fn oversized_prefix_is_rejected_before_allocating() {
        assert!(frame_len(&[0x7f, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(frame_len(&[0, 0, 0]).unwrap(), None);
    }
}
