//! `deploy/` checked offline against the Kubernetes API: every document is
//! deserialized into its `k8s-openapi` type and serialized back, and must
//! come back unchanged; a misspelled or misplaced field is dropped on the
//! way and fails the test with the document named.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_tests::repo_root;

fn round_trip<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// The first path where `want` has something `got` lacks or differs.
fn difference(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, v)| match g.get(k) {
            Some(gv) => difference(v, gv, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k} is not a field of the API type")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (a, b))| difference(a, b, &format!("{path}[{i}]"))),
        // YAML numbers and quantity strings may change form, not meaning.
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a))
            if a.to_string() == *b =>
        {
            None
        }
        _ if want == got => None,
        _ => Some(format!("{path}: {want} came back as {got}")),
    }
}

#[test]
fn every_manifest_matches_the_kubernetes_api_types() {
    let dir = repo_root().join("deploy");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let yaml = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: document {i}: {e}", path.display()));
            if yaml.is_null() {
                continue;
            }
            let doc: Value = serde_json::to_value(&yaml).unwrap();
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
            let back = match (api.as_str(), kind.as_str()) {
                ("node.k8s.io/v1", "RuntimeClass") => round_trip::<RuntimeClass>(&doc),
                ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(&doc),
                ("apps/v1", "Deployment") => round_trip::<Deployment>(&doc),
                ("v1", "Namespace") => round_trip::<Namespace>(&doc),
                ("v1", "Service") => round_trip::<Service>(&doc),
                ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(&doc),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(&doc),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    round_trip::<ClusterRoleBinding>(&doc)
                }
                ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(&doc),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(&doc),
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    round_trip::<CustomResourceDefinition>(&doc)
                }
                ("weft.dev/v1alpha1", "ModelDeployment") => {
                    round_trip::<weft_crd::ModelDeployment>(&doc)
                }
                ("weft.dev/v1alpha1", "EdgeDevice") => round_trip::<weft_crd::EdgeDevice>(&doc),
                _ => Err(format!("no API type known for {api} {kind}")),
            };
            let name = format!(
                "{} document {i} ({kind} {})",
                path.file_name().unwrap().to_string_lossy(),
                doc["metadata"]["name"]
            );
            let back = back.unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(d) = difference(&doc, &back, "") {
                panic!("{name}: {d}");
            }
            checked.push(kind);
        }
    }
    for want in [
        "RuntimeClass",
        "DaemonSet",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "CustomResourceDefinition",
        "ModelDeployment",
    ] {
        assert!(
            checked.iter().any(|k| k == want),
            "no {want} in deploy/: {checked:?}"
        );
    }
}

#[test]
fn the_runtime_class_only_schedules_onto_verified_nodes() {
    let text = std::fs::read_to_string(repo_root().join("deploy/runtimeclass.yaml")).unwrap();
    let rc: RuntimeClass = serde_yaml::from_str(&text).unwrap();
    assert_eq!(rc.handler, "weft");
    let selector = rc.scheduling.unwrap().node_selector.unwrap();
    assert_eq!(
        selector.get("weft.dev/runtime").map(String::as_str),
        Some("ready")
    );
    // The label the installer sets is the one the RuntimeClass selects.
    let installer = std::fs::read_to_string(repo_root().join("deploy/installer.yaml")).unwrap();
    assert!(installer.contains("weft.dev/runtime=ready"));
}

#[test]
fn the_difference_check_catches_a_misspelled_field() {
    let doc = serde_json::json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "x"}, "handler": "weft",
        "scheduling": {"nodeSelectr": {"a": "b"}}
    });
    let back = round_trip::<RuntimeClass>(&doc).unwrap();
    let d = difference(&doc, &back, "").expect("the typo must be caught");
    assert!(d.contains("nodeSelectr"), "{d}");
}
