#!/usr/bin/env python3
"""Peak memory of the release binary under a flood of large request bodies (make body-flood).

Opens CONNECTIONS connections to a fresh ip-counter on 127.0.0.1, each announcing a body of
BODY_MIB MiB and sending all of it but the last byte, holds them for HOLD seconds, then reads
the process's peak RSS (VmHWM). Run with and without MAX_INFLIGHT_BODY_BYTES to compare: the
budget bounds what the bodies can take, whatever the number of connections. Traffic goes to
127.0.0.1 only and every socket is closed within the run.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        kib = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
    return kib / 1024


def start(binary, flags):
    proc = subprocess.Popen(
        [binary, "--log-port=0", "--metrics-port=0", "--server-host=127.0.0.1",
         "--persistence=off", "--log-level=warn", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        found = re.search(r"ingest listening on http://([\d.]+):(\d+)", line)
        if found:
            return proc, (found.group(1), int(found.group(2)))
    sys.exit("ip-counter did not start")


def hold(addr, body_mib, held, deadline):
    size = body_mib << 20
    try:
        sock = socket.create_connection(addr, timeout=10)
        sock.sendall(f"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        chunk = b"10.0.0.1\n" * 7000
        sent = 0
        while sent < size - 1 and time.monotonic() < deadline:
            piece = chunk[: min(len(chunk), size - 1 - sent)]
            sock.sendall(piece)
            sent += len(piece)
        held.append(sock)
    except OSError:
        pass  # refused (503 overloaded, then closed): the point of the budget


def run(binary, flags, connections, body_mib, seconds):
    proc, addr = start(binary, flags)
    try:
        base = peak_rss_mib(proc.pid)
        held, deadline = [], time.monotonic() + seconds
        threads = [threading.Thread(target=hold, args=(addr, body_mib, held, deadline))
                   for _ in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.5)
        peak = peak_rss_mib(proc.pid)
        for sock in held:
            sock.close()
        alive = proc.poll() is None
        return base, peak, len(held), alive
    finally:
        proc.kill()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/ip-counter")
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--body-mib", type=int, default=50)
    parser.add_argument("--budget", default="256MiB")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    flags = [f"--max-inflight-body-bytes={args.budget}"]
    base, peak, held, alive = run(args.binary, flags, args.connections, args.body_mib,
                                  args.seconds)
    print(f"MAX_INFLIGHT_BODY_BYTES={args.budget}: {args.connections} connections x "
          f"{args.body_mib} MiB bodies (all but the last byte): peak RSS {peak:.1f} MiB "
          f"(at start {base:.1f} MiB), {held} connections sent their whole body, "
          f"process {'alive' if alive else 'DEAD'}")


if __name__ == "__main__":
    main()
