#!/usr/bin/env bash
# Installs everything ltvd needs to build and test on Debian 12 (run as root
# or with sudo available). The one list of packages: README and CI call this.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
  build-essential meson ninja-build pkg-config ca-certificates \
  libmicrohttpd-dev libuv1-dev libcjson-dev libopenblas-dev \
  python3 curl \
  strace systemd libseccomp2 prometheus \
  libjs-chart.js chromium \
  nats-server libnats-dev haproxy
# strace, systemd (systemd-analyze) and libseccomp2: tests/test_deploy.py checks
# deploy/ltvd.service against the syscalls ltvd makes; it must not be skipped.
# nats-server, libnats-dev, haproxy: cluster mode (docs/CLUSTER.md) is built with
# libnats, and tests/test_cluster.py runs a 3-server NATS cluster; without
# them the build leaves cluster mode out and that test skips (CI fails on it);
# it also runs deploy/haproxy/haproxy.cfg in front of the cluster.
# prometheus: its promtool checks a live /metrics and deploy/prometheus in
# tests/test_metrics.py (the package also installs a prometheus.service,
# which the tests neither need nor start).
# libjs-chart.js: the Chart.js that GET /dashboard serves (dashboard.chartjs_path);
# chromium: tests/test_dashboard.py loads the page headless.

# tests/test_k8s.py lints and renders deploy/k8s/: yamllint, and kubectl from
# Debian's kubernetes-client (1.20; kubectl kustomize and the --local commands
# need no cluster). A kubectl already installed from another source (e.g. the
# Google Cloud SDK's `kubectl` package, which owns /usr/bin/kubectl and would
# conflict) is used as it is.
$SUDO apt-get install -y -q --no-install-recommends yamllint
if ! command -v kubectl >/dev/null; then
  $SUDO apt-get install -y -q --no-install-recommends kubernetes-client
fi

# The OpenAPI linter for tests/test_openapi_lint.py: @redocly/cli from the npm
# registry, pinned, into tools/node (git-ignored). It needs Node.js >= 20.19;
# with an older one the lint test skips (and fails under CI).
REDOCLY_VERSION=2.77.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -q --no-install-recommends npm
fi
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "install-deps: Node.js $(node --version) is older than 20.19: not installing @redocly/cli (the OpenAPI lint test will skip)" >&2
elif [ "$(node -p "require('$ROOT/tools/node/node_modules/@redocly/cli/package.json').version" 2>/dev/null)" != "$REDOCLY_VERSION" ]; then
  npm install --prefix "$ROOT/tools/node" --no-save --no-fund --no-audit --loglevel=error "@redocly/cli@$REDOCLY_VERSION"
fi
