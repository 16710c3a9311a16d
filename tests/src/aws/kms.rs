//! KMS's JSON 1.1 API: `DescribeKey` (`X-Amz-Target: TrentService.DescribeKey`), over one
//! customer managed key per region, [`LAB_KMS_KEY_ID`] with the alias [`LAB_KMS_ALIAS`].
//!
//! As AWS does (tests/FIDELITY.md): `KeyId` may be the key id, the key ARN, the alias name
//! or the alias ARN, each of the region the request is signed for; anything else is
//! `NotFoundException` (HTTP 400, in JSON's `{"__type", "message"}` form). `kms-disable`
//! makes the key `Disabled` (`Enabled` false) in every region; `DescribeKey` still answers,
//! as it does on AWS for a disabled key.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use hyper::body::Bytes;
use serde_json::json;

use super::calls::HttpRequest;
use super::{ACCOUNT_ID, ApiError, AwsService, sigv4};
use crate::Shared;
use crate::config::{LAB_KMS_ALIAS, LAB_KMS_KEY_ID, lab_kms_alias_arn, lab_kms_key_arn};

/// The JSON protocol's target prefix for KMS.
const TARGET_PREFIX: &str = "TrentService.";
/// When the lab key was created, in epoch seconds (2026-01-01T00:00:00Z): fixed, so answers
/// are the same in every run.
const KEY_CREATION_DATE: f64 = 1_767_225_600.0;

/// `POST /` signed for `kms`.
pub(crate) fn handle(lab: Arc<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut call = lab.aws.exchange(AwsService::Kms);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    call.http = HttpRequest {
        method: "POST".to_string(),
        path: "/".to_string(),
        query: String::new(),
        body: String::from_utf8_lossy(&body).into_owned(),
        target: target.clone(),
    };
    call.action = target
        .as_deref()
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or_default()
        .to_string();
    let input: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    let key_id = input
        .as_ref()
        .ok()
        .and_then(|v| v.get("KeyId"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    call.request = json!({ "key_id": key_id });
    let outcome = (|| -> Result<String, ApiError> {
        let scope = sigv4::credential_scope(&headers)?;
        call.region = Some(scope.region.clone());
        if call.action != "DescribeKey" {
            return Err(ApiError::sender(
                "UnknownOperationException",
                format!(
                    "Unknown operation {:?}: valkey-dr-lab implements TrentService.DescribeKey.",
                    target.as_deref().unwrap_or_default()
                ),
            ));
        }
        if input.is_err() {
            return Err(ApiError::sender(
                "SerializationException",
                "The request body is not a JSON object.",
            ));
        }
        let key_id = key_id.as_deref().filter(|k| !k.is_empty()).ok_or_else(|| {
            ApiError::sender(
                "ValidationException",
                "1 validation error detected: Value null at 'keyId' failed to satisfy \
                 constraint: Member must not be null",
            )
        })?;
        let region = scope.region.as_str();
        let found = resolve(region, key_id);
        call.resource = Some(match &found {
            Ok(()) => lab_kms_key_arn(region),
            Err(_) => key_id.to_string(),
        });
        call.gate()?;
        found?;
        Ok(describe(region, lab.aws.kms_disabled()))
    })();
    call.finish(outcome)
}

/// Whether `key_id` names the region's lab key, else the error KMS gives.
fn resolve(region: &str, key_id: &str) -> Result<(), ApiError> {
    if [
        LAB_KMS_KEY_ID.to_string(),
        lab_kms_key_arn(region),
        LAB_KMS_ALIAS.to_string(),
        lab_kms_alias_arn(region),
    ]
    .iter()
    .any(|known| known == key_id)
    {
        return Ok(());
    }
    let message = if key_id.starts_with("alias/") {
        format!("Alias arn:aws:kms:{region}:{ACCOUNT_ID}:{key_id} is not found.")
    } else if key_id.starts_with("arn:") && key_id.contains(":alias/") {
        format!("Alias {key_id} is not found.")
    } else if key_id.starts_with("arn:") {
        format!("Key '{key_id}' does not exist")
    } else {
        format!("Key 'arn:aws:kms:{region}:{ACCOUNT_ID}:key/{key_id}' does not exist")
    };
    Err(ApiError::sender("NotFoundException", message))
}

/// The `DescribeKey` answer for the region's key.
fn describe(region: &str, disabled: bool) -> String {
    json!({
        "KeyMetadata": {
            "AWSAccountId": ACCOUNT_ID,
            "KeyId": LAB_KMS_KEY_ID,
            "Arn": lab_kms_key_arn(region),
            "CreationDate": KEY_CREATION_DATE,
            "Enabled": !disabled,
            "Description": "valkey-dr lab key for serverless cache encryption",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": if disabled { "Disabled" } else { "Enabled" },
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": false,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_the_key_resolves_in_its_region_only() {
        let region = "us-west-2";
        for name in [
            LAB_KMS_KEY_ID.to_string(),
            lab_kms_key_arn(region),
            LAB_KMS_ALIAS.to_string(),
            lab_kms_alias_arn(region),
        ] {
            assert!(resolve(region, &name).is_ok(), "{name}");
        }
        let e = resolve(region, &lab_kms_key_arn("us-east-1")).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "NotFoundException")
        );
        assert_eq!(
            resolve(region, "alias/other").unwrap_err().message,
            "Alias arn:aws:kms:us-west-2:123456789012:alias/other is not found."
        );
        assert!(
            resolve(region, "1234")
                .unwrap_err()
                .message
                .contains("key/1234' does not exist")
        );
        let doc: serde_json::Value = serde_json::from_str(&describe(region, true)).unwrap();
        assert_eq!(doc["KeyMetadata"]["KeyState"], "Disabled");
        assert_eq!(doc["KeyMetadata"]["Enabled"], false);
    }
}
