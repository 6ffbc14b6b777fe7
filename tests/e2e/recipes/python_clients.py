"""Python requests and httpx through asset-proxy, trusting its CA.

usage: python3 python_clients.py PROXY_URL CA_PEM URL
Prints one JSON line per request: client, status, Cache-Status, body length.
"""
import json
import sys

import httpx
import requests

proxy, ca, url = sys.argv[1:4]

for _ in range(2):
    response = requests.get(url, proxies={"http": proxy, "https": proxy}, verify=ca, timeout=30)
    print(json.dumps({"client": "requests", "status": response.status_code,
                      "cache": response.headers.get("cache-status"), "length": len(response.content)}))

with httpx.Client(proxy=proxy, verify=ca, timeout=30) as client:
    for _ in range(2):
        response = client.get(url)
        print(json.dumps({"client": "httpx", "status": response.status_code,
                          "cache": response.headers.get("cache-status"), "length": len(response.content)}))
