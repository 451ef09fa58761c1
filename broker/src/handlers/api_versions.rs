//! ApiVersions: every API this broker speaks with its version range, and the broker's version.

use runnel_protocol::messages::{ApiVersionRange, ApiVersionsRequest, ApiVersionsResponse};
use runnel_protocol::ApiKey;

pub fn handle(_req: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse {
        apis: ApiKey::ALL
            .iter()
            .map(|k| {
                let (min, max) = k.versions();
                ApiVersionRange {
                    api_key: *k as u16,
                    min_version: min,
                    max_version: max,
                }
            })
            .collect(),
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_api() {
        let r = handle(ApiVersionsRequest {});
        assert_eq!(r.apis.len(), ApiKey::ALL.len());
        assert!(r
            .apis
            .iter()
            .any(|a| a.api_key == ApiKey::Fetch as u16 && a.min_version <= a.max_version));
        assert!(!r.broker_version.is_empty());
    }
}
