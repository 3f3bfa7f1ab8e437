//! The cluster's PKI: a CA made at first start and kept in `DIR/tls/`, a *leaf* serving certificate it
//! signs (rustls — and so kube-rs — rejects a CA presented as a server certificate), an admin client
//! certificate (`system:admin` in `system:masters`), the node join token, and the admin kubeconfig.
//!
//! Start at [`Pki::load_or_create`]; [`server_config`] turns the result into a rustls `ServerConfig` that
//! asks for (but does not demand) a client certificate and verifies any it gets against the CA.
//! Everything is reused across restarts; only the serving certificate is remade when its SANs change or
//! its expiry nears.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Datelike, Duration, Utc};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Every way setting up TLS can fail.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file under the data directory failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Generating or loading a key or certificate failed.
    #[error("certificate {what}: {source}")]
    Cert {
        what: &'static str,
        source: rcgen::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: no {what} found in PEM file")]
    Pem { path: PathBuf, what: &'static str },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The CA's subject; the CA is re-loaded as an issuer from its key and this name.
const CA_COMMON_NAME: &str = "rkube-server-ca";
/// How long a fresh serving certificate lasts, and how close to expiry it is renewed at start.
const SERVING_VALIDITY_DAYS: i64 = 365;
const SERVING_RENEW_BEFORE_DAYS: i64 = 90;
const CA_VALIDITY_DAYS: i64 = 3650;

/// The cluster's certificates and secrets, all PEM.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The node join token (`DIR/token`).
    pub node_token: String,
    /// A bearer token for the cluster admin, kept in `DIR/tls/admin.token` (for clients that cannot
    /// present a certificate).
    pub admin_token: String,
    /// The certificate the server presents to kubelets (`kube-apiserver-kubelet-client` in
    /// `system:masters`), issued afresh at every start and never written to disk.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Cert { what, source }
}

/// Writes a file readable only by its owner, atomically (temp file + rename), so a crash never leaves
/// half a key behind.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    // An old file made with a wider mode keeps it through `mode()`; set it explicitly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_optional(path: &Path) -> Result<Option<String>, TlsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Sets a certificate's validity to whole days from `from` to `to` (rcgen takes calendar dates).
fn set_validity(params: &mut CertificateParams, from: DateTime<Utc>, to: DateTime<Utc>) {
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

fn ca_params(now: DateTime<Utc>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(
        &mut params,
        now - Duration::days(1),
        now + Duration::days(CA_VALIDITY_DAYS),
    );
    params
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the serving certificate was made for, kept beside it so a restart knows whether to remake it.
fn serving_meta(sans: &[String], not_after: DateTime<Utc>) -> String {
    format!("not-after {}\n{}\n", not_after.to_rfc3339(), sans.join("\n"))
}

fn serving_meta_still_good(meta: &str, sans: &[String], now: DateTime<Utc>) -> bool {
    let mut lines = meta.lines();
    let Some(not_after) = lines
        .next()
        .and_then(|l| l.strip_prefix("not-after "))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return false;
    };
    let stored: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    stored == sans.iter().map(String::as_str).collect::<Vec<_>>()
        && not_after.with_timezone(&Utc) - now > Duration::days(SERVING_RENEW_BEFORE_DAYS)
}

/// The SANs the serving certificate needs: loopback, the node's names and addresses, and the names and
/// ClusterIP of the `kubernetes` Service. Sorted and deduplicated so they compare across restarts.
pub fn serving_sans(
    node_name: &str,
    hostname: &str,
    addresses: &[IpAddr],
    kubernetes_service_ip: IpAddr,
) -> Vec<String> {
    let mut sans: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sans.extend(
        [node_name, hostname]
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string()),
    );
    sans.push(kubernetes_service_ip.to_string());
    sans.extend(
        addresses
            .iter()
            .filter(|a| !a.is_unspecified())
            .map(IpAddr::to_string),
    );
    sans.sort();
    sans.dedup();
    sans
}

impl Pki {
    /// Loads the PKI from `DIR/tls/` (creating what is missing), remaking the serving certificate when its
    /// SANs differ from `sans` or it expires within 90 days, and loads or creates `DIR/token`.
    pub fn load_or_create(data_dir: &Path, sans: &[String]) -> Result<Pki, TlsError> {
        let now = Utc::now();
        let dir = data_dir.join("tls");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        let path = |name: &str| dir.join(name);

        // The CA: made once, never replaced while its files exist.
        let (ca_cert_pem, ca_key, ca_fresh) =
            match (read_optional(&path("ca.crt"))?, read_optional(&path("ca.key"))?) {
                (Some(cert), Some(key)) => (
                    cert,
                    KeyPair::from_pem(&key).map_err(cert_err("load CA key"))?,
                    false,
                ),
                _ => {
                    let key = KeyPair::generate().map_err(cert_err("generate CA key"))?;
                    let cert = ca_params(now)
                        .self_signed(&key)
                        .map_err(cert_err("self-sign CA"))?;
                    write_private(&path("ca.key"), key.serialize_pem().as_bytes())?;
                    write_private(&path("ca.crt"), cert.pem().as_bytes())?;
                    (cert.pem(), key, true)
                }
            };
        let issuer = Issuer::new(ca_params(now), &ca_key);

        // The serving leaf.
        let meta_ok = !ca_fresh
            && read_optional(&path("serving.meta"))?.is_some_and(|m| serving_meta_still_good(&m, sans, now));
        let (serving_cert_pem, serving_key_pem) = match (
            meta_ok,
            read_optional(&path("serving.crt"))?,
            read_optional(&path("serving.key"))?,
        ) {
            (true, Some(cert), Some(key)) => (cert, key),
            _ => {
                let not_after = now + Duration::days(SERVING_VALIDITY_DAYS);
                let mut params = CertificateParams::new(sans.to_vec()).map_err(cert_err("serving SANs"))?;
                params.distinguished_name = DistinguishedName::new();
                params
                    .distinguished_name
                    .push(DnType::CommonName, "kube-apiserver");
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.use_authority_key_identifier_extension = true;
                set_validity(&mut params, now - Duration::days(1), not_after);
                let key = KeyPair::generate().map_err(cert_err("generate serving key"))?;
                let cert = params
                    .signed_by(&key, &issuer)
                    .map_err(cert_err("sign serving certificate"))?;
                write_private(&path("serving.key"), key.serialize_pem().as_bytes())?;
                write_private(&path("serving.crt"), cert.pem().as_bytes())?;
                write_private(&path("serving.meta"), serving_meta(sans, not_after).as_bytes())?;
                tracing::info!(sans = %sans.join(","), "made a new serving certificate");
                (cert.pem(), key.serialize_pem())
            }
        };

        // The admin client certificate: CN is the user, O the group.
        let (admin_cert_pem, admin_key_pem) = match (
            ca_fresh,
            read_optional(&path("client-admin.crt"))?,
            read_optional(&path("client-admin.key"))?,
        ) {
            (false, Some(cert), Some(key)) => (cert, key),
            _ => {
                let mut params = CertificateParams::default();
                params.distinguished_name = DistinguishedName::new();
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "system:masters");
                params.distinguished_name.push(DnType::CommonName, "system:admin");
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params.use_authority_key_identifier_extension = true;
                set_validity(
                    &mut params,
                    now - Duration::days(1),
                    now + Duration::days(CA_VALIDITY_DAYS),
                );
                let key = KeyPair::generate().map_err(cert_err("generate admin key"))?;
                let cert = params
                    .signed_by(&key, &issuer)
                    .map_err(cert_err("sign admin certificate"))?;
                write_private(&path("client-admin.key"), key.serialize_pem().as_bytes())?;
                write_private(&path("client-admin.crt"), cert.pem().as_bytes())?;
                (cert.pem(), key.serialize_pem())
            }
        };

        let (kubelet_client_cert_pem, kubelet_client_key_pem) = kubelet_client_certificate(&issuer, now)?;
        let node_token = load_or_create_secret(&data_dir.join("token"))?;
        let admin_token = load_or_create_secret(&path("admin.token"))?;
        Ok(Pki {
            kubelet_client_cert_pem,
            kubelet_client_key_pem,
            ca_cert_pem,
            serving_cert_pem,
            serving_key_pem,
            admin_cert_pem,
            admin_key_pem,
            node_token,
            admin_token,
        })
    }

    /// Writes the cluster-admin kubeconfig (cluster, user and context all named `default`, the CA and the
    /// admin client certificate embedded) to `path`, mode 0600.
    pub fn write_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), TlsError> {
        write_private(path, self.kubeconfig(server_url).as_bytes())
    }

    /// The kubeconfig text (see [`Pki::write_kubeconfig`]).
    pub fn kubeconfig(&self, server_url: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: default\n  \
               cluster:\n    \
                 certificate-authority-data: {ca}\n    \
                 server: {server_url}\n\
             contexts:\n\
             - name: default\n  \
               context:\n    \
                 cluster: default\n    \
                 user: default\n\
             current-context: default\n\
             preferences: {{}}\n\
             users:\n\
             - name: default\n  \
               user:\n    \
                 client-certificate-data: {cert}\n    \
                 client-key-data: {key}\n",
            ca = b64(&self.ca_cert_pem),
            cert = b64(&self.admin_cert_pem),
            key = b64(&self.admin_key_pem),
        )
    }
}

