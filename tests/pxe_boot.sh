#!/usr/bin/env bash
# Real PXE firmware boots through tftplb's ProxyDHCP, in network namespaces this script makes
# and removes (tests/pxe_boot.rs runs it; it can be run by hand too):
#
#   namespace S: a bridge 10.77.0.1/24 with the site's DHCP server (dnsmasq: addresses only, no
#                boot options), a tap device for the qemu guest, and a packet capture;
#   namespace L: tftplb at 10.77.0.2 on a veth into the bridge, ProxyDHCP and TFTP, in front of
#                tftpd-hpa on its own loopback.
#
# Cases, one guest each, under TCG (no KVM):
#   bios        a registered MAC, SeaBIOS + the iPXE ROM (ipxe-qemu): runs the iPXE script it is
#               offered, fetched through tftplb, which prints a marker on the serial console;
#   uefi        a registered MAC, OVMF's own PXE (virtio-net without option ROM): downloads the
#               EFI boot file it is offered through tftplb;
#   stranger    a MAC no route registers: no answer from tftplb (capture and counters), and the
#               machine is listed as unregistered at /api/pxe/clients;
#   late        the same MAC after a reload adds a catch-all rule with delay 2s: tftplb's offer
#               comes 2 s or more after the DISCOVER, and the guest boots.
#
# usage: tests/pxe_boot.sh TFTPLB_BINARY [CASE…]     (default: every case)
# Prints the serial console lines and the figures; exits non-zero naming the first check that
# failed. Every process it starts is stopped by PID; the namespaces are deleted on exit.
set -euo pipefail

bin=$(realpath "$1")
shift
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(bios uefi stranger late)

work=$(mktemp -d /tmp/tftplb-pxe.XXXXXX)
chmod 755 "$work"
S=tlbpxe-s-$$
L=tlbpxe-l-$$
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$S" 2>/dev/null || true
    ip netns del "$L" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

# ---- boot files, served by tftpd-hpa behind tftplb
mkdir -p "$work/tftp"
chmod 755 "$work/tftp"
printf '#!ipxe\necho BOOTED-THROUGH-TFTPLB filename ${filename}\n' \
    >"$work/tftp/boot.ipxe"
# Not a real EFI program: OVMF downloads it whole, then refuses to start it.
head -c 200000 /dev/urandom >"$work/tftp/boot-efi.efi"
chmod 644 "$work/tftp/"*
efi_sha=$(sha256sum "$work/tftp/boot-efi.efi" | cut -d' ' -f1)

# ---- the network
ip netns add "$S"
ip netns add "$L"
ip -n "$S" link set lo up
ip -n "$L" link set lo up
ip -n "$S" link add br0 type bridge stp_state 0 forward_delay 0
ip -n "$S" addr add 10.77.0.1/24 dev br0
# An IPv6 router advertisement spares iPXE a wait of ~13 s for IPv6 autoconfiguration.
ip -n "$S" addr add fd77::1/64 dev br0 nodad
ip -n "$S" link set br0 up
ip -n "$S" tuntap add dev tap0 mode tap
ip -n "$S" link set tap0 master br0
ip -n "$S" link set tap0 up
ip -n "$S" link add vlb type veth peer name eth0 netns "$L"
ip -n "$S" link set vlb master br0
ip -n "$S" link set vlb up
ip -n "$L" addr add 10.77.0.2/24 dev eth0
ip -n "$L" link set eth0 up

# ---- the site's DHCP server: addresses only
ip netns exec "$S" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --bind-interfaces \
    --user=root --log-dhcp --no-ping --interface=br0 --dhcp-leasefile="$work/leases" \
    --dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h \
    --enable-ra --dhcp-range=::,constructor:br0,ra-only >"$work/dnsmasq.log" 2>&1 &
pids+=($!)

# ---- the backend boot server and tftplb
ip netns exec "$L" /usr/sbin/in.tftpd -L -u root -a 127.0.0.1:6969 -s "$work/tftp" \
    >"$work/tftpd.log" 2>&1 &
