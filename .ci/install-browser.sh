#!/usr/bin/env bash
# The review page's browser tests (tests/review/test_review_browser.py) drive Debian's Chromium through selenium
# (a test dependency in pyproject.toml). Installs chromium + chromium-driver where they are missing and
# apt-get can (root); otherwise those tests skip with one line saying why.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium / chromedriver missing and apt-get unavailable: the browser tests will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
  echo "apt-get could not install chromium: the browser tests will skip"
fi
exit 0
