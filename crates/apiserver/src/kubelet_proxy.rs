//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` proxied to the kubelet of the pod's node, as kube-apiserver
//! does, plus `GET /cacerts` (the cluster CA, unauthenticated, as k3s serves it) for agents to pin.
//!
//! The node is reached at its InternalIP (else ExternalIP, else Hostname) and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, over HTTPS with the client certificate
//! `kube-apiserver-kubelet-client` (O `system:masters`) the server issues from its CA at start. Kubelet
//! serving certificates are not verified (kube-apiserver's default). Logs are streamed through; exec and
//! attach (and port-forward) are WebSocket upgrades answered by the kubelet and then spliced byte for byte.
//!
//! Start at [`routes`] (exec/attach/portforward and `/cacerts`) and [`logs`] (called by
//! [`crate::subresources`]). Option and container checks are pure functions ([`validate_log_options`],
//! [`pick_container`]) with kube-apiserver's messages.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use crate::ApiState;
use crate::rest::{ApiRequest, not_found, object_key, read};
use crate::status::ApiError;
use crate::tls::{Pki, TlsError};

/// How long connecting to a kubelet (TCP + TLS + the response head) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The kubelet port when a Node does not report one.
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How much of a kubelet's error body is kept for the `Status` message.
const MAX_ERROR_BODY: usize = 4096;
/// The annotation naming the container `kubectl logs/exec` default to.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// How the API server talks to kubelets, and the CA it serves at `/cacerts`.
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
    ca_pem: Bytes,
}

impl KubeletClient {
    /// A client presenting the PKI's kubelet client certificate and accepting any kubelet serving
    /// certificate.
    pub fn new(pki: &Pki) -> Result<KubeletClient, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut pki.kubelet_client_cert_pem.as_bytes())
                .filter_map(Result::ok)
                .collect();
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut pki.kubelet_client_key_pem.as_bytes())
                .ok()
                .flatten()
                .ok_or_else(|| TlsError::Pem {
                    path: "kubelet client key".into(),
                    what: "private key",
                })?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCert::new(provider)))
            .with_client_auth_cert(certs, key)?;
        // Upgrades (exec, attach) need HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: Arc::new(config),
            ca_pem: Bytes::from(pki.ca_cert_pem.clone()),
        })
    }

    /// Opens an HTTP/1.1 connection to the kubelet at `addr` and sends `req`; the connection lives as
    /// long as the response body (or the upgraded stream).
    async fn send(
        &self,
        addr: SocketAddr,
        req: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("dial tcp {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls with {addr}: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "kubelet connection ended with an error");
                }
            });
            sender.send_request(req).await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
    }
}

/// `/cacerts` and the upgrade subresources, which need the raw request (its upgrade handle), so they
/// are routed here rather than through [`crate::rest`].
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/cacerts", get(cacerts))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(exec))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", any(attach))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            any(portforward),
        )
}

type PodPath = Path<(String, String)>;

async fn exec(state: State<Arc<ApiState>>, path: PodPath, req: Request) -> Response {
    stream(state, path, req, "exec").await
}

async fn attach(state: State<Arc<ApiState>>, path: PodPath, req: Request) -> Response {
    stream(state, path, req, "attach").await
}

async fn portforward(state: State<Arc<ApiState>>, path: PodPath, req: Request) -> Response {
    stream(state, path, req, "portforward").await
}

async fn cacerts(State(state): State<Arc<ApiState>>) -> Response {
    match state.kubelet.get() {
        Some(k) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            k.ca_pem.clone(),
        )
            .into_response(),
        None => ApiError::NoRoute.into_response(),
    }
}

