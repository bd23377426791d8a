#!/usr/bin/env bash
# Idempotent set-up used by both README commands: Python 3.11 venv with the project
# and its dev extras at exactly the versions in requirements.lock, and the Java/Maven
# the local Kafka needs. PostgreSQL (and PgBouncer) are installed by `insights stack up`
# itself when missing.
#
#   scripts/bootstrap.sh                 install (what `make install` runs)
#   scripts/bootstrap.sh lock [UPGRADE]  regenerate requirements.lock from pyproject.toml,
#                                        then install it (what `make lock` runs); UPGRADE
#                                        is empty (keep every current pin), "1" (newest
#                                        versions pyproject.toml allows) or package names
#                                        (upgrade only those)
set -euo pipefail
cd "$(dirname "$0")/.."

# The resolver that writes the lock. Pinned so that the same pyproject.toml and lock
# give the same output on every machine (a newer uv may format or resolve differently).
UV_VERSION=0.13.8
# pip itself is not in the lock (it installs the lock); pinned for the same reason.
PIP_VERSION=26.3
LOCK=requirements.lock

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

if [ "${1:-}" = lock ]; then
  shift
  # uv lives in its own venv inside the git-ignored .venv: it is a tool that writes
  # the lock, not a dependency, and must not show up among the locked packages.
  tools=.venv/lock-tools
  if [ "$("$tools/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    "$py" -m venv "$tools"
    "$tools/bin/python" -m pip install -q "uv==$UV_VERSION"
  fi
  upgrade=()
  for pkg in "$@"; do
    case "$pkg" in
      1|all|yes|true) upgrade+=(--upgrade) ;;
      *) upgrade+=(--upgrade-package "$pkg") ;;
    esac
  done
  # Without --upgrade uv keeps every version already in $LOCK and only resolves what
  # pyproject.toml added or changed, so running this twice changes nothing.
  # --universal and --python-version: the same lock whichever machine writes it.
  "$tools/bin/uv" pip compile pyproject.toml --extra dev \
    --generate-hashes --universal --python-version 3.11 \
    --custom-compile-command "make lock" --quiet \
    ${upgrade[@]+"${upgrade[@]}"} -o "$LOCK"
  echo "bootstrap: wrote $LOCK"
fi

# Re-install whenever the lock (versions) or pyproject.toml (entry points, package
# list) changes.
stamp=.venv/.installed
want=$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing $LOCK and the project into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "pip==$PIP_VERSION"
  # --require-hashes: every distribution must match a hash in the lock, so a fresh
  # clone gets the bytes that were tested, not just the version numbers.
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK"
  # The project itself, editable, with no dependency resolution of its own: a
  # dependency missing from the lock fails the lock test instead of being fetched here.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
