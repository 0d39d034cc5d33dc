# Shared by bench/vrrp.sh and bench/ecmp.sh (sourced, not run): namespaces, processes stopped
# by PID, the two backends, a node's tftplb configuration, the downloads and their report.
# The caller sets `work` (a temporary folder), `cluster` (on|off), `pids=()` and `spaces=()`
# (the namespaces to delete), and traps EXIT to `cleanup`.

cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for ns in "${spaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [[ ${KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Starts a command in a namespace in the background, its output into a file; its PID (ip
# execs the command, so the PID is the command's own) is remembered for the cleanup.
spawn() {
    local ns=$1 out=$2; shift 2
    ip netns exec "$ns" "$@" > "$out" 2>&1 &
    pids+=($!)
}
now() { date +%s.%N; }

# make_namespaces NS...: created, with loopback up, and deleted by the cleanup.
make_namespaces() {
    for ns in "$@"; do
        ip netns add "$ns"
        spaces+=("$ns")
        nsx "$ns" ip link set lo up
    done
}

# start_backends NS IP1 IP2 SIZE_MIB: two tftpd-hpa serving big.bin (SIZE_MIB) and probe.bin;
# sets `want`, big.bin's sha256, and writes the cluster key.
start_backends() {
    local ns=$1 ip1=$2 ip2=$3 size_mib=$4
    mkdir -p "$work/files"
    head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/files/big.bin"
    head -c 9728 /dev/urandom > "$work/files/probe.bin"
    head -c 32 /dev/urandom | base64 > "$work/cluster.key"
    want=$(sha256sum < "$work/files/big.bin" | cut -d' ' -f1)
    for ip in "$ip1" "$ip2"; do
        spawn "$ns" "$work/tftpd-$ip.log" /usr/sbin/in.tftpd -L -s -a "$ip:69" "$work/files"
    done
}

# node_config NAME ME PEER BACKEND1 BACKEND2: a node's tftplb.toml, with [cluster] when on.
node_config() {
    local name=$1 me=$2 peer=$3 be1=$4 be2=$5
    cat > "$work/$name.toml" <<EOF
[tftp]
listen = ["0.0.0.0:69"]
[admin]
listen = "127.0.0.1:9069"
# Many downloads come from one client address.
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
address = "$be1:69"
[[pool.backend]]
address = "$be2:69"
EOF
}

# download NS CLIENT I SERVER: one download of big.bin into got.I.
download() {
    local ns=$1 client=$2 out=$work/got.$3 server=$4
    case $client in
        curl) nsx "$ns" timeout 120 curl -s --max-time 120 --tftp-blksize 1468 -o "$out" "tftp://$server/big.bin" ;;
        atftp) nsx "$ns" timeout 120 atftp --get -r big.bin -l "$out" --option "blksize 1468" --option "windowsize 8" "$server" 69 ;;
        busybox) nsx "$ns" timeout 120 busybox tftp -g -r big.bin -l "$out" -b 1468 "$server" 69 ;;
    esac
}

# start_downloads N SERVER NS...: N downloads in the background, by curl, atftp and busybox in
# turn, from the namespaces in turn; each writes result.I: ok/incomplete/failed, the client,
# its seconds.
start_downloads() {
    local n=$1 server=$2; shift 2
    local hosts=("$@") clients=(curl atftp busybox)
    for i in $(seq "$n"); do
        (
            ns=${hosts[$((i % ${#hosts[@]}))]}
            client=${clients[$((i % 3))]}
            t0=$(now)
            download "$ns" "$client" "$i" "$server" > "$work/client.$i.out" 2>&1 || true
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
}

# report_downloads N: waits for the N results (bounded), then prints how they went.
report_downloads() {
    local n=$1 ok
    for i in $(seq "$n"); do
        for _ in $(seq 1400); do [[ -f $work/result.$i ]] && break; sleep 0.1; done
    done
    ok=$(cat "$work"/result.* 2>/dev/null | grep -c '^ok' || true)
    echo "downloads: $n started, $ok completed with the right sha256, $((n - ok)) did not (cluster $cluster)"
    echo "by client and result:"
    cut -d' ' -f1,2 "$work"/result.* | sort | uniq -c | sed 's/^/  /'
    echo "seconds per completed download (min / median / max):"
    grep -h '^ok' "$work"/result.* | cut -d' ' -f3 | sort -n \
        | awk '{ a[NR] = $1 } END { if (NR) printf "  %s / %s / %s\n", a[1], a[int((NR + 1) / 2)], a[NR] }'
}

# status NS: the node's /api/status on one line.
status() { nsx "$1" curl -s http://127.0.0.1:9069/api/status | tr -d '\n '; }

# report_cluster NS: the node's takeover counts, when [cluster] is on.
report_cluster() {
    [[ $cluster == on ]] || return 0
    echo "node B's cluster status:"
    status "$1" | grep -oE '"(records_(sent|received|rejected)|sessions_(synced|taken_over|resumed|failed))":[0-9]+' \
        | tr -d '"' | sed 's/:/ /; s/^/  /'
}
