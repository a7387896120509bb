//! The web console (docs/operations.md, "Console"): its files are built into
//! the binary and served at `/console` with their content types, as an open
//! route like `/health`; anything else under `/console/` is a 404.

use crate::support;

use support::{start, BASE};

/// GETs `path`: status, `Content-Type` and body.
async fn get(url: String) -> (u16, String, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_html_and_names_its_assets() {
    let router = start(BASE).await;
    for path in ["/console", "/console/", "/console/index.html"] {
        let (status, content_type, body) = get(router.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        assert!(body.contains("<title>Switchyard console</title>"), "{path}");
        assert!(body.contains("/console/console.js"), "{path}");
        assert!(body.contains("/console/console.css"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_have_their_types() {
    let router = start(BASE).await;
    let (status, content_type, body) = get(router.url("/console/console.js")).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(body.contains("/api/websocket/capabilities"));
    let (status, content_type, _) = get(router.url("/console/console.css")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/css"), "{content_type}");
    // The admin key never leaves the page's memory.
    assert!(!body.contains("localStorage") && !body.contains("sessionStorage"));
    // The live tail runs on @switchyard/client, served from the binary beside the page.
    assert!(body.contains(r#"from "./client.js""#));
    let (status, content_type, client) = get(router.url("/console/client.js")).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(client.contains("export class SwitchyardClient"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_unknown_asset_is_404_and_post_is_405() {
    let router = start(BASE).await;
    for path in [
        "/console/nope.js",
        "/console/console.js/x",
        "/console/index",
    ] {
        let (status, content_type, _) = get(router.url(path)).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(content_type, "application/json", "{path}");
    }
    let response = reqwest::Client::new()
        .post(router.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response.headers().get("allow").unwrap(),
        "GET, HEAD, OPTIONS"
    );
    let response = reqwest::Client::new()
        .head(router.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}
