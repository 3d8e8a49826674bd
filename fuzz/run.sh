#!/usr/bin/env bash
# Builds the fuzz targets and runs one with libFuzzer.
#
#   bash fuzz/run.sh TARGET [SECONDS]      TARGET: wav lists config model_file checkpoint
#
# Works on stable Rust: coverage comes from the wrapper in sancov-rustc.sh,
# applied to this crate, hound and ron only. The first build copies the
# release build folder (same profile and features), so only the instrumented
# crates are compiled. Findings land in fuzz/artifacts/TARGET/, the growing
# corpus in fuzz/corpus/TARGET/ (both ignored by git); seeds come from the
# repository's own files.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: fuzz/run.sh TARGET [SECONDS]}"
seconds="${2:-600}"
CACHE="${NEXTTDNN_CI_CACHE:-$HOME/.cache/nexttdnn}"
main_target="${CARGO_TARGET_DIR:-$CACHE/target}"
export CARGO_TARGET_DIR="${NEXTTDNN_FUZZ_TARGET:-$CACHE/fuzz-target}"
export RUSTC_WRAPPER="$PWD/fuzz/sancov-rustc.sh"
export NEXTTDNN_FUZZ_CRATES="nexttdnn hound ron wav lists config model_file checkpoint"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d "$main_target/release" ]; then
    echo "copying $main_target to $CARGO_TARGET_DIR (dependencies are reused)"
    mkdir -p "$CARGO_TARGET_DIR"
    cp -a "$main_target/release" "$CARGO_TARGET_DIR/"
fi
# Cargo's fingerprints do not see the wrapper: the crates it instruments are
# compiled again once, by it.
if [ ! -f "$CARGO_TARGET_DIR/.instrumented" ]; then
    for crate in nexttdnn hound ron; do
        rm -rf "$CARGO_TARGET_DIR"/release/.fingerprint/"$crate"-*
    done
    touch "$CARGO_TARGET_DIR/.instrumented"
fi
cargo build --release -p nexttdnn-fuzz --bins

seeds="fuzz/seeds/$target"
rm -rf "$seeds"
mkdir -p "$seeds" "fuzz/corpus/$target" "fuzz/artifacts/$target"
case "$target" in
wav) cp tests/fixtures/utt_0p500s.wav "$seeds/" ;;
lists) cp assets/trials.txt "$seeds/" && printf 'id10001 id10001/a/00001.wav\n' >"$seeds/train.txt" ;;
config) cp configs/*.ron "$seeds/" ;;
model_file) python3 fuzz/model_seeds.py "$seeds" configs/tiny_C32_B1_K65_7.ron ;;
checkpoint)
    bash fuzz/checkpoint_seeds.sh "$seeds"
    ;;
*) echo "unknown target $target" >&2 && exit 2 ;;
esac
"$CARGO_TARGET_DIR/release/$target" "fuzz/corpus/$target" "$seeds" \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/"