/// How long the in-memory kubelet client certificate lasts (it is remade at every start).
const KUBELET_CLIENT_VALIDITY_DAYS: i64 = 365;

/// The client certificate for the API server's connections to kubelets (PEM certificate, PEM key).
fn kubelet_client_certificate(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    now: DateTime<Utc>,
) -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(
        &mut params,
        now - Duration::days(1),
        now + Duration::days(KUBELET_CLIENT_VALIDITY_DAYS),
    );
    let key = KeyPair::generate().map_err(cert_err("generate kubelet client key"))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(cert_err("sign kubelet client certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A random secret kept in a 0600 file; the same one is returned on every later start.
fn load_or_create_secret(path: &Path) -> Result<String, TlsError> {
    if let Some(existing) = read_optional(path)? {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_string());
        }
    }
    let secret = random_hex(24);
    write_private(path, format!("{secret}\n").as_bytes())?;
    Ok(secret)
}

fn pem_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: PathBuf::from(what),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The HTTPS configuration: the leaf certificate (with the CA as its chain), HTTP/2 and HTTP/1.1 by ALPN,
/// and client certificates requested, optional, and verified against the cluster CA when given.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = pem_certs(&pki.ca_cert_pem, "ca.crt")?;
    let mut chain = pem_certs(&pki.serving_cert_pem, "serving.crt")?;
    chain.extend(ca.iter().cloned());
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pki.serving_key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::Pem {
            path: PathBuf::from("serving.key"),
            what: "private key",
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who a client certificate names: the subject's CommonName (the user) and Organizations (the groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectIdentity {
    pub common_name: String,
    pub organizations: Vec<String>,
}

