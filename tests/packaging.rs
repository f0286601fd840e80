//! What ships agrees with itself: the release workflow publishes the image and chart
//! the chart names, the image exposes the ports it listens on, base images are pinned,
//! the kind end-to-end test runs the Kubernetes and Helm versions the rest of the
//! project uses, the chart's NetworkPolicy keeps the admin port to listed peers, the
//! chart's README lists every value with its default, the scheduling and scaling values
//! render into the objects they name, and the shell scripts pass shellcheck.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use portcullis::source::manifests::parse_documents;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    parse_documents(&read(path)).unwrap().remove(0)
}

/// The value after `key` on the first line of `text` that starts with it.
fn after<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line starts with {key}"))
        .trim()
        .trim_matches('"')
}

#[test]
fn the_release_publishes_the_image_and_the_chart_the_chart_names() {
    let values = yaml("charts/portcullis/values.yaml");
    let chart = yaml("charts/portcullis/Chart.yaml");
    let release = yaml(".github/workflows/release.yml");
    assert_eq!(
        values["image"]["repository"], release["env"]["IMAGE"],
        "the chart's image is the one the release builds"
    );
    assert_eq!(
        values["image"]["tag"], "",
        "the tag defaults to appVersion, which the release tags"
    );
    let cargo = read("Cargo.toml");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(after(&cargo, "version = ")),
        "appVersion is the crate's version"
    );
    let workflow = read(".github/workflows/release.yml");
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(workflow.contains(platform), "{platform}");
    }
    let oci = format!(
        "{}/{}",
        release["env"]["CHART_REPO"].as_str().unwrap(),
        chart["name"].as_str().unwrap()
    );
    assert!(
        read("README.md").contains(&oci),
        "the README names where the chart is published: {oci}"
    );
}

/// Ports the image's `run` listens on beyond loopback: its ENV, else `--help` defaults.
fn listening_ports(dockerfile: &str) -> BTreeSet<u16> {
    let help = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let env: Vec<(&str, &str)> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut ports = BTreeSet::new();
    for (flag, var) in [
        ("--http", "PORTCULLIS_HTTP"),
        ("--https", "PORTCULLIS_HTTPS"),
        ("--admin", "PORTCULLIS_ADMIN"),
    ] {
        let from_env = env
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.to_string());
        let default = help
            .split(&format!("      {flag} <"))
            .nth(1)
            .and_then(|rest| rest.split("--").next())
            .and_then(|section| section.split("[default: ").nth(1))
            .and_then(|d| d.split(']').next())
            .map(str::to_owned);
        let Some(addr) = from_env.or(default) else {
            continue;
        };
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        if !addr.ip().is_loopback() {
            ports.insert(addr.port());
        }
    }
    ports
}

#[test]
fn the_image_exposes_the_ports_it_and_the_chart_listen_on() {
    let dockerfile = read("Dockerfile");
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, listening_ports(&dockerfile), "EXPOSE");
    let deployment = read("charts/portcullis/templates/deployment.yaml");
    let container_ports: BTreeSet<u16> = deployment
        .split("containerPort: ")
        .skip(1)
        .map(|rest| rest[..rest.find('}').unwrap()].trim().parse().unwrap())
        .collect();
    assert_eq!(exposed, container_ports, "the chart's containerPorts");
}

#[test]
fn base_images_are_pinned_by_digest_or_exact_version() {
    for file in ["Dockerfile", "tests/kind/idp.Dockerfile"] {
        let text = read(file);
        let stages: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(" AS ").nth(1))
            .collect();
        for image in text
            .lines()
            .filter_map(|l| l.strip_prefix("FROM "))
            .map(|l| l.split_whitespace().next().unwrap())
            .filter(|i| !stages.contains(i))
        {
            let by_digest = image
                .split_once("@sha256:")
                .is_some_and(|(_, d)| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()));
            let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
            let exact = tag.split('-').next().is_some_and(|v| {
                v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok())
            });
            assert!(by_digest || exact, "{file}: {image} is not pinned");
        }
    }
}

