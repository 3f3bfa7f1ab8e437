//! The kubelet API over real HTTPS on 127.0.0.1: certificates from a throwaway CA, a fake node whose
//! containers are CRI log files in a temp dir and whose exec runs local processes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::*;

/// A CA and a client certificate it signed (PEM).
struct Authority {
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn authority() -> Authority {
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "test-ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let mut client = rcgen::CertificateParams::default();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    Authority {
        ca_pem: ca_cert.pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// One container of the fake node.
struct FakeContainer {
    reference: ContainerRef,
    running: Arc<AtomicBool>,
}

#[derive(Default)]
struct FakeNode {
    containers: BTreeMap<(String, String, String), FakeContainer>,
    /// Every process an exec started.
    pids: Arc<parking_lot::Mutex<Vec<u32>>>,
}

impl ContainerAccess for FakeNode {
    fn find(&self, namespace: &str, pod: &str, container: Option<&str>) -> Result<ContainerRef, LookupError> {
        let container = container.unwrap_or("main");
        if !self
            .containers
            .keys()
            .any(|(ns, p, _)| ns == namespace && p == pod)
        {
            return Err(LookupError::PodNotFound {
                namespace: namespace.into(),
                pod: pod.into(),
            });
        }
        let c = self
            .containers
            .get(&(namespace.into(), pod.into(), container.into()))
            .ok_or_else(|| LookupError::ContainerNotFound {
                pod: pod.into(),
                container: container.into(),
            })?;
        let mut r = c.reference.clone();
        r.running = c.running.load(Ordering::SeqCst);
        Ok(r)
    }

    /// A local process stands in for the container's.
    fn exec(&self, _container_id: &str, cmd: &[String], _tty: bool) -> Result<ExecIo, ServerError> {
        let io = spawn_local(cmd)?;
        self.pids.lock().push(io.1);
        Ok(io.0)
    }

    /// The pod's network is this host's loopback.
    fn dial(&self, _container_id: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
        std::net::TcpStream::connect(("127.0.0.1", port))
    }

    /// The container's own output, as a process that prints it.
    fn attach(&self, _container_id: &str, _tty: bool) -> Result<ExecIo, ServerError> {
        spawn_local(&["echo".to_string(), "attached".to_string()]).map(|io| io.0)
    }
}

/// The process's stdio, wait and kill, and its pid.
fn spawn_local(cmd: &[String]) -> Result<(ExecIo, u32), ServerError> {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ServerError::Runtime(e.to_string()))?;
    let pid = child.id();
    let io = ExecIo {
        stdin: child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Write + Send>),
        stdout: child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        stderr: child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        resize: None,
        kill: Some(Box::new(move || {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        })),
        wait: Box::new(move || {
            child
                .wait()
                .map(|s| s.code().unwrap_or(-1))
                .map_err(|e| e.to_string())
        }),
    };
    Ok((io, pid))
}

struct Kubelet {
    addr: SocketAddr,
    auth: Authority,
    _dir: tempfile::TempDir,
    log: PathBuf,
    running: Arc<AtomicBool>,
    pids: Arc<parking_lot::Mutex<Vec<u32>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn start() -> Kubelet {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    std::fs::write(
        &log,
        "2024-01-01T00:00:01Z stdout F one\n2024-01-01T00:00:02Z stderr F two\n\
         2024-01-01T00:00:03Z stdout P thr\n2024-01-01T00:00:03Z stdout F ee\n",
    )
    .unwrap();
    let previous = dir.path().join("prev.log");
    std::fs::write(&previous, "2023-12-31T00:00:00Z stdout F before the restart\n").unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let mut node = FakeNode::default();
    let pids = node.pids.clone();
    node.containers.insert(
        ("default".into(), "web".into(), "main".into()),
        FakeContainer {
            reference: ContainerRef {
                container_id: "c1".into(),
                log_path: log.clone(),
                previous_log_path: Some(previous),
                running: true,
            },
            running: running.clone(),
        },
    );
    let auth = authority();
    let (cert, key) = self_signed_serving_cert("node-1", &["127.0.0.1".parse().unwrap()]).unwrap();
    let tls = tls_config(&cert, &key, &auth.ca_pem).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve_on(listener, tls, Arc::new(node), stop_rx));
    Kubelet {
        addr,
        auth,
        _dir: dir,
        log,
        running,
        pids,
        stop,
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, identity: Option<(&str, &str)>) -> std::io::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(rkube_apiserver::tls::AnyServerCert::new(provider)));
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                pem_certs(cert, "client").unwrap(),
                rustls_pemfile::private_key(&mut key.as_bytes()).unwrap().unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

