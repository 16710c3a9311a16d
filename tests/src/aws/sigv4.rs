//! What the lab reads from a SigV4 `Authorization` header: the credential scope.
//!
//! Signatures are never verified (the lab has no secret to check them with, and the agent's
//! credentials are fake). The header must still be there and well formed, because the real
//! endpoints refuse anything else, and its scope
//! (`Credential=AKID/20260101/us-west-2/elasticache/aws4_request`) is how AWS knows which
//! region a request is for: the lab keeps ElastiCache state per region by it.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::ApiError;

/// The parts of a SigV4 credential scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The signing region, e.g. `us-west-2` (`us-east-1` for Route 53).
    pub(crate) region: String,
    /// The signing service, e.g. `elasticache` or `route53`.
    pub(crate) service: String,
}

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The credential scope of a request, or the error AWS answers without one.
pub(crate) fn credential_scope(headers: &HeaderMap) -> Result<Scope, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::forbidden(
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let incomplete = |detail: &str| {
        ApiError::forbidden(
            "IncompleteSignature",
            format!("Authorization header is not a valid SigV4 header: {detail}"),
        )
    };
    let text = value.to_str().map_err(|_| incomplete("it is not ASCII"))?;
    let Some(rest) = text.strip_prefix(ALGORITHM) else {
        return Err(incomplete("only AWS4-HMAC-SHA256 is accepted"));
    };
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))
        .ok_or_else(|| incomplete("it has no Credential= parameter"))?;
    // AKID/date/region/service/aws4_request
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty() && !date.is_empty() && !region.is_empty() && !service.is_empty() =>
        {
            Ok(Scope {
                region: (*region).to_string(),
                service: (*service).to_string(),
            })
        }
        _ => Err(incomplete(
            "Credential= must be AKID/YYYYMMDD/region/service/aws4_request",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn reads_the_region_from_the_scope() {
        let scope = credential_scope(&headers(
            "AWS4-HMAC-SHA256 Credential=AKIDLAB/20260101/us-west-2/elasticache/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=abc123",
        ))
        .unwrap();
        assert_eq!(scope.region, "us-west-2");
        assert_eq!(scope.service, "elasticache");
    }

    #[test]
    fn missing_or_malformed_headers_are_refused_as_aws_does() {
        let missing = credential_scope(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.code, "MissingAuthenticationToken");
        assert_eq!(missing.status.as_u16(), 403);
        for bad in [
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/elasticache",
            "AWS4-HMAC-SHA256 Credential=AKID/20260101//elasticache/aws4_request",
        ] {
            let err = credential_scope(&headers(bad)).unwrap_err();
            assert_eq!(err.code, "IncompleteSignature", "{bad}");
        }
    }
}
