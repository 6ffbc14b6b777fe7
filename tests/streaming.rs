//! Streamed answers stay streamed: an origin sends one part, waits for the test's signal,
//! then sends the next; the client must hold the first part before the second is sent — over
//! HTTP/1.1 and HTTP/2, plain and intercepted, for answers the cache stores and for those it
//! does not.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{cache_status, plain_client, Origin, Route, TestCa, TestProxy};

/// Reads the next part of a streamed body, bounded: a proxy that buffers the body would hold
/// the part until the origin ends it, which it never does before the test has read it.
async fn next_part(response: &mut reqwest::Response) -> Bytes {
    tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .expect("the part arrives while the origin is still sending")
        .expect("body")
        .expect("a part, not the end")
}

async fn first_then_second(
    client: &reqwest::Client,
    origin: &Origin,
    path: &str,
    route: Route,
) -> (String, reqwest::Version) {
    let (route, parts) = {
        let (streamed, parts) = Route::streamed();
        let mut route = route;
        route.stream = streamed.stream;
        (route, parts)
    };
    origin.route(path, route);
    parts
        .send(Bytes::from_static(b"data: first\n\n"))
        .expect("origin sends");
    let mut response = client.get(origin.url(path)).send().await.expect("response");
    let status = cache_status(&response);
    let version = response.version();
    assert_eq!(&next_part(&mut response).await[..], b"data: first\n\n");
    parts
        .send(Bytes::from_static(b"data: second\n\n"))
        .expect("origin sends");
    assert_eq!(&next_part(&mut response).await[..], b"data: second\n\n");
    drop(parts);
    // HTTP/2 may end the stream with an empty DATA frame.
    while let Some(rest) = response.chunk().await.expect("end") {
        assert!(rest.is_empty(), "nothing after the last part: {rest:?}");
    }
    (status, version)
}

fn event_stream() -> Route {
    Route::ok(Bytes::new())
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
}

#[tokio::test]
async fn server_sent_events_stream_over_http1_through_a_plain_proxy() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let (status, version) = first_then_second(
        &plain_client(proxy.addr),
        &origin,
        "/events",
        event_stream(),
    )
    .await;
    assert_eq!(version, reqwest::Version::HTTP_11);
    assert!(status.contains("fwd=miss"), "{status}");
}

#[tokio::test]
async fn server_sent_events_stream_over_http2_inside_an_intercepted_tunnel() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let (_, version) = first_then_second(&proxy.client(), &origin, "/events", event_stream()).await;
    assert_eq!(version, reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn long_polls_and_chunked_answers_stream_too() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let client = proxy.client();
    let json = Route::ok(Bytes::new()).header("content-type", "application/json");
    first_then_second(&client, &origin, "/poll", json).await;
    // An answer the cache stores reaches the client as it arrives, too.
    let stored = Route::ok(Bytes::new())
        .header("content-type", "text/javascript")
        .header("cache-control", "public, max-age=3600");
    let (status, _) = first_then_second(&client, &origin, "/app.js?v=7", stored).await;
    assert_eq!(status, "asset-proxy; fwd=miss; stored");
}

/// A body being stored that stalls (the origin keeps the connection open and sends nothing)
/// is given up after `upstream.body_timeout_secs`: its client's answer ends cut short, nothing
/// is stored, and the next request goes to the origin. An answer the cache does not store may
/// pause as long as it likes (the event streams above).
#[tokio::test]
async fn a_stalled_body_being_stored_is_given_up() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let proxy = TestProxy::start(
        dir.path(),
        r#"{"upstream": {"body_timeout_secs": 1}}"#,
        None,
    )
    .await;
    let client = plain_client(proxy.addr);
    let (mut route, parts) = Route::streamed();
    route = route
        .header("content-type", "text/javascript")
        .header("cache-control", "public, max-age=3600")
        .header("content-length", "1000");
    origin.route("/app.js?v=8", route);
    parts
        .send(Bytes::from(vec![b'x'; 500]))
        .expect("origin sends");
    let url = origin.url("/app.js?v=8");
    let mut response = client.get(&url).send().await.expect("response");
    assert_eq!(cache_status(&response), "asset-proxy; fwd=miss; stored");
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut received = 0;
        loop {
            match response.chunk().await {
                Ok(Some(part)) => received += part.len(),
                Ok(None) => return Ok(received),
                Err(error) => return Err((received, error)),
            }
        }
    })
    .await
    .expect("the answer ends while the origin still holds the connection");
    let (received, _) = ended.expect_err("cut short, not ended as if whole");
    assert_eq!(received, 500);
    proxy.settled().await;
    assert_eq!(proxy.app.stats().stored.get(), 0);
    let (status, cache, _) = support::get(&client, &url).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, "asset-proxy; fwd=miss; stored")
    );
    assert_eq!(origin.hits("/app.js?v=8"), 2);
    drop(parts);
}
