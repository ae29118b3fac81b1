#!/usr/bin/env bash
# Fuzz smoke (fuzz/README.md): replays every saved finding in fuzz/regressions/<target>/, then
# fuzzes each target for a bounded time on a scratch copy of its seed corpus. Fails when a
# regression input or the fuzzer crashes a target (panic, sanitizer report, timeout, OOM).
#
#   APEX_FUZZ_SECONDS    seconds of fuzzing per target (default 30; 0 only replays)
#   APEX_FUZZ_TARGETS    targets to run (default: client_frame scenario token)
#   APEX_FUZZ_SANITIZER  address (default) or none
#
# Builds only the fuzz crate (its own workspace), into fuzz/target: never the main target/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${APEX_FUZZ_SECONDS:-30}"
read -r -a targets <<<"${APEX_FUZZ_TARGETS:-client_frame scenario token}"
sanitizer="${APEX_FUZZ_SANITIZER:-address}"
cargo_fuzz_version=0.13.2

# cargo-fuzz passes -Z flags to rustc; this machine has only a stable toolchain.
export RUSTC_BOOTSTRAP=1
# What `cargo fuzz run` sets; the binaries are started directly below.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
target_dir="$PWD/fuzz/target"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

fuzz=(cargo fuzz)
build_flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --target-dir "$target_dir")
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$host/release"
logs=fuzz/artifacts/logs
mkdir -p "$logs"

start=$(date +%s)
if ! "${fuzz[@]}" build "${build_flags[@]}" >"$logs/build.log" 2>&1; then
    cat "$logs/build.log"
    echo "fuzz: build failed"
    exit 1
fi
echo "fuzz: built the fuzz targets in $(($(date +%s) - start))s (sanitizer: $sanitizer)"

failed=()

# 1. Regressions: each saved input runs once, with every check on; every one must pass.
for target in "${targets[@]}"; do
    dir="fuzz/regressions/$target"
    [[ -d $dir ]] || continue
    while IFS= read -r -d '' input; do
        log="$logs/regression-$target-$(basename "$input").log"
        if "$bin_dir/$target" "$input" >"$log" 2>&1; then
            echo "fuzz: regression $input: ok"
        else
            echo "fuzz: REGRESSION FAILS: $input (log: $log)"
            grep -m1 -A2 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" || true
            failed+=("regression $input")
        fi
    done < <(find "$dir" -type f ! -name .gitkeep -print0 | sort -z)
done

# 2. Bounded fuzzing, on a scratch copy of the corpus so the committed seeds never grow.
if ((seconds > 0)); then
    for target in "${targets[@]}"; do
        scratch="fuzz/corpus-run/$target"
        rm -rf "$scratch"
        mkdir -p "$scratch"
        cp -R "fuzz/corpus/$target/." "$scratch/"
        log="$logs/$target.log"
        echo "fuzz: $target for ${seconds}s (log: $log)"
        mkdir -p "fuzz/artifacts/$target"
        status=0
        # The binary built above, as `cargo fuzz run` would start it, but without a rebuild:
        # the fuzzed code is the code that was built and replayed.
        "$bin_dir/$target" \
            -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" \
            -timeout=10 -print_final_stats=1 "$scratch" >"$log" 2>&1 || status=$?
        grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -n 1 || true
        grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log" || true
        if ((status != 0)); then
            echo "fuzz: $target FAILED (exit $status)"
            grep -m1 -A2 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" || true
            artifact="$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 | cut -d' ' -f5- || true)"
            if [[ -n $artifact ]]; then
                echo "fuzz: crash input: $artifact"
                echo "fuzz: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $target $artifact"
                echo "fuzz: minimise:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz $target $artifact"
            fi
            failed+=("fuzz $target")
        fi
    done
fi

if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: ok (${targets[*]}; ${seconds}s each)"
