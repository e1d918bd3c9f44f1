//! A and B with their fault endpoints and a Prometheus with the project's rules, for the
//! checks that run a lab end to end (the `tools` target runs one lab, the `heavy` target
//! every other).

use std::process::{Command, Output};
use std::time::Duration;

use lab::results::Event;
use serde_json::Value;

use crate::labs::{SYMPTOM_WITHIN, StateDir, log_symptom, said, state_dir};
use crate::prometheus::{Prometheus, project_rules, scrape_config, with_rules};
use crate::{Kind, Service, binary, client, eventually, vacant_addr};

/// A and B with their fault endpoints, and a Prometheus scraping both with the rules loaded.
#[derive(Debug)]
pub struct Stack {
    pub a: Service,
    pub b: Service,
    pub prometheus: Prometheus,
    pub a_faults: String,
    pub b_faults: String,
    pub state_dir: StateDir,
}

impl Stack {
    pub fn start(name: &str) -> Option<Self> {
        let (a_fault_addr, b_fault_addr) = (vacant_addr(), vacant_addr());
        let a = Service::a(&["--fault-listen", &a_fault_addr.to_string()]);
        let b = Service::b(&a.url(), &["--fault-listen", &b_fault_addr.to_string()]);
        let config = scrape_config(&[("service-a", a.addr), ("service-b", b.addr)]);
        let prometheus = Prometheus::start(&with_rules(config, &project_rules()))?;
        Some(Self {
            a_faults: format!("http://{a_fault_addr}/faults"),
            b_faults: format!("http://{b_fault_addr}/faults"),
            a,
            b,
            prometheus,
            state_dir: state_dir(name),
        })
    }

    /// Runs `lab <args>` against this stack.
    pub fn lab(&self, args: &[&str]) -> Output {
        Command::new(binary(Kind::Lab))
            .args(args)
            .args(["--b", &self.b.url(), "--a-faults", &self.a_faults])
            .args([
                "--b-faults",
                &self.b_faults,
                "--prometheus",
                &self.prometheus.url,
            ])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env_remove("LAB_CLASS_SECRET")
            .env_remove("LAB_STUDENT")
            .output()
            .expect("run lab")
    }

    /// Waits (bounded) until each alert `lab` says it fires is pending or firing.
    pub async fn wait_for_alerts(&self, lab: &lab::Scenario) {
        eventually(format!("{}: its alerts pending", lab.name))
            .within(SYMPTOM_WITHIN)
            .every(Duration::from_millis(500))
            .until_async(async || {
                let active = self.prometheus.alerts().await;
                let missing: Vec<&lab::Alert> = lab
                    .alerts
                    .iter()
                    .filter(|alert| {
                        !active.iter().any(|(labels, _)| {
                            labels["alertname"] == alert.name
                                && alert.slo.is_none_or(|slo| labels["slo"] == slo)
                        })
                    })
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("missing {missing:?}; active: {active:?}"))
                }
            })
            .await;
    }

    /// Waits (bounded) until `promql` returns a series.
    pub async fn wait_for_metric(&self, promql: &str) {
        eventually(format!("a series of {promql}"))
            .within(SYMPTOM_WITHIN)
            .every(Duration::from_millis(500))
            .until_async(async || !self.prometheus.query(promql).await.is_empty())
            .await;
    }
}

