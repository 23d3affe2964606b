#!/usr/bin/env bash
# Install Debian's chromium for the headless-browser report test (tests/test_report_browser.py).
# Idempotent: does nothing when a chromium is already on PATH. Quiet: prints apt's log only on failure.
set -euo pipefail

for candidate in chromium chromium-browser; do
  if command -v "$candidate" >/dev/null 2>&1; then
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: apt-get not found; install Chromium yourself (or set STEERLAB_CHROMIUM)" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "install_chromium: need root (or sudo) to apt-get install chromium" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Try without refreshing the package lists first (fast when they are current), then with.
if ! "${SUDO[@]}" apt-get install -y -q chromium >"$log" 2>&1; then
  if ! { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" apt-get install -y -q chromium; } >"$log" 2>&1; then
    echo "install_chromium: apt-get install chromium failed:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
fi
command -v chromium >/dev/null 2>&1 || { echo "install_chromium: chromium still not on PATH" >&2; exit 1; }
