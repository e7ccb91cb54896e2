"""Connecting to the vault from Python with stubs generated from proto/ (see generate.sh).

Reads VAULT_ADDR (http://127.0.0.1:8200 by default; https:// needs VAULT_CACERT) and
VAULT_TOKEN, like vault-cli. Shared by get_secret.py and the webhook receiver example.
"""

import os
import sys

import grpc


def load_stubs(directory=None):
    """Makes the generated `vault.v1` package importable."""
    directory = directory or os.environ.get(
        "VAULT_PY_STUBS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
    )
    if not os.path.isdir(os.path.join(directory, "vault", "v1")):
        sys.exit(f"no generated stubs in {directory}: run examples/python/generate.sh first")
    sys.path.insert(0, directory)


def channel():
    addr = os.environ.get("VAULT_ADDR", "http://127.0.0.1:8200")
    if addr.startswith("https://"):
        cacert = os.environ.get("VAULT_CACERT")
        if not cacert:
            sys.exit(f"{addr} is https: set VAULT_CACERT to the CA certificate")
        with open(cacert, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(addr[len("https://"):], credentials)
    if addr.startswith("http://"):
        return grpc.insecure_channel(addr[len("http://"):])
    sys.exit(f"VAULT_ADDR {addr!r} is not http://HOST:PORT or https://HOST:PORT")


def auth_metadata(token=None):
    token = token or os.environ.get("VAULT_TOKEN", "").strip()
    if not token:
        sys.exit("VAULT_TOKEN is not set")
    return [("authorization", f"Bearer {token}")]
