#!/usr/bin/env bash
# Test data: the ECS project's own generated flat field definitions, pinned to the
# ecs.version our documents declare. They come from the npm package @elastic/ecs
# (Apache-2.0; build/commonjs/ecs_flat.js exports EcsFlat), fetched with npm, checked
# against the registry's sha512 integrity recorded here, and converted to JSON with node.
# Result: .cache/ecs/<version>/ecs_flat.json beside the package's LICENSE and NOTICE.txt.
# Idempotent; tests/ecs/test_ecs_conformance.py fails (does not skip) without it.
set -euo pipefail

ECS_PACKAGE_VERSION=8.11.5
INTEGRITY="sha512-S7qkIaRrKHyiU6ww0r5qt8mOh8wK8w3LpNdMb0qxuj6wxQmn6TVpZ9DxxICGVKwaPbQIYuNTmBPSUocl+VhINw=="

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/ecs/$ECS_PACKAGE_VERSION"
[[ -s "$dest/ecs_flat.json" && -s "$dest/LICENSE" ]] && exit 0

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@elastic/ecs@$ECS_PACKAGE_VERSION" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
    echo "fetch-ecs: @elastic/ecs@$ECS_PACKAGE_VERSION integrity mismatch: $actual" >&2
    exit 1
fi
tar xzf "$tarball" -C "$work"
mkdir -p "$dest"
node -e '
const flat = require(process.argv[1]).EcsFlat;
require("fs").writeFileSync(process.argv[2], JSON.stringify(flat));
' "$work/package/build/commonjs/ecs_flat.js" "$dest/ecs_flat.json.tmp"
cp "$work/package/LICENSE" "$work/package/NOTICE.txt" "$dest/"
printf '%s\n%s\n' "@elastic/ecs@$ECS_PACKAGE_VERSION" "$INTEGRITY" >"$dest/SOURCE"
mv "$dest/ecs_flat.json.tmp" "$dest/ecs_flat.json"
echo "fetch-ecs: ECS $ECS_PACKAGE_VERSION field definitions in $dest" >&2
