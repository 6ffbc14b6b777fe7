"""pytest-playwright through asset-proxy.

Installed (``pip install ./clients/python``), this plugin starts ``proxy`` once per test
session — or uses the one ``ASSET_PROXY_SERVER`` and ``ASSET_PROXY_SPKI`` name — and makes
every browser pytest-playwright launches go through it, trusting the proxy's CA by its key
(``--ignore-certificate-errors-spki-list``): no certificate store, no ``ignore_https_errors``.

Settings come from the environment: ``ASSET_PROXY_BIN`` (``proxy``), ``ASSET_PROXY_CACHE_DIR``,
``ASSET_PROXY_CA_DIR``, ``ASSET_PROXY_MODE`` (auto, record, replay, refresh),
``ASSET_PROXY_CONFIG``, ``ASSET_PROXY_NAMESPACE`` (the run's key space: browsers answer the
proxy's request for one with it as the proxy user name; a proxy started here asks for it).
"""
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from typing import Optional

import pytest

LISTENING = re.compile(r": listening addr=([\d.]+):(\d+)")


@dataclass
class AssetProxy:
    """A running proxy: its URL, its CA's key pin, and the process when this session started it."""
    server: str
    spki: str
    process: Optional[subprocess.Popen] = None
    namespace: Optional[str] = None

    def launch_args(self, base: dict) -> dict:
        """Browser launch arguments that go through the proxy (in the namespace, when one is
        set), merged into ``base``."""
        args = dict(base)
        args["proxy"] = {"server": self.server, "bypass": "<-loopback>"}
        if self.namespace:
            args["proxy"].update(username=self.namespace, password="")
        args["args"] = [*base.get("args", []), f"--ignore-certificate-errors-spki-list={self.spki}"]
        return args

    def stop(self) -> None:
        """Stops a proxy this session started (SIGTERM: it finishes its writes, then exits)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start(binary: str = "proxy", cache_dir: Optional[str] = None, ca_dir: Optional[str] = None,
          mode: Optional[str] = None, config: Optional[str] = None, timeout: float = 30,
          namespace: Optional[str] = None) -> AssetProxy:
    """Starts ``proxy`` on a free port and returns once it listens; with a namespace, the proxy
    asks browsers for theirs and the launch arguments answer with it."""
    common = ["--ca-dir", ca_dir] if ca_dir else []
    spki = subprocess.run([binary, *common, "ca", "spki"], check=True, capture_output=True,
                          text=True).stdout.strip()
    argv = [binary, "--port", "0", *common]
    for flag, value in (("--cache-dir", cache_dir), ("--mode", mode), ("--config", config)):
        if value:
            argv += [flag, value]
    if namespace:
        argv.append("--require-namespace")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: dict = {}
    lines: list = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stderr:
            if len(lines) < 200:
                lines.append(line.rstrip())
            match = LISTENING.search(line)
            if match and not ready.is_set():
                found["server"] = f"http://127.0.0.1:{match.group(2)}"
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or "server" not in found:
        process.kill()
        raise RuntimeError("asset-proxy did not start:\n" + "\n".join(lines))
    return AssetProxy(server=found["server"], spki=spki, process=process, namespace=namespace)


class _Fixtures:
    """The plugin's fixtures, registered once every plugin is loaded (``pytest_configure``): a
    fixture registered later overrides one of the same name, and ``browser_type_launch_args``
    must override pytest-playwright's, whatever order the plugins were loaded in."""

    @staticmethod
    @pytest.fixture(scope="session")
    def asset_proxy():
        yield from _session_proxy()

    @staticmethod
    @pytest.fixture(scope="session")
    def browser_type_launch_args(browser_type_launch_args, asset_proxy):
        """pytest-playwright's launch arguments, through the proxy."""
        return asset_proxy.launch_args(browser_type_launch_args)


def pytest_configure(config):
    config.pluginmanager.register(_Fixtures(), "asset_proxy_fixtures")


def _session_proxy():
    """The session's proxy (the ``asset_proxy`` fixture): the announced one, else one started
    for the session."""
    env = os.environ
    if env.get("ASSET_PROXY_SERVER") and env.get("ASSET_PROXY_SPKI"):
        yield AssetProxy(server=env["ASSET_PROXY_SERVER"], spki=env["ASSET_PROXY_SPKI"],
                         namespace=env.get("ASSET_PROXY_NAMESPACE") or None)
        return
    proxy = start(binary=env.get("ASSET_PROXY_BIN", "proxy"), cache_dir=env.get("ASSET_PROXY_CACHE_DIR"),
                  ca_dir=env.get("ASSET_PROXY_CA_DIR"), mode=env.get("ASSET_PROXY_MODE"),
                  config=env.get("ASSET_PROXY_CONFIG"), namespace=env.get("ASSET_PROXY_NAMESPACE") or None)
    try:
        yield proxy
    finally:
        proxy.stop()

