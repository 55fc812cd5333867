#!/usr/bin/env python3
"""One round trip through weir's HTTP gateway, as a caller that does not speak
NATS sees it (scripts/demo.sh runs it): start a webhook receiver, POST an
order with a Weir-Callback, poll its status until it is final, and wait for
the signed webhook, checking its signature the Standard Webhooks way
(HMAC-SHA256 over "id.timestamp.body", keyed by the base64 after "whsec_").
Standard library only.

usage: demo-webhook.py GATEWAY_URL SECRET
"""

import base64
import hashlib
import hmac
import http.server
import json
import sys
import threading
import time
import urllib.parse
import urllib.request

gateway, secret = sys.argv[1].rstrip("/"), sys.argv[2]
key = base64.b64decode(secret.removeprefix("whsec_"))
received = []
arrived = threading.Event()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        wid = self.headers.get("webhook-id", "")
        ts = self.headers.get("webhook-timestamp", "")
        signed = f"{wid}.{ts}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        given = [s.split(",", 1)[1] for s in self.headers.get("webhook-signature", "").split() if "," in s]
        ok = any(hmac.compare_digest(expected, g) for g in given)
        received.append((ok, wid, json.loads(body)))
        self.send_response(204 if ok else 401)
        self.end_headers()
        arrived.set()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
callback = f"http://127.0.0.1:{server.server_address[1]}/hook"

order = {"id": "web-1", "customer": "c-web", "items": [{"sku": "A", "qty": 2, "unit_price": 49.5}]}
request = urllib.request.Request(
    f"{gateway}/v1/events/orders.created.web",
    data=json.dumps(order).encode(),
    headers={"Content-Type": "application/json", "Weir-Callback": callback},
    method="POST",
)
with urllib.request.urlopen(request, timeout=10) as response:
    accepted = json.load(response)
    print(f"demo: POST -> {response.status}, Location: {response.headers['Location']}")
status_url = urllib.parse.urljoin(gateway + "/", accepted["status_url"])

deadline = time.time() + 30
while True:
    with urllib.request.urlopen(f"{status_url}?wait=5s", timeout=15) as response:
        doc = json.load(response)
    print(f"demo: GET status -> {doc['status']} (attempts {doc['attempts']})")
    if doc["status"] in ("succeeded", "dead-lettered") or time.time() > deadline:
        break
print(f"demo: outputs {[o['subject'] for o in doc['outputs']]}")

if not arrived.wait(30):
    sys.exit("demo: no webhook arrived within 30 s")
ok, wid, body = received[0]
print(f"demo: webhook {wid}: status {body['status']}, signature {'verified' if ok else 'WRONG'}")
sys.exit(0 if ok else 1)
