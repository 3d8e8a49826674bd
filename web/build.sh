#!/usr/bin/env bash
# Builds the browser page into a folder of static files that any static
# host can serve: web/build.sh [OUT] (default web/dist).
#
#   OUT/index.html, app.js, api.js, worker.js, ...   the page (web/www)
#   OUT/pkg/nexttdnn_web{.js,_bg.wasm}               the core (web/src)
#   OUT/models/demo.nexttdnn.safetensors             the bundled model
#   OUT/audio/*.wav                                  example recordings
#
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli of the
# version in Cargo.lock (the README says how to get both). wasm-opt
# (binaryen 116 or later) shrinks the module where it is on the PATH. Serve the folder
# with: python3 -m http.server 8080 --bind 127.0.0.1 --directory OUT
#
# NEXTTDNN_WASM_CARGO overrides the cargo command (e.g. Debian's rustc-web
# with -Zbuild-std, as .ci/run uses where rustup cannot download).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$root/web/dist}")"
cargo_cmd=(${NEXTTDNN_WASM_CARGO:-cargo})
target_dir="${CARGO_TARGET_DIR:-$root/target}"

echo "building the core for wasm32 (release)"
(cd "$root" && "${cargo_cmd[@]}" build --release --target wasm32-unknown-unknown -p nexttdnn-web)
wasm="$target_dir/wasm32-unknown-unknown/release/nexttdnn_web.wasm"

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
if [ "$have" != "$want" ]; then
    echo "wasm-bindgen $want is needed (found: ${have:-none}): cargo install wasm-bindgen-cli --version $want" >&2
    exit 1
fi

# Everything goes into a staging folder beside OUT, which then replaces
# OUT whole: a server never sees half a build.
stage="$(mktemp -d "$(dirname "$out")/.$(basename "$out").build.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
wasm-bindgen --target web --no-typescript --out-dir "$stage/pkg" "$wasm"
# wasm-opt from binaryen 116 or later (npm's `binaryen` package has one);
# older ones (Debian 12's 108) turn wasm-bindgen's externref table into a
# function table, and the module then fails to start.
opt_version=$(wasm-opt --version 2>/dev/null | awk '{print $3}' || true)
if [ "${opt_version:-0}" -ge 116 ] 2>/dev/null; then
    echo "optimising with wasm-opt $opt_version"
    wasm-opt -O2 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        "$stage/pkg/nexttdnn_web_bg.wasm" -o "$stage/pkg/opt.wasm"
    mv "$stage/pkg/opt.wasm" "$stage/pkg/nexttdnn_web_bg.wasm"
else
    echo "no wasm-opt of binaryen 116 or later (found: ${opt_version:-none}): the module is left as wasm-bindgen wrote it"
fi
cp "$root"/web/www/* "$stage/"
mkdir -p "$stage/models" "$stage/audio"
cp "$root/assets/model/demo.nexttdnn.safetensors" "$stage/models/"
cp "$root"/assets/audio/spk[123]_[abc].wav "$stage/audio/"
chmod -R a+rX "$stage"

# One build at a time replaces OUT (a lock folder, since mkdir is atomic
# everywhere; a lock whose process is gone is taken over).
lock="$(dirname "$out")/.$(basename "$out").lock"
until mkdir "$lock" 2>/dev/null; do
    holder=$(cat "$lock/pid" 2>/dev/null || true)
    if [ -n "$holder" ] && ! kill -0 "$holder" 2>/dev/null; then
        rm -rf "$lock"
        continue
    fi
    echo "$out is being replaced by process ${holder:-?}, waiting"
    sleep 1
done
echo $$ >"$lock/pid"
trap 'rm -rf "$stage" "$lock"' EXIT
rm -rf "$out.old"
if [ -e "$out" ]; then mv "$out" "$out.old"; fi
mv "$stage" "$out"
rm -rf "$out.old" "$lock"
trap - EXIT
size=$(stat -c %s "$out/pkg/nexttdnn_web_bg.wasm")
gz=$(gzip -9 -c "$out/pkg/nexttdnn_web_bg.wasm" | wc -c)
echo "built $out: nexttdnn_web_bg.wasm $((size / 1000)) kB, $((gz / 1000)) kB gzipped"
