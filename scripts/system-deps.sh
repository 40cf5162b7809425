#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (an MTA, SMTP clients, scanners,
# kubectl), when they are missing. Needs root and apt-get; elsewhere it only says what is
# missing, and the tests that need those programs skip with that reason (never in CI).
set -uo pipefail
# package:command-that-proves-it-is-installed
wanted=(
  "postfix:/usr/sbin/postfix"
  "kubectl:kubectl"
  "swaks:swaks"
  "clamav-daemon:/usr/sbin/clamd"
  "spamd:/usr/sbin/spamd"
)
missing=()
for item in "${wanted[@]}"; do
  pkg=${item%%:*}; cmd=${item#*:}
  [ -x "$cmd" ] || command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]} (install them with your package manager)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
  echo "system-deps: apt-get install ${missing[*]} failed" >&2
  exit 1
}
