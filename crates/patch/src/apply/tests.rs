use serde_json::{Map, Value, json};

use super::*;
use crate::testdata::components;

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const NOW: &str = "2026-11-26T01:00:00Z";
const LATER: &str = "2026-11-26T02:00:00Z";

fn schema<'a>(c: &'a Map<String, Value>) -> Option<SchemaNode<'a>> {
    let schema = SchemaNode::for_definition(c, DEPLOYMENT);
    assert!(schema.is_some());
    schema
}

fn config(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]}}}
    })
}

/// What the API server would have stored: the object plus server-owned metadata and status.
fn stored(mut object: Value) -> Value {
    let metadata = object["metadata"].as_object_mut().unwrap();
    metadata.insert("uid".into(), json!("u-1"));
    metadata.insert("resourceVersion".into(), json!("7"));
    metadata.insert("generation".into(), json!(1));
    metadata.insert("creationTimestamp".into(), json!(NOW));
    object["status"] = json!({"replicas": 2});
    object
}

fn managed_fields(object: &Value) -> &Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
}

fn entry_of<'a>(object: &'a Value, manager: &str) -> Option<&'a Value> {
    managed_fields(object)
        .iter()
        .find(|e| e["manager"] == json!(manager))
}

fn fields_of(object: &Value, manager: &str) -> Value {
    entry_of(object, manager)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

fn without_managed_fields(mut object: Value) -> Value {
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    object
}

fn conflicts(err: ApplyError) -> Vec<Conflict> {
    match err {
        ApplyError::Conflict(conflicts) => conflicts,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn apply_creates_the_object_with_kubernetes_shaped_managed_fields() {
    let c = components();
    let created =
        server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap();
    assert_eq!(without_managed_fields(created.clone()), config(2, "nginx:1.25"));
    assert_eq!(
        managed_fields(&created),
        &vec![json!({
            "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": NOW,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:selector": {},
                    "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}}}}}}}}
            }
        })]
    );
}

#[test]
fn reapplying_the_same_configuration_changes_nothing() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let again = server_side_apply(
        Some(&live),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(
        again, live,
        "a no-op apply keeps the object and the manager's time"
    );
}

#[test]
fn reapply_by_the_same_manager_changes_values_without_conflict() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let applied = server_side_apply(
        Some(&live),
        &config(5, "nginx:1.26"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(applied["spec"]["replicas"], json!(5));
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("nginx:1.26")
    );
    assert_eq!(entry_of(&applied, "kubectl").unwrap()["time"], json!(LATER));
    // Server-owned fields survive an apply that does not mention them.
    assert_eq!(applied["metadata"]["uid"], json!("u-1"));
    assert_eq!(applied["status"], json!({"replicas": 2}));
}

#[test]
fn reapply_without_a_field_removes_it() {
    let c = components();
    let mut first = config(2, "nginx:1.25");
    first["metadata"]["labels"]["tier"] = json!("fe");
    first["spec"]["minReadySeconds"] = json!(5);
    first["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox"}));
    let live = stored(server_side_apply(None, &first, "kubectl", false, schema(&c), NOW).unwrap());

    let applied = server_side_apply(
        Some(&live),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(applied["metadata"]["labels"], json!({"app": "web"}));
    assert!(applied["spec"].get("minReadySeconds").is_none());
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        fields_of(&applied, "kubectl"),
        fields_of(
            &server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap(),
            "kubectl"
        )
    );
}

#[test]
fn removed_field_stays_when_another_manager_also_owns_it() {
    let c = components();
    let mut first = config(2, "nginx:1.25");
    first["metadata"]["labels"]["tier"] = json!("fe");
    let live = stored(server_side_apply(None, &first, "kubectl", false, schema(&c), NOW).unwrap());
    // A second manager applies the same label value: now both own it.
    let shared = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"tier": "fe"}}});
    let live = server_side_apply(Some(&live), &shared, "labeller", false, schema(&c), NOW).unwrap();
    assert_eq!(
        fields_of(&live, "labeller"),
        json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );

    let applied = server_side_apply(
        Some(&live),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(applied["metadata"]["labels"], json!({"app": "web", "tier": "fe"}));
}

