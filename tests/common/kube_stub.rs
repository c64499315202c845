//! A small local stand-in for the Kubernetes API server: no real API server runs here, so the
//! tests that need pods, ReplicaSets and EndpointSlices talk to this, through a kubeconfig,
//! with the same client code the adapter uses in a cluster.
//!
//! What it does, and no more: `POST` of TokenReviews and SubjectAccessReviews answered by
//! closures the test sets (and counted), `GET` of one object by name, list (with a `resourceVersion` on the list and on every object),
//! watch (newline-delimited `ADDED`/`MODIFIED`/`DELETED` events, replayed from the requested
//! resourceVersion so nothing between list and watch is lost), namespaced and cluster-wide
//! collections, and `labelSelector` with `key=value` terms. It serves whole objects whatever the
//! `Accept` header asks (a real server would trim metadata-only requests; the client ignores the
//! extra fields either way) and records each request's path, query and `Accept` header so a test
//! can check what the adapter asked for. Anything else is a 404 `Status`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The collections the stub serves: (URL prefix before `namespaces/`, resource, list kind).
const COLLECTIONS: [(&str, &str, &str); 6] = [
    ("/api/v1", "pods", "PodList"),
    ("/api/v1", "configmaps", "ConfigMapList"),
    ("/apis/apps/v1", "replicasets", "ReplicaSetList"),
    ("/apis/apps/v1", "deployments", "DeploymentList"),
    ("/apis/apps/v1", "statefulsets", "StatefulSetList"),
    (
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSliceList",
    ),
];

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    resource: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// (resource, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Event>,
    requests: Vec<String>,
}

/// Answers a TokenReview's token with a `status.user` object, or `None` to reject it.
pub type TokenReviewer = Arc<dyn Fn(&str) -> Option<Value> + Send + Sync>;
/// Answers a SubjectAccessReview's `spec` with (allowed, reason).
pub type AccessReviewer = Arc<dyn Fn(&Value) -> (bool, String) + Send + Sync>;

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    token_reviewer: Mutex<Option<TokenReviewer>>,
    access_reviewer: Mutex<Option<AccessReviewer>>,
}

/// One recorded request: `GET <path>?<query> accept=<Accept>`.
pub type RequestLine = String;

