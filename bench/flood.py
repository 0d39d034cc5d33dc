#!/usr/bin/env python3
"""A spoofed-source request flood on loopback, and what it costs tftplb in memory.

Sends RRQs to a tftplb from up to 16 million distinct source addresses without a socket per
source: every 127.0.0.0/8 address is this host's, so one UDP socket can send from any of them
with IP_PKTINFO (the kernel sets the source address we ask for). The sources never answer, as
spoofed ones would not. While it runs, tftplb's VmRSS is sampled from /proc; at the end its
VmHWM (peak) and RSS some seconds later are printed, one JSON line.

Loopback only, bounded: --sources requests at most, at most --rate per second, --max-secs.

    python3 bench/flood.py --pid PID --target 127.0.0.1:PORT --sources 1000000
"""

import argparse
import ipaddress
import json
import socket
import struct
import time

# <linux/in.h>; Python does not name it.
IP_PKTINFO = 8


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def source(i):
    """The i-th source address in 127.1.0.0 onwards (127.0.0.0/16 left to the harness)."""
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.1.0.0")) + i))


def rrq(name, options):
    body = name.encode() + b"\0octet\0"
    for k, v in options:
        body += k.encode() + b"\0" + v.encode() + b"\0"
    return b"\0\1" + body


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True, help="tftplb's process id")
    p.add_argument("--target", required=True, help="tftplb's TFTP address, 127.x.y.z:PORT")
    p.add_argument("--sources", type=int, default=1_000_000)
    p.add_argument("--rate", type=int, default=50_000, help="requests per second at most")
    p.add_argument("--max-secs", type=float, default=120)
    p.add_argument("--settle", type=float, default=10, help="seconds to watch after the flood")
    p.add_argument("--file", default="pxelinux.0")
    p.add_argument("--options", action="store_true", help="ask blksize 1468 and tsize")
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    target = (host, int(port))
    if not ipaddress.IPv4Address(host).is_loopback:
        raise SystemExit("loopback targets only")
    options = [("blksize", "1468"), ("tsize", "0")] if a.options else []
    datagram = rrq(a.file, options)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    before = rss_kib(a.pid)
    peak_sampled = before
    started = time.monotonic()
    sent = 0
    batch = max(1, a.rate // 100)
    while sent < a.sources and time.monotonic() - started < a.max_secs:
        for _ in range(min(batch, a.sources - sent)):
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            info = struct.pack("=I4s4s", 0, socket.inet_aton(source(sent)), b"\0\0\0\0")
            try:
                s.sendmsg([datagram], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, target)
            except BlockingIOError:
                pass
            sent += 1
        peak_sampled = max(peak_sampled, rss_kib(a.pid))
        ahead = sent / a.rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    flood_secs = time.monotonic() - started
    time.sleep(a.settle)
    print(json.dumps({
        "sources": sent,
        "flood_secs": round(flood_secs, 1),
        "rss_before_kib": before,
        "rss_peak_kib": max(peak_sampled, rss_kib(a.pid, "VmHWM")),
        "rss_after_settle_kib": rss_kib(a.pid),
        "settle_secs": a.settle,
    }))


if __name__ == "__main__":
    main()
