"""Playwright for Python through asset-proxy. Chromium trusts the proxy by its CA's key (the
output of `proxy ca spki`), so no certificate store is needed (see the README).

usage: python3 playwright_python.py PROXY_URL APP_URL CA_SPKI
Prints the app's verdict.
"""
import sys

from playwright.sync_api import sync_playwright

proxy, url, spki = sys.argv[1:4]

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--disable-quic",
              f"--ignore-certificate-errors-spki-list={spki}"],
        proxy={"server": proxy, "bypass": "<-loopback>"},
    )
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('result').textContent !== 'loading'", timeout=60_000)
    print(page.text_content("#result"))
    browser.close()