/// The running stub.
pub struct KubeStub {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KubeStub {
    /// Starts the stub on 127.0.0.1 and writes a kubeconfig pointing at it.
    pub async fn start() -> KubeStub {
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            events,
            token_reviewer: Mutex::new(None),
            access_reviewer: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let dir = std::env::temp_dir().join(format!(
            "qma-kube-stub-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).expect("stub dir");
        let stub = KubeStub {
            addr,
            shared,
            dir,
            stop: Some(stop),
        };
        std::fs::write(stub.kubeconfig(), kubeconfig_text(addr)).expect("kubeconfig");
        stub
    }

    /// The kubeconfig file for this stub.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Creates or replaces an object of `resource` (`pods`, `replicasets`, `endpointslices`).
    pub fn apply(&self, resource: &str, mut object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let mut inner = self.shared.inner.lock().expect("lock");
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (resource.to_string(), ns, name);
        let kind = if inner.objects.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.publish(&mut inner, resource, kind, object);
    }

    /// Deletes an object, sending `DELETED` to watchers.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let mut inner = self.shared.inner.lock().expect("lock");
        let key = (
            resource.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        if let Some(mut object) = inner.objects.remove(&key) {
            inner.rv += 1;
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            self.publish(&mut inner, resource, "DELETED", object);
        }
    }

    fn publish(&self, inner: &mut Inner, resource: &str, kind: &'static str, object: Value) {
        let event = Event {
            rv: inner.rv,
            resource: resource.to_string(),
            kind,
            object,
        };
        inner.log.push(event.clone());
        let _ = self.shared.events.send(event);
    }

    /// Sets how TokenReviews are answered.
    pub fn review_tokens(&self, reviewer: impl Fn(&str) -> Option<Value> + Send + Sync + 'static) {
        *self.shared.token_reviewer.lock().expect("lock") = Some(Arc::new(reviewer));
    }

    /// Sets how SubjectAccessReviews are answered.
    pub fn review_access(
        &self,
        reviewer: impl Fn(&Value) -> (bool, String) + Send + Sync + 'static,
    ) {
        *self.shared.access_reviewer.lock().expect("lock") = Some(Arc::new(reviewer));
    }

    /// How many requests so far started with `prefix` (e.g. `POST /apis/authorization`).
    pub fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<RequestLine> {
        self.shared.inner.lock().expect("lock").requests.clone()
    }
}

impl Drop for KubeStub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A kubeconfig whose one cluster is the API server at `addr` (plain HTTP, a token nobody
/// checks): this stub's, or a test's own server.
pub fn kubeconfig_text(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: stub\n  user:\n    token: stub-token\ncontexts:\n- name: stub\n  context:\n    cluster: stub\n    user: stub\n\
         current-context: stub\n"
    )
}

/// Where a request points: which collection, and the namespace if it is namespaced.
fn route(path: &str) -> Option<(&'static str, &'static str, Option<String>)> {
    for (prefix, resource, list_kind) in COLLECTIONS {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{resource}") {
            return Some((resource, list_kind, None));
        }
        let mut parts = rest.trim_start_matches('/').split('/');
        if let (Some("namespaces"), Some(ns), Some(r), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
            && r == resource
        {
            return Some((resource, list_kind, Some(ns.to_string())));
        }
    }
    None
}

fn query_map(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), decode(v))
        })
        .collect()
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&v[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` terms, comma-separated; anything else matches nothing (the stub is minimal and
/// says so instead of guessing).
fn selector_matches(selector: Option<&String>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k].as_str() == Some(v),
        None => false,
    })
}

fn status(code: StatusCode, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "code": code.as_u16()
        })),
    )
        .into_response()
}

/// `/api/v1/namespaces/{ns}/{resource}/{name}`: one object.
fn single(path: &str) -> Option<(&'static str, String, String)> {
    for (prefix, resource, _) in COLLECTIONS {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        if let ["namespaces", ns, r, name] = parts.as_slice()
            && *r == resource
        {
            return Some((resource, ns.to_string(), name.to_string()));
        }
    }
    None
}

async fn review(shared: &Shared, path: &str, body: Value) -> Response {
    let mut answer = body.clone();
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        let reviewer = shared.token_reviewer.lock().expect("lock").clone();
        let token = body["spec"]["token"].as_str().unwrap_or_default();
        let user = reviewer.and_then(|r| r(token));
        answer["status"] = match user {
            Some(user) => json!({"authenticated": true, "user": user}),
            None => json!({"authenticated": false, "error": "invalid token"}),
        };
    } else {
        let reviewer = shared.access_reviewer.lock().expect("lock").clone();
        let (allowed, reason) =
            reviewer.map_or((false, "no reviewer set".to_string()), |r| r(&body["spec"]));
        answer["status"] = json!({"allowed": allowed, "reason": reason});
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared
        .inner
        .lock()
        .expect("lock")
        .requests
        .push(format!("{} {path}?{query} accept={accept}", req.method()));
    if req.method() == axum::http::Method::POST
        && matches!(
            path.as_str(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
                | "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        )
    {
        let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return review(&shared, &path, body).await;
    }
    if let Some((resource, ns, name)) = single(&path) {
        let inner = shared.inner.lock().expect("lock");
        return match inner.objects.get(&(resource.to_string(), ns, name.clone())) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                &format!("{resource} \"{name}\" not found"),
            ),
        };
    }
    let Some((resource, list_kind, namespace)) = route(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            &format!("the stub does not serve {path}"),
        );
    };
    let q = query_map(&query);
    let selector = q.get("labelSelector").cloned();
    let in_scope = move |object: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
            && selector_matches(selector.as_ref(), object)
    };
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let inner = shared.inner.lock().expect("lock");
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((r, _, _), o)| r == resource && in_scope(o))
            .map(|(_, o)| o.clone())
            .collect();
        return axum::Json(json!({
            "apiVersion": "v1", "kind": list_kind,
            "metadata": {"resourceVersion": inner.rv.to_string()},
            "items": items
        }))
        .into_response();
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Replay and subscribe under one lock, so no event falls between the two.
    let (backlog, live) = {
        let inner = shared.inner.lock().expect("lock");
        let backlog: Vec<Event> = inner
            .log
            .iter()
            .filter(|e| e.rv > from && e.resource == resource)
            .cloned()
            .collect();
        (backlog, shared.events.subscribe())
    };
    let resource = resource.to_string();
    let in_scope = Arc::new(in_scope);
    let scope = in_scope.clone();
    let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |e| {
        let resource = resource.clone();
        let scope = scope.clone();
        async move {
            e.ok()
                .filter(|e| e.resource == resource && scope(&e.object))
        }
    });
    let stream =
        futures_util::stream::iter(backlog.into_iter().filter(move |e| in_scope(&e.object)))
            .chain(live)
            .map(|e| {
                let line = json!({"type": e.kind, "object": e.object}).to_string() + "\n";
                Ok::<_, std::convert::Infallible>(line)
            });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "stream"))
}

/// A pod's metadata, owned by `owner` = (kind, apiVersion, name) when given.
pub fn pod(namespace: &str, name: &str, owner: Option<(&str, &str, &str)>) -> Value {
    object("v1", "Pod", namespace, name, owner, json!({}))
}

/// A ReplicaSet owned by the Deployment `deployment` when given.
/// A Deployment with `ready` ready replicas (`status.readyReplicas`, omitted at 0 as the API
/// server omits it).
pub fn deployment(namespace: &str, name: &str, ready: u32) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": {"replicas": ready, "selector": {"matchLabels": {"app": name}}, "template": {}},
        "status": {"replicas": ready},
    });
    if ready > 0 {
        d["status"]["readyReplicas"] = json!(ready);
    }
    d
}

pub fn replicaset(namespace: &str, name: &str, deployment: Option<&str>) -> Value {
    object(
        "apps/v1",
        "ReplicaSet",
        namespace,
        name,
        deployment.map(|d| ("Deployment", "apps/v1", d)),
        json!({}),
    )
}

/// An EndpointSlice of `service` with one ready endpoint per address, on port `port_name`.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    addresses: &[&str],
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()
    })
}

fn object(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    owner: Option<(&str, &str, &str)>,
    extra: Value,
) -> Value {
    let mut o = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}")},
    });
    if let Some((kind, api_version, owner_name)) = owner {
        o["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": owner_name,
            "uid": format!("uid-{namespace}-{owner_name}"), "controller": true
        }]);
    }
    if let Value::Object(map) = extra
        && let Value::Object(target) = &mut o
    {
        target.extend(map);
    }
    o
}
