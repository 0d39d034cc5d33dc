#!/usr/bin/env bash
# Two tftplb front ends with keepalived (config/keepalived/keepalived.conf, adapted), in network
# namespaces this script creates: a switch (a bridge), a client, nodes A and B, and two
# tftpd-hpa backends. N downloads (curl, atftp with windowsize 8, busybox, in turn) run
# through the floating address (VIP) while the active node A fails: `--how kill` (SIGKILL of
# its tftplb and of keepalived with its VRRP child, all at once: no goodbye advert) or
# `--how cable` (its link set down). With `--cluster on` (the default) the nodes sync their
# sessions ([cluster]) and B carries A's transfers on; `--cluster off` shows what happens
# without. It reports how long the VIP took to answer again from B, how many downloads
# completed with the right sha256, how long they took (the extra time over a control run is
# the stall the clients saw), and B's takeover counts. `--how none` is the control run.
#
#   sudo bash bench/vrrp.sh [--clients N] [--size-mib M] [--kill-after S] \
#       [--how kill|cable|none] [--cluster on|off] TFTPLB
#
# Needs root, iproute2, keepalived, tftpd-hpa (in.tftpd), curl, atftp and busybox.
# Traffic stays inside the namespaces; everything started is stopped by PID and the
# namespaces are deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=20 size_mib=8 kill_after=1 how=kill cluster=on
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --clients) clients=$2; shift 2 ;;
        --size-mib) size_mib=$2; shift 2 ;;
        --kill-after) kill_after=$2; shift 2 ;;
        --how) how=$2; shift 2 ;;
        --cluster) cluster=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $# -eq 1 ]] || { echo "usage: $0 [options, see the top of this file] TFTPLB" >&2; exit 2; }
tftplb=$(realpath "$1")

source bench/pair-lib.sh
tag=v$$
sw=$tag-sw cl=$tag-cl a=$tag-a b=$tag-b be=$tag-be
net=10.69.0 vip=10.69.0.20
work=$(mktemp -d)
pids=() spaces=()
trap cleanup EXIT

# The switch, and one port on it per host.
make_namespaces $sw $cl $a $b $be
nsx $sw ip link add br0 type bridge
nsx $sw ip link set br0 up
port=0
for host in "$cl:$net.100" "$a:$net.21" "$b:$net.22" "$be:$net.31"; do
    ns=${host%%:*} ip=${host#*:}
    port=$((port + 1))
    ip link add "$tag-h$port" type veth peer name "$tag-s$port"
    ip link set "$tag-h$port" netns "$ns"
    ip link set "$tag-s$port" netns $sw
    nsx "$ns" ip link set "$tag-h$port" name eth0
    nsx "$ns" ip addr add "$ip/24" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx $sw ip link set "$tag-s$port" master br0
    nsx $sw ip link set "$tag-s$port" up
done
nsx $be ip addr add $net.32/24 dev eth0

# Two backends with the same files.
start_backends $be $net.31 $net.32 "$size_mib"

# Nodes A (priority 150) and B (100): tftplb on the wildcard, keepalived moving the VIP.
node() {
    local name=$1 ns=$2 me=$3 peer=$4 priority=$5
    node_config "$name" "$me" "$peer" $net.31 $net.32
    cat > "$work/$name.keepalived.conf" <<EOF
global_defs {
    script_user root
    enable_script_security
}
vrrp_script chk_tftplb {
    script "$tftplb health --config $work/$name.toml"
    interval 1
    timeout 3
    fall 2
    rise 2
}
vrrp_instance TFTP {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 69
    priority $priority
    advert_int 1
    unicast_src_ip $me
    unicast_peer {
        $peer
    }
    virtual_ipaddress {
        $vip/24 dev eth0
    }
    track_script {
        chk_tftplb
    }
}
EOF
    TFTPLB_LOG=${TFTPLB_LOG:-info} spawn "$ns" "$work/$name.log" "$tftplb" run --config "$work/$name.toml"
    eval "${name}_tftplb=$!"
    spawn "$ns" "$work/$name.keepalived.log" keepalived --dont-fork --log-console --vrrp \
        -f "$work/$name.keepalived.conf" -p "$work/$name.pid" -r "$work/$name.vrrp.pid"
    eval "${name}_keepalived=$!"
}
node a $a $net.21 $net.22 150
node b $b $net.22 $net.21 100

answers() { nsx $cl "$tftplb" get "$vip" probe.bin --timeout 0.2 --retries 1 >/dev/null 2>&1; }
has_vip() { nsx "$1" ip -4 addr show dev eth0 | grep -q "$vip/"; }

started=$(now)
for _ in $(seq 300); do has_vip $a && answers && break; sleep 0.1; done
has_vip $a || { echo "node A never took the VIP"; cat "$work/a.keepalived.log"; exit 1; }
echo "VIP on node A, answering after $(awk "BEGIN { print $(now) - $started }") s"

# The downloads, then the kill.
start_downloads "$clients" $vip $cl
sleep "$kill_after"
killed=$(now)
# shellcheck disable=SC2154
case $how in
    # keepalived's VRRP child leaves gracefully (priority 0, VIP removed) when its parent
    # dies: kill both at once, as a power cut would.
    kill) kill -9 "$a_tftplb" "$a_keepalived" $(pgrep -P "$a_keepalived") ;;
    cable) nsx $a ip link set eth0 down ;;
    none) ;;  # the control run: nothing fails
    *) echo "--how kill, cable or none" >&2; exit 2 ;;
esac
for _ in $(seq 600); do answers && break; sleep 0.05; done
back=$(now)
holders=""
has_vip $a && holders+=" A"
has_vip $b && holders+=" B"
echo "the VIP is on:${holders:- no node}"
has_vip $b || echo "the VIP answers, but not from node B?"
echo "node A failed ($how) at $(date -d @"$killed" +%T.%N | cut -c1-12); the VIP answered again after $(awk "BEGIN { print $back - $killed }") s"
grep -h "Entering" "$work/a.keepalived.log" | sed 's/^/  node A: /'
grep -h "Entering" "$work/b.keepalived.log" | sed 's/^/  node B: /'

report_downloads "$clients"
report_cluster $b
