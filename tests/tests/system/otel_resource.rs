//! The resource from the environment, as the OpenTelemetry specification reads it:
//! `OTEL_SERVICE_NAME` wins over a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, values are
//! percent-decoded, and a value that does not decode is discarded whole with a warning,
//! never half applied and never a reason not to start. Checked on the exported spans and
//! on `target_info`.

use system_tests::otlp::OtlpReceiver;
use system_tests::{Kind, Service, client, send};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A started with `resource` as `OTEL_RESOURCE_ATTRIBUTES` and `name` as
/// `OTEL_SERVICE_NAME` (when given), exporting to `otlp`; the resource of the span of one
/// login, and the `target_info` line.
fn resource_of(
    otlp: &OtlpReceiver,
    resource: &str,
    name: Option<&str>,
) -> (Service, std::collections::HashMap<String, String>, String) {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_RESOURCE_ATTRIBUTES", resource),
    ];
    if let Some(name) = name {
        env.push(("OTEL_SERVICE_NAME", name));
    }
    let a = Service::start(Kind::A, "127.0.0.1:0", &[], &env);
    let rt = runtime();
    let reply = rt.block_on(send(
        client()
            .post(a.at("/token"))
            .json(&system_tests::demo_login()),
    ));
    let trace = reply
        .header("traceresponse")
        .split('-')
        .nth(1)
        .expect("traceresponse")
        .to_owned();
    let span = otlp.wait_for_trace(&trace, 1).remove(0);
    let text = rt
        .block_on(system_tests::get(&a.at("/metrics?format=prometheus")))
        .text;
    let info = text
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .expect("target_info")
        .to_owned();
    (a, span.resource, info)
}

/// The SDK specification: "`OTEL_SERVICE_NAME` … If `service.name` is also provided in
/// `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME` takes precedence."
#[test]
fn otel_service_name_wins_over_the_resource_attributes() {
    let otlp = OtlpReceiver::start();
    let (a, resource, info) = resource_of(
        &otlp,
        "service.name=from-attributes,service.namespace=shop",
        Some("from-variable"),
    );
    assert_eq!(resource["service.name"], "from-variable");
    assert_eq!(resource["service.namespace"], "shop");
    assert!(info.contains(r#"service_name="from-variable""#), "{info}");
    let line = a.logs.wait_for(|l| l["event"] == "listening");
    assert_eq!(line["service"], "from-variable", "one name everywhere");
}

/// Values are percent-decoded (the resource specification: W3C Baggage's format).
#[test]
fn resource_attribute_values_are_percent_decoded() {
    let otlp = OtlpReceiver::start();
    let (_a, resource, info) = resource_of(
        &otlp,
        "deployment.environment.name=dev%20x,note=caf%C3%A9%2C%20open",
        None,
    );
    assert_eq!(resource["deployment.environment.name"], "dev x");
    assert_eq!(resource["note"], "café, open");
    assert!(
        info.contains(r#"deployment_environment_name="dev x""#),
        "{info}"
    );
}

/// "In case of any error, e.g. failure during the decoding process, the entire environment
/// variable value SHOULD be discarded and an error SHOULD be reported": nothing of it
/// applies, a warning names the variable, and the service runs.
#[test]
fn a_malformed_value_is_discarded_whole_with_a_warning() {
    let otlp = OtlpReceiver::start();
    let (a, resource, info) = resource_of(&otlp, "deployment.environment.name=prod,broken", None);
    assert!(
        !resource.contains_key("deployment.environment.name"),
        "{resource:?}"
    );
    assert!(!info.contains("deployment_environment_name"), "{info}");
    assert_eq!(resource["service.name"], "service-a");
    let warning = a.logs.wait_for(|l| {
        l["event"] == "otel_setting_ignored" && l["variable"] == "OTEL_RESOURCE_ATTRIBUTES"
    });
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["reason"]
            .as_str()
            .is_some_and(|r| r.contains("member 2") && r.contains("discarded")),
        "{warning}"
    );
}
