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

source bench/pair-lib.sh
tag=e$$
rt=$tag-rt a=$tag-a b=$tag-b be=$tag-be
svc=10.70.9.20
work=$(mktemp -d)
chmod 755 "$work"
pids=() spaces=() hostns=()
for h in $(seq "$hosts"); do hostns+=("$tag-c$h"); done
trap cleanup EXIT

# The router, with a bridge on each side; each host on a veth to one of them.
make_namespaces "${hostns[@]}" $a $b $be $rt
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
start_backends $be 10.70.2.31 10.70.2.32 "$size_mib"

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
    node_config "$name" "$me" "$peer" 10.70.2.31 10.70.2.32
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

start_downloads "$clients" $svc "${hostns[@]}"
sleep "$kill_after"
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
report_downloads "$clients"
report_cluster $b
