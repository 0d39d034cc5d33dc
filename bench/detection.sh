#!/usr/bin/env bash
# Detection time: how long after a backend dies tftplb stops sending sessions to it.
# Two tftpd-hpa backends and a release tftplb on loopback (default health settings: interval
# 2 s, fall 3, timeout 1 s); one backend is SIGKILLed; GET /api/status is polled until it shows
# "down". Run once with no traffic (active probes only) and once with 4 curl loops (passive
# detection too). Bounded: 60 s per run. Needs tftpd-hpa, curl, python3 and `cargo build --release`.
set -euo pipefail
bin=${TFTPLB:-"$(dirname "$0")/../target/release/tftplb"}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"
for b in a b; do mkdir -m 755 "$work/$b"; head -c 9728 /dev/urandom > "$work/$b/ARDBP32.BIN"; done
cp "$work/a/ARDBP32.BIN" "$work/b/ARDBP32.BIN"; chmod 644 "$work"/*/ARDBP32.BIN
cat > "$work/lb.toml" <<TOML
[admin]
listen = "127.0.0.1:19169"
[tftp]
listen = ["127.0.0.1:17069"]
[limits]
rate_per_client = 0
max_sessions_per_client = 0
[[pool]]
name = "pvs"
[pool.health]
file = "ARDBP32.BIN"
[[pool.backend]]
address = "127.0.0.1:17001"
[[pool.backend]]
address = "127.0.0.1:17002"
TOML
for clients in 0 4; do
  /usr/sbin/in.tftpd -L -s -a 127.0.0.1:17001 "$work/a" & a=$!
  /usr/sbin/in.tftpd -L -s -a 127.0.0.1:17002 "$work/b" & b=$!
  "$bin" run --config "$work/lb.toml" 2> "$work/lb.log" & l=$!
  sleep 4
  timeout 60 python3 - "$b" "$clients" <<'PY'
import json, os, signal, subprocess, sys, threading, time, urllib.request
victim, clients = int(sys.argv[1]), int(sys.argv[2])
stop, runs = False, []
def loop():
    while not stop:
        t = time.time()
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "tftp://127.0.0.1:17069/ARDBP32.BIN"])
        runs.append((t, time.time() - t, r.returncode))
        time.sleep(0.05)
threads = [threading.Thread(target=loop) for _ in range(clients)]
[t.start() for t in threads]
time.sleep(1)
os.kill(victim, signal.SIGKILL)
t0 = time.time()
try:
    while json.load(urllib.request.urlopen("http://127.0.0.1:19169/api/status"))["pools"][0]["backends"][1]["health"] != "down":
        time.sleep(0.02)
    print(f"{clients} curl loops: marked down {time.time() - t0:.2f} s after the kill")
    time.sleep(1)
finally:
    stop = True
    [t.join() for t in threads]
after = [r for r in runs if r[0] >= t0]
if after:
    print(f"  downloads started after the kill: {len(after)}, failed: {sum(1 for r in after if r[2])}, slowest {max(r[1] for r in after):.2f} s")
PY
  kill "$l" "$a" 2>/dev/null || true; wait 2>/dev/null || true
done