/// Reads the subject of a DER certificate. Only called on certificates rustls has already verified, so
/// it reads the structure X.509 guarantees and gives up (None) on anything else.
pub fn subject_identity(der: &[u8]) -> Option<SubjectIdentity> {
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
    let (tag, cert, _) = der_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    // tbsCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let mut fields = Vec::new();
    while !tbs.is_empty() && fields.len() < 6 {
        let (tag, content, rest) = der_tlv(tbs)?;
        fields.push((tag, content));
        tbs = rest;
    }
    let start = usize::from(fields.first()?.0 == 0xa0);
    let (tag, mut name) = *fields.get(start + 4)?;
    if tag != 0x30 {
        return None;
    }
    let mut id = SubjectIdentity {
        common_name: String::new(),
        organizations: Vec::new(),
    };
    while !name.is_empty() {
        let (_, mut set, rest) = der_tlv(name)?;
        name = rest;
        while !set.is_empty() {
            let (_, attr, rest) = der_tlv(set)?;
            set = rest;
            let (oid_tag, oid, value) = der_tlv(attr)?;
            let (_, value, _) = der_tlv(value)?;
            if oid_tag != 0x06 {
                continue;
            }
            let text = String::from_utf8_lossy(value).into_owned();
            if oid == OID_CN {
                id.common_name = text;
            } else if oid == OID_O {
                id.organizations.push(text);
            }
        }
    }
    Some(id)
}

