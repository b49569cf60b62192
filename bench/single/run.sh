#!/usr/bin/env bash
# Single-event ingest measured with wrk, beside nginx answering the same requests with a fixed
# body (the HTTP ceiling) and a bare server that answers each request after a durable group commit
# of its event, into SQLite and into a plain file with fdatasync (the ceilings of a durable design:
# bench/src/group_commit.rs), same wrk, same run, in turn.
#
#   bench/single/run.sh [PREFILL_EVENTS] [RUNS] [DURATION]      (defaults: 1000000 3 20s)
#
# When other benchmarks share the machine, run one at a time (e.g. each under the same `flock`).
#
# Starts `driftless serve` (release build) on a fresh SQLite ledger with `auth = "none"` on
# loopback, fills it with PREFILL_EVENTS batched events (1,000 a request, 4 clients), then RUNS
# times: wrk (2 threads, 64 keep-alive connections, one event per request, unique ids, see
# single.lua) against the hub for DURATION, and the same against the two group-commit ceilings
# and nginx. Prints each run and the medians with the ratios. Installs wrk and nginx with apt-get when they are missing (CI does not
# run this script). Durability is the hub's default: an answered event is committed with
# synchronous=FULL.
set -euo pipefail
PREFILL=${1:-1000000}
RUNS=${2:-3}
DURATION=${3:-20s}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# DRIFTLESS_BIN: another build of the binary to measure (e.g. a copy of an earlier build, to
# interleave two builds); by default the workspace's release build.
if [ -z "${DRIFTLESS_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p driftless -p driftless-bench)
fi
BIN=${DRIFTLESS_BIN:-$ROOT/target/release/driftless}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/driftless-bench}

WORK=$(mktemp -d /tmp/driftless-single.XXXXXX)
HUB_PORT=${HUB_PORT:-18431}
NGINX_PORT=${NGINX_PORT:-18432}
GC_PORT=${GC_PORT:-18433}
GCF_PORT=${GCF_PORT:-18434}
cleanup() {
    # Every step, whatever the one before returned (a killed process's `wait` is not 0).
    set +e
    for p in "${HUB:-}" "${GC:-}" "${GCF:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/hub.toml" <<TOML
[server]
listen = "127.0.0.1:$HUB_PORT"
auth = "none"
data_dir = "$WORK/data"
max_pending = 4096

[[systems]]
id = "wms"
role = "wms"

[[channels]]
id = "shop"
locations = ["L00", "L01", "L02", "L03", "L04", "L05", "L06", "L07", "L08", "L09"]
TOML

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /v1/events {
            default_type application/json;
            return 200 '{"results":[{"id":"x","outcome":"applied"}]}';
        }
    }
}
CONF
"$NGINX" -c "$WORK/nginx.conf"

"$BIN" serve --config "$WORK/hub.toml" 2> "$WORK/hub.log" &
HUB=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$HUB_PORT/readyz" >/dev/null && break
    sleep 0.1
done
python3 "$HERE/prefill.py" "http://127.0.0.1:$HUB_PORT" "$PREFILL"

mkdir -p "$WORK/gc" "$WORK/gcf"
"$BENCH_BIN" --serve-group-commit "127.0.0.1:$GC_PORT" --dir "$WORK/gc" > "$WORK/gc.log" 2>&1 &
GC=$!
BENCH_DURABLE=file "$BENCH_BIN" --serve-group-commit "127.0.0.1:$GCF_PORT" --dir "$WORK/gcf" \
    > "$WORK/gcf.log" 2>&1 &
GCF=$!
for _ in $(seq 1 100); do
    grep -q serving "$WORK/gc.log" && grep -q serving "$WORK/gcf.log" && break
    sleep 0.1
done

# Requests/s and p99 (ms) from wrk's output; fails on any answer that is not 2xx.
measure() {
    local url=$1 tag=$2 out
    out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$HERE/single.lua" "$url/v1/events" -- "$tag")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "$out" >&2
        echo "answers that are not 2xx from $url" >&2
        exit 1
    fi
    local rps p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
    echo "$rps $p99"
}

hub_rps=(); hub_p99=(); gc_rps=(); gc_p99=(); gf_rps=(); gf_p99=(); ng_rps=(); ng_p99=()
ratios=(); gc_ratios=(); gf_ratios=(); hub_gc=()
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
for run in $(seq 1 "$RUNS"); do
    read -r r p < <(measure "http://127.0.0.1:$HUB_PORT" "run$run-$$")
    hub_rps+=("$r"); hub_p99+=("$p")
    read -r gr gp < <(measure "http://127.0.0.1:$GC_PORT" "gc$run-$$")
    gc_rps+=("$gr"); gc_p99+=("$gp")
    read -r fr fp < <(measure "http://127.0.0.1:$GCF_PORT" "gcf$run-$$")
    gf_rps+=("$fr"); gf_p99+=("$fp")
    read -r nr np < <(measure "http://127.0.0.1:$NGINX_PORT" "nginx$run")
    ng_rps+=("$nr"); ng_p99+=("$np")
    ratios+=("$(ratio "$r" "$nr")"); gc_ratios+=("$(ratio "$gr" "$nr")")
    gf_ratios+=("$(ratio "$fr" "$nr")"); hub_gc+=("$(ratio "$r" "$gr")")
    awk -v r="$r" -v p="$p" -v gr="$gr" -v gp="$gp" -v fr="$fr" -v fp="$fp" -v nr="$nr" -v np="$np" -v run="$run" 'BEGIN {
        printf "run %d: driftless serve %7.0f events/s p99 %6.1f ms | group commit: SQLite %7.0f p99 %6.1f ms, file %7.0f p99 %6.1f ms | nginx %7.0f p99 %6.1f ms | %.2fx nginx, %.2fx SQLite group commit\n",
            run, r, p, gr, gp, fr, fp, nr, np, r / nr, r / gr }'
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
mr=$(med "${hub_rps[@]}"); mp=$(med "${hub_p99[@]}"); mnr=$(med "${ng_rps[@]}"); mnp=$(med "${ng_p99[@]}")
mgr=$(med "${gc_rps[@]}"); mgp=$(med "${gc_p99[@]}"); mfr=$(med "${gf_rps[@]}"); mfp=$(med "${gf_p99[@]}")
echo
echo "| wrk -t2 -c64, one event per request, after $PREFILL batched events | median of $RUNS |"
echo "|---|---|"
echo "| driftless serve | $(printf '%.0f' "$mr") events/s, p99 $mp ms |"
echo "| bare server answering after a group commit to SQLite (ceiling of a durable design) | $(printf '%.0f' "$mgr") events/s, p99 $mgp ms |"
echo "| the same, appending to a file with fdatasync | $(printf '%.0f' "$mfr") events/s, p99 $mfp ms |"
echo "| nginx, fixed body (ceiling) | $(printf '%.0f' "$mnr") requests/s, p99 $mnp ms |"
echo "| driftless / nginx, median of the runs' ratios | $(printf '%.2f' "$(med "${ratios[@]}")")x |"
echo "| group commit to SQLite / nginx | $(printf '%.2f' "$(med "${gc_ratios[@]}")")x |"
echo "| group commit to a file / nginx | $(printf '%.2f' "$(med "${gf_ratios[@]}")")x |"
echo "| driftless / group commit to SQLite | $(printf '%.2f' "$(med "${hub_gc[@]}")")x |"