#[test]
fn the_kind_test_runs_the_kubernetes_and_helm_versions_the_project_uses() {
    let script = read("tests/kind/e2e.sh");
    let node_image = after(&script, "readonly node_image=");
    let (tag, digest) = node_image
        .strip_prefix("kindest/node:v")
        .and_then(|rest| rest.split_once("@sha256:"))
        .expect("kindest/node:vX.Y.Z@sha256:...");
    assert_eq!(digest.len(), 64, "pinned by digest");
    let minor: u32 = tag.split('.').nth(1).unwrap().parse().unwrap();
    assert!(
        read("Cargo.toml").contains(&format!("\"v1_{minor}\"")),
        "k8s-openapi speaks Kubernetes 1.{minor}"
    );
    let chart = yaml("charts/portcullis/Chart.yaml");
    let oldest: u32 = chart["kubeVersion"]
        .as_str()
        .unwrap()
        .trim_start_matches(">=1.")
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(minor >= oldest, "the chart's kubeVersion accepts 1.{minor}");

    let helm = after(&script, "readonly helm_version=");
    assert_eq!(helm, after(&read("tests/apiserver/build.sh"), "HELM="));
    let release = yaml(".github/workflows/release.yml");
    assert_eq!(release["env"]["HELM_VERSION"], helm);
    let ci = read(".github/workflows/kind-e2e.yml");
    assert!(
        ci.contains(&format!("version: {helm}")),
        "kind-e2e.yml installs helm {helm}"
    );
    assert!(
        ci.contains("node-version: 22"),
        "Node 22, as the test provider's image"
    );
    assert!(read("tests/kind/idp.Dockerfile").contains("FROM node:22."));
    assert!(!ci.contains("apt-get install"), "the runner's own browser");
}

fn helm_template(set: &[&str]) -> Vec<Value> {
    helm_template_result(set).unwrap_or_else(|e| panic!("{e}"))
}

