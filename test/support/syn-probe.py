#!/usr/bin/env python3
"""Sends one hand-built TCP SYN out of an interface and says whether anything answers.

usage: syn-probe.py IFACE SRC_IP DST_IP DST_PORT DST_MAC [TIMEOUT_SECONDS]

The frame is written with an AF_PACKET socket, so the sender's kernel routes nothing: a SYN for
127.0.0.1 leaves IFACE as written, addressed to DST_MAC (the bridge), which is what a hostile
task with CAP_NET_RAW does (CVE-2020-8558). Prints and exits with:
  SYN-ACK    0   a listener answered
  RST        2   the host answered that nothing listens there
  NO ANSWER  1   nothing came back (dropped)
"""
import random
import select
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def main() -> int:
    iface, src, dst, port_text, dst_mac = sys.argv[1:6]
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 3.0
    port = int(port_text)
    with open(f"/sys/class/net/{iface}/address") as f:
        src_mac = f.read().strip()
    sport = random.randint(20000, 60000)
    tcp = struct.pack("!HHIIBBHHH", sport, port, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000, 64,
        socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst),
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    sock.send(eth + ip + tcp)
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        packet = sock.recv(65535)[14:]
        if len(packet) < 40 or packet[9] != socket.IPPROTO_TCP:
            continue
        if socket.inet_ntoa(packet[12:16]) != dst or socket.inet_ntoa(packet[16:20]) != src:
            continue
        segment = packet[(packet[0] & 0x0F) * 4:]
        from_port, to_port = struct.unpack("!HH", segment[:4])
        if from_port != port or to_port != sport:
            continue
        flags = segment[13]
        if flags & 0x12 == 0x12:
            print("SYN-ACK")
            return 0
        if flags & 0x04:
            print("RST")
            return 2
    print("NO ANSWER")
    return 1


if __name__ == "__main__":
    sys.exit(main())
