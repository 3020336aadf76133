#!/usr/bin/env bash
# Check that vendor/mistralrs-core is exactly the published mistralrs-core
# crate plus the patches in vendor/patches (applied in name order).
#
#   vendor/check-patches.sh            # downloads the crate from crates.io
#   MRC_CRATE=/path/to/mistralrs-core-0.8.1.crate vendor/check-patches.sh
#
# Exits 0 when the patched crate and the vendored tree are identical, non-zero
# on a failed download, a wrong checksum, a patch that does not apply cleanly
# (no fuzz), or any difference. See vendor/PATCHES.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendored="$here/mistralrs-core"
patches="$here/patches"

name=mistralrs-core
version=0.8.1
# crates.io checksum of mistralrs-core 0.8.1 (as recorded in Cargo.lock before vendoring).
sha256=a2b8b9e5c94491d9ceeded3a30291cb6af6ae74810a5776dd55e3bbb8b3429d4

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
crate="$tmp/$name-$version.crate"

if [[ -n "${MRC_CRATE:-}" ]]; then
    cp "$MRC_CRATE" "$crate"
else
    curl -sSfL "https://static.crates.io/crates/$name/$name-$version.crate" -o "$crate" ||
        curl -sSfL "https://crates.io/api/v1/crates/$name/$version/download" -o "$crate"
fi

actual="$(sha256sum "$crate" | cut -d' ' -f1)"
if [[ "$actual" != "$sha256" ]]; then
    echo "checksum mismatch for $name-$version.crate: $actual (want $sha256)" >&2
    exit 1
fi

mkdir "$tmp/src"
tar -xzf "$crate" -C "$tmp/src"
tree="$tmp/src/$name-$version"

shopt -s nullglob
list=("$patches"/*.patch)
if ((${#list[@]} == 0)); then
    echo "no patches in $patches" >&2
    exit 1
fi
for p in "${list[@]}"; do
    echo "applying $(basename "$p")"
    (cd "$tree" && patch -p1 --forward --fuzz=0 --no-backup-if-mismatch --dry-run --quiet <"$p")
    (cd "$tree" && patch -p1 --forward --fuzz=0 --no-backup-if-mismatch --quiet <"$p")
done

# Packaging files that cargo adds to the .crate and that are not vendored.
rm -f "$tree/.cargo_vcs_info.json" "$tree/.cargo-ok" "$tree/Cargo.lock"

if diff -r "$tree" "$vendored"; then
    echo "OK: $name $version + ${#list[@]} patch(es) == vendor/$name"
else
    echo "FAIL: vendor/$name differs from $name $version + vendor/patches" >&2
    exit 1
fi