pids+=($!)
echo "52:54:00:77:00:10 # the BIOS guest" >"$work/registered.macs"
echo "52:54:00:77:00:30 # the UEFI guest" >>"$work/registered.macs"
write_config() {
    cat >"$work/tftplb.toml" <<EOF
[admin]
listen = "127.0.0.1:9069"
[tftp]
listen = ["10.77.0.2:69"]
[proxy_dhcp]
listen = ["10.77.0.2"]
[[pool]]
name = "boot"
[[pool.backend]]
address = "127.0.0.1:6969"
[[route]]
name = "registered"
macs = ["file:$work/registered.macs"]
pool = "boot"
boot_file = { efi64 = "boot-efi.efi", ipxe = "boot.ipxe" }
$1
EOF
}
write_config ""
TFTPLB_LOG=info ip netns exec "$L" "$bin" run --config "$work/tftplb.toml" >"$work/tftplb.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    grep -q "proxy dhcp listening" "$work/tftplb.log" && break
    sleep 0.2
done
grep -q "proxy dhcp listening" "$work/tftplb.log" || { cat "$work/tftplb.log"; fail "tftplb did not start"; }

api() { ip netns exec "$L" curl -sf --max-time 5 "$@"; }

# ---- one guest with network card `nic`: boots until `marker` shows on its serial console,
# or `limit` seconds; further arguments go to qemu
guest() {
    local name=$1 mac=$2 marker=$3 limit=$4 nic=$5
    shift 5
    local run="$work/$name"
    mkdir -p "$run"
    ip netns exec "$S" tcpdump -U -i br0 -n -s0 -w "$run/dhcp.pcap" 'udp port 67 or udp port 68 or udp port 4011' \
        >"$run/tcpdump.log" 2>&1 &
    local cap=$!
    pids+=($cap)
    sleep 0.5
    local started=$SECONDS
    ip netns exec "$S" qemu-system-x86_64 -accel tcg -m 256 -nodefaults -nographic -no-reboot \
        -uuid 6c1e7a2b-0d3f-4e5a-9b8c-77a1b2c3d4e5 -monitor none \
        -chardev "file,id=ser0,path=$run/serial.log" -serial chardev:ser0 \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "$nic,mac=$mac" "$@" \
        </dev/null >"$run/qemu.log" 2>&1 &
    local vm=$!
    pids+=($vm)
    while ((SECONDS - started < limit)); do
        grep -aq "$marker" "$run/serial.log" 2>/dev/null && break
        kill -0 "$vm" 2>/dev/null || break
        sleep 0.5
    done
    echo "$name: $((SECONDS - started)) s until '$marker' or the end"
    kill "$vm" 2>/dev/null || true
    sleep 0.5
    kill "$cap" 2>/dev/null || true
    wait "$cap" 2>/dev/null || true
    echo "---- $name: serial console"
    sed -e 's/\x1b\[[0-9;=?]*[A-Za-z]//g' -e 's/\x1bc//g' -e 's/\r//g' "$run/serial.log" |
        tr -cd '\11\12\40-\176' | grep -v '^\s*$' | tee "$run/serial.txt" | sed 's/^/    /'
}

# SeaBIOS with the iPXE ROM qemu gives an e1000 (ipxe-qemu's efi-e1000.rom).
bios=(e1000,netdev=n0 -boot n)
# OVMF's own PXE: virtio-net without its iPXE option ROM, first in the boot order.
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/uefi.vars"
uefi=(virtio-net-pci,netdev=n0,romfile=,bootindex=1
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
    -drive "if=pflash,format=raw,file=$work/uefi.vars")

# Seconds from the first DISCOVER of the capture to the first answer from tftplb's port 67.
offer_delay() {
    tcpdump -r "$1" -n -tt 2>/dev/null | awk '
        / 0\.0\.0\.0\.68 > 255\.255\.255\.255\.67:/ && !d { d = $1 }
        / 10\.77\.0\.2\.67 > / && !o { o = $1 }
        END { if (d && o) printf "%.2f\n", o - d; else print "none" }'
}

