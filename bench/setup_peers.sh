#!/usr/bin/env bash
# Installs the ONNX Runtime peer: onnxruntime-node (CPU library inside the npm
# package) into bench/node_modules, from bench/package.json + package-lock.json.
# Idempotent: does nothing when it is already installed and loads.
#
# usage: bench/setup_peers.sh
# exit: 0 installed, 3 node/npm missing, 1 npm install failed (registry unreachable?)
#
# --ignore-scripts skips the package's postinstall, which would only download
# optional GPU providers; the CPU binaries are in the tarball
# (node_modules/onnxruntime-node/bin/napi-v6/linux/x64/). The lock file is
# written without "resolved" registry URLs (--omit-lockfile-registry-resolved).
set -uo pipefail
cd "$(dirname "$0")"
ORT_VERSION=1.30.0
BIN=node_modules/onnxruntime-node/bin/napi-v6/linux/x64

loads() {
  node -e "const o = require('onnxruntime-node'); process.stdout.write(o.env.versions.node || '?')" 2>/dev/null
}

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "setup_peers: node/npm not found (apt-get install nodejs npm); ONNX Runtime peer not installed" >&2
  exit 3
}

if v=$(loads) && [ "$v" = "$ORT_VERSION" ]; then
  echo "setup_peers: onnxruntime-node $v already installed in bench/node_modules" >&2
  exit 0
fi

if [ ! -f package.json ]; then
  cat > package.json <<EOF
{
  "name": "vitc-bench-peers",
  "private": true,
  "description": "Peers for vitc's benchmark: ONNX Runtime (CPU) for node",
  "dependencies": {
    "onnxruntime-node": "$ORT_VERSION"
  }
}
EOF
fi

flags=(--ignore-scripts --no-audit --no-fund --omit-lockfile-registry-resolved --loglevel=error)
if [ -f package-lock.json ]; then
  out=$(npm ci "${flags[@]}" 2>&1)
else
  out=$(npm install "${flags[@]}" --save-exact "onnxruntime-node@$ORT_VERSION" 2>&1)
fi
rc=$?
if [ $rc -ne 0 ]; then
  echo "setup_peers: npm install of onnxruntime-node@$ORT_VERSION failed (npm registry unreachable?): $(echo "$out" | grep -m1 -i 'err' || echo "$out" | tail -n1)" >&2
  exit 1
fi
if [ ! -f "$BIN/libonnxruntime.so.1" ] || [ ! -f "$BIN/onnxruntime_binding.node" ]; then
  echo "setup_peers: onnxruntime-node installed but $BIN has no CPU binaries" >&2
  exit 1
fi
if ! v=$(loads); then
  echo "setup_peers: onnxruntime-node installed but require('onnxruntime-node') fails:" >&2
  node -e "require('onnxruntime-node')" 2>&1 | head -n 5 >&2
  exit 1
fi
echo "setup_peers: onnxruntime-node $v installed in bench/node_modules ($(du -sh node_modules | cut -f1))" >&2
