#!/usr/bin/env bash
# Idempotent set-up used by both README commands: Python 3.11 venv with the project
# and its dev extras, and the Java/Maven the local Kafka needs. PostgreSQL (and
# PgBouncer) are installed by `insights stack up` itself when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root_apt() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "bootstrap: missing $*; install it (Debian: apt-get install $*)" >&2
    exit 1
  fi
  if [ ! -f /tmp/.insights-apt-updated ]; then
    apt-get update -q >/dev/null && touch /tmp/.insights-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    py="$cand"; break
  fi
done
if [ -z "$py" ]; then
  as_root_apt python3.11 python3.11-venv
  py=python3.11
fi

command -v java >/dev/null 2>&1 || as_root_apt openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || as_root_apt maven

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $py"
  "$py" -m venv .venv
fi
stamp=.venv/.installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing the project into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
