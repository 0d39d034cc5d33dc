#!/usr/bin/env bash
# Two tftplb front ends active/active behind a router that spreads clients over both by ECMP
# (a layer-3 hash: source and destination IP), in network namespaces this script creates: K
# client hosts on one side of the router; nodes A and B and two tftpd-hpa backends on the
# other. Both nodes hold the service address on their loopback interface and announce it with OSPF
# (BIRD 2); a small loop on each node removes the address while `tftplb health` fails, so
# the router withdraws that node. Both run `[cluster]` with the other as peer. N downloads
# (curl, atftp with windowsize 8, busybox, in turn) run from the K clients; then node A
# fails: `--how kill` (SIGKILL of its tftplb: its health loop withdraws it) or `--how cable`
# (its link down: OSPF's dead interval withdraws it). It reports how the clients were spread,
# how many downloads completed with the right sha256, and B's takeover counts.
#
#   sudo bash bench/ecmp.sh [--clients N] [--hosts K] [--size-mib M] [--kill-after S] \
#       [--how kill|cable|none] [--cluster on|off] TFTPLB
#
# Needs root, iproute2, bird2, tftpd-hpa (in.tftpd), curl, atftp and busybox. Traffic stays
# inside the namespaces; everything started is stopped by PID, and the namespaces are
# deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=24 hosts=8 size_mib=8 kill_after=2 how=cable cluster=on
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --clients) clients=$2; shift 2 ;;
        --hosts) hosts=$2; shift 2 ;;
        --size-mib) size_mib=$2; shift 2 ;;
        --kill-after) kill_after=$2; shift 2 ;;
        --how) how=$2; shift 2 ;;
        --cluster) cluster=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $# -eq 1 ]] || { echo "usage: $0 [options] TFTPLB" >&2; exit 2; }
tftplb=$(realpath "$1")

tag=e$$
rt=$tag-rt a=$tag-a b=$tag-b be=$tag-be
svc=10.70.9.20
work=$(mktemp -d)
chmod 755 "$work"
pids=()
hostns=()
for h in $(seq "$hosts"); do hostns+=("$tag-c$h"); done
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for ns in "${hostns[@]}" $a $b $be $rt; do ip netns del "$ns" 2>/dev/null || true; done
    if [[ ${KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
spawn() {
    local ns=$1 out=$2; shift 2
    ip netns exec "$ns" "$@" > "$out" 2>&1 &
    pids+=($!)
}
now() { date +%s.%N; }

# The router, with a bridge on each side; each host on a veth to one of them.
for ns in "${hostns[@]}" $a $b $be $rt; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
for br in brc brs; do nsx $rt ip link add $br type bridge; nsx $rt ip link set $br up; done
nsx $rt ip addr add 10.70.1.1/24 dev brc
nsx $rt ip addr add 10.70.2.1/24 dev brs
nsx $rt sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=0
port=0
attach() {
    local ns=$1 ip=$2 br=$3 gw=$4
    port=$((port + 1))
    ip link add "$tag-h$port" type veth peer name "$tag-s$port"
    ip link set "$tag-h$port" netns "$ns"
    ip link set "$tag-s$port" netns $rt
    nsx "$ns" ip link set "$tag-h$port" name eth0
    nsx "$ns" ip addr add "$ip/24" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip route add default via "$gw"
    nsx $rt ip link set "$tag-s$port" master "$br"
    nsx $rt ip link set "$tag-s$port" up
}
for h in $(seq "$hosts"); do attach "$tag-c$h" "10.70.1.$((100 + h))" brc 10.70.1.1; done
attach $a 10.70.2.21 brs 10.70.2.1
attach $b 10.70.2.22 brs 10.70.2.1
attach $be 10.70.2.31 brs 10.70.2.1
nsx $be ip addr add 10.70.2.32/24 dev eth0

# Backends.
mkdir -p "$work/files"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/files/big.bin"
head -c 9728 /dev/urandom > "$work/files/probe.bin"
head -c 32 /dev/urandom | base64 > "$work/cluster.key"
want=$(sha256sum < "$work/files/big.bin" | cut -d' ' -f1)
for ip in 10.70.2.31 10.70.2.32; do
    spawn $be "$work/tftpd-$ip.log" /usr/sbin/in.tftpd -L -s -a "$ip:69" "$work/files"
done

# BIRD: OSPF with ECMP on the router; each node announces the service address as a stub.
bird_conf() {
    local id=$1 body=$2
    cat <<EOF
router id $id;
protocol device { scan time 1; }
$body
EOF
}
bird_conf 10.70.2.1 '
protocol kernel { ipv4 { export all; }; merge paths on; }
protocol ospf v2 {
    ecmp yes;
    ipv4 { import all; export none; };
    area 0 { interface "brs" { hello 1; dead 3; }; };
}' > "$work/rt.bird.conf"
spawn $rt "$work/rt.bird.log" bird -f -c "$work/rt.bird.conf" -s "$work/rt.bird.ctl"

node() {
    local name=$1 ns=$2 me=$3 peer=$4 ports=$5
    nsx "$ns" ip addr add $svc/32 dev lo
    # Disjoint ephemeral ports: both nodes bind sessions on the service address.
    nsx "$ns" sysctl -qw net.ipv4.ip_local_port_range="$ports"
    cat > "$work/$name.toml" <<EOF
[tftp]
listen = ["0.0.0.0:69"]
[admin]
listen = "127.0.0.1:9069"
[limits]
max_sessions_per_client = 0
$([[ $cluster == on ]] && printf '[cluster]\nlisten = "%s:6970"\npeers = ["%s:6970"]\nkey_file = "%s"\n' "$me" "$peer" "$work/cluster.key")
[[pool]]
name = "boot"
[pool.health]
file = "probe.bin"
interval = "1s"
timeout = "500ms"
rise = 1
[[pool.backend]]
address = "10.70.2.31:69"
[[pool.backend]]
address = "10.70.2.32:69"
EOF
    bird_conf "$me" '
protocol ospf v2 {
    ipv4 { import none; export none; };
    area 0 { interface "eth0" { hello 1; dead 3; }; interface "lo" { stub yes; }; };
}' > "$work/$name.bird.conf"
    TFTPLB_LOG=${TFTPLB_LOG:-info} spawn "$ns" "$work/$name.log" "$tftplb" run --config "$work/$name.toml"
    eval "${name}_tftplb=$!"
    spawn "$ns" "$work/$name.bird.log" bird -f -c "$work/$name.bird.conf" -s "$work/$name.bird.ctl"
    # The health loop: the address (and so the route) only while tftplb can serve. Bounded.
    spawn "$ns" "$work/$name.health.log" bash -c "
        for _ in \$(seq 1200); do
            if '$tftplb' health --config '$work/$name.toml' --timeout 1 >/dev/null 2>&1; then
                ip addr add $svc/32 dev lo 2>/dev/null || true
            else
                ip addr del $svc/32 dev lo 2>/dev/null || true
            fi
            sleep 0.25
        done"
}
node a $a 10.70.2.21 10.70.2.22 "20000 39999"
node b $b 10.70.2.22 10.70.2.21 "40000 59999"

paths() { nsx $rt ip route show $svc | grep -o 'via [0-9.]*' | wc -l; }
started=$(now)
for _ in $(seq 300); do [[ $(paths) -eq 2 ]] && break; sleep 0.1; done
[[ $(paths) -eq 2 ]] || { echo "the router has no two paths to $svc"; nsx $rt ip route; exit 1; }
echo "router: two paths to $svc after $(awk "BEGIN { print $(now) - $started }") s"

clients_in_turn=(curl atftp busybox)
download() {
    local ns=$1 out=$work/got.$3
    case $2 in
        curl) nsx "$ns" timeout 120 curl -s --max-time 120 --tftp-blksize 1468 -o "$out" "tftp://$svc/big.bin" ;;
        atftp) nsx "$ns" timeout 120 atftp --get -r big.bin -l "$out" --option "blksize 1468" --option "windowsize 8" $svc 69 ;;
        busybox) nsx "$ns" timeout 120 busybox tftp -g -r big.bin -l "$out" -b 1468 $svc 69 ;;
    esac
}
for i in $(seq "$clients"); do
    (
        ns=${hostns[$((i % hosts))]}
        client=${clients_in_turn[$((i % 3))]}
        t0=$(now)
        download "$ns" "$client" "$i" > "$work/client.$i.out" 2>&1 || true
        if [[ -f $work/got.$i ]] && [[ $(sha256sum < "$work/got.$i" | cut -d' ' -f1) == "$want" ]]; then
            verdict=ok
        elif [[ -f $work/got.$i ]]; then
            verdict=incomplete
        else
            verdict=failed
        fi
        echo "$verdict $client $(awk "BEGIN { printf \"%.2f\", $(now) - $t0 }")" > "$work/result.$i"
        rm -f "$work/got.$i"
    ) &
    pids+=($!)
