#!/usr/bin/env bash
# Checks the alert rules in ci/monitoring/alerts.yml and runs their unit tests
# (ci/monitoring/alerts_test.yml) with promtool. Installs Debian's prometheus (promtool) and
# chromium + chromium-driver (for the dashboard's browser test) when they are missing.
#
#   bash ci/monitoring.sh      # locally too; needs root (or the tools already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

packages=()
command -v promtool >/dev/null || packages+=(prometheus)
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
if ((${#packages[@]})); then
  echo "monitoring: installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${packages[@]}"
  echo "monitoring: installed in $(($(date +%s) - start))s"
fi
promtool --version 2>&1 | head -n1

promtool check rules ci/monitoring/alerts.yml
promtool test rules ci/monitoring/alerts_test.yml
echo "monitoring: ok in $(($(date +%s) - start))s"