/// Runs the lab `name` on a [`Stack`]: its symptom, alerts and logs show, `lab check` takes
/// the right answer and refuses a wrong one, and `lab stop` clears it.
pub async fn run_lab(name: &str) {
    let Some(stack) = Stack::start(name) else {
        return;
    };
    let scenario = lab::scenario(name).expect("a lab");
    let started = stack.lab(&["start", name, "--duration", "120"]);
    assert!(started.status.success(), "{}", said(&started));

    stack.wait_for_metric(scenario.symptom).await;
    let (service, symptom) = log_symptom(name);
    let logs = if service == "service-a" {
        &stack.a.logs
    } else {
        &stack.b.logs
    };
    logs.wait_for(symptom);
    // The gauge says what is on, on the service it is on; an unplugged A cannot be scraped.
    let unplugs = scenario
        .a_fault
        .is_some_and(|fault| fault()["down"] == true);
    if (scenario.a_fault.is_some() || scenario.b_fault.is_some()) && !unplugs {
        let gauge = format!(r#"fault_injection_active{{scenario="{name}"}} == 1"#);
        stack.wait_for_metric(&gauge).await;
    }

    stack.wait_for_alerts(scenario).await;

    let right = stack.lab(&["check", name]);
    assert!(right.status.success(), "{}", said(&right));
    assert!(said(&right).starts_with("right"), "{}", said(&right));
    for alert in scenario.alerts {
        assert!(said(&right).contains(alert.runbook), "{}", said(&right));
    }
    // Beside a quantile, the exact average: for a-slow, the 300 ms the logs show, where the
    // p99 can only name its bucket (up to 0.5 s).
    for shown in scenario.evidence {
        if let Some(average) = shown.average {
            let text = said(&right);
            let at = text
                .find(&format!("Average:         {average}"))
                .unwrap_or_else(|| panic!("the average in {text}"));
            let value: f64 = text[at..]
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a value for the average in {text}"));
            if name == "a-slow" && shown.promql.contains("service-a") {
                assert!(value >= 0.3, "A's average latency {value} s: {text}");
            }
        }
    }
    // A named lab's wrong answer still shows the lab's evidence, as it always did.
    for other in lab::SCENARIOS.iter().filter(|s| s.name != name) {
        let wrong = stack.lab(&["check", other.name]);
        assert_eq!(wrong.status.code(), Some(1), "{}", said(&wrong));
        assert!(said(&wrong).starts_with("wrong"), "{}", said(&wrong));
        assert!(said(&wrong).contains(scenario.log), "{}", said(&wrong));
    }

    let stopped = stack.lab(&["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    for endpoint in [&stack.a_faults, &stack.b_faults] {
        let now: Value = client()
            .get(endpoint.as_str())
            .send()
            .await
            .expect("fault endpoint")
            .json()
            .await
            .expect("JSON");
        assert_eq!(now["injected"], Value::Null, "{endpoint} cleared");
    }
    assert!(
        !stack.state_dir.join(lab::paths::STATE_FILE).exists(),
        "lab stop forgets the lab"
    );
    let results = std::fs::read_to_string(stack.state_dir.join(lab::paths::RESULTS_FILE))
        .expect("lab records the run");
    let file = lab::results::read(&results, "results");
    assert!(file.breaks.is_empty(), "{:?}", file.breaks);
    let events: Vec<Event> = file.records.iter().map(|(_, r)| r.event).collect();
    let mut expected = vec![Event::Start];
    expected.extend([Event::Check; lab::SCENARIOS.len()]);
    expected.push(Event::Stop);
    assert_eq!(events, expected, "{results}");
    assert!(file.records.iter().all(|(_, r)| r.lab == name), "{results}");

    // Nothing of the lab is left but what Prometheus still reads in its windows: divya logs
    // in, and the next `lab start` lists the lab's alerts with how long each may last.
    let login = stack.a.token(crate::demo_login(), None).await;
    assert_eq!(login.status, 200, "{name}: {}", login.text);
    let next = stack.lab(&["start", "a-slow", "--duration", "1"]);
    let listed = said(&next);
    assert!(next.status.success(), "{listed}");
    assert!(
        listed.starts_with("Alerts still active from before this lab"),
        "{listed}"
    );
    assert!(
        scenario.alerts.iter().any(|alert| listed
            .lines()
            .any(|l| l.trim_start().starts_with(alert.name) && l.contains(" ends "))),
        "{name}'s alerts in {listed}"
    );
    let stopped = stack.lab(&["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
}
