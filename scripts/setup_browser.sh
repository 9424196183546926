#!/usr/bin/env bash
# Debian's chromium for the browser test (tests/e2e): Playwright drives this binary, it never
# downloads a browser of its own. Needs root (apt-get); does nothing when chromium is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "setup: $(chromium --version)"
