#!/usr/bin/env bash
# Refresh the vendored htmx from the npm registry: the storefront serves it itself (never from a
# CDN). Usage: web-storefront/scripts/vendor-htmx.sh [VERSION]. Then update the version in
# templates/base.html, static/vendor/README.md and the file name.
set -euo pipefail
version=${1:-2.0.11}
vendor="$(cd "$(dirname "$0")/.." && pwd)/src/web_storefront/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@${version}" >/dev/null && tar xzf "htmx.org-${version}.tgz")
cp "$work/package/dist/htmx.min.js" "$vendor/htmx-${version}.min.js"
cp "$work/package/LICENSE" "$vendor/htmx-LICENSE.txt"
sha256sum "$vendor/htmx-${version}.min.js"
