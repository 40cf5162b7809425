#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (an MTA, SMTP clients, scanners,
# kubectl, node and npm for the vendors' Node SDKs), when they are missing. Needs root and apt-get; elsewhere it only says what is
# missing, and the tests that need those programs skip with that reason. In CI (CI=true) those
# tests fail instead of skipping, and so does this script: it exits non-zero whenever something
# is still missing at the end, and whenever apt-get fails.
set -uo pipefail
# package:command-that-proves-it-is-installed
wanted=(
  "postfix:/usr/sbin/postfix"
  "kubectl:kubectl"
  "swaks:swaks"
  "clamav-daemon:/usr/sbin/clamd"
  "spamd:/usr/sbin/spamd"
  # promtool checks the alerting rules (deploy/prometheus/rules.yaml)
  "prometheus:promtool"
  # the official Node SDKs (Resend, Mailgun) of tests/sdk/node
  "nodejs:node"
  "npm:npm"
)

missing_packages() {
  local item pkg cmd
  for item in "${wanted[@]}"; do
    pkg=${item%%:*}; cmd=${item#*:}
    [ -x "$cmd" ] || command -v "$cmd" >/dev/null 2>&1 || echo "$pkg"
  done
}

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]} (install them with your package manager)" >&2
  if [ "${CI:-}" = true ]; then
    echo "system-deps: CI must install them (needs root and apt-get)" >&2
    exit 1
  fi
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# a failed update may leave usable package lists: the install below decides
apt-get update -qq >/dev/null || echo "system-deps: apt-get update failed" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
  echo "system-deps: apt-get install ${missing[*]} failed" >&2
  exit 1
}
mapfile -t still < <(missing_packages)
if [ ${#still[@]} -ne 0 ]; then
  echo "system-deps: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
