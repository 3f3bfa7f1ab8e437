//! The garbage collector against a real `rkube server`, driven by the real kubectl: `kubectl delete deploy`
//! removes its ReplicaSets and Pods (background and foreground), `--cascade=orphan` keeps them and strips
//! their ownerReferences.

mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use support::{Server, wait_for};

/// (ReplicaSets, Pods) labeled `app=<name>`.
async fn owned(client: &Client, app: &str) -> Result<(Vec<ReplicaSet>, Vec<Pod>), String> {
    let lp = ListParams::default().labels(&format!("app={app}"));
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .map_err(|e| e.to_string())?;
    let pods = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .map_err(|e| e.to_string())?;
    Ok((rs.items, pods.items))
}

async fn deploy_and_wait(server: &Server, client: &Client, app: &str) {
    server.kubectl(&["create", "deployment", app, "--image=nginx", "--replicas=2"]);
    wait_for(&format!("{app}: a ReplicaSet and 2 pods"), || async {
        let (rs, pods) = owned(client, app).await?;
        if rs.len() == 1 && pods.len() == 2 {
            Ok(())
        } else {
            Err(format!("{} rs, {} pods", rs.len(), pods.len()))
        }
    })
    .await;
}

async fn wait_all_gone(client: &Client, app: &str) {
    wait_for(&format!("{app}: ReplicaSets and pods deleted"), || async {
        let (rs, pods) = owned(client, app).await?;
        if rs.is_empty() && pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{} rs, {} pods", rs.len(), pods.len()))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_deletion_background_foreground_and_orphan() {
    let mut server = Server::start();
    let client = server.client().await;

    deploy_and_wait(&server, &client, "web").await;
    server.kubectl(&["delete", "deployment", "web"]);
    wait_all_gone(&client, "web").await;

    deploy_and_wait(&server, &client, "fg").await;
    // kubectl waits for the Deployment itself, which the foregroundDeletion finalizer holds until its
    // ReplicaSet (and that one's pods) are gone.
    server.kubectl(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    let (rs, pods) = owned(&client, "fg").await.unwrap();
    assert!(
        rs.is_empty(),
        "the foreground-deleted Deployment outlived its ReplicaSet: {rs:?}"
    );
    let blocking: Vec<_> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(
        blocking.is_empty(),
        "pods left after foreground deletion: {blocking:?}"
    );
    wait_all_gone(&client, "fg").await;

    deploy_and_wait(&server, &client, "keep").await;
    server.kubectl(&["delete", "deployment", "keep", "--cascade=orphan"]);
    let out = server.kubectl(&["get", "deployments", "-o", "name"]);
    assert!(!out.contains("keep"), "the Deployment itself is deleted: {out}");
    wait_for("the orphaned ReplicaSet without ownerReferences", || async {
        let (rs, pods) = owned(&client, "keep").await?;
        let released = rs.len() == 1
            && rs[0]
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty());
        if released && pods.len() == 2 {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                rs.iter()
                    .map(|r| &r.metadata.owner_references)
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
    // The pods still belong to the (kept) ReplicaSet.
    let (rs, pods) = owned(&client, "keep").await.unwrap();
    let rs_uid = rs[0].metadata.uid.clone().unwrap();
    for p in &pods {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, rs_uid);
    }
}
