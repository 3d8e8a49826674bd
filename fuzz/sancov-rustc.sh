#!/usr/bin/env bash
# RUSTC_WRAPPER for fuzz/run.sh: compiles the crates named in
# NEXTTDNN_FUZZ_CRATES with libFuzzer's coverage instrumentation (the flags
# cargo-fuzz passes, all stable), and every other crate as usual, so that the
# large dependencies (Burn, CubeCL, wgpu) are neither instrumented nor rebuilt.
rustc="$1"
shift
name=""
prev=""
for arg in "$@"; do
    [ "$prev" = "--crate-name" ] && name="$arg"
    prev="$arg"
done
case " ${NEXTTDNN_FUZZ_CRATES:-} " in
*" $name "*)
    exec "$rustc" "$@" \
        -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        -Cdebug-assertions -Coverflow-checks --cfg fuzzing
    ;;
*) exec "$rustc" "$@" ;;
esac
