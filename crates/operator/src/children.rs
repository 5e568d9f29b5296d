//! What a cloud placement becomes: a Deployment per track (stable and,
//! during a canary, canary) with `runtimeClassName: weft`, and a Service in
//! front of both; what an edge placement becomes: an assignment in each
//! chosen device's spec.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, HTTPGetAction, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use weft_crd::{Assignment, ModelDeployment, Placement, Tier};

pub const MANAGED_BY: &str = "weft-operator";
pub const LABEL_DEPLOYMENT: &str = "weft.dev/deployment";
pub const LABEL_PLACEMENT: &str = "weft.dev/placement";
pub const LABEL_TRACK: &str = "weft.dev/track";
pub const ANNOTATION_DIGEST: &str = "weft.dev/digest";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Stable,
    Canary,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }
}

pub fn deployment_name(md: &str, placement: &str, track: Track) -> String {
    match track {
        Track::Stable => format!("{md}-{placement}"),
        Track::Canary => format!("{md}-{placement}-canary"),
    }
}

fn labels(md: &str, placement: &str, track: Option<Track>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), md.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (LABEL_DEPLOYMENT.to_string(), md.to_string()),
        (LABEL_PLACEMENT.to_string(), placement.to_string()),
    ]);
    if let Some(t) = track {
        l.insert(LABEL_TRACK.to_string(), t.as_str().to_string());
    }
    l
}

/// One track's Deployment of a cloud placement.
pub fn deployment(
    md: &ModelDeployment,
    owner: &OwnerReference,
    p: &Placement,
    track: Track,
    image: &str,
    digest: &str,
    replicas: u32,
) -> Deployment {
    let name = md.metadata.name.clone().unwrap_or_default();
    let ns = md.metadata.namespace.clone();
    let labels = labels(&name, &p.name, Some(track));
    let mut node_selector = p.node_selector.clone();
    if let Some(arch) = &p.architecture {
        node_selector.insert("kubernetes.io/arch".into(), arch.clone());
    }
    // Edge placements' pods go to edge nodes; cloud ones never do.
    let affinity = match p.tier {
        Tier::Edge => {
            node_selector.insert(crate::targets::TIER.into(), "edge".into());
            None
        }
        Tier::Cloud => Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: crate::targets::TIER.into(),
                            operator: "NotIn".into(),
                            values: Some(vec!["edge".into()]),
                        }]),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(r) = &md.spec.resources {
        if let Some(m) = &r.memory {
            limits.insert("memory".to_string(), Quantity(m.clone()));
            requests.insert("memory".to_string(), Quantity(m.clone()));
        }
        if let Some(c) = &r.cpu {
            limits.insert("cpu".to_string(), Quantity(c.clone()));
            requests.insert("cpu".to_string(), Quantity(c.clone()));
        }
    }
    if let Some(a) = &p.accelerator
        && a.required
    {
        limits.insert(a.kind.clone(), Quantity("1".into()));
    }
    let mut tolerations: Vec<Toleration> = p
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            ..Default::default()
        })
        .collect();
    if let Some(a) = p.accelerator.as_ref().filter(|a| a.required)
        && !tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(&a.kind))
    {
        // Accelerator nodes are commonly tainted with their resource name.
        tolerations.push(Toleration {
            key: Some(a.kind.clone()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    let model = md.spec.model_name.clone().unwrap_or_else(|| name.clone());
    let spread = p.spread.then(|| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(self::labels(&name, &p.name, None)),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(&name, &p.name, track)),
            namespace: ns,
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_DIGEST.to_string(),
                digest.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas as i32),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_DIGEST.to_string(),
                        digest.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    runtime_class_name: Some("weft".into()),
                    affinity,
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    topology_spread_constraints: spread,
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    containers: vec![Container {
                        name: "model".into(),
                        image: Some(image.into()),
                        env: Some(vec![EnvVar {
                            name: "WEFT_MODEL_NAME".into(),
                            value: Some(model),
                            ..Default::default()
                        }]),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: i32::from(md.spec.port),
                            ..Default::default()
                        }]),
                        resources: Some(ResourceRequirements {
                            limits: (!limits.is_empty()).then_some(limits),
                            requests: (!requests.is_empty()).then_some(requests),
                            ..Default::default()
                        }),
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some("/v2/health/ready".into()),
                                port: IntOrString::String("http".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Service in front of both tracks of a cloud placement.
pub fn service(md: &ModelDeployment, owner: &OwnerReference, p: &Placement) -> Service {
    let name = md.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: ObjectMeta {
            name: Some(deployment_name(&name, &p.name, Track::Stable)),
            namespace: md.metadata.namespace.clone(),
            labels: Some(labels(&name, &p.name, None)),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                (LABEL_DEPLOYMENT.to_string(), name.clone()),
                (LABEL_PLACEMENT.to_string(), p.name.clone()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(md.spec.port),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// What an edge device is told to run for a placement.
pub fn assignment(md: &ModelDeployment, image: &str) -> Assignment {
    let name = md.metadata.name.clone().unwrap_or_default();
    Assignment {
        artifact: image.into(),
        port: md.spec.port,
        model_name: md.spec.model_name.clone().unwrap_or_else(|| name.clone()),
        deployment: Some(name),
        memory: md.spec.resources.as_ref().and_then(|r| r.memory.clone()),
        health: md.spec.health.clone(),
    }
}