const TIMEOUT: Duration = Duration::from_secs(20);

/// A GET; the status and the response body (its first chunk only when `first_chunk`).
async fn get(
    addr: SocketAddr,
    identity: Option<(&str, &str)>,
    path: &str,
) -> Result<(StatusCode, hyper::Response<Incoming>), String> {
    let tls = connect(addr, identity).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(header::HOST, "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((resp.status(), resp))
}

async fn body_text(resp: hyper::Response<Incoming>) -> String {
    let bytes = tokio::time::timeout(
        TIMEOUT,
        axum::body::to_bytes(Body::new(resp.into_body()), usize::MAX),
    )
    .await
    .unwrap()
    .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

impl Kubelet {
    fn identity(&self) -> Option<(&str, &str)> {
        Some((&self.auth.client_cert_pem, &self.auth.client_key_pem))
    }

    async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let (code, resp) = get(self.addr, self.identity(), path).await.unwrap();
        (code, body_text(resp).await)
    }
}

#[tokio::test]
async fn only_clients_with_a_cluster_certificate_get_in() {
    let k = start().await;
    let (code, resp) = get(k.addr, None, "/healthz").await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body_text(resp).await, "ok");

    let (code, resp) = get(k.addr, None, "/containerLogs/default/web/main")
        .await
        .unwrap();
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let status: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["code"], 401);
    let (code, _) = get(k.addr, None, "/exec/default/web/main?command=ls&stdout=1")
        .await
        .unwrap();
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    let foreign = authority();
    let refused = get(
        k.addr,
        Some((&foreign.client_cert_pem, &foreign.client_key_pem)),
        "/containerLogs/default/web/main",
    )
    .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA is refused: {:?}",
        refused.map(|r| r.0)
    );

    let (code, text) = k.get_text("/containerLogs/default/web/main").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(text, "one\ntwo\nthree\n");
}

#[tokio::test]
async fn logs_honour_kubectl_options_and_report_missing_things() {
    let k = start().await;
    let (_, text) = k
        .get_text("/containerLogs/default/web/main?tailLines=1&timestamps=true")
        .await;
    assert_eq!(text, "2024-01-01T00:00:03.000000000Z three\n");
    let (_, text) = k.get_text("/containerLogs/default/web/main?limitBytes=5").await;
    assert_eq!(text, "one\nt");
    let (_, text) = k
        .get_text("/containerLogs/default/web/main?sinceTime=2024-01-01T00:00:02Z")
        .await;
    assert_eq!(text, "two\nthree\n");
    let (_, text) = k.get_text("/containerLogs/default/web/main?previous=true").await;
    assert_eq!(text, "before the restart\n");

    let (code, text) = k.get_text("/containerLogs/default/web/main?tailLines=-2").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        text,
        "tailLines: Invalid value: -2: must be greater than or equal to 0"
    );
    let (code, text) = k.get_text("/containerLogs/default/nope/main").await;
    assert_eq!(
        (code, text.as_str()),
        (StatusCode::NOT_FOUND, "pod \"nope\" does not exist")
    );
    let (code, text) = k.get_text("/containerLogs/default/web/side").await;
    assert_eq!(
        (code, text.as_str()),
        (
            StatusCode::NOT_FOUND,
            "container \"side\" not found in pod \"web\""
        )
    );
}

