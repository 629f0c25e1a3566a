#!/usr/bin/env bash
# What the test suite needs beyond the collector's own set-up (scripts/setup-host.sh):
# Debian's chromium, headless, to render and screenshot the HTML reports. Idempotent; root.
set -euo pipefail

TEST_PACKAGES=(chromium fonts-dejavu-core)
missing=()
for pkg in "${TEST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