/// `helm template` of the chart with `--set` values: the objects, or helm's error.
fn helm_template_result(set: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(format!("{ROOT}/tests/apiserver/build.sh"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let helm = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("helm");
    let mut cmd = Command::new(helm);
    cmd.args([
        "template",
        "p",
        &format!("{ROOT}/charts/portcullis"),
        "--kube-version",
        "1.33.0",
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(parse_documents(&String::from_utf8(out.stdout).unwrap()).unwrap())
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

#[test]
fn the_charts_network_policy_keeps_the_admin_port_to_listed_peers() {
    assert!(
        of_kind(&helm_template(&[]), "NetworkPolicy").is_none(),
        "off by default"
    );
    let peer = "networkPolicy.adminFrom[0].namespaceSelector.matchLabels.team=monitoring";
    let docs = helm_template(&["networkPolicy.enabled=true", peer]);
    let policy = of_kind(&docs, "NetworkPolicy").expect("rendered when enabled");
    let deployment = of_kind(&docs, "Deployment").unwrap();
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "it selects the controller's pods"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let names: BTreeSet<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let ports = |rule: &Value| -> BTreeSet<String> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(rules.len(), 2, "{policy:#}");
    assert!(
        rules[0].get("from").is_none(),
        "traffic ports open to every peer"
    );
    assert_eq!(ports(&rules[0]), ["http", "https"].map(String::from).into());
    assert_eq!(ports(&rules[1]), ["admin".to_owned()].into());
    assert_eq!(
        rules[1]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
    );
    for rule in rules {
        for port in ports(rule) {
            assert!(
                names.contains(port.as_str()),
                "{port} names a container port"
            );
        }
    }
    let closed = helm_template(&["networkPolicy.enabled=true"]);
    let rules = of_kind(&closed, "NetworkPolicy").unwrap()["spec"]["ingress"].clone();
    assert_eq!(
        rules.as_array().unwrap().len(),
        1,
        "with no adminFrom, no pod reaches the admin port: {rules}"
    );
}

/// Every leaf of `values`: its dotted key and value (a non-empty map is descended into).
#[test]
fn the_charts_service_account_tokens_land_where_authrules_of_their_namespaces_read_them() {
    let pod = |set: &[&str]| {
        of_kind(&helm_template(set), "Deployment").unwrap()["spec"]["template"]["spec"].clone()
    };
    assert!(pod(&[]).get("volumes").is_none());
    let audience = "api://AzureADTokenExchange";
    let pod = pod(&[
        &format!("serviceAccountTokens[0].audience={audience}"),
        "serviceAccountTokens[0].namespaces={apps,team-b}",
        "extraVolumes[0].name=ca",
        "extraVolumes[0].configMap.name=corp-ca",
        "extraVolumeMounts[0].name=ca",
        "extraVolumeMounts[0].mountPath=/etc/corp-ca",
    ]);
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes[1]["name"], "ca");
    let sources = volumes[0]["projected"]["sources"].as_array().unwrap();
    for (source, namespace) in sources.iter().zip(["apps", "team-b"]) {
        let token = &source["serviceAccountToken"];
        assert_eq!(token["audience"], audience);
        let read_by =
            portcullis::auth::client_assertion::ServiceAccountToken::new(namespace, audience);
        assert_eq!(token["path"], read_by.file.to_str().unwrap());
    }
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert_eq!(
        mounts[0]["mountPath"],
        portcullis::auth::client_assertion::DEFAULT_TOKEN_DIR
    );
    assert_eq!(mounts[1]["mountPath"], "/etc/corp-ca");
    let refused = helm_template_result(&["serviceAccountTokens[0].audience=x"]);
    assert!(refused.unwrap_err().contains("namespaces"));
}

/// `CONFORMANCE=1 tests/kind/e2e.sh` installs the chart as it says (kind cannot run
/// here): the values it sets render a controller that opens each Gateway's listeners
/// at an address of the node's network, and the suite gets the flags and the passing
/// list the local run uses.
#[test]
fn the_kind_conformance_run_installs_gateways_with_addresses_of_their_own() {
    let script = read("tests/kind/e2e.sh");
    let range = after(&script, "readonly gateway_range=");
    let block = &script[script.find("  gateway_args=(--set").expect("gateway_args")..];
    let block = &block[..block.find(")\n").unwrap()];
    let sets: Vec<String> = block
        .split("--set ")
        .skip(1)
        .map(|s| s.trim().trim_matches('"').replace("$gateway_range", range))
        .collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    assert!(sets.contains(&"hostNetwork=true"), "{sets:?}");
    let docs = helm_template(&sets);
    let deployment = of_kind(&docs, "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "the node's ports hold one"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&Value::from(format!("--gateway-addresses={range}"))));
    assert!(of_kind(&docs, "GatewayClass").is_some());
    let net: ipnet::IpNet = range.parse().unwrap();
    assert!(net.addr().is_loopback(), "the node's own loopback range");

    let local = read("tests/conformance.rs");
    for flag in [
        "-conformance-profiles GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS",
        "-allow-crds-mismatch",
        "-cleanup-base-resources=false",
        "-unusable-address 198.51.100.7",
    ] {
        let (name, value) = flag.split_once(' ').unwrap_or((flag, ""));
        assert!(script.contains(flag), "e2e.sh passes {flag}");
        assert!(
            local.contains(&format!("\"{name}\"")) && local.contains(value),
            "tests/conformance.rs passes {flag}"
        );
    }
    assert!(script.contains("-usable-address \"${gateway_range%.0/24}.250\""));
    assert!(script.contains("done <tests/gateway/conformance-passing.txt"));
}

/// Gateways with addresses of their own: the pods bind them in the node's network, and
/// with shared ports the Service publishes the listeners' ports.
#[test]
fn the_charts_gateway_listeners_reach_the_pods() {
    let deployment = |docs: &[Value]| of_kind(docs, "Deployment").unwrap().clone();
    let args = |d: &Value| -> Vec<String> {
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let shared = deployment(&helm_template(&[]));
    assert!(
        !args(&shared)
            .iter()
            .any(|a| a.starts_with("--gateway-addresses"))
    );
    assert!(
        shared["spec"]["template"]["spec"]
            .get("hostNetwork")
            .is_none()
    );

    let refused = helm_template_result(&["gatewayAddresses=10.9.0.0/24"]).unwrap_err();
    assert!(refused.contains("hostNetwork"), "{refused}");
    assert!(helm_template_result(&["gatewayAddresses=10.9.0.0", "hostNetwork=true"]).is_err());

    let own = deployment(&helm_template(&[
        "gatewayAddresses=10.9.0.0/24",
        "hostNetwork=true",
    ]));
    assert!(args(&own).contains(&"--gateway-addresses=10.9.0.0/24".to_owned()));
    let pod = &own["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    // The node's ports: a replacement cannot start beside the pod it replaces.
    assert_eq!(own["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0);
    // The address must be parsed by the flag as the chart writes it.
    let flag = args(&own)
        .into_iter()
        .find_map(|a| a.strip_prefix("--gateway-addresses=").map(str::to_owned))
        .unwrap();
    assert!(flag.parse::<ipnet::IpNet>().is_ok());

    let docs = helm_template(&[
        "service.listenerPorts[0].port=8080",
        "service.listenerPorts[0].protocol=HTTP",
        "service.listenerPorts[1].port=9443",
        "service.listenerPorts[1].protocol=HTTPS",
    ]);
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["spec"]["type"] == "LoadBalancer")
        .unwrap();
    let ports: Vec<(u64, &str)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (80, "http"),
            (443, "https"),
            (8080, "http"),
            (9443, "https")
        ]
    );
    assert!(
        helm_template_result(&[
            "service.listenerPorts[0].port=8080",
            "service.listenerPorts[0].protocol=TCP",
        ])
        .is_err()
    );
}

fn leaves(prefix: &str, values: &Value, out: &mut BTreeMap<String, Value>) {
    for (key, value) in values.as_object().unwrap() {
        let path = format!("{prefix}{key}");
        match value.as_object() {
            Some(map) if !map.is_empty() => leaves(&format!("{path}."), value, out),
            _ => {
                out.insert(path, value.clone());
            }
        }
    }
}

#[test]
fn the_chart_readme_lists_every_value_with_its_default() {
    let mut values = BTreeMap::new();
    leaves("", &yaml("charts/portcullis/values.yaml"), &mut values);
    assert!(values.contains_key("autoscaling.maxReplicas"), "{values:?}");
    let readme = read("charts/portcullis/README.md");
    let table = after_heading(&readme, "## Values");
    let mut rows = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").map(|c| c.trim()).collect();
        assert_eq!(cells.len(), 4, "key, type, default, meaning: {line}");
        let key = cells[0].trim_start_matches("| ").trim_matches('`');
        let default = cells[2].trim_matches('`');
        let default: Value = serde_json::from_str(default)
            .unwrap_or_else(|e| panic!("{key}: default {default} is not JSON: {e}"));
        assert!(
            rows.insert(key.to_owned(), default).is_none(),
            "{key} is listed twice"
        );
        assert!(
            !cells[3].trim_end_matches(" |").is_empty(),
            "{key} says what it means"
        );
    }
    let listed: BTreeSet<&String> = rows.keys().collect();
    let keys: BTreeSet<&String> = values.keys().collect();
    assert_eq!(
        listed.difference(&keys).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "the README lists values that values.yaml does not have"
    );
    assert_eq!(
        keys.difference(&listed).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "values.yaml has values the README does not list"
    );
    for (key, default) in &values {
        assert_eq!(&rows[key], default, "the README's default of {key}");
    }
}

/// The text of `markdown` from the heading `heading` to the next heading of its level.
fn after_heading<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let rest = &markdown[start + heading.len() + 2..];
    let level = heading.split(' ').next().unwrap();
    &rest[..rest.find(&format!("\n{level} ")).unwrap_or(rest.len())]
}

#[test]
fn the_charts_scaling_and_scheduling_values_render_into_the_pods() {
    let docs = helm_template(&[]);
    assert!(of_kind(&docs, "HorizontalPodAutoscaler").is_none());
    let deployment = of_kind(&docs, "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    for absent in ["topologySpreadConstraints", "priorityClassName"] {
        assert!(pod.get(absent).is_none(), "{absent} not set by default");
    }
    assert!(
        deployment["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
    let pdb = of_kind(&docs, "PodDisruptionBudget").unwrap();
    assert_eq!(
        pdb["spec"],
        serde_json::json!({"minAvailable": 1, "selector": deployment["spec"]["selector"]})
    );
    let env = pod["containers"][0]["env"].as_array().unwrap().clone();

    let docs = helm_template(&[
        "autoscaling.enabled=true",
        "autoscaling.maxReplicas=6",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy.internal:3128",
        "extraEnv[1].name=FROM_SECRET",
        "extraEnv[1].valueFrom.secretKeyRef.name=s",
        "extraEnv[1].valueFrom.secretKeyRef.key=k",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "topologySpreadConstraints[1].maxSkew=2",
        "topologySpreadConstraints[1].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[1].whenUnsatisfiable=DoNotSchedule",
        "topologySpreadConstraints[1].labelSelector.matchLabels.tier=edge",
        "podAnnotations.example\\.com/owner=team-a",
        "podLabels.tier=edge",
        "podLabels.app\\.kubernetes\\.io/name=other",
        "priorityClassName=system-cluster-critical",
        "podDisruptionBudget.maxUnavailable=1",
        "service.externalTrafficPolicy=Local",
        "service.loadBalancerSourceRanges[0]=203.0.113.0/24",
    ]);
    let deployment = of_kind(&docs, "Deployment").unwrap();
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns the replica count: {deployment:#}"
    );
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler").expect("rendered when enabled");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]})
    );
    assert_eq!(
        (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
        (&serde_json::json!(2), &serde_json::json!(6))
    );
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"],
        serde_json::json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}})
    );
    let template = &deployment["spec"]["template"];
    let pod = &template["spec"];
    let extended = pod["containers"][0]["env"].as_array().unwrap();
    assert_eq!(
        extended[..env.len()],
        env[..],
        "the chart's own variables first"
    );
    assert_eq!(
        extended[env.len()..],
        [
            serde_json::json!({"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}),
            serde_json::json!({"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        ]
    );
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        pod["topologySpreadConstraints"],
        serde_json::json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"tier": "edge"}}},
        ]),
        "an entry without a labelSelector selects the release's pods"
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        template["metadata"]["annotations"],
        serde_json::json!({"example.com/owner": "team-a"})
    );
    let labels = &template["metadata"]["labels"];
    assert_eq!(labels["tier"], "edge");
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(&labels[key], value, "podLabels cannot unselect the pods");
    }
    let pdb = of_kind(&docs, "PodDisruptionBudget").unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none());
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["spec"]["type"] == "LoadBalancer")
        .unwrap();
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(
        service["spec"]["loadBalancerSourceRanges"],
        serde_json::json!(["203.0.113.0/24"])
    );

    let off = helm_template(&["podDisruptionBudget.enabled=false"]);
    assert!(of_kind(&off, "PodDisruptionBudget").is_none());
    for misspelt in [
        "podAnotations.a=b",
        "autoscaling.targetMemory=80",
        "service.externalTrafficPolicy=local",
    ] {
        let refused = helm_template_result(&[misspelt]).expect_err(misspelt);
        assert!(refused.contains("schema"), "{misspelt}: {refused}");
    }
}

