//! Raw bytes from a client that opens like SOCKS5, fed to the proxy's SOCKS5 side in-process:
//! greetings, authentication and CONNECT requests of any shape and length end with a SOCKS
//! reply or a closed connection, never a panic. The harness runs in replay mode with an
//! allow-list of one name that does not exist, so no input reaches the network.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use asset_proxy::{App, Config};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: App,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::parse(r#"{"upstream": {"allow_hosts": ["fuzz.invalid"]}, "clients": {"header_timeout_secs": 1, "tls_handshake_timeout_secs": 1}}"#).expect("config");
        config.cache.dir = dir.path().join("cache");
        config.mitm.ca_dir = dir.path().join("certs");
        config.policy.mode = asset_proxy::config::Mode::Replay;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let app = runtime.block_on(async { App::new(config) }).expect("app");
        Harness { runtime, app, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    harness.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = harness.app.serve_socks_stream(server);
        let talking = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(serving, talking) }).await;
    });
});