/// The PodLogOptions a `pods/log` request carries, checked as kube-apiserver checks them: unparseable
/// values are 400, out-of-range ones 422 (`PodLogOptions "NAME" is invalid`). Returns the kubelet query.
pub fn validate_log_options(pod: &str, params: &[(String, String)]) -> Result<String, ApiError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let int = |k: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("strconv.ParseInt: parsing {v:?}: invalid syntax")))
            .map(|n| (k.to_string(), n))
    };
    let invalid = |field: &str, msg: String| {
        ApiError::invalid_field("", "PodLogOptions", pod, "FieldValueInvalid", field, &msg)
    };
    let (mut since_seconds, mut since_time) = (false, false);
    for (k, v) in params {
        match k.as_str() {
            // Go's query decoding: "0", "f", "false" (any case) are false, anything else true.
            "follow" | "previous" | "timestamps" | "insecureSkipTLSVerifyBackend" => {
                let on = !(v == "0" || v.eq_ignore_ascii_case("f") || v.eq_ignore_ascii_case("false"));
                if on && k != "insecureSkipTLSVerifyBackend" {
                    query.append_pair(k, "true");
                }
            }
            "tailLines" => {
                let (_, n) = int(k, v)?;
                if n < 0 {
                    return Err(invalid(
                        "tailLines",
                        format!("Invalid value: {n}: must be greater than or equal to 0"),
                    ));
                }
                query.append_pair(k, &n.to_string());
            }
            "limitBytes" => {
                let (_, n) = int(k, v)?;
                if n < 1 {
                    return Err(invalid(
                        "limitBytes",
                        format!("Invalid value: {n}: must be greater than 0"),
                    ));
                }
                query.append_pair(k, &n.to_string());
            }
            "sinceSeconds" => {
                let (_, n) = int(k, v)?;
                if n < 1 {
                    return Err(invalid(
                        "sinceSeconds",
                        format!("Invalid value: {n}: must be greater than 0"),
                    ));
                }
                since_seconds = true;
                query.append_pair(k, &n.to_string());
            }
            "sinceTime" => {
                let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|_| {
                    ApiError::BadRequest(format!(
                        "parsing time {v:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {v:?} as \"2006\""
                    ))
                })?;
                since_time = true;
                query.append_pair(
                    k,
                    &t.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
            _ => {}
        }
    }
    if since_seconds && since_time {
        return Err(ApiError::invalid_field(
            "",
            "PodLogOptions",
            pod,
            "FieldValueForbidden",
            "",
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    Ok(query.finish())
}

/// The container a request means: the one named, else the annotation's default, else the only one —
/// with kube-apiserver's errors.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names_of = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let containers = names_of("containers");
    let all: Vec<String> = names_of("initContainers")
        .into_iter()
        .chain(containers.iter().cloned())
        .chain(names_of("ephemeralContainers"))
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            if let Some(default) = pod["metadata"]["annotations"][DEFAULT_CONTAINER_ANNOTATION]
                .as_str()
                .filter(|d| containers.iter().any(|n| n == d))
            {
                return Ok(default.to_string());
            }
            match containers.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(ApiError::BadRequest(format!(
                    "pod {name} does not have a container"
                ))),
                _ => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// Where the kubelet of `node` listens: its preferred address and reported port.
pub fn kubelet_address(node: &Value) -> Result<SocketAddr, ApiError> {
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|ty| {
            addresses
                .iter()
                .filter(|a| a["type"] == *ty)
                .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
        })
        .ok_or_else(|| {
            let known: Vec<String> = addresses
                .iter()
                .map(|a| {
                    format!(
                        "{{{} {}}}",
                        a["type"].as_str().unwrap_or_default(),
                        a["address"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            ApiError::Internal(format!(
                "no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            ))
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(SocketAddr::new(ip, port))
}

/// The pod (from the store) and, when it is bound, its kubelet's address.
async fn locate(
    state: &Arc<ApiState>,
    namespace: &str,
    name: &str,
) -> Result<(Value, Option<SocketAddr>), ApiError> {
    let pods = state.registry.get("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let pod = read(state, pods, &object_key(Some(namespace), name))
        .await?
        .ok_or_else(|| not_found(pods, name))?
        .value
        .clone();
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
    if node_name.is_empty() {
        return Ok((pod, None));
    }
    let nodes = state.registry.get("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let node = read(state, nodes, &node_name)
        .await?
        .ok_or_else(|| not_found(nodes, &node_name))?;
    Ok((pod, Some(kubelet_address(&node.value)?)))
}

fn kubelet(state: &ApiState) -> Result<&KubeletClient, ApiError> {
    state
        .kubelet
        .get()
        .ok_or_else(|| ApiError::Internal("no kubelet client is configured on this server".into()))
}

/// A kubelet's error reply as kube-apiserver reports it: 400 → BadRequest with the kubelet's text, 404 →
/// NotFound, 401/403 as such, anything else an internal error.
async fn kubelet_error(resp: hyper::Response<hyper::body::Incoming>) -> Response {
    let code = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    // Our kubelet answers some errors (401) as a Status already.
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    let (code, reason, message) = match code {
        StatusCode::BAD_REQUEST => (code, "BadRequest", message),
        StatusCode::NOT_FOUND => (code, "NotFound", message),
        StatusCode::UNAUTHORIZED => (code, "Unauthorized", message),
        StatusCode::FORBIDDEN => (code, "Forbidden", message),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        ),
    };
    status_response(code, reason, &message)
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

/// `GET pods/NAME/log`: validated here, streamed from the kubelet. A pod not yet on a node has no log
/// (an empty 200, as kube-apiserver answers).
pub async fn logs(state: &Arc<ApiState>, req: &ApiRequest) -> Result<Response, ApiError> {
    let namespace = req.info.namespace.as_deref().unwrap_or_default();
    let name = req.info.name.as_deref().unwrap_or_default();
    let query = validate_log_options(name, &req.params.raw)?;
    let (pod, addr) = locate(state, namespace, name).await?;
    let requested = req
        .params
        .raw
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    let container = pick_container(&pod, requested)?;
    let Some(addr) = addr else {
        return Ok(([(header::CONTENT_TYPE, "text/plain")], "").into_response());
    };
    let path = format!(
        "/containerLogs/{}/{}/{}?{query}",
        escape(namespace),
        escape(name),
        escape(&container)
    );
    let request = hyper::Request::get(&path)
        .header(header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = kubelet(state)?
        .send(addr, request)
        .await
        .map_err(|e| ApiError::Internal(format!("Get \"https://{addr}{path}\": {e}")))?;
    if !resp.status().is_success() {
        return Ok(kubelet_error(resp).await);
    }
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        Body::new(resp.into_body()),
    )
        .into_response())
}

fn escape(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Headers that describe the hop to us, not the request the kubelet should see.
fn forwarded(name: &header::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "authorization" | "content-length" | "transfer-encoding" | "keep-alive" | "proxy-connection"
    ) && !name.as_str().starts_with("impersonate-")
}

/// `pods/exec`, `pods/attach`, `pods/portforward`: checked here, then the request (a WebSocket upgrade)
/// goes to the kubelet; its 101 is passed back and the two upgraded connections are spliced.
async fn stream(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut req: Request,
    sub: &'static str,
) -> Response {
    match stream_inner(&state, &namespace, &name, &mut req, sub).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn stream_inner(
    state: &Arc<ApiState>,
    namespace: &str,
    name: &str,
    req: &mut Request,
    sub: &'static str,
) -> Result<Response, ApiError> {
    if !matches!(*req.method(), hyper::Method::GET | hyper::Method::POST) {
        return Err(ApiError::MethodNotAllowed);
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (pod, addr) = locate(state, namespace, name).await?;
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(k, _)| k != "container"))
        .finish();
    let path = if sub == "portforward" {
        format!("/portForward/{}/{}?{query}", escape(namespace), escape(name))
    } else {
        let requested = params
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.as_str());
        let container = pick_container(&pod, requested)?;
        format!(
            "/{sub}/{}/{}/{}?{query}",
            escape(namespace),
            escape(name),
            escape(&container),
        )
    };
    let addr =
        addr.ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let mut forward = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(&path)
        .header(header::HOST, addr.to_string());
    for (k, v) in req.headers().iter().filter(|(k, _)| forwarded(k)) {
        forward = forward.header(k, v);
    }
    let forward = forward
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let client_upgrade = hyper::upgrade::on(&mut *req);
    let mut resp = kubelet(state)?
        .send(addr, forward)
        .await
        .map_err(|e| ApiError::Internal(format!("error dialing backend: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(kubelet_error(resp).await);
    }
    let mut reply = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        reply = reply.header(k, v);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client_upgrade, kubelet_upgrade) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "stream upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut kubelet = TokioIo::new(kubelet);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
            tracing::debug!(error = %e, "stream ended with an error");
        }
    });
    reply
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn log_options_pass_through_and_bad_ones_fail_like_kube_apiserver() {
        let q = validate_log_options(
            "web",
            &params("container=c&follow=true&tailLines=10&timestamps=1&sinceSeconds=5&limitBytes=100&previous=false"),
        )
        .unwrap();
        assert_eq!(
            q,
            "follow=true&tailLines=10&timestamps=true&sinceSeconds=5&limitBytes=100"
        );
        let t = validate_log_options("web", &params("sinceTime=2024-01-01T10:00:00%2B02:00")).unwrap();
        assert_eq!(t, "sinceTime=2024-01-01T08%3A00%3A00Z");

        let err = validate_log_options("web", &params("tailLines=-1")).unwrap_err();
        assert_eq!(err.code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.to_string(),
            "The PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let err = validate_log_options("web", &params("limitBytes=0")).unwrap_err();
        assert_eq!(err.status()["details"]["causes"][0]["field"], "limitBytes");
        let err = validate_log_options("web", &params("sinceSeconds=0")).unwrap_err();
        assert_eq!(err.code(), StatusCode::UNPROCESSABLE_ENTITY);
        let err = validate_log_options("web", &params("sinceSeconds=3&sinceTime=2024-01-01T00:00:00Z"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("at most one of `sinceTime` or `sinceSeconds`"),
            "{err}"
        );
        for bad in ["tailLines=ten", "limitBytes=1.5", "sinceTime=yesterday"] {
            let err = validate_log_options("web", &params(bad)).unwrap_err();
            assert_eq!(err.code(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    fn pod(containers: &[&str], init: &[&str], default: Option<&str>) -> Value {
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "busybox"}))
                .collect::<Vec<_>>()
        };
        let mut p = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": list(containers), "initContainers": list(init)}});
        if let Some(d) = default {
            p["metadata"]["annotations"] = json!({DEFAULT_CONTAINER_ANNOTATION: d});
        }
        p
    }

    #[test]
    fn containers_default_like_kube_apiserver() {
        assert_eq!(pick_container(&pod(&["app"], &[], None), None).unwrap(), "app");
        assert_eq!(
            pick_container(&pod(&["a", "b"], &[], None), Some("b")).unwrap(),
            "b"
        );
        assert_eq!(
            pick_container(&pod(&["a", "b"], &["init"], None), Some("init")).unwrap(),
            "init"
        );
        assert_eq!(
            pick_container(&pod(&["a", "b"], &[], Some("b")), None).unwrap(),
            "b"
        );
        let err = pick_container(&pod(&["a", "b"], &["setup"], None), None).unwrap_err();
        assert_eq!(err.code(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.to_string(),
            "a container name must be specified for pod web, choose one of: [setup a b]"
        );
        let err = pick_container(&pod(&["a"], &[], None), Some("zzz")).unwrap_err();
        assert_eq!(err.to_string(), "container zzz is not valid for pod web");
    }

    #[test]
    fn kubelets_are_found_at_their_internal_ip_and_reported_port() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "192.0.2.9"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10260}}}});
        assert_eq!(kubelet_address(&node).unwrap(), "10.0.0.5:10260".parse().unwrap());
        let no_port = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::5"}]}});
        assert_eq!(
            kubelet_address(&no_port).unwrap(),
            "[fd00::5]:10250".parse().unwrap()
        );
        let err = kubelet_address(&json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}}))
            .unwrap_err();
        assert_eq!(err.code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.to_string().contains("no preferred addresses found"), "{err}");
    }

    /// A kubelet stand-in on 127.0.0.1: answers log requests with what it was asked and by whom, a
    /// waiting container with the kubelet's 400, and exec upgrades with an echo.
    async fn fake_kubelet(pki: &Pki) -> SocketAddr {
        let tls = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(pki).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else { return };
                    let cn = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| crate::tls::subject_identity(&c[0]))
                        .map(|id| format!("{} {:?}", id.common_name, id.organizations))
                        .unwrap_or_default();
                    let service = hyper::service::service_fn(
                        move |mut req: hyper::Request<hyper::body::Incoming>| {
                            let cn = cn.clone();
                            async move {
                                let target = req.uri().to_string();
                                if target.contains("/waiting") {
                                    return hyper::Response::builder()
                                    .status(400)
                                    .body(Body::from("container \"waiting\" in pod \"web\" is waiting to start: ContainerCreating"));
                                }
                                if target.starts_with("/exec/") {
                                    let protocol = req.headers()["sec-websocket-protocol"].clone();
                                    let upgrade = hyper::upgrade::on(&mut req);
                                    tokio::spawn(async move {
                                        let mut io = TokioIo::new(upgrade.await.unwrap());
                                        let (mut r, mut w) = tokio::io::split(&mut io);
                                        let _ = tokio::io::copy(&mut r, &mut w).await;
                                    });
                                    return hyper::Response::builder()
                                        .status(101)
                                        .header("upgrade", "websocket")
                                        .header("connection", "Upgrade")
                                        .header("sec-websocket-protocol", protocol)
                                        .header("x-target", target)
                                        .body(Body::empty());
                                }
                                hyper::Response::builder().body(Body::from(format!("{target} by {cn}")))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    struct Api {
        addr: SocketAddr,
        state: Arc<ApiState>,
        _dir: tempfile::TempDir,
    }

    async fn api() -> (Api, Pki) {
        let dir = tempfile::tempdir().unwrap();
        let sans = crate::tls::serving_sans("n", "h", &[], "10.43.0.1".parse().unwrap());
        let pki = Pki::load_or_create(dir.path(), &sans).unwrap();
        let store = rkube_store::sqlite::SqliteBackend::open(&dir.path().join("db"), Default::default())
            .await
            .unwrap();
        let state = ApiState::new(Arc::new(store), crate::ApiOptions::default())
            .await
            .unwrap();
        crate::bootstrap(&state).await.unwrap();
        state.set_kubelet_client(KubeletClient::new(&pki).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = crate::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (
            Api {
                addr,
                state,
                _dir: dir,
            },
            pki,
        )
    }

    const TIMEOUT: Duration = Duration::from_secs(20);

    /// One request over a fresh connection: status and body text.
    async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let code = resp.status().as_u16();
        let bytes = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn create_node_and_pods(api: &Api, kubelet: SocketAddr) {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port()}}}});
        let (code, text) = call(api.addr, "POST", "/api/v1/nodes", Some(node.clone())).await;
        assert_eq!(code, 201, "{text}");
        // A Node's status is not taken on create.
        let (code, text) = call(api.addr, "PUT", "/api/v1/nodes/n1/status", Some(node)).await;
        assert_eq!(code, 200, "{text}");
        for (name, node, containers) in [
            ("web", Some("n1"), vec!["app", "waiting"]),
            ("pending", None, vec!["app"]),
            ("lost", Some("gone"), vec!["app"]),
        ] {
            let containers: Vec<Value> = containers
                .iter()
                .map(|c| json!({"name": c, "image": "busybox"}))
                .collect();
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name,
                "annotations": {DEFAULT_CONTAINER_ANNOTATION: "app"}}, "spec": {"containers": containers}});
            if let Some(n) = node {
                pod["spec"]["nodeName"] = json!(n);
            }
            let (code, text) = call(api.addr, "POST", "/api/v1/namespaces/default/pods", Some(pod)).await;
            assert_eq!(code, 201, "{text}");
        }
    }

    #[tokio::test]
    async fn logs_are_proxied_to_the_pods_kubelet_with_the_server_client_certificate() {
        let (api, pki) = api().await;
        let kubelet = fake_kubelet(&pki).await;
        create_node_and_pods(&api, kubelet).await;
        let (code, text) = call(
            api.addr,
            "GET",
            "/api/v1/namespaces/default/pods/web/log?tailLines=5&follow=true",
            None,
        )
        .await;
        assert_eq!(code, 200, "{text}");
        assert_eq!(
            text,
            "/containerLogs/default/web/app?tailLines=5&follow=true by kube-apiserver-kubelet-client [\"system:masters\"]"
        );
        let (code, text) = call(
            api.addr,
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=waiting",
            None,
        )
        .await;
        assert_eq!(code, 400);
        let status: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(
            status["message"],
            "container \"waiting\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        let (code, text) = call(
            api.addr,
            "GET",
            "/api/v1/namespaces/default/pods/pending/log",
            None,
        )
        .await;
        assert_eq!(
            (code, text.as_str()),
            (200, ""),
            "a pod on no node has no log yet"
        );
        let (code, text) = call(api.addr, "GET", "/api/v1/namespaces/default/pods/lost/log", None).await;
        assert_eq!(code, 404);
        assert!(text.contains("nodes \\\"gone\\\" not found"), "{text}");
        let (code, text) = call(
            api.addr,
            "GET",
            "/api/v1/namespaces/default/pods/web/log?tailLines=-3",
            None,
        )
        .await;
        assert_eq!(code, 422, "{text}");
        let (code, _) = call(api.addr, "GET", "/api/v1/namespaces/default/pods/nope/log", None).await;
        assert_eq!(code, 404);
        drop(api.state);
    }

    #[tokio::test]
    async fn exec_upgrades_are_spliced_through_to_the_kubelet() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (api, pki) = api().await;
        let kubelet = fake_kubelet(&pki).await;
        create_node_and_pods(&api, kubelet).await;
        let mut tcp = tokio::net::TcpStream::connect(api.addr).await.unwrap();
        let request = format!(
            "GET /api/v1/namespaces/default/pods/web/exec?command=sh&container=app&stdin=true&stdout=true&tty=true HTTP/1.1\r\n\
             Host: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
            api.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tokio::time::timeout(TIMEOUT, tcp.read_exact(&mut byte))
                .await
                .unwrap()
                .unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("sec-websocket-protocol: v5.channel.k8s.io"),
            "{head}"
        );
        assert!(
            head.contains("x-target: /exec/default/web/app?command=sh&stdin=true&stdout=true&tty=true"),
            "{head}"
        );
        // Any bytes, in both directions, unchanged.
        let payload = [0x82u8, 0x03, 0x00, b'h', b'i', 0xff];
        tcp.write_all(&payload).await.unwrap();
        let mut echoed = [0u8; 6];
        tokio::time::timeout(TIMEOUT, tcp.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, payload);

        let (code, text) = call(
            api.addr,
            "GET",
            "/api/v1/namespaces/default/pods/pending/exec?command=sh&stdout=1",
            None,
        )
        .await;
        assert_eq!(code, 400);
        assert!(
            text.contains("pod pending does not have a host assigned"),
            "{text}"
        );
        let (code, text) = call(
            api.addr,
            "POST",
            "/api/v1/namespaces/default/pods/nope/exec?command=sh&stdout=1",
            None,
        )
        .await;
        assert_eq!(code, 404, "{text}");
        // A kubelet's refusal reaches the client as a Status, to the WebSocket and the SPDY retry alike.
        for method in ["GET", "POST"] {
            let (code, text) = call(
                api.addr,
                method,
                "/api/v1/namespaces/default/pods/web/exec?command=sh&container=waiting&stdout=1",
                None,
            )
            .await;
            assert_eq!(code, 400, "{text}");
            let status: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(status["reason"], "BadRequest");
            assert!(
                status["message"].as_str().unwrap().contains("waiting to start"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn cacerts_serves_the_cluster_ca_to_anyone() {
        let (api, pki) = api().await;
        let (code, text) = call(api.addr, "GET", "/cacerts", None).await;
        assert_eq!(code, 200);
        assert_eq!(text, pki.ca_cert_pem);
        assert!(crate::auth::is_open_path("/cacerts"));
    }
}
