//! A fake Kubernetes API server on a real socket: it records every request (method, path,
//! query, body) and answers from an in-memory object store, enough of the API for the target:
//! server-side apply (PATCH), get, list by label selector, the scale subresource, delete, and
//! pods derived from Deployments. Deployment status moves like a cluster's would: a changed
//! spec is observed at once, its pods become ready one GET later (unless the Deployment is
//! marked stuck or failing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service as KubeService};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
}

impl Call {
    /// `METHOD path` with the namespace prefix cut, e.g. `PATCH deployments/web-1-2-0`.
    pub fn short(&self) -> String {
        let rest = self
            .path
            .split_once("/namespaces/")
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(_, r)| r.to_string())
            .unwrap_or_else(|| self.path.clone());
        format!("{} {rest}", self.method)
    }
}

#[derive(Default)]
struct Store {
    /// Objects by their API path.
    objects: BTreeMap<String, Value>,
    /// Deployments (by path) whose next GET still shows their old readiness.
    pending: BTreeMap<String, u32>,
    calls: Vec<Call>,
    /// Deployment names whose pods never become ready (crash-looping).
    stuck: BTreeSet<String>,
    /// Deployment names that exceed their progress deadline.
    failing: BTreeSet<String>,
    /// Restart counts of running pods per Deployment name: a flapping Deployment's pods stay
    /// ready but restart once more at every pod list (a canary that crashes under traffic).
    restarts: BTreeMap<String, i64>,
    /// How many of the next requests fail with 503 (an API server restarting).
    unavailable: u32,
    next_uid: u64,
}

#[derive(Clone)]
pub struct FakeApi {
    pub url: String,
    store: Arc<Mutex<Store>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let store = Arc::new(Mutex::new(Store::default()));
        let app = Router::new().fallback(handle).with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi {
            url: format!("http://{addr}"),
            store,
        }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        ouro_deploy_kube::client(config).expect("client")
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("store")
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    pub fn stuck(&self, deployment: &str) {
        self.lock().stuck.insert(deployment.to_string());
    }

    pub fn failing(&self, deployment: &str) {
        self.lock().failing.insert(deployment.to_string());
    }

    /// The Deployment's pods restart once more at every pod list from now on.
    pub fn flapping(&self, deployment: &str) {
        self.lock().restarts.insert(deployment.to_string(), 0);
    }

    pub fn unavailable_for(&self, requests: u32) {
        self.lock().unavailable = requests;
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Ready pods per version slug among the pods the Service selects (what gets traffic).
    pub fn ready_pods_behind(&self, namespace: &str, service: &str) -> BTreeMap<String, i64> {
        let store = self.lock();
        let svc = store.objects.get(&format!(
            "/api/v1/namespaces/{namespace}/services/{service}"
        ));
        let Some(selector) = svc.and_then(|s| s.pointer("/spec/selector")).cloned() else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for pod in pods(&store, namespace) {
            let labels = &pod["metadata"]["labels"];
            let matches = selector
                .as_object()
                .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v));
            let ready = pod["status"]["conditions"][0]["status"] == "True";
            if matches && ready {
                let version = labels["ouro.dev/version"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                *out.entry(version).or_insert(0) += 1;
            }
        }
        out
    }
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn label_selector(query: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("labelSelector=") {
            let decoded = v
                .replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%2C", ",");
            for term in decoded.split(',') {
                if let Some((k, v)) = term.split_once('=') {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    out
}

fn matches(labels: &Value, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels[k].as_str() == Some(v))
}

/// The pods a cluster would run for the namespace's Deployments.
fn pods(store: &Store, namespace: &str) -> Vec<Value> {
    let prefix = format!("/apis/apps/v1/namespaces/{namespace}/deployments/");
    let mut out = Vec::new();
    for (path, d) in &store.objects {
        let Some(name) = path.strip_prefix(&prefix) else {
            continue;
        };
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
        let stuck = store.stuck.contains(name);
        let template = &d["spec"]["template"]["metadata"];
        for i in 0..replicas {
            let is_ready = i < ready;
            let mut container = json!({
                "name": "app", "image": "debian:stable-slim", "imageID": "", "ready": is_ready,
                "restartCount": if stuck { 4 } else { store.restarts.get(name).copied().unwrap_or(0) },
                "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } },
            });
            if stuck {
                container["state"] = json!({ "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 40s restarting failed container=app",
                }});
            }
            out.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("{name}-5d8f7c9b4-{i}"),
                    "namespace": namespace,
                    "labels": template["labels"].clone(),
                    "annotations": template["annotations"].clone(),
                },
                "status": {
                    "phase": "Running",
                    "conditions": [{ "type": "Ready", "status": if is_ready { "True" } else { "False" } }],
                    "containerStatuses": [container],
                },
            }));
        }
    }
    out
}

