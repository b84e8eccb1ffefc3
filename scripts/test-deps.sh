#!/usr/bin/env bash
# System packages the tests use as real peers: prometheus and promtool (alert, query and scrape tests) and
# headless Chromium (report test). Installed only when missing and when we are root;
# otherwise the tests that need them say what to install and are skipped.
set -uo pipefail
need=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || echo "warning: could not install ${need[*]}; tests that need them will be skipped" >&2
fi
exit 0