offers() {
    api 127.0.0.1:9069/api/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["proxy_dhcp"]["offers"])'
}

for c in "${cases[@]}"; do
    case $c in
    bios)
        guest bios 52:54:00:77:00:10 BOOTED-THROUGH-TFTPLB 120 "${bios[@]}"
        grep -q "tftp://10.77.0.2/boot.ipxe... ok" "$work/bios/serial.txt" &&
            grep -q "BOOTED-THROUGH-TFTPLB filename boot.ipxe" "$work/bios/serial.txt" ||
            fail "bios: the iPXE script offered by tftplb did not run"
        echo "bios: offer $(offer_delay "$work/bios/dhcp.pcap") s after the first DISCOVER"
        ;;
    uefi)
        guest uefi 52:54:00:77:00:30 "NBP file downloaded successfully" 180 "${uefi[@]}"
        grep -q "NBP filename is boot-efi.efi" "$work/uefi/serial.txt" || fail "uefi: no boot file offered"
        grep -q "NBP file downloaded successfully" "$work/uefi/serial.txt" || fail "uefi: download failed"
        grep -q "Server IP address is 10.77.0.2" "$work/uefi/serial.txt" || fail "uefi: not from tftplb"
        # tftplb's own record of the download: the whole file, relayed from the backend. Its
        # log thread writes the line a moment after the session ends: give it up to 3 s.
        logged=no
        for _ in $(seq 30); do
            grep "session end" "$work/tftplb.log" | grep "boot-efi.efi" | grep -q "bytes=200000" &&
                logged=yes && break
            sleep 0.1
        done
        [[ $logged == yes ]] || fail "uefi: tftplb logged no complete transfer of boot-efi.efi"
        echo "uefi: boot-efi.efi, 200000 bytes, relayed whole (sha256 at the backend $efi_sha)"
        ;;
    stranger)
        before=$(offers)
        guest stranger 52:54:00:77:00:99 "No more network devices" 60 "${bios[@]}"
        [ "$(offer_delay "$work/stranger/dhcp.pcap")" = none ] || fail "stranger: tftplb answered"
        [ "$(offers)" = "$before" ] || fail "stranger: tftplb counted an offer"
        api 127.0.0.1:9069/api/pxe/clients >"$work/clients.json"
        python3 - "$work/clients.json" <<'EOF' || fail "stranger: not listed as unregistered"
import json, sys
c = [m for m in json.load(open(sys.argv[1])) if m["mac"] == "52:54:00:77:00:99"]
assert c and not c[0]["answered"] and c[0]["outcome"] == "unregistered", c
print("stranger: listed", json.dumps(c[0]))
EOF
        ;;
    late)
        write_config '
[[route]]
name = "everyone else, late"
pool = "boot"
delay = "2s"
boot_file = { ipxe = "boot.ipxe" }'
        api -X POST 127.0.0.1:9069/api/reload >/dev/null || fail "late: reload refused"
        guest late 52:54:00:77:00:99 BOOTED-THROUGH-TFTPLB 120 "${bios[@]}"
        grep -q "tftp://10.77.0.2/boot.ipxe... ok" "$work/late/serial.txt" &&
            grep -q BOOTED-THROUGH-TFTPLB "$work/late/serial.txt" || fail "late: did not boot"
        delay=$(offer_delay "$work/late/dhcp.pcap")
        echo "late: offer $delay s after the first DISCOVER"
        python3 -c "import sys; sys.exit(0 if $delay >= 2.0 else 1)" 2>/dev/null ||
            fail "late: offered after $delay s, before the 2 s delay"
        ;;
    *) fail "unknown case $c" ;;
    esac
    echo "PASS $c"
done
echo "---- tftplb's log (ProxyDHCP and sessions)"
{ grep -E "proxy dhcp answers|session end" "$work/tftplb.log" || true; } | sed "s/^/    /"