/// One DER tag-length-value: (tag, content, the bytes after it).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// This host's name (for the serving certificate), from the kernel.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// This host's own unicast addresses, read from `/proc` (IPv4 LOCAL routes, global IPv6 addresses),
/// loopback excluded.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = fs::read_to_string("/proc/net/fib_trie")
        .map(|t| parse_fib_trie(&t))
        .unwrap_or_default();
    out.extend(
        fs::read_to_string("/proc/net/if_inet6")
            .map(|t| parse_if_inet6(&t))
            .unwrap_or_default(),
    );
    out.sort();
    out.dedup();
    out
}

/// The `/32 host LOCAL` entries of `/proc/net/fib_trie`: the addresses assigned to this host.
fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut last: Option<IpAddr> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if line.contains("|--") {
            last = trimmed.parse().ok();
        } else if trimmed.starts_with("/32 host LOCAL")
            && let Some(ip) = last.filter(|ip| !ip.is_loopback())
        {
            out.push(ip);
        }
    }
    out
}

/// Global-scope addresses of `/proc/net/if_inet6` (32 hex digits, index, prefix, scope, flags, name).
fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let hex = parts.next()?;
            let scope = parts.nth(2)?;
            if hex.len() != 32 || scope != "00" {
                return None;
            }
            let n = u128::from_str_radix(hex, 16).ok()?;
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(n));
            (!ip.is_loopback()).then_some(ip)
        })
        .collect()
}

