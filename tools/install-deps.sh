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
  python3 curl
