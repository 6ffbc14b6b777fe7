//! The real `proxy` binary, started for a measurement, and requests through it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use url::Url;

/// A proxy process with its log lines arriving on a channel.
pub struct Proxy {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Proxy {
    pub fn spawn(dir: &Path, cache: &Path, extra: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .current_dir(dir)
            .args(["--port", "0", "--log", "info", "--cache-dir"])
            .arg(cache)
            .arg("--ca-dir")
            .arg(dir.join("certs"))
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            lines,
            addr: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        };
        let admin = proxy.wait_for("admin API listening addr=");
        let main = proxy.wait_for(": listening addr=");
        proxy.admin = address(&admin);
        proxy.addr = address(&main);
        proxy
    }

    pub fn wait_for(&mut self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .expect("proxy log line");
            if line.contains(text) {
                return line;
            }
        }
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn address(line: &str) -> SocketAddr {
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("address in log line")
}

/// One GET in absolute form through the proxy; returns the Cache-Status line.
pub fn get_through(proxy: SocketAddr, url: &str) -> String {
    let mut stream = TcpStream::connect(proxy).expect("connect");
    let host = Url::parse(url).expect("url").authority().to_owned();
    write!(
        stream,
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let text = String::from_utf8_lossy(&response);
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("cache-status"))
        .unwrap_or("")
        .to_owned()
}
