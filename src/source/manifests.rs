//! The manifest-file source: the same YAML a user would `kubectl apply`, read from
//! files and directories. YAML parsing lives here and nowhere else.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::GATEWAY_GROUP;
use crate::store::{Objects, unreadable_auth_rule};

/// A rendered cluster (`helm template`, `kustomize build`) fits; the YAML reader's
/// counts below scale with it, while its alias and nesting limits stay as they are.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
const MAX_FILES: usize = 10_000;

/// Reads manifests and remembers, per file, the last version that parsed, so a file
/// caught half-written (or broken by a typo) keeps its previous objects instead of
/// dropping the routes and guards it declared.
#[derive(Default)]
pub struct ManifestSource {
    paths: Vec<PathBuf>,
    last_good: HashMap<PathBuf, Vec<Value>>,
    last_fingerprint: Option<u64>,
    /// Whether to keep each file's last good documents (not for a one-shot read).
    keep_last_good: bool,
}

/// The files of one read, with their content.
struct FileSet {
    files: Vec<(PathBuf, Result<String, String>)>,
    fingerprint: u64,
}

impl ManifestSource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            keep_last_good: true,
            ..Self::default()
        }
    }

    /// Reads every file; `None` when nothing changed since the last read that
    /// returned objects.
    pub fn read_if_changed(&mut self) -> Option<Objects> {
        let set = self.read_files();
        if self.last_fingerprint == Some(set.fingerprint) {
            return None;
        }
        self.last_fingerprint = Some(set.fingerprint);
        Some(self.parse(set))
    }

    /// Reads every file once, keeping nothing for later reads (`check`).
    pub fn read_once(mut self) -> Objects {
        let set = self.read_files();
        self.keep_last_good = false;
        self.parse(set)
    }

    /// Reads every file, changed or not.
    pub fn read(&mut self) -> Objects {
        let set = self.read_files();
        self.last_fingerprint = Some(set.fingerprint);
        self.parse(set)
    }

    fn read_files(&self) -> FileSet {
        let mut names = Vec::new();
        let mut missing = Vec::new();
        for path in &self.paths {
            if let Err(e) = collect_files(path, &mut names) {
                missing.push((
                    path.clone(),
                    Err(format!("cannot read {}: {e}", path.display())),
                ));
            }
        }
        names.sort();
        names.dedup();
        let mut files: Vec<(PathBuf, Result<String, String>)> = missing;
        for name in names.into_iter().take(MAX_FILES) {
            let content = read_bounded(&name);
            files.push((name, content));
        }
        let mut hasher = DefaultHasher::new();
        for (name, content) in &files {
            name.hash(&mut hasher);
            content.hash(&mut hasher);
        }
        FileSet {
            files,
            fingerprint: hasher.finish(),
        }
    }

    fn parse(&mut self, set: FileSet) -> Objects {
        let mut objects = Objects::default();
        let mut seen = Vec::new();
        for (path, content) in set.files {
            let file_ref = ObjectRef::new("File", "", &path.display().to_string());
            let documents = match content.and_then(|text| parse_documents(&text)) {
                Ok(docs) => {
                    if self.keep_last_good {
                        self.last_good.insert(path.clone(), docs.clone());
                    }
                    docs
                }
                Err(message) => {
                    let kept = self.last_good.get(&path).cloned();
                    let fix = if kept.is_some() {
                        "fix the file; its previous content stays in effect until then".to_string()
                    } else {
                        "fix the YAML syntax; nothing from this file is in effect".to_string()
                    };
                    objects.diagnostics.push(Diagnostic::error(
                        &file_ref,
                        "",
                        "InvalidYAML",
                        message,
                        fix,
                    ));
                    kept.unwrap_or_default()
                }
            };
            seen.push(path);
            for doc in documents {
                add_document(&mut objects, doc, &file_ref);
            }
        }
        self.last_good.retain(|p, _| seen.contains(p));
        objects
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path == Path::new("-") {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let p = entry.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

fn read_bounded(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        return standard_input();
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} bytes",
            path.display(),
            MAX_FILE_BYTES
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Standard input (`-f -`), read once: a pipe cannot be read again.
fn standard_input() -> Result<String, String> {
    use std::io::Read as _;
    static INPUT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    INPUT
        .get_or_init(|| {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_FILE_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            if text.len() as u64 > MAX_FILE_BYTES {
                return Err(format!(
                    "standard input is larger than {MAX_FILE_BYTES} bytes"
                ));
            }
            Ok(text)
        })
        .clone()
}

/// Splits a multi-document YAML (or JSON) text into documents, unwrapping `List`s.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    // Documents and nodes are bounded by the file size; expansion (aliases, anchors,
    // depth) keeps the reader's defaults.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for doc in docs {
        match doc {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = map.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Adds one document to the store; documents of kinds Portcullis does not read
/// (Deployments, ConfigMaps, ...) are skipped without comment.
pub fn add_document(objects: &mut Objects, mut doc: Value, file: &ObjectRef) {
    let api_version = string_at(&doc, "/apiVersion");
    let kind = string_at(&doc, "/kind");
    let name = string_at(&doc, "/metadata/name");
    default_namespace(&mut doc, &kind);
    let namespace = string_at(&doc, "/metadata/namespace");
    let object = ObjectRef::new(&kind, &namespace, &name);
    if let Some(problem) = unnamed(file, &object, &api_version, &kind, &name) {
        objects.diagnostics.push(problem);
        return;
    }
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    if is_read(group, &kind) && refused_by_schema(objects, &doc, &object, &kind) {
        return;
    }
    store(objects, group, &kind, doc, object);
}

fn string_at(doc: &Value, pointer: &str) -> String {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// As kubectl does, a namespaced object without a namespace lands in `default`.
fn default_namespace(doc: &mut Value, kind: &str) {
    let cluster_scoped = matches!(kind, "IngressClass" | "GatewayClass" | "Namespace");
    if !cluster_scoped
        && doc.pointer("/metadata/namespace").is_none()
        && let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("namespace".into(), Value::String("default".into()));
    }
}

/// The diagnostic for a document that does not say what it is.
fn unnamed(
    file: &ObjectRef,
    object: &ObjectRef,
    api_version: &str,
    kind: &str,
    name: &str,
) -> Option<Diagnostic> {
    if kind.is_empty() || api_version.is_empty() {
        return Some(Diagnostic::error(
            file,
            "",
            "InvalidManifest",
            "a document has no apiVersion or kind".into(),
            "give every document apiVersion, kind and metadata.name".into(),
        ));
    }
    if name.is_empty() {
        return Some(Diagnostic::error(
            object,
            "metadata.name",
            "InvalidManifest",
            format!("a {kind} in {} has no metadata.name", file.name),
            "set metadata.name".into(),
        ));
    }
    None
}

/// The kinds Portcullis reads; any other document is skipped.
fn is_read(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("networking.k8s.io", "Ingress" | "IngressClass")
            | ("", "Secret" | "ConfigMap" | "Service" | "Namespace")
            | (
                GATEWAY_GROUP,
                "GatewayClass"
                    | "Gateway"
                    | "HTTPRoute"
                    | "GRPCRoute"
                    | "TLSRoute"
                    | "ReferenceGrant"
                    | "ListenerSet"
                    | "BackendTLSPolicy"
            )
            | ("discovery.k8s.io", "EndpointSlice")
    ) || (group, kind) == (crate::model::GROUP, "AuthRule")
}

/// Whether the document has fields its schema does not know, each reported.
fn refused_by_schema(objects: &mut Objects, doc: &Value, object: &ObjectRef, kind: &str) -> bool {
    let Some(schema) = super::strict::schema_for(kind) else {
        return false;
    };
    let unknown = schema.unknown_fields(doc);
    if unknown.is_empty() {
        return false;
    }
    for (field, allowed) in &unknown {
        objects
            .diagnostics
            .push(unknown_field(object, field, allowed));
    }
    // As `kubectl apply --validate=strict`: the object is refused; an AuthRule
    // still guards its targets, failing closed.
    if kind == "AuthRule" {
        let message = format!("unknown field {}", unknown[0].0);
        objects
            .unreadable_auth_rules
            .push(unreadable_auth_rule(object.clone(), doc, message));
    }
    true
}

/// Decodes a document of a kind Portcullis reads into its list.
fn store(objects: &mut Objects, group: &str, kind: &str, doc: Value, object: ObjectRef) {
    match (group, kind) {
        ("networking.k8s.io", "Ingress") => push(
            &mut objects.ingresses,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        ("networking.k8s.io", "IngressClass") => push(
            &mut objects.ingress_classes,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        ("", "Secret") => push(
            &mut objects.secrets,
            decode_string_data(doc),
            &object,
            &mut objects.diagnostics,
        ),
        ("", "ConfigMap") => push(
            &mut objects.config_maps,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        ("", "Service") => push(
            &mut objects.services,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        ("discovery.k8s.io", "EndpointSlice") => push(
            &mut objects.endpoint_slices,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        ("", "Namespace") => push(
            &mut objects.namespaces,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "GatewayClass") => push(
            &mut objects.gateway_classes,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "Gateway") => push(
            &mut objects.gateways,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "HTTPRoute") => push(
            &mut objects.http_routes,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "TLSRoute") => push(
            &mut objects.tls_routes,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "ListenerSet") => push(
            &mut objects.listener_sets,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "GRPCRoute") => push(
            &mut objects.grpc_routes,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "ReferenceGrant") => push(
            &mut objects.reference_grants,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (GATEWAY_GROUP, "BackendTLSPolicy") => push(
            &mut objects.backend_tls_policies,
            doc,
            &object,
            &mut objects.diagnostics,
        ),
        (crate::model::GROUP, "AuthRule") => add_auth_rule(objects, doc, object),
        _ => {}
    }
}

/// An AuthRule that cannot be read still guards its targets, failing closed.
fn add_auth_rule(objects: &mut Objects, doc: Value, object: ObjectRef) {
    match decode(doc.clone()) {
        Ok(rule) => objects.auth_rules.push(Arc::new(rule)),
        Err((field, e)) => {
            let message = format!("cannot read AuthRule: {e}");
            objects.diagnostics.push(Diagnostic::error(
                &object,
                &field,
                "InvalidAuthRule",
                message.clone(),
                format!("fix {field} (`kubectl explain authrule.{field}` describes it); the rule's routes answer 500 until then"),
            ));
            objects
                .unreadable_auth_rules
                .push(unreadable_auth_rule(object, &doc, message));
        }
    }
}

fn push<T: DeserializeOwned>(
    list: &mut Vec<Arc<T>>,
    doc: Value,
    object: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) {
    match decode::<T>(doc) {
        Ok(v) => list.push(Arc::new(v)),
        Err((field, e)) => diags.push(Diagnostic::error(
            object,
            &field,
            "InvalidManifest",
            format!("cannot read {}: {e}", object.kind),
            format!(
                "fix {field} (`kubectl explain {}.{field}` describes it)",
                object.kind.to_lowercase()
            ),
        )),
    }
}

/// Decodes a document; on failure, the path of the field that failed and why
/// (`spec.onUnauthenticatedRequest`, "unknown variant `sometimes`, expected one of …").
fn decode<T: DeserializeOwned>(doc: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        (field, e.into_inner().to_string())
    })
}

fn unknown_field(object: &ObjectRef, field: &str, allowed: &[String]) -> Diagnostic {
    let name = field.rsplit(['.', ']']).next().unwrap_or(field);
    let near = allowed
        .iter()
        .map(|a| (edit_distance(&a.to_lowercase(), &name.to_lowercase()), a))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| format!("did you mean {a}? "))
        .unwrap_or_default();
    Diagnostic::error(
        object,
        field,
        "UnknownField",
        format!(
            "{} has no field {field}; the object is not used",
            object.kind
        ),
        format!("{near}the fields here are: {}", allowed.join(", ")),
    )
}

/// Levenshtein distance, for suggesting the field a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// `kubectl apply` turns a Secret's `stringData` into base64 `data`; do the same so a
/// manifest behaves as it would in a cluster.
fn decode_string_data(mut doc: Value) -> Value {
    let Some(map) = doc.as_object_mut() else {
        return doc;
    };
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return doc;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            if let Some(s) = v.as_str() {
                data.insert(k, Value::String(BASE64.encode(s.as_bytes())));
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: s, namespace: apps}
  stringData: {client-secret: hunter2}
---
"#;
        let mut objects = Objects::default();
        let file = ObjectRef::new("File", "", "x.yaml");
        for doc in parse_documents(text).unwrap() {
            add_document(&mut objects, doc, &file);
        }
        assert!(objects.diagnostics.is_empty(), "{:?}", objects.diagnostics);
        assert_eq!(
            objects.services[0].metadata.namespace.as_deref(),
            Some("default")
        );
        let data = objects.secrets[0].data.as_ref().unwrap();
        assert_eq!(data["client-secret"].0, b"hunter2");
    }

    #[test]
    fn an_authrule_that_does_not_parse_keeps_its_targets() {
        let text = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc: {issuer: 42}
"#;
        let mut objects = Objects::default();
        for doc in parse_documents(text).unwrap() {
            add_document(&mut objects, doc, &ObjectRef::new("File", "", "x.yaml"));
        }
        assert!(objects.auth_rules.is_empty());
        assert_eq!(
            objects.unreadable_auth_rules[0].target_names,
            vec!["web".to_string()]
        );
        assert_eq!(
            objects.diagnostics[0].object.to_string(),
            "AuthRule apps/sso"
        );
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_content() {
        let dir = std::env::temp_dir().join(format!("portcullis-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("svc.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
        )
        .unwrap();
        let mut source = ManifestSource::new(vec![dir.clone()]);
        assert_eq!(source.read().services.len(), 1);
        assert!(source.read_if_changed().is_none());
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Service\nmetadata: {name: [a\n",
        )
        .unwrap();
        let objects = source.read_if_changed().expect("changed");
        assert_eq!(objects.services.len(), 1, "previous content kept");
        assert_eq!(objects.diagnostics[0].reason, "InvalidYAML");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
