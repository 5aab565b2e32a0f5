#!/usr/bin/env bash
# Provides the Pulumi engine: `pulumi` + `pulumi-language-nodejs` from PATH when present,
# otherwise built from Go modules with the machine's Go and cached by version outside the repo.
# Prints the directory holding both binaries.
#
#   scripts/engine.sh            ensure the engine, print its bin dir
#   scripts/engine.sh --check    exit 1 when the engine is neither on PATH nor cached
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${ENGINE_CACHE:-/var/cache/mailinfra/engine}
log() { echo "[engine] $*" >&2; }

# The CLI matches the npm SDK's version exactly.
sdk_version=v$(node -p "require('$repo/node_modules/@pulumi/pulumi/package.json').version")
# The nodejs language host became its own Go module (sdk/nodejs/cmd/pulumi-language-nodejs/v3) after
# v3.68.0, and that module is not served by the Go module proxy this project can reach; v3.68.0 is the
# newest release whose sdk/v3 module still contains it. It only launches node on @pulumi/pulumi's own
# `cmd/run`, so the program still runs on the pinned npm SDK.
langhost_version=v3.68.0

if command -v pulumi >/dev/null && command -v pulumi-language-nodejs >/dev/null \
   && [ "$(dirname "$(command -v pulumi)")" != "$cache/$sdk_version/bin" ]; then
    dirname "$(command -v pulumi)"
    exit 0
fi

bin=$cache/$sdk_version/bin
if [ -x "$bin/pulumi" ] && [ -x "$bin/pulumi-language-nodejs" ]; then
    echo "$bin"
    exit 0
fi
[ "${1:-}" = "--check" ] && { log "no engine on PATH and none cached in $bin"; exit 1; }

command -v go >/dev/null || { log "Go is required to build the Pulumi engine (none on PATH)"; exit 1; }
mkdir -p "$bin"
export GOFLAGS=-mod=mod

build_module() {  # $1 dir, $2 module-path-and-version list, $3 package, $4 output, $5 ldflags
    local dir=$1 reqs=$2 pkg=$3 out=$4 ldflags=$5
    mkdir -p "$dir"
    (
        cd "$dir"
        printf 'module example.invalid/%s\n\ngo 1.25\n' "$(basename "$dir")" > go.mod
        # pkg/v3's own go.mod replaces sdk/v3 with ../sdk and this fork; replaces only act in the main module
        echo 'replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e' >> go.mod
        # shellcheck disable=SC2086
        go get $reqs >/dev/null 2>"$dir/get.log" || { cat "$dir/get.log" >&2; exit 1; }
        go build -trimpath -ldflags "$ldflags" -o "$out" "$pkg"
    )
}

start=$(date +%s)
log "building pulumi $sdk_version from Go modules (a few minutes, once)"
build_module "$cache/build/cli-$sdk_version" \
    "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@$sdk_version github.com/pulumi/pulumi/sdk/v3@$sdk_version" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$bin/pulumi.tmp" \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$sdk_version"
log "building pulumi-language-nodejs from sdk/v3 $langhost_version"
build_module "$cache/build/langhost-$langhost_version" \
    "github.com/pulumi/pulumi/sdk/v3@$langhost_version" \
    github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs "$bin/pulumi-language-nodejs.tmp" \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$langhost_version"
mv "$bin/pulumi-language-nodejs.tmp" "$bin/pulumi-language-nodejs"
mv "$bin/pulumi.tmp" "$bin/pulumi"
log "engine built in $(( $(date +%s) - start )) s: $("$bin/pulumi" version)"
echo "$bin"
