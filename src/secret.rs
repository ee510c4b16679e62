//! Reading one key of a Secret, the way every part of the operator needs it.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::crd::issue_queue::SecretKeyRef;

/// A Secret's value under a key, and the Secret's resourceVersion (which changes with it).
pub struct SecretValue {
    pub bytes: Vec<u8>,
    pub version: String,
}

/// The value `secret` points at; `None` if the Secret or the key is missing, or the value is
/// empty (an empty webhook secret or token is as good as none).
pub async fn read(
    secrets: &Api<Secret>,
    secret: &SecretKeyRef,
) -> Result<Option<SecretValue>, kube::Error> {
    let Some(found) = secrets.get_opt(&secret.name).await? else {
        return Ok(None);
    };
    let version = found.resource_version().unwrap_or_default();
    Ok(found
        .data
        .and_then(|mut data| data.remove(&secret.key))
        .map(|bytes| bytes.0)
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| SecretValue { bytes, version }))
}
