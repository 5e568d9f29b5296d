//! An in-memory Kubernetes API server behind kube-rs's `tower_test` mock
//! service: the operator and the agent's cluster source talk to it through
//! a real `kube::Client`, and tests look at both the requests they sent and
//! the objects that resulted.
//!
//! It stores objects by path and answers what these programs use: GET of
//! an object or a list (with equality label selectors), POST, PUT, DELETE
//! (finalizers respected), and PATCH as server-side apply, JSON merge patch
//! or JSON patch, on objects and their `/status`. It is not a real API
//! server (no validation, no watches, apply merges instead of tracking
//! field managers); no Kubernetes API server can run on the development
//! machines, and `deploy/e2e-kind.sh` exercises the real one.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    version: u64,
    down: bool,
}

/// The fake server's handle (cheap to clone).
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// A parsed resource path.
struct Path {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    prefix: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    status: bool,
}

impl Path {
    fn parse(path: &str) -> Option<Path> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
            ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (resource, name, status) = match rest {
            [r] => (r.to_string(), None, false),
            [r, n] => (r.to_string(), Some(n.to_string()), false),
            [r, n, "status"] => (r.to_string(), Some(n.to_string()), true),
            _ => return None,
        };
        Some(Path {
            prefix,
            namespace,
            resource,
            name,
            status,
        })
    }

    fn item(&self, name: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{}/{name}", self.prefix, self.resource),
            None => format!("{}/{}/{name}", self.prefix, self.resource),
        }
    }

    fn matches(&self, key: &str) -> bool {
        let Some(p) = Path::parse(key) else {
            return false;
        };
        p.prefix == self.prefix
            && p.resource == self.resource
            && (self.namespace.is_none() || p.namespace == self.namespace)
    }
}

fn status_body(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `a=b,c=d` against an object's labels.
fn selected(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => {
                obj["metadata"]["labels"][k.trim_end_matches('=')].as_str()
                    == Some(v.trim_start_matches('='))
            }
            None => !obj["metadata"]["labels"][term].is_null(),
        })
}

