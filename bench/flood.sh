#!/usr/bin/env bash
# tftplb's memory under a flood of requests from a million spoofed sources (bench/flood.py),
# for one or more tftplb binaries side by side: each gets the same embedded backend and the
# same flood, one after the other.
#
#   bash bench/flood.sh [--sources N] [--options] TFTPLB [TFTPLB ...]
#
# Needs target/release/tftplb-bench (cargo build --release --features bench). Loopback only;
# every process it starts is stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

flood_args=()
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --sources) flood_args+=(--sources "$2"); shift 2 ;;
        --options) flood_args+=(--options); shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--sources N] [--options] TFTPLB..." >&2; exit 2; }
bench=${BENCH:-target/release/tftplb-bench}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

head -c 9728 /dev/urandom > "$work/pxelinux.0"
mkfifo "$work/keep"
"$bench" backend-child --dir "$work" < "$work/keep" > "$work/backend.out" &
pids+=($!)
exec 3> "$work/keep"
for _ in $(seq 100); do grep -q listening "$work/backend.out" 2>/dev/null && break; sleep 0.1; done
backend=$(sed -n 's/^listening //p' "$work/backend.out")

for tftplb in "$@"; do
    cat > "$work/tftplb.toml" <<EOF
[admin]
enabled = false
[tftp]
listen = ["127.0.0.1:0"]
[[pool]]
name = "p"
[[pool.backend]]
address = "$backend"
EOF
    TFTPLB_LOG="warn,tftplb::app=info" "$tftplb" run --config "$work/tftplb.toml" 2> "$work/tftplb.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do grep -q "tftp listening" "$work/tftplb.log" && break; sleep 0.1; done
    port=$(sed -n 's/.*tftp listening address=127.0.0.1:\([0-9]*\).*/\1/p' "$work/tftplb.log" | head -1)
    echo "== $tftplb ($("$tftplb" --version 2>/dev/null || echo tftplb))"
    python3 bench/flood.py --pid "$pid" --target "127.0.0.1:$port" "${flood_args[@]}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