#[test]
fn removing_the_last_label_removes_the_emptied_map() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let mut next = config(2, "nginx:1.25");
    next["metadata"].as_object_mut().unwrap().remove("labels");
    let applied = server_side_apply(Some(&live), &next, "kubectl", false, schema(&c), LATER).unwrap();
    assert!(
        applied["metadata"].get("labels").is_none(),
        "{}",
        applied["metadata"]
    );
    assert_eq!(applied["metadata"]["name"], json!("web"));
}

#[test]
fn apply_conflicts_with_a_client_side_apply_owner() {
    let c = components();
    // kubectl apply (client-side) created the object: an Update by kubectl-client-side-apply.
    let mut live = stored(config(2, "nginx:1.25"));
    track_update(None, &mut live, "kubectl-client-side-apply", schema(&c), NOW);

    let err = server_side_apply(
        Some(&live),
        &config(3, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap_err();
    assert_eq!(err.status_code(), 409);
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    let conflicts = conflicts(err);
    assert_eq!(conflicts[0].field, ".spec.replicas");
    assert_eq!(conflicts[0].manager, "kubectl-client-side-apply");
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let c = components();
    let mut live = stored(config(2, "nginx:1.25"));
    track_update(None, &mut live, "kubectl-create", schema(&c), NOW);
    let err = server_side_apply(
        Some(&live),
        &config(3, "nginx:1.26"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using apps/v1:\n\
         - .spec.replicas\n\
         - .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn applying_values_equal_to_live_shares_ownership() {
    let c = components();
    let mut live = stored(config(2, "nginx:1.25"));
    track_update(None, &mut live, "kubectl-client-side-apply", schema(&c), NOW);
    let applied = server_side_apply(
        Some(&live),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(
        without_managed_fields(applied.clone()),
        without_managed_fields(live.clone())
    );
    assert!(
        fields_of(&applied, "kubectl")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
    assert!(
        fields_of(&applied, "kubectl-client-side-apply")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
}

#[test]
fn force_takes_ownership() {
    let c = components();
    let mut live = stored(config(2, "nginx:1.25"));
    track_update(None, &mut live, "kubectl-client-side-apply", schema(&c), NOW);
    let applied = server_side_apply(
        Some(&live),
        &config(3, "nginx:1.25"),
        "kubectl",
        true,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(applied["spec"]["replicas"], json!(3));
    assert!(
        fields_of(&applied, "kubectl")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
    let previous_owner = fields_of(&applied, "kubectl-client-side-apply");
    assert!(
        previous_owner["f:spec"].get("f:replicas").is_none(),
        "{previous_owner}"
    );
    assert!(
        previous_owner["f:spec"].get("f:selector").is_some(),
        "only the conflicting field moves"
    );
    // Now the old owner's client-side write of replicas no longer conflicts the other way round: the
    // applier re-applying is fine.
    server_side_apply(
        Some(&applied),
        &config(4, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
}

#[test]
fn an_update_takes_fields_so_the_next_apply_conflicts() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    // kubectl edit changes the image.
    let mut edited = live.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:edited");
    track_update(Some(&live), &mut edited, "kubectl-edit", schema(&c), LATER);
    let edit_fields = fields_of(&edited, "kubectl-edit");
    assert_eq!(
        edit_fields,
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {"f:image": {}}}}}}})
    );
    let apply_fields = fields_of(&edited, "kubectl");
    assert!(
        apply_fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
            .get("f:image")
            .is_none()
    );

    let err = server_side_apply(
        Some(&edited),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: \
         .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn kubectl_label_owns_its_label() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let mut labelled = crate::merge_patch(&live, &json!({"metadata": {"labels": {"env": "prod"}}})).unwrap();
    track_update(Some(&live), &mut labelled, "kubectl-label", schema(&c), LATER);
    let entry = entry_of(&labelled, "kubectl-label").unwrap();
    assert_eq!(
        entry,
        &json!({"manager": "kubectl-label", "operation": "Update", "apiVersion": "apps/v1", "time": LATER,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:env": {}}}}})
    );
    // Apply entries sort before Update entries.
    assert_eq!(managed_fields(&labelled)[0]["manager"], json!("kubectl"));

    // The applier does not mention env, so it keeps; a config that sets it differently conflicts.
    let applied = server_side_apply(
        Some(&labelled),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(applied["metadata"]["labels"]["env"], json!("prod"));
    let mut other = config(2, "nginx:1.25");
    other["metadata"]["labels"]["env"] = json!("dev");
    let err = server_side_apply(Some(&labelled), &other, "kubectl", false, schema(&c), LATER).unwrap_err();
    assert_eq!(conflicts(err)[0].field, ".metadata.labels.env");
}

#[test]
fn update_that_removes_a_field_takes_it_from_its_owner() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let mut unlabelled = crate::merge_patch(&live, &json!({"metadata": {"labels": {"app": null}}})).unwrap();
    track_update(Some(&live), &mut unlabelled, "kubectl-label", schema(&c), LATER);
    assert!(
        entry_of(&unlabelled, "kubectl-label").is_none(),
        "a pure removal takes no fields"
    );
    assert!(
        fields_of(&unlabelled, "kubectl")["f:metadata"].is_null(),
        "{}",
        fields_of(&unlabelled, "kubectl")
    );
}

#[test]
fn update_that_changes_nothing_records_nothing() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let mut same = live.clone();
    same["metadata"]["resourceVersion"] = json!("8");
    same["status"] = json!({"replicas": 9});
    track_update(Some(&live), &mut same, "kubectl-edit", schema(&c), LATER);
    assert_eq!(managed_fields(&same), managed_fields(&live));
}

#[test]
fn create_tracks_every_field() {
    let c = components();
    let mut created = stored(config(2, "nginx:1.25"));
    track_update(None, &mut created, "kubectl-create", schema(&c), NOW);
    let fields = fields_of(&created, "kubectl-create");
    assert_eq!(
        fields,
        // As kube-apiserver records a `kubectl create deployment`: struct fields every Deployment has
        // (spec, template, containers) are not members of their own; maps and lists that were added are.
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}
        })
    );
}

#[test]
fn repeated_updates_accumulate_in_one_entry() {
    let c = components();
    let mut live = stored(config(2, "nginx:1.25"));
    track_update(None, &mut live, "kubectl-create", schema(&c), NOW);
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(3);
    track_update(Some(&live), &mut scaled, "kubectl-edit", schema(&c), NOW);
    let mut relabelled = scaled.clone();
    relabelled["metadata"]["labels"]["x"] = json!("y");
    track_update(Some(&scaled), &mut relabelled, "kubectl-edit", schema(&c), LATER);
    let edit = entry_of(&relabelled, "kubectl-edit").unwrap();
    assert_eq!(edit["time"], json!(LATER));
    assert_eq!(
        edit["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:x": {}}}, "f:spec": {"f:replicas": {}}})
    );
    assert_eq!(managed_fields(&relabelled).len(), 2);
}

#[test]
fn first_apply_to_an_untracked_object_conflicts_with_before_first_apply() {
    let c = components();
    let live = stored(config(2, "nginx:1.25"));
    let err = server_side_apply(
        Some(&live),
        &config(3, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
    );
    let applied = server_side_apply(
        Some(&live),
        &config(2, "nginx:1.25"),
        "kubectl",
        false,
        schema(&c),
        NOW,
    )
    .unwrap();
    assert!(entry_of(&applied, "before-first-apply").is_some());
}

#[test]
fn list_maps_merge_by_key_and_keep_other_managers_elements() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "log", "image": "busybox"}]}}}});
    let both = server_side_apply(Some(&live), &sidecar, "injector", false, schema(&c), NOW).unwrap();
    let names: Vec<&Value> = both["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("nginx"), &json!("log")]);
    assert_eq!(
        both["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80}])
    );

    // The first manager re-applies its own config: the injected container stays.
    let again = server_side_apply(
        Some(&both),
        &config(2, "nginx:1.26"),
        "kubectl",
        false,
        schema(&c),
        LATER,
    )
    .unwrap();
    assert_eq!(
        again["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The injector stops applying its container: it goes.
    let mut empty = sidecar.clone();
    empty["spec"]["template"]["spec"]["containers"] = json!([]);
    let removed = server_side_apply(Some(&again), &empty, "injector", false, schema(&c), LATER).unwrap();
    let names: Vec<&Value> = removed["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("nginx")]);
}

#[test]
fn new_configured_elements_follow_their_configured_neighbour() {
    let c = components();
    let mut first = config(2, "a");
    first["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]);
    let live = server_side_apply(None, &first, "kubectl", false, schema(&c), NOW).unwrap();
    let mut next = first.clone();
    next["spec"]["template"]["spec"]["containers"] = json!([{"name": "a", "image": "a"}, {"name": "x", "image": "x"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]);
    let applied = server_side_apply(Some(&live), &next, "kubectl", false, schema(&c), NOW).unwrap();
    let names: Vec<&Value> = applied["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("a"), &json!("x"), &json!("b"), &json!("c")]);
}

#[test]
fn atomic_values_are_replaced_and_owned_whole() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let mut next = config(2, "nginx:1.25");
    next["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    next["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["nginx", "-g"]);
    let applied = server_side_apply(Some(&live), &next, "kubectl", false, schema(&c), NOW).unwrap();
    assert_eq!(
        applied["spec"]["selector"],
        json!({"matchLabels": {"app": "web", "v": "2"}})
    );
    let nginx = &fields_of(&applied, "kubectl")["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert_eq!(nginx["f:command"], json!({}));
    assert_eq!(fields_of(&applied, "kubectl")["f:spec"]["f:selector"], json!({}));
}

#[test]
fn sets_are_owned_element_by_element() {
    let c = components();
    let with_finalizers = |list: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "finalizers": list}});
    let live = server_side_apply(
        None,
        &with_finalizers(json!(["a"])),
        "one",
        false,
        schema(&c),
        NOW,
    )
    .unwrap();
    let both = server_side_apply(
        Some(&live),
        &with_finalizers(json!(["b"])),
        "two",
        false,
        schema(&c),
        NOW,
    )
    .unwrap();
    assert_eq!(both["metadata"]["finalizers"], json!(["a", "b"]));
    assert_eq!(
        fields_of(&both, "two"),
        json!({"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}})
    );
    let mut none = with_finalizers(json!([]));
    none["metadata"].as_object_mut().unwrap().remove("finalizers");
    let dropped = server_side_apply(Some(&both), &none, "one", false, schema(&c), NOW).unwrap();
    assert_eq!(dropped["metadata"]["finalizers"], json!(["b"]));
}

#[test]
fn invalid_configurations_are_rejected() {
    let c = components();
    let cases = [
        json!([1, 2]),
        json!({"metadata": {"managedFields": [{"manager": "x"}]}}),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}}),
    ];
    for applied in cases {
        let err = server_side_apply(None, &applied, "kubectl", false, schema(&c), NOW).unwrap_err();
        assert!(matches!(err, ApplyError::Invalid(_)), "{applied}: {err:?}");
        assert_eq!(err.status_code(), 400);
    }
    // An explicitly empty managedFields is allowed (kubectl strips it to that).
    let ok = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "managedFields": []}});
    server_side_apply(None, &ok, "kubectl", false, schema(&c), NOW).unwrap();
}