fn query_param(uri: &http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(n) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(n);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeApi {
    /// A client and the server behind it (needs a tokio runtime).
    pub fn start() -> (kube::Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi {
            state: Arc::new(Mutex::new(State::default())),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let (code, value) = server.handle(&parts, &bytes);
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        (kube::Client::new(service, "default"), api)
    }

    /// Store `obj` at `item` (an object path such as
    /// `/api/v1/nodes/n1`), as if someone had created it.
    pub fn put(&self, item: &str, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let meta = &mut obj["metadata"];
        meta["resourceVersion"] = json!(s.version.to_string());
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("uid-{}", s.version));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!(now());
        }
        if meta["generation"].is_null() {
            meta["generation"] = json!(1);
        }
        s.objects.insert(item.into(), obj);
    }

    pub fn get(&self, item: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(item).cloned()
    }

    pub fn remove(&self, item: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.remove(item)
    }

    /// Every stored object whose path starts with `prefix`.
    pub fn list(&self, prefix: &str) -> Vec<(String, Value)> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Answer every request with 503 (the API server is gone) or not.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    fn handle(&self, parts: &http::request::Parts, bytes: &[u8]) -> (StatusCode, Value) {
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(bytes)
                .or_else(|_| serde_yaml::from_slice(bytes))
                .unwrap_or(Value::Null)
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut s = self.state.lock().unwrap();
        s.requests.push(Recorded {
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if s.down {
            return status_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the API server is down".into(),
            );
        }
        let Some(path) = Path::parse(parts.uri.path()) else {
            return status_body(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no such path {}", parts.uri.path()),
            );
        };
        s.version += 1;
        let version = s.version.to_string();
        let not_found = |what: &str| {
            status_body(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{what} not found"),
            )
        };
        match (&parts.method, &path.name) {
            (&Method::GET, None) => {
                let selector = query_param(&parts.uri, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(k, v)| path.matches(k) && selected(v, &selector))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items}),
                )
            }
            (&Method::GET, Some(name)) => match s.objects.get(&path.item(name)) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => not_found(name),
            },
            (&Method::POST, None) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let key = path.item(&name);
                if s.objects.contains_key(&key) {
                    return status_body(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{name} already exists"),
                    );
                }
                let mut obj = body;
                let meta = &mut obj["metadata"];
                meta["resourceVersion"] = json!(version);
                meta["uid"] = json!(format!("uid-{version}"));
                meta["creationTimestamp"] = json!(now());
                meta["generation"] = json!(1);
                if let Some(ns) = &path.namespace {
                    meta["namespace"] = json!(ns);
                }
                s.objects.insert(key, obj.clone());
                (StatusCode::CREATED, obj)
            }
            (&Method::PUT, Some(name)) => {
                let key = path.item(name);
                let Some(old) = s.objects.get(&key).cloned() else {
                    return not_found(name);
                };
                // Optimistic concurrency: a stale resourceVersion conflicts.
                let sent = &body["metadata"]["resourceVersion"];
                if !sent.is_null() && *sent != old["metadata"]["resourceVersion"] {
                    return status_body(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("{name} was modified; read it again"),
                    );
                }
                let mut obj = if path.status {
                    let mut o = old.clone();
                    o["status"] = body["status"].clone();
                    o
                } else {
                    let mut o = body;
                    o["status"] = old["status"].clone();
                    o
                };
                bump(&old, &mut obj, &version);
                s.objects.insert(key, obj.clone());
                (StatusCode::OK, obj)
            }
            (&Method::PATCH, Some(name)) => {
                let key = path.item(name);
                let existing = s.objects.get(&key).cloned();
                let apply = content_type.contains("apply-patch");
                let Some(old) =
                    existing.or_else(|| apply.then(|| json!({"metadata": {"name": name}})))
                else {
                    return not_found(name);
                };
                let mut obj = old.clone();
                let patched = if content_type.contains("json-patch") {
                    // The API server treats a missing field as null in a
                    // `test` operation (kube's finalizer helper relies on it).
                    let ops: Vec<Value> = body
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|op| {
                            let path = op["path"].as_str().unwrap_or_default();
                            !(op["op"] == "test"
                                && op["value"].is_null()
                                && obj.pointer(path).is_none())
                        })
                        .collect();
                    serde_json::from_value::<json_patch::Patch>(Value::Array(ops))
                        .map_err(|e| e.to_string())
                        .and_then(|p| json_patch::patch(&mut obj, &p).map_err(|e| e.to_string()))
                } else {
                    // Server-side apply and merge patches both merge here.
                    let mut body = body;
                    if path.status {
                        body = json!({"status": body["status"].clone()});
                    }
                    json_patch::merge(&mut obj, &body);
                    Ok(())
                };
                if let Err(e) = patched {
                    return status_body(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e);
                }
                if let Some(ns) = &path.namespace {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                if old["metadata"]["uid"].is_null() {
                    obj["metadata"]["uid"] = json!(format!("uid-{version}"));
                    obj["metadata"]["creationTimestamp"] = json!(now());
                }
                bump(&old, &mut obj, &version);
                // Removing the last finalizer of a deleted object deletes it.
                let gone = !obj["metadata"]["deletionTimestamp"].is_null()
                    && obj["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty());
                if gone {
                    s.objects.remove(&key);
                } else {
                    s.objects.insert(key, obj.clone());
                }
                (StatusCode::OK, obj)
            }
            (&Method::DELETE, Some(name)) => {
                let key = path.item(name);
                let Some(mut obj) = s.objects.get(&key).cloned() else {
                    return not_found(name);
                };
                if obj["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
                {
                    obj["metadata"]["deletionTimestamp"] = json!(now());
                    s.objects.insert(key, obj.clone());
                    (StatusCode::OK, obj)
                } else {
                    s.objects.remove(&key);
                    (StatusCode::OK, obj)
                }
            }
            _ => status_body(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{} {}", parts.method, parts.uri),
            ),
        }
    }
}

/// New resourceVersion; a new generation when the spec changed.
fn bump(old: &Value, obj: &mut Value, version: &str) {
    obj["metadata"]["resourceVersion"] = json!(version);
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
    let changed = old["spec"] != obj["spec"];
    obj["metadata"]["generation"] = json!(if changed {
        generation + 1
    } else {
        generation.max(1)
    });
}
