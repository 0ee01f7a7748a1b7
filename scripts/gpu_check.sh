#!/usr/bin/env bash
# GPU check for the kernels (duplex_kernels' CUDA backend), in one of three modes:
#
#   scripts/gpu_check.sh [--build-dir DIR]
#       On a GPU machine that has the project's Debian packages (scripts/setup.sh's list) and nvcc: configure a
#       fresh Release build with DUPLEX_CUDA=ON, build only the kernel tests and benchmark (all cores), then run
#       them as in --run.
#   scripts/gpu_check.sh --pack [PACK_DIR]          (default PACK_DIR: build-gpu-pack, git-ignored)
#       Here, on the development machine (no GPU needed): build the same targets, then pack the binaries and the
#       shared libraries they need (oneTBB, OpenBLAS, fmt, yaml-cpp, benchmark, libstdc++ and glibc; not CUDA's)
#       into PACK_DIR/pack.tar.xz. For a GPU machine that cannot install packages (the device tool's machines
#       are bare and offline): carry PACK_DIR there.
#   scripts/gpu_check.sh --run [PACK_DIR]
#       On the GPU machine: unpack PACK_DIR/pack.tar.xz and run the packed binaries, with cuBLAS 13 from that
#       machine's CUDA toolkit. If its glibc is older than the packed one, the packed dynamic loader is used.
#
# What runs: the CUDA conformance test with DUPLEX_REQUIRE_GPU=1 (a missing GPU fails instead of skipping),
# its decode-attention tests again on the register-direct kernel (DUPLEX_TEST_CUDA_DECODE_KERNEL=registers),
# the backend tests, the CPU conformance test, and the Cuda/ benchmarks (decode attention bandwidth, GEMM and
# grouped expert FFN TFLOP/s, launch overhead; GPU_CHECK_BENCH_FILTER, a Google Benchmark regex, narrows them),
# kv_read_bench (the bandwidth ceiling of decode attention's access pattern per cache layout and page
# order; GPU_CHECK_SKIP_KV_READ=1 leaves it out) and decode_tune_bench (the tensor-core decode kernel's compiled
# and register-direct shapes; GPU_CHECK_TUNE_FILTER narrows them, GPU_CHECK_SKIP_TUNE=1 leaves them out).
# Outputs go to $OUT (default ./gpu-out). Budget: < 6 minutes (run mode: about 3).
#
# Device tool, e.g.:  here: scripts/gpu_check.sh --pack
#                     run(command="scripts/gpu_check.sh --run build-gpu-pack", carry=["build-gpu-pack"],
#                         timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-./gpu-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$out/gpu_check.log"; }
run_logged() {
  log "+ $*"
  "$@" 2>&1 | tee -a "$out/gpu_check.log"
}

targets=(kernels_conformance_cuda kernels_conformance_cpu kernels_backend_tests kernels_bench kv_read_bench
         decode_tune_bench)
binaries=(tests/kernels/kernels_conformance_cuda tests/kernels/kernels_conformance_cpu
          tests/kernels/kernels_backend_tests bench/kernels/kernels_bench bench/kernels/kv_read_bench
          bench/kernels/decode_tune_bench)

build() {  # build DIR: configure (fresh when DIR is new) and build the kernel targets
  local dir=$1
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
  run_logged cmake -S . -B "$dir" -G Ninja -DDUPLEX_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DDUPLEX_BUILD_BENCH=ON
  run_logged cmake --build "$dir" -j "$(nproc)" --target "${targets[@]}"
}

# run_checks LAUNCH BIN_DIR: runs every check; LAUNCH is a command prefix (empty, or the packed loader).
run_checks() {
  local bin=$2
  local -a launch=()
  [ -n "$1" ] && read -r -a launch <<< "$1"
  local status=0
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
  else
    log "nvidia-smi not found"
  fi
  log "CUDA conformance test (DUPLEX_REQUIRE_GPU=1)"
  DUPLEX_REQUIRE_GPU=1 "${launch[@]}" "$bin/kernels_conformance_cuda" \
    --gtest_output="xml:$out/conformance_cuda.xml" > "$out/conformance_cuda.txt" 2>&1 || status=1
  tail -n 30 "$out/conformance_cuda.txt" | tee -a "$out/gpu_check.log"
  log "CUDA decode-attention conformance on the register-direct kernel (DUPLEX_TEST_CUDA_DECODE_KERNEL=registers)"
  DUPLEX_REQUIRE_GPU=1 DUPLEX_TEST_CUDA_DECODE_KERNEL=registers "${launch[@]}" "$bin/kernels_conformance_cuda" \
    --gtest_filter='*DecodeAttention*' --gtest_output="xml:$out/conformance_cuda_registers.xml" \
    > "$out/conformance_cuda_registers.txt" 2>&1 || status=1
  tail -n 15 "$out/conformance_cuda_registers.txt" | tee -a "$out/gpu_check.log"
  log "backend tests (DUPLEX_REQUIRE_GPU=1)"
  DUPLEX_REQUIRE_GPU=1 "${launch[@]}" "$bin/kernels_backend_tests" --gtest_brief=1 > "$out/backend_tests.txt" 2>&1 \
    || status=1
  tail -n 5 "$out/backend_tests.txt" | tee -a "$out/gpu_check.log"
  log "CPU conformance test"
  "${launch[@]}" "$bin/kernels_conformance_cpu" --gtest_brief=1 > "$out/conformance_cpu.txt" 2>&1 || status=1
  tail -n 5 "$out/conformance_cpu.txt" | tee -a "$out/gpu_check.log"
  log "CUDA benchmarks"
  "${launch[@]}" "$bin/kernels_bench" --benchmark_filter="${GPU_CHECK_BENCH_FILTER:-^Cuda/}" --benchmark_min_time=0.2 \
    --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json > "$out/bench_cuda.txt" 2>&1 || status=1
  cat "$out/bench_cuda.txt" | tee -a "$out/gpu_check.log"
  if [ -z "${GPU_CHECK_SKIP_KV_READ:-}" ]; then
    log "KV read ceiling (decode attention's access pattern, loads only)"
    "${launch[@]}" "$bin/kv_read_bench" --benchmark_min_time=0.2 --benchmark_out="$out/kv_read.json" \
      --benchmark_out_format=json > "$out/kv_read.txt" 2>&1 || status=1
    cat "$out/kv_read.txt" | tee -a "$out/gpu_check.log"
  fi
  if [ -z "${GPU_CHECK_SKIP_TUNE:-}" ]; then
    log "decode attention pipeline shapes (each checked against the default shape's output, then timed)"
    "${launch[@]}" "$bin/decode_tune_bench" --benchmark_filter="${GPU_CHECK_TUNE_FILTER:-.}" \
      --benchmark_min_time=0.2 --benchmark_out="$out/decode_tune.json" \
      --benchmark_out_format=json > "$out/decode_tune.txt" 2>&1 || status=1
    cat "$out/decode_tune.txt" | tee -a "$out/gpu_check.log"
  fi
  log "done (status $status); outputs in $out"
  return "$status"
}

