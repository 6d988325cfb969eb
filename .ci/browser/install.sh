#!/usr/bin/env bash
# Install Debian's Chromium for the test that renders the HTML report headless.
# Idempotent, non-interactive, quiet. Run as root (or with passwordless sudo).
# Usage: bash .ci/browser/install.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "browser/install.sh: $(chromium --version 2>/dev/null) already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/hpcmix-browser-install.XXXXXX.log)
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends chromium; } </dev/null >"$log" 2>&1; then
    echo "browser/install.sh: apt-get failed; its output:" >&2
    cat "$log" >&2
    exit 1
fi
rm -f "$log"
echo "browser/install.sh: done ($(chromium --version 2>/dev/null))"
