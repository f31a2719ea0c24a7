#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: the third-party WebSocket
# clients (Python `websockets`, Node `ws`), schemathesis (pinned) for the HTTP API's
# OpenAPI conformance run, curl for the specification's cURL examples, `kill` for the
# signal tests, Prometheus (`prometheus`, `promtool`) + docker-compose for the
# Prometheus test and the deployment checks, Debian's chromium + chromium-driver and
# Selenium for the dashboard's browser test, kubernetes-validate for the Kubernetes
# manifests, and `nats-server` (JetStream) for the NATS backbone tests.
#
# No suite may be skipped: whatever is missing is installed (Debian packages need root)
# or the script exits 1 naming each missing tool and how to get it. Idempotent: installs
# only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

is_root=false
[ "$(id -u)" = 0 ] && is_root=true
missing=()
apt_updated=false
apt_install() {
  $apt_updated || { apt-get update -qq; apt_updated=true; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
fail_missing() {
  printf '%s\n' "${missing[@]}" >&2
  echo "scripts/test-deps.sh: ${#missing[@]} test prerequisite(s) missing; no suite is skipped, so the tests cannot run" >&2
  exit 1
}

# 1. Debian packages: command -> package (`type -P`: a program on PATH, not a builtin).
tools=(python3 curl kill node npm prometheus promtool docker-compose chromium chromedriver nats-server)
declare -A package=(
  [python3]=python3 [curl]=curl [kill]=procps [node]=nodejs [npm]=npm
  [prometheus]=prometheus [promtool]=prometheus [docker-compose]=docker-compose
  [chromium]=chromium [chromedriver]=chromium-driver [nats-server]=nats-server
)
have() {
  if [ "$1" = python3 ]; then python3 -c '' 2>/dev/null; else type -P "$1" >/dev/null; fi
}
packages=()
for tool in "${tools[@]}"; do
  have "$tool" || packages+=("${package[$tool]}")
done
if ! have python3 || ! python3 -m pip --version >/dev/null 2>&1; then
  packages+=(python3-pip)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  if $is_root; then
    # shellcheck disable=SC2046  # one word per package name
    apt_install $(printf '%s\n' "${packages[@]}" | sort -u)
  fi
  for tool in "${tools[@]}"; do
    have "$tool" \
      || missing+=("missing $tool: install Debian's ${package[$tool]} package (scripts/test-deps.sh does, as root)")
  done
  python3 -m pip --version >/dev/null 2>&1 \
    || missing+=("missing pip for python3: install Debian's python3-pip package (scripts/test-deps.sh does, as root)")
  [ "${#missing[@]}" -eq 0 ] || fail_missing
fi

# 2. Python packages. A Debian system Python refuses pip (PEP 668, "externally
# managed"); as root this script installs into it anyway, otherwise use a virtualenv.
pip_install() {
  local args=(--quiet --disable-pip-version-check)
  if python3 -c 'import os, sys, sysconfig; sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))'; then
    if $is_root; then
      args+=(--break-system-packages)
    else
      missing+=("missing Python package(s) $*: python3 is Debian's externally managed Python; activate a virtualenv (python3 -m venv .venv && . .venv/bin/activate) or run scripts/test-deps.sh as root")
      return 0
    fi
  fi
  python3 -m pip install "${args[@]}" "$@"
}
if ! python3 -c 'import websockets' 2>/dev/null; then
  pip_install -r relay/tests/clients/requirements.txt
fi
SELENIUM_VERSION=4.51.0
if [ "$(python3 -c 'import selenium; print(selenium.__version__)' 2>/dev/null)" != "$SELENIUM_VERSION" ]; then
  pip_install "selenium==$SELENIUM_VERSION"
fi
KUBERNETES_VALIDATE_VERSION=1.37.0
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
SCHEMATHESIS_VERSION=4.32.5
if [ "$(schemathesis --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  pip_install "schemathesis==$SCHEMATHESIS_VERSION"
fi
[ "${#missing[@]}" -eq 0 ] || fail_missing

# 3. Node packages.
if [ ! -d relay/tests/clients/node_modules/ws ]; then
  npm ci --prefix relay/tests/clients --silent --no-audit --no-fund
fi

# 4. Everything is there now, or the run stops here.
python3 -c 'import websockets' 2>/dev/null \
  || missing+=("missing Python package websockets: pip install -r relay/tests/clients/requirements.txt")
[ "$(schemathesis --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ] \
  || missing+=("missing schemathesis $SCHEMATHESIS_VERSION on PATH: pip install schemathesis==$SCHEMATHESIS_VERSION (pip's scripts directory must be on PATH)")
[ "$(python3 -c 'import selenium; print(selenium.__version__)' 2>/dev/null)" = "$SELENIUM_VERSION" ] \
  || missing+=("missing Python package selenium $SELENIUM_VERSION: pip install selenium==$SELENIUM_VERSION")
python3 -c 'import kubernetes_validate' 2>/dev/null \
  || missing+=("missing Python package kubernetes-validate $KUBERNETES_VALIDATE_VERSION: pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
[ -d relay/tests/clients/node_modules/ws ] \
  || missing+=("missing Node package ws: npm ci --prefix relay/tests/clients")
[ "${#missing[@]}" -eq 0 ] || fail_missing
