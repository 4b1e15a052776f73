#!/usr/bin/env bash
# Install what radnode needs on a Debian machine, then radnode itself.
#   bash scripts/install.sh            Debian packages, RabbitMQ, and `pip install .` (what a site or image gets)
#   bash scripts/install.sh --system   Debian packages and RabbitMQ only (scripts/test.sh installs the package itself)
# Idempotent: packages already present are not fetched again, and RabbitMQ is
# started only where nothing listens on 127.0.0.1:5672.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(dcmtk orthanc orthanc-dicomweb dicom3tools rabbitmq-server docker-compose mricron-data poppler-utils chromium)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install.sh: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  # policy-rc.d keeps apt from starting services (Orthanc, RabbitMQ) itself.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5672; then
  echo "install.sh: starting RabbitMQ on 127.0.0.1:5672"
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    $SUDO -E rabbitmq-server -detached
  for _ in $(seq 1 90); do port_open 5672 && break; sleep 1; done
  port_open 5672 || { echo "install.sh: RabbitMQ did not start" >&2; exit 1; }
fi

if [ "${1:-}" != "--system" ]; then
  # A regular (non-editable) install: the same files a wheel or the Docker image carries.
  python3 -m pip install -q --disable-pip-version-check .
  # pyenv-managed Pythons find new console scripts (radnode) only after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
fi
echo "install.sh: ready"
