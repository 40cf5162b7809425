#!/usr/bin/env bash
# Run a command against a Kafka broker: the one named by KAIROS_KAFKA_BOOTSTRAP, or the local
# broker, which is started first and stopped afterwards if this script started it.
set -uo pipefail
bin="$(dirname "$0")/../.venv/bin"
started=0
if [ -z "${KAIROS_KAFKA_BOOTSTRAP:-}" ]; then
  if ! "$bin/kairos" kafka status >/dev/null 2>&1; then
    "$bin/kairos" kafka start || exit 2
    started=1
  fi
fi
"$@"
rc=$?
if [ "$started" = 1 ]; then
  "$bin/kairos" kafka stop >/dev/null || true
fi
exit $rc