#[test]
fn server_owned_fields_are_neither_applied_nor_managed() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap());
    let mut sneaky = config(2, "nginx:1.25");
    sneaky["metadata"]["uid"] = json!("other");
    sneaky["metadata"]["resourceVersion"] = json!("1");
    sneaky["status"] = json!({"replicas": 100});
    let applied = server_side_apply(Some(&live), &sneaky, "kubectl", false, schema(&c), NOW).unwrap();
    assert_eq!(applied["metadata"]["uid"], json!("u-1"));
    assert_eq!(applied["metadata"]["resourceVersion"], json!("7"));
    assert_eq!(applied["status"], json!({"replicas": 2}));
    let fields = fields_of(&applied, "kubectl");
    assert!(
        fields.get("f:status").is_none() && fields["f:metadata"].get("f:uid").is_none(),
        "{fields}"
    );
}

#[test]
fn without_a_schema_objects_merge_and_lists_are_atomic() {
    let crd = |items: Value| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 1, "items": items}})
    };
    let live = server_side_apply(None, &crd(json!([1, 2])), "kubectl", false, None, NOW).unwrap();
    assert_eq!(
        fields_of(&live, "kubectl"),
        json!({"f:spec": {".": {}, "f:items": {}, "f:size": {}}})
    );
    let mut edited = live.clone();
    edited["spec"]["items"] = json!([3]);
    track_update(Some(&live), &mut edited, "editor", None, NOW);
    let err = server_side_apply(Some(&edited), &crd(json!([1, 2])), "kubectl", false, None, NOW).unwrap_err();
    assert_eq!(conflicts(err)[0].field, ".spec.items");
}

