#!/usr/bin/env bash
# HTTP load comparison: examples/http_hello.rs (greenrt, green threads, blocking style)
# against examples/tokio_http_hello.rs (the same server written the idiomatic tokio way).
#
#   bash benches/http_load.sh
#
# What it does:
# - installs `wrk` from Debian's packages if it is missing (apt-get, with sudo when not
#   root), builds both examples in release mode;
# - for each round, for 100 and 1,000 connections, alternating the two servers: starts
#   the server with ONE worker pinned to CPU 0 (`taskset -c 0`) on a loopback port,
#   waits until it accepts, runs `taskset -c 1 wrk -t1 -c<N> -d<secs>s --latency`
#   against it, records requests/s and p99 latency, stops the server;
# - prints the median over the rounds as a markdown table, with green/tokio ratios
#   (req/s: higher is better for green; p99: lower is better for green), each server's
#   CPU time per request (user + system, from /proc) and how busy the server and wrk
#   were: when wrk is near 100% of its core and the servers are not, wrk set the pace,
#   and the servers' CPU per request is the comparison that still separates them.
#
# Needs 2 CPUs (server on 0, wrk on 1); on a busy machine the figures are noise, so run
# it in a quiet window. The soft fd limit is raised to the hard limit for 1,000
# connections.
#
# Environment (defaults in brackets):
#   HTTP_LOAD_SECS         wrk duration per run, seconds          [10]
#   HTTP_LOAD_ROUNDS       rounds (the median is taken over them)  [3]
#   HTTP_LOAD_CONNECTIONS  space-separated concurrencies          ["100 1000"]
#   HTTP_LOAD_PORT         loopback port the servers listen on    [18080]
#   HTTP_LOAD_SERVER_CPU / HTTP_LOAD_WRK_CPU   CPUs to pin to     [0 / 1]
#   HTTP_LOAD_KEEP         directory to keep raw wrk outputs in   [a temp dir, removed]
#   HTTP_LOAD_PIPELINE     requests per wrk write (HTTP/1.1 pipelining through
#                          benches/http_pipeline.lua); 1 sends one at a time, as a
#                          browser does. Above 1, wrk's cost per request falls and the
#                          server becomes the bottleneck                        [1]
# A quick smoke test: HTTP_LOAD_SECS=2 HTTP_LOAD_ROUNDS=1 bash benches/http_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${HTTP_LOAD_SECS:-10}"
rounds="${HTTP_LOAD_ROUNDS:-3}"
connections="${HTTP_LOAD_CONNECTIONS:-100 1000}"
port="${HTTP_LOAD_PORT:-18080}"
server_cpu="${HTTP_LOAD_SERVER_CPU:-0}"
wrk_cpu="${HTTP_LOAD_WRK_CPU:-1}"
pipeline="${HTTP_LOAD_PIPELINE:-1}"
servers=(http_hello tokio_http_hello)

for n in "$secs" "$rounds" "$port" "$server_cpu" "$wrk_cpu" "$pipeline" $connections; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "http_load: '$n' is not a whole number; check the HTTP_LOAD_* variables" >&2; exit 2; }
done
[[ "$rounds" -ge 1 && "$secs" -ge 1 && "$pipeline" -ge 1 ]] || { echo "http_load: HTTP_LOAD_SECS, HTTP_LOAD_ROUNDS and HTTP_LOAD_PIPELINE must be at least 1" >&2; exit 2; }
wrk_script=()
if (( pipeline > 1 )); then
    wrk_script=(-s benches/http_pipeline.lua)
fi

if ! command -v wrk >/dev/null; then
    echo "== installing wrk (apt-get)"
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq wrk
fi
command -v taskset >/dev/null || { echo "http_load: taskset not found (apt-get install util-linux)" >&2; exit 1; }

# 1,000 connections need ~1,000 fds in the server and in wrk.
hard="$(ulimit -Hn)"
[[ "$hard" == unlimited ]] && hard=1048576
ulimit -n "$hard"
max_conns=0
for c in $connections; do (( c > max_conns )) && max_conns=$c; done
if (( $(ulimit -n) < max_conns + 100 )); then
    echo "http_load: the fd limit $(ulimit -n) is too low for $max_conns connections; raise the hard limit (ulimit -Hn)" >&2
    exit 1
fi

echo "== building the examples (release)"
cargo build --release --quiet --example http_hello --example tokio_http_hello
bin_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples"

raw="${HTTP_LOAD_KEEP:-}"
if [[ -z "$raw" ]]; then
    raw="$(mktemp -d)"
else
    mkdir -p "$raw"
fi

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; [[ -n "${HTTP_LOAD_KEEP:-}" ]] || rm -rf "$raw"' EXIT

# Waits until something accepts on the port (bash's /dev/tcp, no extra tools).
wait_accepting() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || { echo "http_load: the server exited; see $raw/server.log" >&2; cat "$raw/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "http_load: nothing accepts on 127.0.0.1:$port after 10 s" >&2
    exit 1
}

