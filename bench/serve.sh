#!/usr/bin/env bash
# Model serving throughput and latency: `dagml serve` against MLServer serving
# the scikit-learn twin of the same forest (100 trees, 20 features, 3 classes),
# with the same load generator (wrk: 1 thread, 8 connections, DURATION s per
# cell), in one sitting, on loopback only. Prints requests/s, p50 and p99 for
# 1-row and 1,000-row requests, and dagml's ratios; and the same for the
# 3-shard ensemble of bench/serve_shards.toml served from an embedded cluster
# (`dagml serve PIPELINE`: each request broadcast to three workers), with
# concurrent requests batched (the default) and with `--max-batch 1` (each
# request its own broadcast), to show what batching gives.
#
# Needs wrk (apt-get install wrk) and python3 with venv; installs mlserver,
# mlserver-sklearn and scikit-learn into target/bench-mlserver-venv once.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
command -v wrk >/dev/null || { echo "bench/serve.sh needs wrk: apt-get install wrk" >&2; exit 2; }
VENV=target/bench-mlserver-venv
if ! "$VENV/bin/python" -c "import mlserver, mlserver_sklearn, sklearn, uvloop; assert uvloop.__version__ < \"0.22\"" 2>/dev/null; then
  python3 -m venv "$VENV"
  # uvloop 0.22+ no longer makes an event loop for MLServer 1.7's worker processes.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop<0.22" scikit-learn
fi
cargo build --release --quiet
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # MLServer may take a while to stop its worker processes: 15 s, then KILL.
  for _ in $(seq 1 30); do
    alive=0; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.5
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$WORK/mlserver" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$VENV/bin/python" bench/serve_prepare.py "$WORK"
cp bench/serve_forest.toml "$WORK/pipeline.toml"
(cd "$WORK" && "$OLDPWD/target/release/dagml" run pipeline.toml --quiet --in-process >/dev/null)

wait_ready() { # URL LOG
  for _ in $(seq 1 300); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "no answer from $1 in 60 s; its log:" >&2; tail -20 "$2" >&2; return 1
}

target/release/dagml serve "$WORK/forest.model" --listen 127.0.0.1:18000 >/dev/null 2>"$WORK/dagml.log" &
PIDS+=($!)
cp bench/serve_shards.toml "$WORK/shards.toml"
(cd "$WORK" && exec "$OLDPWD/target/release/dagml" serve shards.toml --listen 127.0.0.1:18010 >/dev/null 2>"$WORK/shards.log") &
PIDS+=($!)
# Its own folder: both train the same pipeline at once.
mkdir -p "$WORK/unbatched" && cp bench/serve_shards.toml "$WORK/train.csv" "$WORK/unbatched/"
(cd "$WORK/unbatched" && exec "$OLDPWD/target/release/dagml" serve serve_shards.toml --max-batch 1 --listen 127.0.0.1:18020 >/dev/null 2>"$WORK/unbatched.log") &
PIDS+=($!)
(cd "$WORK/mlserver" && exec "$OLDPWD/$VENV/bin/mlserver" start . >"$WORK/mlserver.log" 2>&1) &
PIDS+=($!)
wait_ready http://127.0.0.1:18000/v2/health/ready "$WORK/dagml.log"
wait_ready http://127.0.0.1:18081/v2/models/forest/ready "$WORK/mlserver.log"
wait_ready http://127.0.0.1:18010/v2/models/forest/ready "$WORK/shards.log"
wait_ready http://127.0.0.1:18020/v2/models/forest/ready "$WORK/unbatched.log"

# wrk's "Latency Distribution" value in ms.
ms() { awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
  f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1; printf "%.3f", v * f }' "$2"; }
load() { # NAME URL BODY -> "rps p50 p99 errors"
  local out="$WORK/$1.wrk"
  # Warm up, then measure.
  BODY="$3" wrk -t1 -c8 -d2s -s bench/serve_post.lua "$2" >/dev/null
  BODY="$3" wrk -t1 -c8 -d"${DURATION}s" --latency -s bench/serve_post.lua "$2" >"$out"
  local rps errs
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  errs=$(awk '/Non-2xx/ { print $5 }' "$out"); errs=${errs:-0}
  echo "$rps $(ms 50% "$out") $(ms 99% "$out") $errs"
}

printf '%-8s %-9s %12s %10s %10s %7s\n' rows server "requests/s" "p50 ms" "p99 ms" errors
for n in 1 1000; do
  read -r d_rps d_p50 d_p99 d_err < <(load "dagml_$n" http://127.0.0.1:18000/v2/models/forest/infer "$WORK/dagml_$n.json")
  read -r m_rps m_p50 m_p99 m_err < <(load "mlserver_$n" http://127.0.0.1:18081/v2/models/forest/infer "$WORK/mlserver_$n.json")
  read -r s_rps s_p50 s_p99 s_err < <(load "shards_$n" http://127.0.0.1:18010/v2/models/forest/infer "$WORK/dagml_$n.json")
  read -r u_rps u_p50 u_p99 u_err < <(load "unbatched_$n" http://127.0.0.1:18020/v2/models/forest/infer "$WORK/dagml_$n.json")
  printf '%-8s %-9s %12s %10s %10s %7s\n' "$n" dagml "$d_rps" "$d_p50" "$d_p99" "$d_err"
  printf '%-8s %-9s %12s %10s %10s %7s\n' "$n" "3 shards" "$s_rps" "$s_p50" "$s_p99" "$s_err"
  printf '%-8s %-9s %12s %10s %10s %7s\n' "$n" "3 unbatch" "$u_rps" "$u_p50" "$u_p99" "$u_err"
  printf '%-8s %-9s %12s %10s %10s %7s\n' "$n" mlserver "$m_rps" "$m_p50" "$m_p99" "$m_err"
  awk -v a="$d_rps" -v b="$m_rps" -v c="$d_p99" -v d="$m_p99" -v n="$n" \
    'BEGIN { printf "%-8s dagml/mlserver throughput %.1fx, p99 %.2fx (goal: >= 5x single-row throughput, lower p99)\n", n, a / b, c / d }'
  awk -v a="$s_rps" -v b="$m_rps" -v c="$s_p99" -v d="$m_p99" -v n="$n" \
    'BEGIN { printf "%-8s 3-shard ensemble/mlserver throughput %.1fx, p99 %.2fx\n", n, a / b, c / d }'
  awk -v a="$s_rps" -v b="$u_rps" -v c="$s_p99" -v d="$u_p99" -v n="$n" \
    'BEGIN { printf "%-8s 3-shard ensemble batched/unbatched throughput %.2fx, p99 %.2fx\n", n, a / b, c / d }'
done
