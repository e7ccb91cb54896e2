#!/usr/bin/env python3
"""Reads a secret over gRPC from Python, with stubs generated from proto/.

    examples/python/generate.sh
    VAULT_TOKEN=... python3 examples/python/get_secret.py --tenant acme db/primary --field password

Prints the secret's version and field names, and a fingerprint of the field asked for (never
the value itself). Errors print the gRPC status code and the vault's message.
"""

import argparse
import hashlib
import sys

import grpc

import vault_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", required=True)
    parser.add_argument("path")
    parser.add_argument("--field", default="password")
    parser.add_argument("--stubs", help="directory of the generated stubs")
    args = parser.parse_args()

    vault_grpc.load_stubs(args.stubs)
    from vault.v1 import secrets_pb2, secrets_pb2_grpc, system_pb2, system_pb2_grpc

    with vault_grpc.channel() as channel:
        try:
            status = system_pb2_grpc.SystemStub(channel).Status(
                system_pb2.StatusRequest(), timeout=10
            )
            print(f"vault initialized={status.initialized} sealed={status.sealed}")
            secret = secrets_pb2_grpc.SecretsStub(channel).Get(
                secrets_pb2.GetRequest(tenant=args.tenant, path=args.path),
                metadata=vault_grpc.auth_metadata(),
                timeout=10,
            )
        except grpc.RpcError as error:
            print(f"vault error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"{secret.path} version {secret.version} fields: {', '.join(sorted(secret.data))}")
    if args.field not in secret.data:
        print(f"{secret.path} has no field {args.field!r}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(secret.data[args.field]).hexdigest()[:16]
    print(f"{args.field}-sha256={digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
