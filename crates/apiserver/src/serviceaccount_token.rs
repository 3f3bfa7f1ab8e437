//! Service-account tokens, as kube-apiserver issues and checks them: the TokenRequest API
//! (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`, what `kubectl create token` and the kubelet's
//! projected volumes call), the bearer-token authenticator for the JWTs it returns, and the OIDC discovery
//! documents (`/.well-known/openid-configuration`, `/openid/v1/jwks`) other parties verify them with.
//!
//! Tokens are ES256 JWTs signed with a P-256 key kept in the server's TLS dir (`service-account.key`,
//! created on first start, so tokens survive restarts). A token is accepted while its signature, issuer,
//! audience and lifetime check out *and* the objects it names still exist with the uids it recorded: the
//! service account and, for bound tokens, the pod or secret. Deleting either revokes the token at once.
//! Start at [`TokenIssuer`] and [`token_request`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use crate::ApiState;
use crate::auth::{TokenAuthenticator, UserInfo};
use crate::cache::Caches;
use crate::output::json_response;
use crate::registry::Kind;
use crate::rest::{ApiRequest, not_found, object_key, read};
use crate::status::ApiError;

/// kube-apiserver's default `--service-account-issuer`; also the API server's own audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The signing key's file name in the TLS dir.
pub const KEY_FILE: &str = "service-account.key";
/// `spec.expirationSeconds` when the request leaves it out.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (kube-apiserver's `MinTokenAgeSec`).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The lifetime the kubelet asks for projected tokens; such tokens are extended (see [`token_request`]).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// What an extended token really lasts: a year.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;
/// The longest (kube-apiserver's `MaxTokenAgeSec`, 2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// How long after an object's deletion time tokens naming it stay valid (kube-apiserver's 60 s).
const DELETION_GRACE_SECONDS: i64 = 60;

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The key file is not a PKCS#8 P-256 private key, or a new key could not be generated.
    #[error("service account signing key {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The name and uid of an object a token names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// For extended kubelet tokens: when the kubelet should have replaced the token (a Unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A service-account token's claims, with kube-apiserver's names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// Signs and verifies service-account tokens with one ES256 key.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public key as a JWK (`/openid/v1/jwks`).
    jwk: Value,
    /// What tokens for the API server itself carry in `aud`, and what the authenticator accepts.
    api_audiences: Vec<String>,
}

impl TokenIssuer {
    /// The key in `tls_dir/service-account.key`, created (mode 0600) when missing.
    pub fn load_or_create(tls_dir: &Path) -> Result<TokenIssuer, KeyError> {
        let path = tls_dir.join(KEY_FILE);
        let invalid = |message: String| KeyError::Invalid {
            path: path.clone(),
            message,
        };
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| invalid(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| invalid(e.to_string()))?;
                crate::tls::write_private(&path, key.serialize_pem().as_bytes()).map_err(|e| {
                    KeyError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                key
            }
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        TokenIssuer::from_key(&key).map_err(invalid)
    }

    /// An issuer for a P-256 key pair.
    pub fn from_key(key: &rcgen::KeyPair) -> Result<TokenIssuer, String> {
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err("not an ECDSA P-256 key".to_string());
        }
        // The uncompressed point: 0x04 || x || y, 32 bytes each.
        let point = key.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            return Err("unexpected public key encoding".to_string());
        }
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..]),
        );
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        // As kube-apiserver: the key id is the SHA-256 of the public key's SubjectPublicKeyInfo.
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.subject_public_key_info()));
        Ok(TokenIssuer {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding,
            jwk: json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "x": x, "y": y}),
            kid,
            api_audiences: vec![ISSUER.to_string()],
        })
    }

    /// The audiences a token for the API server carries (a TokenRequest without `audiences` gets these).
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// The claims of a token this issuer signed that is valid now and meant for one of `audiences`;
    /// `None` for anything else (foreign, tampered, expired, not yet valid, other audience).
    pub fn verify(&self, token: &str, audiences: &[String]) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        // One server signs and checks: no clock skew to allow for, so an expired token is expired.
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|t| t.claims)
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }
}

/// `/.well-known/openid-configuration`, as kube-apiserver serves it.
fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

/// The OIDC discovery routes; answer 404 until the server has a signing key.
pub fn routes() -> axum::Router<Arc<ApiState>> {
    use axum::extract::State;
    use axum::routing::get;
    let doc = |v: Value| json_response(StatusCode::OK, crate::output::value_bytes(&v), &[]);
    axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move |State(s): State<Arc<ApiState>>| async move {
                match s.token_issuer() {
                    Some(_) => doc(openid_configuration()),
                    None => axum::response::IntoResponse::into_response(ApiError::NoRoute),
                }
            }),
        )
        .route(
            "/openid/v1/jwks",
            get(move |State(s): State<Arc<ApiState>>| async move {
                match s.token_issuer() {
                    Some(issuer) => doc(issuer.jwks()),
                    None => axum::response::IntoResponse::into_response(ApiError::NoRoute),
                }
            }),
        )
}

