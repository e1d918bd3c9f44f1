//! The deployment files, checked by the tools that read them: the compose stack and
//! Prometheus config are valid and A can be scaled there, the Kubernetes manifests render
//! and validate against the Kubernetes schemas and B finds A's ready pods by name, every
//! dashboard query returns data from a real Prometheus scraping real services (B over two
//! replicas of A) under generated traffic, and a slow bucket leads to its trace on the
//! compose stack.
//!
//! The external tools (docker-compose, promtool, prometheus, kubectl, kubernetes-validate)
//! are installed by `.ci/run`; without them a test says so and checks nothing, except in
//! CI, where a missing tool fails it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use system_tests::prometheus::{
    Prometheus, project_rules, promtool_check_config, tool_available, with_rules,
};
use system_tests::tools::{self, run_ok};
use system_tests::{Kind, Service, TIMEOUT, binary, eventually, repo_root};

#[test]
fn compose_file_is_valid_and_pins_every_image() {
    let compose = repo_root().join("deploy/compose.yaml");
    let text = std::fs::read_to_string(&compose).expect("compose file");
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("image:"))
    {
        let image = line.trim_start_matches("image:").trim();
        let tag = image
            .rsplit_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest",
            "unpinned image: {image}"
        );
    }
    if tools::executable("docker-compose", "apt-get install -y docker-compose") {
        run_ok(
            Command::new("docker-compose")
                .arg("-f")
                .arg(&compose)
                .args(["config", "-q"]),
        );
    }
}

/// `docker compose up --scale service-a=3` can run three replicas of A, and everything
/// finds all three: A has no one fixed host port (a range, or none) and no fixed container
/// name, B's `PROVIDER_URL` names the service (compose's DNS answers it with every
/// replica), and Prometheus finds A's targets by DNS (`dns_sd_configs`, type A, port 8080)
/// rather than one static `service-a:8080`.
#[test]
fn the_compose_stack_scales_a() {
    let compose = repo_root().join("deploy/compose.yaml");
    let rendered = std::env::temp_dir().join(format!("compose-scale-{}.yaml", std::process::id()));
    // As docker compose reads it (anchors and short syntax resolved), when docker-compose is
    // there; the file itself otherwise.
    let file = if tools::executable("docker-compose", "apt-get install -y docker-compose") {
        let config = run_ok(
            Command::new("docker-compose")
                .arg("-f")
                .arg(&compose)
                .arg("config"),
        );
        std::fs::write(&rendered, config).expect("write rendered compose file");
        &rendered
    } else {
        &compose
    };
    let Some(stack) = tools::yaml_as_json(file) else {
        return;
    };
    let _ = std::fs::remove_file(&rendered);
    let a = &stack["services"]["service-a"];
    assert!(a["container_name"].is_null(), "a fixed name: {a}");
    for port in a["ports"].as_array().into_iter().flatten() {
        // Short syntax ("8090-8099:8080") or long (published: 8090-8099, target: 8080).
        let published = match port {
            Value::String(short) => short
                .rsplit_once(':')
                .map_or("", |(host, _)| host)
                .to_owned(),
            long => long["published"].to_string().trim_matches('"').to_owned(),
        };
        assert!(
            published.is_empty() || published == "null" || published.contains('-'),
            "service-a publishes the one host port {published}: a second replica cannot bind it"
        );
    }
    let provider = &stack["services"]["service-b"]["environment"]["PROVIDER_URL"];
    assert_eq!(
        provider, "http://service-a:8080",
        "B finds A by the service's name"
    );

    let Some(prometheus) =
        tools::yaml_as_json(&repo_root().join("deploy/prometheus/prometheus.yml"))
    else {
        return;
    };
    let job = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "service-a")
        .expect("job service-a");
    assert!(job["static_configs"].is_null(), "one static target: {job}");
    let dns = &job["dns_sd_configs"][0];
    assert_eq!(dns["names"], serde_json::json!(["service-a"]), "{job}");
    assert_eq!(
        (&dns["type"], &dns["port"]),
        (&"A".into(), &8080.into()),
        "{job}"
    );
}

#[test]
fn prometheus_configs_are_valid() {
    if tool_available("promtool") {
        // The compose stack's (it loads the rule files, which promtool checks too) and the
        // one the Kubernetes ConfigMap carries.
        promtool_check_config(&repo_root().join("deploy/prometheus/prometheus.yml"));
        promtool_check_config(&repo_root().join("deploy/prometheus/prometheus-kubernetes.yml"));
    }
}