#[test]
fn conflicts_with_another_applier_name_it_without_version() {
    let c = components();
    let live =
        stored(server_side_apply(None, &config(2, "nginx:1.25"), "one", false, schema(&c), NOW).unwrap());
    let err = server_side_apply(
        Some(&live),
        &config(3, "nginx:1.25"),
        "two",
        false,
        schema(&c),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"one\": .spec.replicas"
    );
    let conflict = &conflicts(err)[0];
    assert_eq!(
        (conflict.operation.as_str(), conflict.api_version.as_str()),
        ("Apply", "apps/v1")
    );
}

#[test]
fn a_null_in_the_configuration_removes_the_field() {
    let c = components();
    let mut first = config(2, "nginx:1.25");
    first["spec"]["paused"] = json!(true);
    let live = stored(server_side_apply(None, &first, "kubectl", false, schema(&c), NOW).unwrap());
    let mut next = config(2, "nginx:1.25");
    next["spec"]["paused"] = Value::Null;
    let applied = server_side_apply(Some(&live), &next, "kubectl", false, schema(&c), LATER).unwrap();
    assert!(applied["spec"].get("paused").is_none(), "{}", applied["spec"]);
}

#[test]
fn port_keys_default_their_protocol_even_when_the_schema_does_not_say() {
    // Schemas generated from k8s-openapi carry no `default: TCP` on ports' protocol.
    let mut c = components();
    let port = c.get_mut("io.k8s.api.core.v1.ContainerPort").unwrap();
    port["properties"]["protocol"]
        .as_object_mut()
        .unwrap()
        .remove("default");
    let created =
        server_side_apply(None, &config(2, "nginx:1.25"), "kubectl", false, schema(&c), NOW).unwrap();
    let nginx = &fields_of(&created, "kubectl")["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert!(
        nginx["f:ports"]
            .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
            .is_some(),
        "{nginx}"
    );
    // An explicit UDP port is another element.
    let mut udp = config(2, "nginx:1.25");
    udp["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]);
    let both = server_side_apply(Some(&created), &udp, "kubectl", false, schema(&c), NOW).unwrap();
    assert_eq!(
        both["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn configuration_order_wins_for_shared_elements() {
    let c = components();
    let with = |names: &[&str]| {
        let mut cfg = config(2, "x");
        cfg["spec"]["template"]["spec"]["containers"] =
            Value::Array(names.iter().map(|n| json!({"name": n, "image": n})).collect());
        cfg
    };
    let live = server_side_apply(None, &with(&["a", "b"]), "kubectl", false, schema(&c), NOW).unwrap();
    let live = server_side_apply(Some(&live), &with(&["x"]), "injector", false, schema(&c), NOW).unwrap();
    let names = |o: &Value| -> Vec<String> {
        o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&live), ["a", "b", "x"]);
    let swapped =
        server_side_apply(Some(&live), &with(&["b", "a"]), "kubectl", false, schema(&c), NOW).unwrap();
    // structured-merge-diff's merge: shared elements in the configuration's order, a live-only element
    // after the shared element it followed.
    assert_eq!(names(&swapped), ["b", "x", "a"]);
}