/// 422 for a TokenRequest field, worded as kube-apiserver's validation.
fn invalid(name: &str, field: &str, value: &Value, msg: &str) -> ApiError {
    ApiError::invalid_field(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        "FieldValueInvalid",
        field,
        &format!("Invalid value: {value}: {msg}"),
    )
}

fn uid_of(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

/// `POST …/serviceaccounts/NAME/token`: a signed token for the service account, bound to a pod or secret
/// when the request says so. Answers the TokenRequest with `status.token` and `status.expirationTimestamp`.
pub(crate) async fn token_request(
    state: &Arc<ApiState>,
    kind: &Kind,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let name = req.info.name.as_deref().unwrap_or_default().to_string();
    let namespace = req.info.namespace.clone().unwrap_or_default();
    let issuer = state
        .token_issuer()
        .ok_or_else(|| ApiError::Internal("the server has no service account signing key".into()))?;
    let mut request = req.decode_body()?;
    if !request.is_object() {
        return Err(ApiError::BadRequest(
            "the request body is not a TokenRequest".into(),
        ));
    }
    let spec = &mut request["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    // Validation first, as kube-apiserver: a bad request is 422 whether or not the account exists.
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v.as_i64().unwrap_or(0),
    };
    spec["expirationSeconds"] = json!(expiration);
    let field = "spec.expirationSeconds";
    if expiration < MIN_EXPIRATION_SECONDS {
        let msg = "may not specify a duration less than 10 minutes";
        return Err(invalid(&name, field, &json!(expiration), msg));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        let msg = "may not specify a duration larger than 2^32 seconds";
        return Err(invalid(&name, field, &json!(expiration), msg));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let audiences = if audiences.is_empty() {
        issuer.api_audiences().to_vec()
    } else {
        audiences
    };
    spec["audiences"] = json!(audiences);

    let account = read(state, kind, &object_key(Some(&namespace), &name))
        .await?
        .ok_or_else(|| not_found(kind, &name))?;
    let mut claims = KubernetesClaims {
        namespace: namespace.clone(),
        serviceaccount: ObjectRef {
            name: name.clone(),
            uid: uid_of(&account.value),
        },
        pod: None,
        secret: None,
        node: None,
        warnafter: None,
    };
    let bound = spec["boundObjectRef"].clone();
    if bound.is_object() {
        bind(state, &name, &namespace, &bound, &mut claims).await?;
    }

    let now = chrono::Utc::now();
    let iat = now.timestamp();
    let expires = chrono::DateTime::from_timestamp(iat + expiration, 0).unwrap_or(now);
    // kube-apiserver's `--service-account-extend-token-expiration` (on by default): the kubelet's projected
    // volumes ask for 3607 s; such a token for the API server really lasts a year, with `warnafter` set to
    // when it should have been refreshed, so clients that never re-read the file keep working. The reply
    // still says 3607 s, so the kubelet refreshes on time.
    let extended = claims.pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION_SECONDS
        && audiences.iter().all(|a| issuer.api_audiences().contains(a));
    let exp = if extended {
        claims.warnafter = Some(iat + expiration);
        iat + EXTENDED_EXPIRATION_SECONDS
    } else {
        iat + expiration
    };
    let token = issuer
        .sign(&Claims {
            iss: ISSUER.to_string(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            aud: audiences,
            exp,
            iat,
            nbf: iat,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: claims,
        })
        .map_err(|e| ApiError::Internal(format!("signing the token: {e}")))?;
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({
        "name": name,
        "namespace": namespace,
        "creationTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    Ok(json_response(
        StatusCode::CREATED,
        crate::output::value_bytes(&request),
        &[],
    ))
}

/// Fills the claims of a token bound to `bound` (a Pod or Secret in the account's namespace), with
/// kube-apiserver's errors for other kinds, a pod of another account, or a stale uid.
async fn bind(
    state: &Arc<ApiState>,
    account: &str,
    namespace: &str,
    bound: &Value,
    claims: &mut KubernetesClaims,
) -> Result<(), ApiError> {
    let kind_name = bound["kind"].as_str().unwrap_or_default();
    let api_version = bound["apiVersion"].as_str().unwrap_or("v1");
    let object_name = bound["name"].as_str().unwrap_or_default();
    let resource = match (api_version, kind_name) {
        ("v1", "Pod") => "pods",
        ("v1", "Secret") => "secrets",
        _ => {
            let gvk = if api_version.contains('/') {
                let (g, v) = api_version.split_once('/').unwrap_or_default();
                format!("{g}/{v}, Kind={kind_name}")
            } else {
                format!("/{api_version}, Kind={kind_name}")
            };
            return Err(ApiError::BadRequest(format!(
                "cannot bind token for serviceaccount {account:?} to object of type {gvk}"
            )));
        }
    };
    let kind = state
        .registry
        .get("", "v1", resource)
        .ok_or_else(|| ApiError::Internal(format!("no {resource} resource")))?;
    let object = read(state, kind, &object_key(Some(namespace), object_name))
        .await?
        .ok_or_else(|| not_found(kind, object_name))?;
    let uid = uid_of(&object.value);
    if resource == "pods" {
        let pod_account = object.value["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        if pod_account != account {
            return Err(ApiError::BadRequest(format!(
                "cannot bind token for serviceaccount {account:?} to pod running with different \
                 serviceaccount name."
            )));
        }
    }
    if let Some(wanted) = bound["uid"].as_str().filter(|u| !u.is_empty())
        && wanted != uid
    {
        return Err(ApiError::Conflict {
            resource: crate::status::GroupResource::new("", kind_name),
            name: object_name.to_string(),
            message: format!(
                "the UID in the bound object reference ({wanted}) does not match the UID in record. The \
                 object might have been deleted and then recreated"
            ),
        });
    }
    let reference = Some(ObjectRef {
        name: object_name.to_string(),
        uid,
    });
    if resource == "pods" {
        claims.pod = reference;
        // Like kube-apiserver, a pod-bound token also names the pod's node (when it is scheduled).
        if let Some(node) = object.value["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            let uid = state
                .caches
                .resource("nodes")
                .and_then(|c| c.get(node))
                .map(|n| uid_of(&n.value))
                .unwrap_or_default();
            claims.node = Some(ObjectRef {
                name: node.to_string(),
                uid,
            });
        }
    } else {
        claims.secret = reference;
    }
    Ok(())
}

/// Authenticates bearer tokens from [`token_request`]: valid signature, lifetime and audience, and the
/// objects named still there with the same uids (read from the watch cache, so no store round trip).
pub struct ServiceAccountTokens {
    issuer: Arc<TokenIssuer>,
    caches: Arc<Caches>,
}

impl ServiceAccountTokens {
    pub fn new(state: &ApiState) -> Option<ServiceAccountTokens> {
        Some(ServiceAccountTokens {
            issuer: state.token_issuer()?.clone(),
            caches: state.caches.clone(),
        })
    }

    /// Whether `namespace/reference.name` of `resource` exists with the uid and is not long gone: as
    /// kube-apiserver, an object being deleted keeps its tokens valid until a minute after its deletion
    /// time, so a terminating pod can still talk to the API during its grace period.
    fn still_there(&self, resource: &str, namespace: &str, reference: &ObjectRef) -> bool {
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(DELETION_GRACE_SECONDS);
        self.caches
            .resource(resource)
            .and_then(|c| c.get(&object_key(Some(namespace), &reference.name)))
            .is_some_and(|o| {
                let deleted_at = o.value["metadata"]["deletionTimestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                uid_of(&o.value) == reference.uid && deleted_at.is_none_or(|t| t > cutoff)
            })
    }
}

impl TokenAuthenticator for ServiceAccountTokens {
    fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        let claims = self.issuer.verify(token, self.issuer.api_audiences())?;
        let k = &claims.kubernetes;
        let ns = &k.namespace;
        let alive = self.still_there("serviceaccounts", ns, &k.serviceaccount)
            && k.pod.as_ref().is_none_or(|p| self.still_there("pods", ns, p))
            && k.secret
                .as_ref()
                .is_none_or(|s| self.still_there("secrets", ns, s));
        if !alive || claims.sub != format!("system:serviceaccount:{ns}:{}", k.serviceaccount.name) {
            return None;
        }
        Some(UserInfo {
            name: claims.sub,
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_string(),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(issuer: &TokenIssuer, exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:default:default".into(),
            aud: issuer.api_audiences().to_vec(),
            exp: now + exp_in,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "u".into(),
                },
                pod: None,
                secret: None,
                node: None,
                warnafter: None,
            },
        }
    }

    #[test]
    fn key_persists_and_tokens_verify_only_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = TokenIssuer::load_or_create(dir.path()).unwrap();
        let again = TokenIssuer::load_or_create(dir.path()).unwrap();
        let token = first.sign(&claims(&first, 600)).unwrap();
        let got = again
            .verify(&token, again.api_audiences())
            .expect("same key after restart");
        assert_eq!(got.sub, "system:serviceaccount:default:default");
        assert_eq!(first.jwks(), again.jwks());

        let other_dir = tempfile::tempdir().unwrap();
        let other = TokenIssuer::load_or_create(other_dir.path()).unwrap();
        assert!(
            other.verify(&token, other.api_audiences()).is_none(),
            "foreign key"
        );
        assert!(
            first.verify(&token, &["vault".to_string()]).is_none(),
            "other audience"
        );
        let expired = first.sign(&claims(&first, -1)).unwrap();
        assert!(first.verify(&expired, first.api_audiences()).is_none(), "expired");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), first.jwks()["keys"][0]["kid"].as_str());
    }
}