# The CPU time (user + system, in clock ticks) a process has used so far.
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wrk prints "Requests/sec:  12345.67" and, with --latency, "99%  1.23ms" (us, ms or s).
parse_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
parse_p99_ms() {
    awk '$1 == "99%" {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000;
        printf "%.3f\n", v }' "$1"
}

echo "== $rounds round(s) of ${secs}s per server and concurrency; server on CPU $server_cpu, wrk on CPU $wrk_cpu; $pipeline request(s) per write"
for round in $(seq 1 "$rounds"); do
    for c in $connections; do
        # Alternate which server goes first, so neither always runs on a warmer machine.
        order=("${servers[@]}")
        (( round % 2 == 0 )) && order=("${servers[1]}" "${servers[0]}")
        for server in "${order[@]}"; do
            taskset -c "$server_cpu" "$bin_dir/$server" "127.0.0.1:$port" --workers 1 >"$raw/server.log" 2>&1 &
            server_pid=$!
            wait_accepting
            out="$raw/$server-c$c-r$round.txt"
            server_before="$(cpu_ticks "$server_pid")"
            # bash's `time` gives wrk's CPU (user + system) over its wall time: whether the
            # load generator, rather than the server, was the bottleneck.
            read -r wrk_busy_share wall < <( { TIMEFORMAT='%U %S %R'; time taskset -c "$wrk_cpu" wrk -t1 -c"$c" -d"${secs}s" --latency "${wrk_script[@]}" "http://127.0.0.1:$port/" -- "$pipeline" >"$out"; } 2>&1 | awk '{ print ($1 + $2) / $3, $3 }')
            server_after="$(cpu_ticks "$server_pid")"
            stop_server
            rps="$(parse_rps "$out")"
            p99="$(parse_p99_ms "$out")"
            if [[ -z "$rps" || -z "$p99" ]]; then
                echo "http_load: could not parse wrk's output for $server at $c connections:" >&2
                cat "$out" >&2
                exit 1
            fi
            errors="$(grep -E 'Socket errors|Non-2xx' "$out" || true)"
            # Server CPU per request (µs) and busy share; wrk's busy share.
            read -r cpu_per_req server_busy wrk_busy < <(python3 -c '
import sys
ticks, tck, secs, wall, rps, wrk = (float(x) for x in sys.argv[1:])
cpu = ticks / tck
print(f"{cpu / (rps * secs) * 1e6:.2f} {cpu / wall * 100:.0f} {wrk * 100:.0f}")
' "$((server_after - server_before))" "$clk_tck" "$secs" "$wall" "$rps" "$wrk_busy_share")
            printf '  round %d  %-17s c=%-5d %12s req/s  p99 %9s ms  server %5s us/req, busy %3s%%  wrk busy %3s%%  %s\n' \
                "$round" "$server" "$c" "$rps" "$p99" "$cpu_per_req" "$server_busy" "$wrk_busy" "$errors"
            echo "$server $c $rps $p99 $cpu_per_req $server_busy $wrk_busy" >>"$raw/results"
        done
    done
done

echo
echo "Medians of $rounds round(s), ${secs}s each, one server worker pinned to a core, wrk -t1 on the other, $pipeline request(s) per write:"
echo
python3 - "$raw/results" "$connections" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
conns = [int(c) for c in sys.argv[2].split()]
def median(server, c, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == server and int(r[1]) == c)
def ratios(c, col):
    green = [float(r[col]) for r in rows if r[0] == "http_hello" and int(r[1]) == c]
    tokio = [float(r[col]) for r in rows if r[0] == "tokio_http_hello" and int(r[1]) == c]
    return [g / t for g, t in zip(green, tokio)]
print("| server | connections | req/s | p99 (ms) | green/tokio req/s | green/tokio p99 "
      "| server CPU µs/req | server busy | wrk busy |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in conns:
    for server, label in (("http_hello", "greenrt http_hello"), ("tokio_http_hello", "tokio tokio_http_hello")):
        rps, p99 = median(server, c, 2), median(server, c, 3)
        cpu, busy, wrk = median(server, c, 4), median(server, c, 5), median(server, c, 6)
        if server == "http_hello":
            rps_ratio = f"{rps / median('tokio_http_hello', c, 2):.2f}x"
            p99_ratio = f"{p99 / median('tokio_http_hello', c, 3):.2f}x"
        else:
            rps_ratio = p99_ratio = ""
        print(f"| {label} | {c} | {rps:,.0f} | {p99:.2f} | {rps_ratio} | {p99_ratio} "
              f"| {cpu:.2f} | {busy:.0f}% | {wrk:.0f}% |")
print()
for c in conns:
    per_round = ratios(c, 2)
    listed = ", ".join(f"{r:.2f}" for r in per_round)
    print(f"c={c}: per-round green/tokio req/s {listed} (median {statistics.median(per_round):.2f})")
busiest = max(float(r[6]) for r in rows)
if busiest >= 90:
    print()
    print(f"Note: wrk was up to {busiest:.0f}% busy on its core. Where wrk is near 100% and the "
          "servers are not, the load generator set the pace, and req/s compares wrk's runs "
          "more than the servers: compare the servers' CPU per request.")
PY