pack() {
  local pack_dir=$1 build_dir=build-gpu-packing
  build "$build_dir"
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/bin" "$stage/lib" "$stage/glibc"
  for b in "${binaries[@]}"; do
    cp "$build_dir/$b" "$stage/bin/"
    strip --strip-debug "$stage/bin/$(basename "$b")"
  done
  # Shared libraries the binaries load, except CUDA's (the GPU machine's toolkit provides cuBLAS 13).
  ldd "$stage"/bin/* | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libcublas*|libcuda*|libcudart*) ;;
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*) cp -L "$lib" "$stage/glibc/" ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$stage/glibc/"
  getconf GNU_LIBC_VERSION | awk '{print $2}' > "$stage/glibc/VERSION"
  mkdir -p "$pack_dir"
  rm -f "$pack_dir/pack.tar.xz"
  tar -C "$stage" -cJf "$pack_dir/pack.tar.xz" .
  rm -rf "$stage"
  log "packed $(du -h "$pack_dir/pack.tar.xz" | cut -f1) into $pack_dir/pack.tar.xz"
}

run_pack() {
  local pack_dir=$1
  [ -f "$pack_dir/pack.tar.xz" ] || { log "no $pack_dir/pack.tar.xz: make it with scripts/gpu_check.sh --pack"; exit 2; }
  local root=/tmp/duplex-gpu-pack
  rm -rf "$root" && mkdir -p "$root"
  tar -C "$root" -xJf "$pack_dir/pack.tar.xz"
  # cuBLAS 13: the toolkit's, or the one pip installed beside PyTorch.
  local cuda_libs=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
    [ -e "$d/libcublas.so.13" ] && cuda_libs="$cuda_libs:$d"
  done
  local pip_cublas
  pip_cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' \
    2> /dev/null || true)
  [ -n "$pip_cublas" ] && [ -d "$pip_cublas" ] && cuda_libs="$cuda_libs:$pip_cublas"
  log "cuBLAS search path:${cuda_libs:- (none found; relying on the system loader)}"
  local have want launch=""
  have=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
  want=$(cat "$root/glibc/VERSION")
  if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" = "$want" ]; then
    export LD_LIBRARY_PATH="$root/lib$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "glibc $have >= packed $want: running natively"
  else
    launch="$root/glibc/ld-linux-x86-64.so.2 --library-path $root/glibc:$root/lib$cuda_libs"
    log "glibc $have < packed $want: running through the packed loader"
  fi
  run_checks "$launch" "$root/bin"
}

mode=build
build_dir=build-gpu
pack_dir=build-gpu-pack
case "${1:-}" in
  --pack) mode=pack; pack_dir=${2:-$pack_dir} ;;
  --run) mode=run; pack_dir=${2:-$pack_dir} ;;
  --build-dir) build_dir=${2:?--build-dir needs a folder} ;;
  "") ;;
  *) echo "gpu_check.sh: unknown option '$1' (see the usage at the top of scripts/gpu_check.sh)" >&2; exit 2 ;;
esac

log "mode $mode on $(hostname) ($(nproc) cores)"
case "$mode" in
  pack) pack "$pack_dir" ;;
  run) run_pack "$pack_dir" ;;
  build)
    build "$build_dir"
    mkdir -p "$build_dir/gpu-check-bin"
    for b in "${binaries[@]}"; do ln -sf "$PWD/$build_dir/$b" "$build_dir/gpu-check-bin/"; done
    run_checks "" "$build_dir/gpu-check-bin" || status=$?
    ;;
esac
exit "${status:-0}"