done
sleep "$kill_after"
status() { nsx "$1" curl -s http://127.0.0.1:9069/api/status | tr -d '\n '; }
figure() { grep -oE "\"$1\":[0-9]+" | head -1 | cut -d: -f2; }
echo "sessions started before the failure: A $(status $a | figure sessions_started), B $(status $b | figure sessions_started)"
killed=$(now)
# shellcheck disable=SC2154
case $how in
    kill) kill -9 "$a_tftplb" ;;
    cable) nsx $a ip link set eth0 down ;;
    none) ;;
    *) echo "--how kill, cable or none" >&2; exit 2 ;;
esac
if [[ $how != none ]]; then
    for _ in $(seq 200); do [[ $(paths) -eq 1 ]] && break; sleep 0.05; done
    [[ $(paths) -eq 1 ]] || echo "the router still has $(paths) paths to $svc"
    echo "node A failed ($how); the router withdrew it after $(awk "BEGIN { print $(now) - $killed }") s"
fi
for i in $(seq "$clients"); do
    for _ in $(seq 1400); do [[ -f $work/result.$i ]] && break; sleep 0.1; done
done
ok=$(cat "$work"/result.* 2>/dev/null | grep -c '^ok' || true)
echo "downloads: $clients started, $ok completed with the right sha256, $((clients - ok)) did not (cluster $cluster)"
echo "by client and result:"
cut -d' ' -f1,2 "$work"/result.* | sort | uniq -c | sed 's/^/  /'
echo "seconds per completed download (min / median / max):"
grep -h '^ok' "$work"/result.* | cut -d' ' -f3 | sort -n \
    | awk '{ a[NR] = $1 } END { if (NR) printf "  %s / %s / %s\n", a[1], a[int((NR + 1) / 2)], a[NR] }'
if [[ $cluster == on ]]; then
    echo "node B's cluster status:"
    status $b | grep -oE '"(records_(sent|received|rejected)|sessions_(synced|taken_over|resumed|failed))":[0-9]+' \
        | tr -d '"' | sed 's/:/ /; s/^/  /'
fi