/// A certificate verifier that accepts any server certificate while still checking the handshake
/// signatures. For peers whose serving certificate cannot be verified: kubelets (kube-apiserver's default
/// without `--kubelet-certificate-authority`), and a server whose CA is made by the process being tested.
#[derive(Debug)]
pub struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl AnyServerCert {
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> AnyServerCert {
        AnyServerCert(provider)
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    fn sans() -> Vec<String> {
        serving_sans(
            "node-1",
            "host-a",
            &["192.168.1.5".parse().unwrap()],
            "10.43.0.1".parse().unwrap(),
        )
    }

    #[test]
    fn sans_cover_loopback_node_and_service_names() {
        let s = sans();
        for want in [
            "127.0.0.1",
            "localhost",
            "node-1",
            "host-a",
            "192.168.1.5",
            "10.43.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(s.contains(&want.to_string()), "missing {want}");
        }
        let mut sorted = s.clone();
        sorted.sort();
        assert_eq!(s, sorted);
    }

    #[test]
    fn pki_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &sans()).unwrap();
        for f in [
            "tls/ca.crt",
            "tls/ca.key",
            "tls/serving.crt",
            "tls/serving.key",
            "tls/client-admin.key",
            "token",
        ] {
            let mode = fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let again = Pki::load_or_create(dir.path(), &sans()).unwrap();
        assert_eq!(first.ca_cert_pem, again.ca_cert_pem);
        assert_eq!(first.serving_cert_pem, again.serving_cert_pem);
        assert_eq!(first.admin_cert_pem, again.admin_cert_pem);
        assert_eq!(first.node_token, again.node_token);
        assert_eq!(first.node_token.len(), 48);

        let mut more = sans();
        more.push("10.0.0.9".to_string());
        more.sort();
        let changed = Pki::load_or_create(dir.path(), &more).unwrap();
        assert_eq!(
            changed.ca_cert_pem, first.ca_cert_pem,
            "the CA survives a SAN change"
        );
        assert_ne!(
            changed.serving_cert_pem, first.serving_cert_pem,
            "new SANs make a new leaf"
        );
    }

    #[test]
    fn leaf_and_client_certificates_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &sans()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem_certs(&pki.ca_cert_pem, "ca").unwrap().remove(0))
            .unwrap();
        let roots = Arc::new(roots);

        // What a rustls client (kube-rs) does with the leaf: verify it for 127.0.0.1 and a DNS name.
        let server_verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .unwrap();
        let leaf = pem_certs(&pki.serving_cert_pem, "serving").unwrap().remove(0);
        let now = rustls::pki_types::UnixTime::now();
        for name in ["127.0.0.1", "kubernetes.default.svc", "localhost", "10.43.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            server_verifier
                .verify_server_cert(&leaf, &[], &name, &[], now)
                .unwrap();
        }
        let elsewhere = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(
            server_verifier
                .verify_server_cert(&leaf, &[], &elsewhere, &[], now)
                .is_err()
        );

        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let admin = pem_certs(&pki.admin_cert_pem, "admin").unwrap().remove(0);
        client_verifier.verify_client_cert(&admin, &[], now).unwrap();
        assert_eq!(
            subject_identity(&admin),
            Some(SubjectIdentity {
                common_name: "system:admin".to_string(),
                organizations: vec!["system:masters".to_string()]
            })
        );
        server_config(&pki).unwrap();
    }

    #[test]
    fn certificates_from_another_cluster_are_refused() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(ours.path(), &sans()).unwrap();
        let other = Pki::load_or_create(theirs.path(), &sans()).unwrap();
        assert_ne!(pki.ca_cert_pem, other.ca_cert_pem);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem_certs(&pki.ca_cert_pem, "ca").unwrap().remove(0))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .unwrap();
        assert!(
            !verifier.client_auth_mandatory(),
            "clients without a certificate may still use a token"
        );
        let foreign = pem_certs(&other.admin_cert_pem, "admin").unwrap().remove(0);
        let now = rustls::pki_types::UnixTime::now();
        assert!(verifier.verify_client_cert(&foreign, &[], now).is_err());
        let own = pem_certs(&pki.admin_cert_pem, "admin").unwrap().remove(0);
        assert!(verifier.verify_client_cert(&own, &[], now).is_ok());
    }

    #[test]
    fn kubeconfig_embeds_ca_and_client_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &sans()).unwrap();
        let path = dir.path().join("kubeconfig.yaml");
        pki.write_kubeconfig(&path, "https://127.0.0.1:6443").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("    server: https://127.0.0.1:6443\n"));
        let field = |name: &str| {
            let line = text.lines().find(|l| l.trim_start().starts_with(name)).unwrap();
            let b64 = line.split_once(": ").unwrap().1;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        };
        assert_eq!(field("certificate-authority-data"), pki.ca_cert_pem);
        assert_eq!(field("client-certificate-data"), pki.admin_cert_pem);
        assert_eq!(field("client-key-data"), pki.admin_key_pem);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn parses_proc_addresses() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     |-- 10.0.2.15\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 10.0.2.255\n        /32 link BROADCAST\n";
        assert_eq!(parse_fib_trie(fib), vec!["10.0.2.15".parse::<IpAddr>().unwrap()]);
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
                     fe800000000000000000000000000001 02 40 20 80     eth0\n\
                     20010db8000000000000000000000005 02 40 00 80     eth0\n";
        assert_eq!(
            parse_if_inet6(inet6),
            vec!["2001:db8::5".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn malformed_der_is_not_an_identity() {
        assert_eq!(subject_identity(&[]), None);
        assert_eq!(subject_identity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_identity(&[0x04, 0x01, 0x00]), None);
    }
}