/// A Deployment's status after its spec (generation) changed: observed, not ready yet.
fn fresh_status(d: &mut Value, failing: bool) {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = d["status"]["readyReplicas"]
        .as_i64()
        .unwrap_or(0)
        .min(replicas);
    let generation = d["metadata"]["generation"].clone();
    let progressing = if failing {
        json!({ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing." })
    } else {
        json!({ "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                "message": "ReplicaSet is progressing." })
    };
    d["status"] = json!({
        "observedGeneration": generation,
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [progressing],
    });
}

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let Ok(mut store) = store.lock() else {
        return status(500, "InternalError", "store poisoned".into());
    };
    store.calls.push(Call {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: parsed.clone(),
    });
    if store.unavailable > 0 {
        store.unavailable -= 1;
        return status(503, "ServiceUnavailable", "the server is restarting".into());
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // .../namespaces/{ns}/{resource}[/{name}[/scale]]
    let Some(ns_at) = segments.iter().position(|s| *s == "namespaces") else {
        return status(404, "NotFound", format!("no route {path}"));
    };
    let namespace = segments.get(ns_at + 1).copied().unwrap_or("").to_string();
    let resource = segments.get(ns_at + 2).copied().unwrap_or("");
    let name = segments.get(ns_at + 3).copied();
    let sub = segments.get(ns_at + 4).copied();
    let object_path = match name {
        Some(n) => {
            segments[..ns_at + 3]
                .iter()
                .map(|s| format!("/{s}"))
                .collect::<String>()
                + "/"
                + n
        }
        None => path.clone(),
    };

    match (method.as_str(), name, sub) {
        ("GET", None, _) => {
            let selector = label_selector(&query);
            let items: Vec<Value> = if resource == "pods" {
                for n in store.restarts.values_mut() {
                    *n += 1;
                }
                pods(&store, &namespace)
                    .into_iter()
                    .filter(|p| matches(&p["metadata"]["labels"], &selector))
                    .collect()
            } else {
                let prefix = format!("{path}/");
                store
                    .objects
                    .iter()
                    .filter(|(p, o)| {
                        p.starts_with(&prefix) && matches(&o["metadata"]["labels"], &selector)
                    })
                    .map(|(_, o)| o.clone())
                    .collect()
            };
            let kind = match resource {
                "pods" => "PodList",
                "deployments" => "DeploymentList",
                "services" => "ServiceList",
                _ => "List",
            };
            axum::Json(json!({
                "apiVersion": if resource == "deployments" { "apps/v1" } else { "v1" },
                "kind": kind, "metadata": { "resourceVersion": "1" }, "items": items,
            }))
            .into_response()
        }
        ("GET", Some(n), None) => {
            let pending = store.pending.get(&object_path).copied().unwrap_or(0);
            let stuck = store.stuck.contains(n);
            let Some(object) = store.objects.get_mut(&object_path) else {
                return status(404, "NotFound", format!("{resource} \"{n}\" not found"));
            };
            if resource == "deployments" {
                if pending > 0 {
                    store.pending.insert(object_path.clone(), pending - 1);
                } else if !stuck {
                    let replicas = object["spec"]["replicas"].clone();
                    object["status"]["readyReplicas"] = replicas.clone();
                    object["status"]["availableReplicas"] = replicas;
                }
            }
            let object = store
                .objects
                .get(&object_path)
                .cloned()
                .unwrap_or(Value::Null);
            axum::Json(object).into_response()
        }
        ("PATCH", Some(n), None) => {
            if !headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("application/apply-patch"))
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    "only server-side apply here".into(),
                );
            }
            let Some(mut applied) = parsed else {
                return status(400, "BadRequest", "body is not JSON".into());
            };
            // As the API server: an apply body names its type, and must read as that type.
            let (api_version, kind, typed) = match resource {
                "deployments" => (
                    "apps/v1",
                    "Deployment",
                    serde_json::from_value::<Deployment>(applied.clone()).is_ok(),
                ),
                "services" => (
                    "v1",
                    "Service",
                    serde_json::from_value::<KubeService>(applied.clone()).is_ok(),
                ),
                "secrets" => (
                    "v1",
                    "Secret",
                    serde_json::from_value::<Secret>(applied.clone()).is_ok(),
                ),
                _ => return status(404, "NotFound", format!("no resource {resource}")),
            };
            if applied["apiVersion"] != api_version || applied["kind"] != kind || !typed {
                return status(422, "Invalid", format!("not a {api_version} {kind}"));
            }
            if applied["metadata"]["name"].as_str() != Some(n) {
                return status(400, "BadRequest", "name in body and path differ".into());
            }
            let old = store.objects.get(&object_path).cloned();
            store.next_uid += 1;
            let uid = store.next_uid;
            let generation = match &old {
                Some(o) if o["spec"] == applied["spec"] => {
                    o["metadata"]["generation"].as_i64().unwrap_or(1)
                }
                Some(o) => o["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
                None => 1,
            };
            applied["metadata"]["generation"] = json!(generation);
            applied["metadata"]["uid"] = old
                .as_ref()
                .map(|o| o["metadata"]["uid"].clone())
                .unwrap_or(json!(format!("uid-{uid}")));
            applied["metadata"]["resourceVersion"] = json!(uid.to_string());
            if resource == "deployments" {
                let changed = old.as_ref().is_none_or(|o| o["spec"] != applied["spec"]);
                if let Some(o) = &old {
                    applied["status"] = o["status"].clone();
                }
                if changed {
                    fresh_status(&mut applied, store.failing.contains(n));
                    store.pending.insert(object_path.clone(), 1);
                }
            }
            store.objects.insert(object_path, applied.clone());
            let code = if old.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (code, axum::Json(applied)).into_response()
        }
        ("PATCH", Some(n), Some("scale")) => {
            let Some(replicas) = parsed.as_ref().and_then(|b| b["spec"]["replicas"].as_i64())
            else {
                return status(400, "BadRequest", "spec.replicas missing".into());
            };
            let failing = store.failing.contains(n);
            let Some(d) = store.objects.get_mut(&object_path) else {
                return status(
                    404,
                    "NotFound",
                    format!("deployments.apps \"{n}\" not found"),
                );
            };
            if d["spec"]["replicas"].as_i64() != Some(replicas) {
                d["spec"]["replicas"] = json!(replicas);
                let generation = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                d["metadata"]["generation"] = json!(generation);
                fresh_status(d, failing);
                store.pending.insert(object_path.clone(), 1);
            }
            axum::Json(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": { "name": n, "namespace": namespace },
                "spec": { "replicas": replicas },
                "status": { "replicas": replicas },
            }))
            .into_response()
        }
        ("DELETE", Some(n), None) => {
            if store.objects.remove(&object_path).is_none() {
                return status(404, "NotFound", format!("{resource} \"{n}\" not found"));
            }
            status(200, "", format!("{n} deleted"))
        }
        _ => status(405, "MethodNotAllowed", format!("{method} {path}")),
    }
}