#[tokio::test]
async fn followed_logs_stream_until_the_container_exits() {
    let k = start().await;
    let (code, resp) = get(
        k.addr,
        k.identity(),
        "/containerLogs/default/web/main?follow=true&tailLines=1",
    )
    .await
    .unwrap();
    assert_eq!(code, StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = String::new();
    let mut read_until = async |want: &str, got: &mut String| {
        while !got.ends_with(want) {
            let frame = tokio::time::timeout(TIMEOUT, http_body_frame(&mut body))
                .await
                .expect("more log in time")
                .expect("the stream is still open");
            got.push_str(&String::from_utf8_lossy(&frame));
        }
    };
    read_until("three\n", &mut got).await;
    let mut f = std::fs::OpenOptions::new().append(true).open(&k.log).unwrap();
    f.write_all(b"2024-01-01T00:00:04Z stdout F four\n").unwrap();
    read_until("four\n", &mut got).await;
    assert_eq!(got, "three\nfour\n");
    f.write_all(b"2024-01-01T00:00:05Z stdout F five\n").unwrap();
    k.running.store(false, Ordering::SeqCst);
    let rest = body_text(hyper::Response::new(body)).await;
    assert_eq!(
        rest.trim_start_matches("four\n"),
        "five\n",
        "the stream ends after the container stopped"
    );
}

async fn http_body_frame(body: &mut Incoming) -> Option<Bytes> {
    use hyper::body::Body as _;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        if let Ok(data) = frame.ok()?.into_data() {
            return Some(data);
        }
    }
}

/// Opens an exec WebSocket with `protocol`.
async fn exec_socket(k: &Kubelet, query: &str, protocol: &str) -> tokio_tungstenite::WebSocketStream<Tls> {
    let tls = connect(k.addr, k.identity()).await.unwrap();
    let mut req = format!("wss://127.0.0.1:{}/exec/default/web/main?{query}", k.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(req, tls))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// Everything the server sends until it closes: per channel.
async fn collect(ws: &mut tokio_tungstenite::WebSocketStream<Tls>) -> BTreeMap<u8, Vec<u8>> {
    let mut channels: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("session ends in time");
        match msg {
            Some(Ok(WsMessage::Binary(data))) => {
                channels.entry(data[0]).or_default().extend_from_slice(&data[1..]);
            }
            Some(Ok(WsMessage::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                return channels;
            }
            Some(Ok(_)) => {}
            other => panic!("unexpected end: {other:?}"),
        }
    }
}

#[tokio::test]
async fn exec_carries_stdin_stdout_stderr_and_the_exit_code() {
    let k = start().await;
    let script = "read x; echo got $x; echo oops >&2; exit 3";
    let query = format!(
        "command=sh&command=-c&command={}&stdin=true&stdout=true&stderr=true",
        script
            .replace(' ', "+")
            .replace(';', "%3B")
            .replace('>', "%3E")
            .replace('&', "%26")
    );
    let mut ws = exec_socket(&k, &query, "v5.channel.k8s.io").await;
    ws.send(WsMessage::Binary(Bytes::from_static(b"\x00hello\n")))
        .await
        .unwrap();
    ws.send(WsMessage::Binary(Bytes::from_static(b"\xff\x00")))
        .await
        .unwrap();
    let channels = collect(&mut ws).await;
    assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"got hello\n"[..]));
    assert_eq!(channels.get(&2).map(Vec::as_slice), Some(&b"oops\n"[..]));
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "3"})
    );
}

