#!/usr/bin/env bash
# Builds and runs ltvd's libFuzzer harnesses (fuzz/, docs/FUZZING.md).
#   tools/fuzz.sh build                 build every harness into build-fuzz/
#   tools/fuzz.sh run NAME [SECONDS] [libFuzzer flags...]
#                                       fuzz NAME (events, wal, snapshot, model,
#                                       config, time, http, history) from its committed
#                                       corpus; new inputs go to build-fuzz/corpus/NAME
#   tools/fuzz.sh ci [SECONDS]          build, then each harness SECONDS (20) on its
#                                       corpus; any crash, leak or sanitizer report fails
#   tools/fuzz.sh list                  the harness names
# Needs clang-14 (Debian package clang-14; libFuzzer is part of it).
set -euo pipefail
cd "$(dirname "$0")/.."

CC=${FUZZ_CC:-clang-14}
OUT=build-fuzz
HARNESSES="events wal snapshot model config time http history"
SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all"
CFLAGS="-std=c11 -D_GNU_SOURCE -DSTORE_CHUNK_SLOTS=64u -g -O1 -fno-omit-frame-pointer -Iinclude -Isrc -Ifuzz -I$OUT/gen $SAN \
  $(pkg-config --cflags libcjson) -Wall -Wno-unused-parameter"
LIBS="$(pkg-config --libs libcjson openblas) -lm -lpthread"
# The production sources, but main.c, healthcheck.c, http_server.c and
# http_wait.c (the only files that talk to libmicrohttpd: fuzz/http_shim.c
# stands in for them), built as without libnats: cluster_off.c in place of
# the files that talk to NATS (as src/meson.build does when libnats-dev is
# absent).
LIB_SOURCES=$(ls src/*.c | grep -v -e '^src/main\.c$' -e '^src/healthcheck\.c$' -e '^src/http_server\.c$' \
  -e '^src/http_wait\.c$' \
  -e '^src/cluster\.c$' -e '^src/cluster_ingest\.c$' -e '^src/cluster_consume\.c$')
# Max input length per harness.
max_len() {
  case "$1" in
    events|http) echo 4096 ;;
    time) echo 128 ;;
    config) echo 4096 ;;
    history) echo 8192 ;;
    *) echo 8192 ;;
  esac
}

build() {
  mkdir -p "$OUT/obj" "$OUT/gen"
  # what meson's vcs_tag makes for metrics.c (src/ltvd_commit.h.in)
  [ -f "$OUT/gen/ltvd_commit.h" ] || echo '#define LTVD_COMMIT "fuzz"' > "$OUT/gen/ltvd_commit.h"
  # what meson's dashboard_assets target makes (src/meson.build): the
  # dashboard's files built in, served by the handlers the http harness drives
  python3 tools/embed_assets.py "$OUT/gen/dashboard_assets.c" \
    "index.html=src/dashboard/index.html=text/html; charset=utf-8" \
    "dashboard.js=src/dashboard/dashboard.js=text/javascript; charset=utf-8" \
    "dashboard.css=src/dashboard/dashboard.css=text/css; charset=utf-8"
  local objs=() pids=() src obj
  for src in $LIB_SOURCES "$OUT/gen/dashboard_assets.c" fuzz/http_shim.c; do
    obj="$OUT/obj/$(basename "${src%.c}").o"
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include src fuzz -name '*.h' -newer "$obj" -print -quit)" ]; then
      # hash.c (CRC-32, the id hash) without coverage: its byte loops would
      # only feed the fuzzer comparisons of checksum arithmetic
      local cov=-fsanitize=fuzzer-no-link
      [ "$src" = src/hash.c ] && cov=
      $CC $CFLAGS $cov -c "$src" -o "$obj" &
      pids+=($!)
      if [ ${#pids[@]} -ge "${FUZZ_JOBS:-2}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  rm -f "$OUT/libltvd_fuzz.a"
  ar rcs "$OUT/libltvd_fuzz.a" "${objs[@]}"
  local h
  for h in $HARNESSES; do
    $CC $CFLAGS -fsanitize=fuzzer "fuzz/fuzz_$h.c" "$OUT/libltvd_fuzz.a" $LIBS -o "$OUT/fuzz_$h"
  done
  echo "fuzz: built $(for h in $HARNESSES; do printf '%s ' "$OUT/fuzz_$h"; done)"
}

# run NAME SECONDS [flags]: fuzzes from the committed seeds into a scratch
# corpus (the committed one stays as it is).
run() {
  local name="$1" secs="${2:-60}"
  shift 2 || shift $#
  [ -x "$OUT/fuzz_$name" ] || { echo "fuzz: $OUT/fuzz_$name is not built (tools/fuzz.sh build)" >&2; exit 2; }
  mkdir -p "$OUT/corpus/$name" "$OUT/artifacts/$name"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
  OPENBLAS_NUM_THREADS=1 \
    "$OUT/fuzz_$name" -max_len="$(max_len "$name")" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
      -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$name/" "$@" \
      "$OUT/corpus/$name" "fuzz/corpus/$name"
}

case "${1:-}" in
  build) build ;;
  run) shift; [ $# -ge 1 ] || { echo "usage: tools/fuzz.sh run NAME [SECONDS] [flags]" >&2; exit 2; }; run "$@" ;;
  ci)
    secs="${2:-20}"
    build
    for h in $HARNESSES; do
      echo "fuzz: $h for ${secs}s"
      rm -rf "$OUT/corpus/$h"
      run "$h" "$secs" || { echo "fuzz: $h failed (artifacts in $OUT/artifacts/$h)" >&2; exit 1; }
    done
    ;;
  list) echo $HARNESSES ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