#[test]
fn kubernetes_manifests_render_and_validate() {
    if !tools::executable("kubectl", "https://kubernetes.io/docs/tasks/tools/")
        || !tools::python_module("kubernetes_validate", "kubernetes-validate")
    {
        return;
    }
    let rendered = run_ok(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(repo_root().join("deploy/kubernetes")),
    );
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: ConfigMap",
        "kind: Namespace",
    ] {
        assert!(
            rendered.contains(kind),
            "{kind} missing from the rendered manifests"
        );
    }
    // Prometheus' config and every rule file, as ConfigMaps a user mounts.
    for needle in [
        "name: prometheus-config",
        "name: prometheus-rules",
        "service-a-pods",
    ] {
        assert!(
            rendered.contains(needle),
            "{needle} missing from the rendered manifests"
        );
    }
    for rules in project_rules() {
        let name = rules
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            rendered.contains(&format!("  {name}: |")),
            "the prometheus-rules ConfigMap holds {name}"
        );
    }
    // B finds A's pods through a headless Service of its own that lists ready pods only
    // (service-a-pods lists the others too, for Prometheus), by the name in PROVIDER_URL.
    let document = |name: &str| {
        rendered
            .split("\n---\n")
            .find(|d| d.contains("kind: Service\n") && d.contains(&format!("  name: {name}\n")))
            .unwrap_or_else(|| panic!("no Service {name} in the rendered manifests"))
    };
    let ready = document("service-a-ready");
    for needle in ["clusterIP: None", "publishNotReadyAddresses: false"] {
        assert!(ready.contains(needle), "service-a-ready: {needle}\n{ready}");
    }
    assert!(
        document("service-a-pods").contains("publishNotReadyAddresses: true"),
        "Prometheus' Service still lists pods that are not ready"
    );
    assert!(
        rendered.contains("  PROVIDER_URL: http://service-a-ready:8080\n"),
        "B's PROVIDER_URL names service-a-ready"
    );

    let file = std::env::temp_dir().join(format!("rendered-{}.yaml", std::process::id()));
    std::fs::write(&file, &rendered).expect("write rendered manifests");
    // As `.ci/run` installs it: a module of this python3, no PATH or pyenv shim involved.
    run_ok(
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .arg(&file),
    );
    let _ = std::fs::remove_file(file);
}

/// Every `expr` of every panel (rows included) of a dashboard.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                found.push((
                    panel["title"].as_str().unwrap_or_default().to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    found
}

/// Every expression of every dashboard, with Grafana's variables filled in as Grafana
/// would for a 1 s scrape interval and `rate_interval`.
fn dashboard_queries(rate_interval: &str) -> Vec<(PathBuf, String, String)> {
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("dashboards")).expect("dashboards/") {
        let path = entry.expect("entry").path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        for (title, expr) in expressions(&dashboard) {
            let expr = expr
                .replace("$__rate_interval", rate_interval)
                .replace("$__interval", "5s");
            assert!(!expr.contains('$'), "{title}: unknown variable in {expr}");
            queries.push((path.clone(), title, expr));
        }
    }
    assert!(
        queries.len() >= 10,
        "the dashboards have their queries: {}",
        queries.len()
    );
    queries
}

/// Waits (bounded by `within`) until each of `queries` returns a finite value.
async fn assert_every_query_has_data(
    prometheus: &Prometheus,
    queries: Vec<(PathBuf, String, String)>,
    within: Duration,
    when: &str,
) {
    let mut pending = queries;
    eventually(format!("{when}: data on every panel"))
        .within(within)
        .every(Duration::from_millis(500))
        .until_async(async || {
            let mut still = Vec::new();
            for (path, title, expr) in std::mem::take(&mut pending) {
                let result = prometheus.query(&expr).await;
                if !result.iter().any(|(_, value)| value.is_finite()) {
                    still.push((path, title, expr));
                }
            }
            pending = still;
            if pending.is_empty() {
                Ok(())
            } else {
                Err(pending
                    .iter()
                    .map(|(p, t, e)| format!("{}: {t}: {e}", file_name(p)))
                    .collect::<Vec<_>>())
            }
        })
        .await;
}

/// A scrape config of `jobs` (job name, its targets), scraping every second: A's replicas
/// are targets of one job, as on the compose stack and in Kubernetes.
fn scrape_jobs(jobs: &[(&str, &[SocketAddr])]) -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, targets) in jobs {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n        labels:\n          service: {job}\n",
            targets.join(", ")
        ));
    }
    config
}

/// A's replicas as B's `--provider-url`.
fn provider_url(replicas: &[Service]) -> String {
    let urls: Vec<String> = replicas.iter().map(Service::url).collect();
    urls.join(",")
}

