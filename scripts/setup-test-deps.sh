#!/usr/bin/env bash
# What the test suite needs beyond the collector's own set-up (scripts/setup-host.sh):
# Debian's chromium, headless, to render and screenshot the HTML reports. Idempotent; root.
set -euo pipefail
source "$(dirname "$0")/lib/apt.sh"

TEST_PACKAGES=(chromium fonts-dejavu-core)
mapfile -t missing < <(missing_packages "${TEST_PACKAGES[@]}")
apt_install "${missing[@]}"
