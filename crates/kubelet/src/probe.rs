//! Liveness, readiness and startup probes: [`ProbeTracker`] (pure) turns single results into the probe's
//! verdict with Kubernetes' thresholds and timing; [`check`] runs one probe — exec inside the container,
//! httpGet and tcpSocket against the pod IP from the node.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rkube_oci::runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// One probe's state across its runs.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    pub kind: ProbeKind,
    period: Duration,
    pub timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    /// The verdict: `None` until the thresholds decided one.
    verdict: Option<bool>,
    next: Instant,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map(|s| s.max(0) as u64).unwrap_or(default))
}

impl ProbeTracker {
    /// A tracker for `probe` of a container started at `started`: first run after `initialDelaySeconds`.
    pub fn new(kind: ProbeKind, probe: &Probe, started: Instant) -> ProbeTracker {
        ProbeTracker {
            kind,
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            successes: 0,
            failures: 0,
            verdict: None,
            next: started + secs(probe.initial_delay_seconds, 0),
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// When the probe runs next.
    pub fn next_run(&self) -> Instant {
        self.next
    }

    /// Records one result at `now`; returns the verdict when it changed.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<bool> {
        self.next = now + self.period;
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if ok && self.successes >= self.success_threshold {
            Some(true)
        } else if !ok && self.failures >= self.failure_threshold {
            Some(false)
        } else {
            self.verdict
        };
        if verdict != self.verdict {
            self.verdict = verdict;
            if verdict == Some(false) {
                // A failed liveness/startup probe restarts the container; counting starts over after.
                self.failures = 0;
            }
            return verdict;
        }
        None
    }

    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }
}

/// The outcome of one probe run; the failure message is what the `Unhealthy` event says.
pub type ProbeOutcome = Result<(), String>;

/// The container port a probe names: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => name.parse().ok().or_else(|| {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }),
    }
}

/// Runs `probe` once against a container with id `container_id` in a pod at `pod_ip`.
pub async fn check(
    probe: &Probe,
    runtime: &Arc<Runtime>,
    container_id: &str,
    container: &Container,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
) -> ProbeOutcome {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let runtime = runtime.clone();
        let id = container_id.to_string();
        let result = tokio::task::spawn_blocking(move || runtime.exec_sync(&id, &cmd, timeout))
            .await
            .map_err(|e| e.to_string())?;
        return match result {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(format!(
                "command {:?} exited with {code}: {}",
                exec.command.clone().unwrap_or_default(),
                String::from_utf8_lossy(&out).trim()
            )),
            Err(rkube_oci::runtime::RuntimeError::Timeout(_)) => {
                Err(format!("command timed out after {}s", timeout.as_secs()))
            }
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(http) = &probe.http_get {
        let port = resolve_port(&http.port, container).ok_or("invalid port")?;
        let host: IpAddr = match http.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.parse().map_err(|_| format!("invalid host {h}"))?,
            None => pod_ip.ok_or("pod has no IP")?,
        };
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let addr = SocketAddr::new(host, port);
        return match tokio::time::timeout(timeout, http_get(addr, &path, &headers)).await {
            Err(_) => Err(format!(
                "Get \"http://{addr}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Ok(Err(e)) => Err(format!("Get \"http://{addr}{path}\": {}", dial_error(addr, &e))),
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container).ok_or("invalid port")?;
        let host: IpAddr = match tcp.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.parse().map_err(|_| format!("invalid host {h}"))?,
            None => pod_ip.ok_or("pod has no IP")?,
        };
        let addr = SocketAddr::new(host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(dial_error(addr, &e)),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    // gRPC probes and empty handlers: nothing this node can check.
    Ok(())
}

/// A connection error worded like Go's net package (what Kubernetes' probe messages show).
fn dial_error(addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("dial tcp {addr}: connect: connection refused"),
        std::io::ErrorKind::ConnectionReset => format!("read tcp {addr}: read: connection reset by peer"),
        _ => format!("dial tcp {addr}: {e}"),
    }
}

/// A minimal HTTP/1.1 GET: the status code of the response.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| addr.to_string());
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            break;
        }
    }
    parse_status_line(&buf)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response"))
}

/// The status code of an HTTP response's first line.
pub fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn thresholds_and_timing() {
        let t0 = Instant::now();
        let p = probe(serde_json::json!({"initialDelaySeconds": 5, "periodSeconds": 2,
            "failureThreshold": 3, "successThreshold": 2}));
        let mut t = ProbeTracker::new(ProbeKind::Readiness, &p, t0);
        assert!(!t.due(t0 + Duration::from_secs(4)));
        assert!(t.due(t0 + Duration::from_secs(5)));
        let now = t0 + Duration::from_secs(5);
        assert_eq!(t.record(true, now), None, "one success of two needed");
        assert_eq!(t.next_run(), now + Duration::from_secs(2));
        assert_eq!(t.record(true, now), Some(true));
        assert_eq!(t.record(false, now), None);
        assert_eq!(t.record(false, now), None);
        assert_eq!(t.verdict(), Some(true), "two failures of three: still ready");
        assert_eq!(t.record(false, now), Some(false));
        assert_eq!(t.record(false, now), None, "no repeated verdict");
    }

    #[test]
    fn ports_by_number_and_name() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]}))
        .unwrap();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Some(80));
        assert_eq!(resolve_port(&IntOrString::String("http".into()), &c), Some(8080));
        assert_eq!(resolve_port(&IntOrString::String("nope".into()), &c), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500 oops\r\nx"), Some(500));
        assert_eq!(parse_status_line(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_get_reads_the_status_of_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            req
        });
        let code = http_get(addr, "/healthz", &[("X-Probe".into(), "1".into())])
            .await
            .unwrap();
        assert_eq!(code, 503);
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"));
        assert!(req.contains("X-Probe: 1\r\n"));
    }
}
