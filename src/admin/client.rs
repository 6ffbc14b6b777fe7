//! A small client of a running proxy's admin API, for the `proxy cache ...` commands.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long to wait for a proxy's admin port before deciding none runs.
const PROBE_LIMIT: Duration = Duration::from_millis(500);

/// The admin API of a running proxy.
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
}

impl AdminClient {
    /// A client of the admin API at `addr`, if something listens there.
    pub async fn connect(addr: SocketAddr, token: Option<String>) -> Option<AdminClient> {
        match tokio::time::timeout(PROBE_LIMIT, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Some(AdminClient { addr, token }),
            _ => None,
        }
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(Method::GET, path, None).await
    }

    /// POSTs `body` to `path` and parses the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let failed = |e: &dyn std::fmt::Display| format!("admin API at {}: {e}", self.addr);
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| failed(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
        tokio::spawn(connection);
        let payload = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| failed(&e))?;
        let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(&e))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).map_err(|e| failed(&e))?;
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            return Err(failed(&format!("{status}: {message}")));
        }
        Ok(value)
    }
}