/// B over two replicas of A, so that the panels of B's view of each replica have data too.
#[ignore = "10 s or more: CI runs it after the test command (--test tools -- --ignored)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_still_does_after_restarts() {
    let mut replicas = vec![Service::a(&[]), Service::a(&[])];
    let b_args = ["--provider-timeout-ms", "300"];
    let mut b = Service::b(&provider_url(&replicas), &b_args);
    // With the SLO recording rules, which the SLO dashboard reads.
    let a_addrs: Vec<SocketAddr> = replicas.iter().map(|a| a.addr).collect();
    let config = scrape_jobs(&[("service-a", &a_addrs), ("service-b", &[b.addr])]);
    let Some(prometheus) = Prometheus::start(&with_rules(config, &project_rules())) else {
        return;
    };
    let mut traffic = Command::new(binary(Kind::Traffic))
        .args([
            "--target",
            &b.url(),
            "--rate",
            "40",
            "--duration",
            "60",
            "--slow-ms",
            "100",
            "--timeout-ms",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start traffic");
    assert_every_query_has_data(
        &prometheus,
        dashboard_queries("20s"),
        TIMEOUT + Duration::from_secs(10),
        "under traffic",
    )
    .await;
    let _ = traffic.kill();
    let _ = traffic.wait();

    // A restarts (five calls to B while it is down), then B; afterwards only plain calls,
    // none asking for a delay or a timeout. Grafana's rate interval for a 1 s scrape is 4 s:
    // once that long has passed since the old B stopped (A stopped before it), no window
    // holds a sample the old processes exported. That is the window's definition, not a
    // wait for something to happen; the plain calls go on until every query has answered.
    let rate_interval = Duration::from_secs(4);
    for a in &mut replicas {
        a.stop();
    }
    for _ in 0..5 {
        b.protected_action(system_tests::demo_login(), None).await;
    }
    let replicas: Vec<Service> = a_addrs
        .iter()
        .map(|addr| Service::start(Kind::A, &addr.to_string(), &[], &[]))
        .collect();
    let b_addr = b.addr.to_string();
    b.stop();
    let old_ones_stopped = Instant::now();
    let provider = provider_url(&replicas);
    let mut args = vec!["--provider-url", provider.as_str()];
    args.extend_from_slice(&b_args);
    let b = Service::start(Kind::B, &b_addr, &args, &[]);
    let answered = Arc::new(AtomicBool::new(false));
    let plain_calls = {
        let (url, answered) = (b.at("/protected-action"), answered.clone());
        tokio::spawn(async move {
            while !answered.load(Ordering::Relaxed) {
                let reply = system_tests::post_json(&url, system_tests::demo_login(), None).await;
                assert_eq!(reply.status, 200, "{}", reply.text);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    tokio::time::sleep_until((old_ones_stopped + rate_interval).into()).await;
    assert_every_query_has_data(
        &prometheus,
        dashboard_queries(&format!("{}s", rate_interval.as_secs())),
        Duration::from_secs(10),
        "after A and B restarted",
    )
    .await;
    answered.store(true, Ordering::Relaxed);
    plain_calls
        .await
        .expect("plain calls to the restarted pair");
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn a_slow_bucket_leads_to_its_trace_on_the_compose_stack() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("dashboards/services.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let latency: Vec<(String, String)> = expressions(&dashboard)
        .into_iter()
        .filter(|(_, expr)| expr.contains("_duration_seconds_bucket"))
        .collect();
    assert!(!latency.is_empty());
    let text = dashboard.to_string();
    for (title, expr) in &latency {
        assert!(
            expr.contains("http_server_request_duration_seconds")
                || expr.contains("http_client_request_duration_seconds")
                || expr.contains("provider_attempt_duration_seconds")
                || expr.contains("token_delay_seconds"),
            "{title}: {expr}"
        );
    }
    assert!(
        text.contains(r#""exemplar":true"#),
        "latency panels show exemplars"
    );

    let Some(datasources) = tools::yaml_as_json(
        &repo_root().join("deploy/grafana/provisioning/datasources/datasources.yaml"),
    ) else {
        return;
    };
    let sources = datasources["datasources"].as_array().expect("datasources");
    let jaeger = sources
        .iter()
        .find(|d| d["type"] == "jaeger")
        .expect("a Jaeger data source");
    let prometheus = sources
        .iter()
        .find(|d| d["type"] == "prometheus")
        .expect("a Prometheus data source");
    let link = &prometheus["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(
        link["name"], "trace_id",
        "the exemplar label the services set"
    );
    assert_eq!(link["datasourceUid"], jaeger["uid"]);

    let compose = tools::yaml_as_json(&repo_root().join("deploy/compose.yaml")).expect("compose");
    let command = compose["services"]["prometheus"]["command"].to_string();
    assert!(
        command.contains("--enable-feature=exemplar-storage"),
        "{command}"
    );
}