/// Behind a cloud load balancer: PROXY protocol on both traffic ports, TLS ended by the
/// load balancer on the HTTPS one, and the Service's class; none of it by default.
#[test]
fn the_charts_load_balancer_values_render_into_the_pods_and_the_service() {
    let args = |docs: &[Value]| -> Vec<String> {
        let deployment = of_kind(docs, "Deployment").unwrap();
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let traffic = |docs: &[Value]| {
        docs.iter()
            .find(|d| d["kind"] == "Service" && d["spec"]["type"] == "LoadBalancer")
            .unwrap()
            .clone()
    };
    let plain = helm_template(&[]);
    let plain_args = args(&plain);
    assert!(plain_args.contains(&"--https=0.0.0.0:8443".to_owned()));
    assert!(
        !plain_args
            .iter()
            .any(|a| a.starts_with("--proxy-protocol") || a.starts_with("--https-offloaded")),
        "{plain_args:?}"
    );
    assert!(traffic(&plain)["spec"].get("loadBalancerClass").is_none());

    let proxied = args(&helm_template(&["proxyProtocol=true"]));
    assert!(
        proxied.contains(&"--proxy-protocol=http,https".to_owned()),
        "{proxied:?}"
    );

    let nlb = helm_template(&[
        "proxyProtocol=true",
        "service.tlsOffloaded=true",
        "service.loadBalancerClass=service.k8s.aws/nlb",
        "service.annotations.service\\.beta\\.kubernetes\\.io/aws-load-balancer-proxy-protocol=*",
    ]);
    let nlb_args = args(&nlb);
    for wanted in [
        "--https-offloaded=0.0.0.0:8443",
        "--proxy-protocol=http,https-offloaded",
    ] {
        assert!(
            nlb_args.contains(&wanted.to_owned()),
            "{wanted}: {nlb_args:?}"
        );
    }
    assert!(
        !nlb_args.iter().any(|a| a.starts_with("--https=")),
        "{nlb_args:?}"
    );
    let service = traffic(&nlb);
    assert_eq!(service["spec"]["loadBalancerClass"], "service.k8s.aws/nlb");
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"],
        "*"
    );
    for misspelt in ["proxyProtocol=yes", "service.tlsOffload=true"] {
        let refused = helm_template_result(&[misspelt]).expect_err(misspelt);
        assert!(refused.contains("schema"), "{misspelt}: {refused}");
    }
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let scripts = [
        "tests/kind/e2e.sh",
        "scripts/test.sh",
        "scripts/render-deploy.sh",
        "tests/apiserver/build.sh",
        "tests/apiserver/start.sh",
        "tests/tools/build-promtool.sh",
        "tests/keycloak/build.sh",
    ];
    let out = Command::new("shellcheck")
        .current_dir(ROOT)
        .args(scripts)
        .output()
        .expect("shellcheck (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
