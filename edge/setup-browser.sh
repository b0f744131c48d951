#!/usr/bin/env bash
# Installs Debian's headless Chromium and its WebDriver for the browser tests
# (tests/partner_browser.rs), idempotently: nothing to do when both are there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
printf '\033[1m[setup]\033[0m %s\n' "installing chromium and chromium-driver (apt-get)"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
