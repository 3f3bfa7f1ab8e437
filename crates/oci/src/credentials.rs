//! Registry credentials from a pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and the older
//! `kubernetes.io/dockercfg`), matched to the registry of the image being pulled.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::pull::RegistryAuth;

/// Why a pull secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The secret's data is not a docker config JSON.
    #[error("malformed docker config in pull secret: {0}")]
    Json(#[from] serde_json::Error),
    /// The `auth` field is not base64 of `user:password`.
    #[error("malformed auth field for registry {0}")]
    Auth(String),
}

#[derive(Deserialize)]
struct Entry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// The docker config's key for a registry, reduced to a host[:port] ("https://index.docker.io/v1/" → "docker.io").
fn registry_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    }
}

/// Credentials for `registry` (as in an image reference, e.g. `docker.io`, `127.0.0.1:5000`) from the data of
/// one pull secret: `.dockerconfigjson` (`{"auths": {...}}`) or `.dockercfg` (the map itself).
/// `Ok(None)` when the secret has nothing for that registry.
pub fn from_docker_config(data: &[u8], registry: &str) -> Result<Option<RegistryAuth>, CredentialsError> {
    let mut value: serde_json::Value = serde_json::from_slice(data)?;
    if let Some(auths) = value.get_mut("auths") {
        value = auths.take();
    }
    let entries: BTreeMap<String, Entry> = serde_json::from_value(value)?;
    let wanted = registry_host(registry);
    let Some((key, entry)) = entries.into_iter().find(|(k, _)| registry_host(k) == wanted) else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(RegistryAuth::Basic(u.clone(), p.clone())));
    }
    let Some(auth) = entry.auth else { return Ok(None) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| CredentialsError::Auth(key.clone()))?;
    let (u, p) = decoded.split_once(':').ok_or(CredentialsError::Auth(key))?;
    Ok(Some(RegistryAuth::Basic(u.to_owned(), p.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(a: Option<RegistryAuth>) -> Option<(String, String)> {
        match a {
            Some(RegistryAuth::Basic(u, p)) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn dockerconfigjson_matches_registry_and_decodes_auth() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let json = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": auth},
            "127.0.0.1:5000": {"username": "bob", "password": "pw"}
        }});
        let data = json.to_string();
        let cred = |r| basic(from_docker_config(data.as_bytes(), r).unwrap());
        assert_eq!(cred("docker.io"), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(cred("127.0.0.1:5000"), Some(("bob".into(), "pw".into())));
        assert_eq!(cred("quay.io"), None);
    }

    #[test]
    fn legacy_dockercfg_and_bad_auth() {
        let data = serde_json::json!({"quay.io": {"auth": "not base64!"}}).to_string();
        assert!(matches!(
            from_docker_config(data.as_bytes(), "quay.io"),
            Err(CredentialsError::Auth(_))
        ));
        assert!(from_docker_config(b"[]", "quay.io").is_err());
    }
}
