//! The API descriptions (`GET /openapi.json`): what each service serves with its default
//! flags is the file committed in `deploy/openapi/`. That it is valid OpenAPI 3.1 and that
//! a fuzzer finds nothing against it are checked in the `tools` target (`openapi.rs` there).
//! A and B run inside the test process: the descriptions are read over HTTP only.
//!
//! After changing a route or a body, refresh the committed files with
//! `OPENAPI_WRITE=1 cargo test -p system-tests --test system openapi::`.

use serde_json::Value;
use system_tests::{InProcess, committed_openapi, get};

#[tokio::test]
async fn the_served_descriptions_are_the_committed_ones() {
    let a = InProcess::a(&[]).await;
    let b = InProcess::b(&a.url(), &[]).await;
    for (name, service) in [("service-a", &a), ("service-b", &b)] {
        let served = get(&service.at("/openapi.json")).await;
        assert_eq!(served.status, 200);
        assert_eq!(served.header("content-type"), "application/json");
        assert_eq!(served.json["openapi"], "3.1.0");
        let path = committed_openapi(name);
        if std::env::var("OPENAPI_WRITE").as_deref() == Ok("1") {
            let text = serde_json::to_string_pretty(&served.json).expect("JSON") + "\n";
            std::fs::write(&path, text).expect("write the description");
        }
        let committed: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .expect("the committed description is JSON");
        assert!(
            committed == served.json,
            "{} differs from what {name} serves: refresh it with OPENAPI_WRITE=1 (see this file's docs)",
            path.display()
        );
    }
}
