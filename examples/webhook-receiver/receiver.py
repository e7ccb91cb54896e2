#!/usr/bin/env python3
"""A webhook receiver: verifies the vault's signature, then reads the changed secret with its
own token.

    examples/python/generate.sh
    VAULT_TOKEN=<the receiver's own read-only token> \
      python3 examples/webhook-receiver/receiver.py --listen 0.0.0.0:8080 --secret-file hook-secret

The vault's notifications carry names and versions, never values, and are signed:
`x-vault-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. A request
whose signature does not verify, or whose timestamp is more than five minutes off, is refused
with 401 and not acted upon. A verified one is acted upon (here: the secret is read over gRPC
and a fingerprint printed) and then acknowledged; if reading fails, the answer is 503 and the
vault delivers again later. Deliveries are at least once, so repeated delivery ids are skipped.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import vault_grpc  # noqa: E402

TOLERANCE_SECONDS = 300
MAX_BODY = 64 * 1024


def verify(secret, header, body, now):
    """None if the signature header is valid for body, else why not."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
        signature = fields["v1"]
    except (KeyError, ValueError):
        return "malformed signature header"
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return "timestamp outside the tolerance"
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "signature does not match"
    return None


def make_handler(secret, field, stubs):
    secrets_pb2, secrets_pb2_grpc = stubs
    channel = vault_grpc.channel()
    client = secrets_pb2_grpc.SecretsStub(channel)
    metadata = vault_grpc.auth_metadata()
    seen = set()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, code):
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self.answer(413)
            body = self.rfile.read(length)
            problem = verify(secret, self.headers.get("x-vault-signature", ""), body, time.time())
            if problem:
                print(f"rejected: {problem}", flush=True)
                return self.answer(401)
            event = json.loads(body)
            if event["id"] in seen:
                print(f"delivery {event['id']}: already handled", flush=True)
                return self.answer(204)
            kind, path = event["type"], event.get("path", "")
            if kind in ("created", "updated", "undeleted"):
                try:
                    got = client.Get(
                        secrets_pb2.GetRequest(tenant=event["tenant"], path=path),
                        metadata=metadata,
                        timeout=10,
                    )
                except Exception as error:  # grpc.RpcError: let the vault deliver again
                    print(f"delivery {event['id']}: cannot read {path}: {error}", flush=True)
                    return self.answer(503)
                value = got.data.get(field, b"")
                digest = hashlib.sha256(value).hexdigest()[:16]
                print(
                    f"delivery {event['id']}: {kind} {path} -> read version {got.version} "
                    f"{field}-sha256={digest}",
                    flush=True,
                )
            else:
                print(f"delivery {event['id']}: {kind} {path}", flush=True)
            seen.add(event["id"])
            self.answer(204)

        def log_message(self, *args):
            pass  # one line per delivery is printed above

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any)")
    parser.add_argument("--secret-file", required=True, help="the webhook's signing secret")
    parser.add_argument("--field", default="password", help="the field to fingerprint")
    parser.add_argument("--stubs", help="directory of the generated stubs")
    args = parser.parse_args()

    with open(args.secret_file, "rb") as f:
        secret = f.read().rstrip()  # as vault-cli webhook create --secret-file reads it
    vault_grpc.load_stubs(args.stubs)
    from vault.v1 import secrets_pb2, secrets_pb2_grpc

    host, port = args.listen.rsplit(":", 1)
    handler = make_handler(secret, args.field, (secrets_pb2, secrets_pb2_grpc))
    server = HTTPServer((host, int(port)), handler)
    print(f"listening on http://{host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
