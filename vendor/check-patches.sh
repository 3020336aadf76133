#!/usr/bin/env bash
# Check that each vendored crate is exactly the published crate plus its
# patches (applied in name order):
#   vendor/mistralrs-core = mistralrs-core 0.8.1 + vendor/patches/*.patch
#   vendor/candle-core    = candle-core 0.10.2   + vendor/patches/candle-core/*.patch
#
#   vendor/check-patches.sh            # downloads the crates from crates.io
#   MRC_CRATE=/path/to/mistralrs-core-0.8.1.crate \
#   CANDLE_CRATE=/path/to/candle-core-0.10.2.crate vendor/check-patches.sh
#
# Exits 0 when every patched crate and its vendored tree are identical,
# non-zero on a failed download, a wrong checksum, a patch that does not apply
# cleanly (no fuzz), or any difference. See vendor/PATCHES.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

check() { # name version sha256 patch-dir local-crate-or-empty
    local name=$1 version=$2 sha256=$3 patches=$4 local_crate=$5
    local crate="$tmp/$name-$version.crate" vendored="$here/$name"
    if [[ -n "$local_crate" ]]; then
        cp "$local_crate" "$crate"
    else
        curl -sSfL "https://static.crates.io/crates/$name/$name-$version.crate" -o "$crate" ||
            curl -sSfL "https://crates.io/api/v1/crates/$name/$version/download" -o "$crate"
    fi

    local actual
    actual="$(sha256sum "$crate" | cut -d' ' -f1)"
    if [[ "$actual" != "$sha256" ]]; then
        echo "checksum mismatch for $name-$version.crate: $actual (want $sha256)" >&2
        return 1
    fi

    mkdir -p "$tmp/src-$name"
    tar -xzf "$crate" -C "$tmp/src-$name"
    local tree="$tmp/src-$name/$name-$version"

    shopt -s nullglob
    local list=("$patches"/*.patch)
    if ((${#list[@]} == 0)); then
        echo "no patches in $patches" >&2
        return 1
    fi
    local p
    for p in "${list[@]}"; do
        echo "$name: applying $(basename "$p")"
        (cd "$tree" && patch -p1 --forward --fuzz=0 --no-backup-if-mismatch --dry-run --quiet <"$p")
        (cd "$tree" && patch -p1 --forward --fuzz=0 --no-backup-if-mismatch --quiet <"$p")
    done

    # Packaging files that cargo adds to the .crate and that are not vendored.
    rm -f "$tree/.cargo_vcs_info.json" "$tree/.cargo-ok" "$tree/Cargo.lock"

    if diff -r "$tree" "$vendored"; then
        echo "OK: $name $version + ${#list[@]} patch(es) == vendor/$name"
    else
        echo "FAIL: vendor/$name differs from $name $version + its patches" >&2
        return 1
    fi
}

# crates.io checksums (as recorded in Cargo.lock before vendoring).
check mistralrs-core 0.8.1 a2b8b9e5c94491d9ceeded3a30291cb6af6ae74810a5776dd55e3bbb8b3429d4 \
    "$here/patches" "${MRC_CRATE:-}"
check candle-core 0.10.2 6bd9895436c1ba5dc1037a19935d084b838db066ff4e15ef7dded020b7c12a4a \
    "$here/patches/candle-core" "${CANDLE_CRATE:-}"