#[tokio::test]
async fn exec_over_v4_reports_success() {
    let k = start().await;
    let mut ws = exec_socket(&k, "command=echo&command=hi&stdout=1", "v4.channel.k8s.io").await;
    let channels = collect(&mut ws).await;
    assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"hi\n"[..]));
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn streams_without_websocket_get_clear_errors() {
    let k = start().await;
    let (code, text) = k.get_text("/exec/default/web/main?command=ls&stdout=1").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(text.contains("WebSocket"), "{text}");
    let (code, text) = k.get_text("/exec/default/web/main?stdout=1").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(text, "you must specify at least one command for the container");
    let (code, _) = k.get_text("/exec/default/gone/main?command=ls&stdout=1").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    k.running.store(false, Ordering::SeqCst);
    let (code, text) = k.get_text("/exec/default/web/main?command=ls&stdout=1").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        text, "container \"main\" in pod \"web\" is not running",
        "the same error a WebSocket gets"
    );
}

#[tokio::test]
async fn attach_streams_the_containers_output() {
    let k = start().await;
    let tls = connect(k.addr, k.identity()).await.unwrap();
    let mut req = format!(
        "wss://127.0.0.1:{}/attach/default/web/main?stdout=1",
        k.addr.port()
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(req, tls))
        .await
        .unwrap()
        .unwrap();
    let channels = collect(&mut ws).await;
    assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"attached\n"[..]));
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn a_session_whose_client_leaves_ends_its_process() {
    let k = start().await;
    let mut ws = exec_socket(&k, "command=sleep&command=60&stdout=1", "v5.channel.k8s.io").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let pid = loop {
        if let Some(pid) = k.pids.lock().first().copied() {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "the exec never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    ws.close(None).await.unwrap();
    while proc_dir.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep 60 still runs after its client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A SYN_STREAM as kubectl's port-forward sends it.
fn syn_stream(id: u32, headers: &mut super::spdy::HeaderWriter, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut payload = id.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    payload.extend(headers.write(pairs));
    super::spdy::control(super::spdy::TYPE_SYN_STREAM, 0, &payload)
}

#[tokio::test]
async fn port_forward_splices_a_spdy_stream_to_the_pods_port() {
    use super::spdy::{self, Frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let k = start().await;
    // The "pod": an echo server that closes after one message.
    let pod = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = pod.local_addr().unwrap().port().to_string();
    tokio::spawn(async move {
        let (mut conn, _) = pod.accept().await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(&buf).await.unwrap();
    });
    let tls = connect(k.addr, k.identity()).await.unwrap();
    let mut req = format!("wss://127.0.0.1:{}/portForward/default/web", k.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", portforward::PROTOCOL.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(req, tls))
        .await
        .unwrap()
        .unwrap();
    let mut headers = spdy::HeaderWriter::default();
    let mut out = syn_stream(
        1,
        &mut headers,
        &[("streamtype", "error"), ("port", &port), ("requestid", "0")],
    );
    out.extend(syn_stream(
        3,
        &mut headers,
        &[("streamtype", "data"), ("port", &port), ("requestid", "0")],
    ));
    out.extend(spdy::data(3, false, b"ping"));
    ws.send(WsMessage::Binary(Bytes::from(out))).await.unwrap();

    let mut buf = Vec::new();
    let (mut replies, mut echoed, mut fins) = (Vec::new(), Vec::new(), Vec::new());
    while fins.len() < 2 {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("frames in time");
        let Some(Ok(WsMessage::Binary(bytes))) = msg else {
            panic!("unexpected {msg:?}")
        };
        buf.extend_from_slice(&bytes);
        while let Some(frame) = spdy::take_frame(&mut buf) {
            match frame {
                Frame::Control { kind, payload, .. } if kind == spdy::TYPE_SYN_REPLY => {
                    replies.push(spdy::stream_id(&payload).unwrap())
                }
                Frame::Data { stream, flags, data } => {
                    if stream == 3 {
                        echoed.extend(data);
                    } else {
                        assert!(data.is_empty(), "no error: {}", String::from_utf8_lossy(&data));
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        fins.push(stream);
                    }
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
    assert_eq!(replies, [1, 3]);
    assert_eq!(echoed, b"ping");
    assert_eq!(
        fins,
        [3, 1],
        "the data stream ends, then the error stream closes empty"
    );
}
