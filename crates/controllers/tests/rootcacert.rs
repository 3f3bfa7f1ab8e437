//! The root CA publisher against a real `rkube server`: a new namespace gets `kube-root-ca.crt` holding the
//! CA of the admin kubeconfig, and the ConfigMap comes back when deleted or edited.

mod support;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Server, wait_for};

/// The CA PEM of the server's admin kubeconfig (`certificate-authority-data`).
fn kubeconfig_ca(server: &Server) -> String {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("read kubeconfig");
    let data = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.certificate_authority_data.clone())
        .expect("certificate-authority-data");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64 CA");
    String::from_utf8(pem).expect("PEM text")
}

#[tokio::test]
async fn every_namespace_gets_the_cluster_ca_back_after_deletion_or_change() {
    let mut server = Server::start();
    let client = server.client().await;
    let ca = kubeconfig_ca(&server);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");

    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "rootca-team"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "rootca-team");
    let published = |what: &'static str| {
        let cms = cms.clone();
        let ca = ca.clone();
        async move {
            wait_for(what, || async {
                let cm = cms.get_opt("kube-root-ca.crt").await.map_err(|e| e.to_string())?;
                let cm = cm.ok_or_else(|| "no ConfigMap".to_string())?;
                let data = cm.data.clone().unwrap_or_default();
                match data.get("ca.crt") {
                    Some(got) if *got == ca && data.len() == 1 => Ok(cm),
                    _ => Err(format!("{data:?}")),
                }
            })
            .await
        }
    };
    let first = published("kube-root-ca.crt in the new namespace").await;
    let description = &first.metadata.annotations.clone().unwrap_or_default()["kubernetes.io/description"];
    assert!(description.contains("verify the kube-apiserver"), "{description}");

    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    let again = published("kube-root-ca.crt re-created after deletion").await;
    assert_ne!(again.metadata.uid, first.metadata.uid, "a new object");

    let junk = json!({"data": {"ca.crt": "not a CA", "extra": "x"}});
    cms.patch("kube-root-ca.crt", &PatchParams::default(), &Patch::Merge(&junk))
        .await
        .expect("edit the ConfigMap");
    published("kube-root-ca.crt restored after an edit").await;

    // Namespaces that existed before (the server's own) have it too.
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get("kube-root-ca.crt")
        .await
        .expect("kube-system has the CA");
}
