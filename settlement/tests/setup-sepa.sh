#!/usr/bin/env bash
# Installs what the SEPA test (settlement/tests/payout_files.rs) needs,
# idempotently: xmllint (Debian's libxml2-utils) and the pain.001.001.09 XSD
# from the pinned PyPI package sepaxml, into target/sepa-xsd (no system
# Python packages are touched). Nothing to do when both are there.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/target/sepa-xsd"
xsd="$dest/sepaxml/schemas/pain.001.001.09.xsd"
req="$root/settlement/tests/sepa-requirements.txt"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v xmllint >/dev/null 2>&1; then
  say "installing libxml2-utils (xmllint) (apt-get)"
  apt_install libxml2-utils
fi
if [ ! -f "$xsd" ]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    say "installing python3-pip (apt-get)"
    apt_install python3 python3-pip
  fi
  say "installing sepaxml 2.7.0 (pain.001.001.09 XSD) into target/sepa-xsd"
  rm -rf "$dest"
  mkdir -p "$dest"
  args=(install --quiet --disable-pip-version-check --no-deps --require-hashes --target "$dest" -r "$req")
  # a --target install touches no system package, so Debian's
  # externally-managed marker may be overridden for it
  python3 -m pip "${args[@]}" 2>/dev/null || python3 -m pip "${args[@]}" --break-system-packages
fi
command -v xmllint >/dev/null && test -f "$xsd"
