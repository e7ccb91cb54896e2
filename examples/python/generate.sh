#!/bin/sh
# Generates Python gRPC stubs for the vault's API from proto/ with grpcio-tools
# (pip install grpcio grpcio-tools). Usage: generate.sh [OUT_DIR] (default: examples/python/gen).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
mkdir -p "$out"
python3 -m grpc_tools.protoc -I "$root/proto" --python_out="$out" --grpc_python_out="$out" \
    "$root"/proto/vault/v1/*.proto
echo "stubs in $out"
