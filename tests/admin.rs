//! The admin API against a running proxy: figures, metrics, listings, purges, the CA page,
//! access with and without a token, and bad input — each answered clearly.

mod support;

use serde_json::{json, Value};

use support::{get, random_bytes, Origin, Route, TestCa, TestProxy};

struct Setup {
    _dir: tempfile::TempDir,
    origin: Origin,
    proxy: TestProxy,
    admin: reqwest::Client,
}

async fn setup(token: Option<&'static str>) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    // Versions retire at once, so the traffic below leaves one version of main.dart.js.
    let config = r#"{"versioned": {"retire_after_secs": 0}}"#;
    let proxy = TestProxy::start_with(dir.path(), config, Some(&ca.path), |config| {
        config.admin.token = token.map(str::to_owned);
    })
    .await;
    let admin = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    Setup {
        _dir: dir,
        origin,
        proxy,
        admin,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.admin)
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .admin
            .get(self.url(path))
            .send()
            .await
            .expect("admin request");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    async fn purge(&self, body: &str) -> (u16, Value) {
        let response = self
            .admin
            .post(self.url("/purge"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("purge");
        (
            response.status().as_u16(),
            response.json().await.expect("JSON"),
        )
    }

    /// Fetches some assets through the proxy, twice each, and waits for their commits.
    async fn traffic(&self) {
        let client = self.proxy.client();
        for (path, len) in [
            ("/main.dart.js?v=1", 50_000),
            ("/app.3f2a9c1b.css", 20_000),
            ("/main.dart.js?v=2", 60_000),
        ] {
            self.origin
                .route(path, Route::ok(random_bytes(len, len as u64)));
            for _ in 0..2 {
                get(&client, &self.origin.url(path)).await;
                self.proxy.settled().await;
            }
        }
    }
}

#[tokio::test]
async fn stats_report_what_the_proxy_did() {
    let s = setup(None).await;
    s.traffic().await;
    let stats = s.get_json("/stats").await;
    assert_eq!(stats["requests"], 6);
    assert_eq!(stats["hits"]["memory"], 3);
    assert_eq!(stats["misses"], 3);
    assert_eq!(stats["version_changes"], 1);
    assert_eq!(stats["hit_ratio"], 0.5);
    assert_eq!(stats["bytes_from_cache"], 130_000);
    assert_eq!(stats["bytes_from_upstream"], 130_000);
    assert_eq!(stats["bandwidth_saved_percent"], 50.0);
    assert_eq!(stats["tiers"]["disk_entries"], 2, "v1 was evicted");
    assert!(stats["tiers"]["memory_bytes"].as_u64().expect("number") >= 80_000);
    assert!(stats["latency"]["hits"]["p50_ms"].is_u64());
    assert!(stats["uptime_secs"].is_u64());

    let activity = s.get_json("/activity").await;
    assert_eq!(activity["version_changes"][0]["old"], "1");
    assert_eq!(activity["version_changes"][0]["new"], "2");
    assert_eq!(
        activity["top_assets"][0]["bytes"], 220_000,
        "main.dart.js, both versions, twice each"
    );
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let s = setup(None).await;
    s.traffic().await;
    let response = s
        .admin
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.expect("text");
    for line in [
        "# TYPE asset_proxy_requests_total counter",
        "asset_proxy_requests_total 6",
        "asset_proxy_hits_memory_total 3",
        "# TYPE asset_proxy_disk_entries gauge",
        "# TYPE asset_proxy_request_duration_seconds histogram",
        "asset_proxy_request_duration_seconds_bucket{outcome=\"hit\",le=\"+Inf\"} 3",
        "asset_proxy_request_duration_seconds_count{outcome=\"miss\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        assert!(name.starts_with("asset_proxy_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn assets_and_entries_are_listed() {
    let s = setup(None).await;
    s.traffic().await;
    let assets = s.get_json("/assets").await;
    let main = assets["assets"]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| {
            a["asset"]
                .as_str()
                .is_some_and(|id| id.ends_with("/main.dart.js"))
        })
        .expect("main.dart.js listed")
        .clone();
    assert_eq!(main["current"], "2");
    assert_eq!(main["versions"].as_array().expect("versions").len(), 1);
    assert!(main["versions"][0]["bytes"].as_u64().expect("bytes") > 60_000);
    assert!(main["versions"][0]["first_seen_ms"].is_u64());

    let prefix = s.origin.url("/main");
    let entries = s
        .get_json(&format!(
            "/entries?prefix={}",
            url::form_urlencoded::byte_serialize(prefix.as_bytes()).collect::<String>()
        ))
        .await;
    let urls: Vec<&str> = entries["entries"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["url"].as_str())
        .collect();
    assert_eq!(urls, [s.origin.url("/main.dart.js?v=2")]);
}

#[tokio::test]
async fn purges_remove_from_both_tiers() {
    let s = setup(None).await;
    s.traffic().await;
    let client = s.proxy.client();
    let cases = [
        (
            json!({ "url": s.origin.url("/app.3f2a9c1b.css") }),
            "/app.3f2a9c1b.css",
        ),
        (
            json!({ "asset": s.origin.url("/main.dart.js") }),
            "/main.dart.js?v=2",
        ),
    ];
    for (body, path) in cases {
        let (status, report) = s.purge(&body.to_string()).await;
        assert_eq!(status, 200);
        assert_eq!(report, json!({ "memory": 1, "disk": 1 }), "{body}");
        let (_, cache, _) = get(&client, &s.origin.url(path)).await;
        assert_eq!(
            cache, "asset-proxy; fwd=miss; stored",
            "{path} is fetched again"
        );
        s.proxy.settled().await;
    }
    let (_, report) = s.purge(&json!({ "host": "localhost" }).to_string()).await;
    assert_eq!(report, json!({ "memory": 2, "disk": 2 }));
    get(&client, &s.origin.url("/app.3f2a9c1b.css")).await;
    s.proxy.settled().await;
    let (_, report) = s
        .purge(&json!({ "prefix": s.origin.url("/app") }).to_string())
        .await;
    assert_eq!(report, json!({ "memory": 1, "disk": 1 }));
    let (_, report) = s.purge(r#"{"all": true}"#).await;
    assert_eq!(report, json!({ "memory": 0, "disk": 0 }));
    assert_eq!(s.get_json("/stats").await["tiers"]["disk_entries"], 0);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let s = setup(None).await;
    let cases = [
        (r#"{"everything": true}"#, "purge wants one of"),
        ("{not json", "malformed JSON"),
        (r#"{"url": "a", "host": "b"}"#, "purge wants one of"),
    ];
    for (body, want) in cases {
        let (status, answer) = s.purge(body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            answer["error"].as_str().expect("error").contains(want),
            "{body}: {answer}"
        );
    }
    let response = s.admin.get(s.url("/nope")).send().await.expect("request");
    assert_eq!(response.status(), 404);
    let response = s.admin.get(s.url("/purge")).send().await.expect("request");
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn a_token_guards_the_data_endpoints() {
    let s = setup(Some("s3cret")).await;
    for path in ["/stats", "/metrics", "/assets", "/entries", "/activity"] {
        let response = s.admin.get(s.url(path)).send().await.expect("request");
        assert_eq!(response.status(), 401, "{path} without a token");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let response = s
            .admin
            .get(s.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "{path} with a wrong token");
        let response = s
            .admin
            .get(s.url(path))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path} with the token");
    }
    let response = s
        .admin
        .post(s.url("/purge"))
        .body(r#"{"all": true}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    for path in ["/", "/ca", "/ca.pem"] {
        let response = s.admin.get(s.url(path)).send().await.expect("request");
        assert_eq!(response.status(), 200, "{path} is public");
    }
}

#[tokio::test]
async fn the_ca_is_offered_on_the_admin_port_and_through_the_proxy() {
    let s = setup(None).await;
    let pem = s
        .admin
        .get(s.url("/ca.pem"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert_eq!(pem, s.proxy.ca_pem());
    let page = s
        .admin
        .get(s.url("/ca"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    for client in ["Chromium", "Firefox", "curl", "Python", "Node"] {
        assert!(page.contains(client), "the CA page covers {client}");
    }
    // Through the proxy port, as mitm.it works for mitmproxy users.
    let client = s.proxy.client();
    let response = client
        .get("http://asset-proxy.local/ca.pem")
        .send()
        .await
        .expect("request");
    assert_eq!(response.text().await.expect("text"), s.proxy.ca_pem());
    let response = client
        .get("http://asset-proxy.local/")
        .send()
        .await
        .expect("request");
    assert!(response
        .text()
        .await
        .expect("text")
        .contains("Trust the asset-proxy certificate authority"));
}

#[tokio::test]
async fn the_status_page_is_self_contained() {
    let s = setup(None).await;
    let page = s
        .admin
        .get(s.url("/"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(page.contains("<svg id=\"chart\""));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no outside assets"
    );
}
