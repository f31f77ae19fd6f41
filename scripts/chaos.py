#!/usr/bin/env python3
"""Chaos run against the real binary on 127.0.0.1 (`make chaos`; a 10 s run is in the test suite).

Starts `ip-counter` with a small body limit and a short REQUEST_TIMEOUT, then for --seconds
keeps --clients threads sending a random mix: valid single entries and batches (NDJSON, text,
JSON arrays, gzip) with bad lines among good ones, invalid entries, bodies over the limit, a
gzip bomb, unsupported types, slow clients that trickle their headers and stall, and clients
that drop the connection halfway through a body. Every valid entry's reply is read, so the
addresses the service acknowledged are known exactly.

Passes (exit 0) when the process is still up, never answered 5xx, kept its RSS under --max-rss-mib,
and its final count equals the distinct valid addresses sent. Python standard library only.

    scripts/chaos.py --binary target/release/ip-counter --seconds 60
"""

import argparse
import gzip
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

LIMIT = 64 * 1024


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(binary, data_dir):
    proc = subprocess.Popen(
        [binary, "--log-port=0", "--metrics-port=0", "--server-host=127.0.0.1",
         f"--max-body-bytes={LIMIT}", "--request-timeout=2s", "--log-level=warn",
         f"--data-dir={data_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={"PATH": os.environ.get("PATH", "")})
    port = None
    while port is None:
        line = proc.stdout.readline()
        if not line:
            sys.exit(f"chaos: {binary} exited before listening")
        if line.startswith("ingest listening on http://"):
            port = int(line.strip().rsplit(":", 1)[1])
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, port


class Run:
    def __init__(self, port, seed):
        self.port = port
        self.lock = threading.Lock()
        self.valid = set()
        self.statuses = Counter()
        self.actions = Counter()
        self.failures = []
        self.seed = seed

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(what)

    def post(self, body, content_type="application/json", encoding=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": content_type} if content_type else {}
        if encoding:
            headers["Content-Encoding"] = encoding
        conn.request("POST", "/logs", body=body, headers=headers)
        response = conn.getresponse()
        text = response.read()
        conn.close()
        with self.lock:
            self.statuses[response.status] += 1
        if response.status >= 500:
            self.fail(f"{response.status} for {body[:80]!r}")
        try:
            return response.status, json.loads(text)
        except ValueError:
            self.fail(f"{response.status}: reply is not JSON: {text[:80]!r}")
            return response.status, {}


def address(rng):
    if rng.random() < 0.8:
        return f"10.{rng.randrange(64)}.{rng.randrange(256)}.{rng.randrange(256)}"
    return f"2001:db8::{rng.randrange(65536):x}"


def bad_address(rng):
    return rng.choice(["1.2.3", "999.1.1.1", "01.2.3.4", "1.2.3.4:80", "fe80::1%eth0", "", "x" * 70])


def action(run, rng):
    kind = rng.choice(["single", "single", "invalid", "ndjson", "text", "array", "gzip",
                       "too_large", "bomb", "media_type", "slow", "drop"])
    with run.lock:
        run.actions[kind] += 1
    if kind == "single":
        ip = address(rng)
        status, reply = run.post(json.dumps({"timestamp": "2024-01-01T00:00:00Z", "ip": ip, "url": "/"}))
        if status != 200:
            run.fail(f"valid entry {ip} got {status} {reply}")
        else:
            with run.lock:
                run.valid.add(ip)
    elif kind == "invalid":
        body = rng.choice([json.dumps({"ip": bad_address(rng)}), "{not json", json.dumps({"url": "/"}),
                           json.dumps({"ip": "1.2.3.4", "timestamp": "yesterday"}), "[1,", '"1.2.3.4"'])
        status, _ = run.post(body)
        if status not in (400,):
            run.fail(f"invalid entry {body!r} got {status}")
    elif kind in ("ndjson", "text", "array", "gzip"):
        good = [address(rng) for _ in range(rng.randrange(1, 50))]
        bad = [bad_address(rng) for _ in range(rng.randrange(0, 5))]
        ips = good + bad
        rng.shuffle(ips)
        if kind == "text":
            body, ctype = "\n".join(f"{ip} - - [x] \"GET / HTTP/1.1\" 200 1" for ip in ips), "text/plain"
        elif kind == "array":
            body, ctype = json.dumps([{"ip": ip} for ip in ips]), "application/json"
        else:
            body, ctype = "\n".join(json.dumps({"ip": ip}) for ip in ips), "application/x-ndjson"
        data = body.encode()
        encoding = None
        if kind == "gzip":
            data, encoding = gzip.compress(data), "gzip"
        status, reply = run.post(data, ctype, encoding)
        if status != 200 or reply.get("accepted") != len(good):
            run.fail(f"{kind} batch of {len(good)} good lines got {status} {reply}")
        else:
            with run.lock:
                run.valid.update(good)
    elif kind == "too_large":
        status, _ = run.post(json.dumps({"ip": "10.0.0.1", "pad": "x" * (LIMIT + 1)}))
        if status != 413:
            run.fail(f"oversized body got {status}")
    elif kind == "bomb":
        status, _ = run.post(gzip.compress(b"\n" * (LIMIT * 64)), "application/x-ndjson", "gzip")
        if status != 413:
            run.fail(f"gzip bomb got {status}")
    elif kind == "media_type":
        status, _ = run.post(b"<p>", "text/html")
        if status != 415:
            run.fail(f"text/html got {status}")
    elif kind == "slow":
        with socket.create_connection(("127.0.0.1", run.port), timeout=5) as sock:
            for byte in b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Typ":
                sock.sendall(bytes([byte]))
                time.sleep(rng.uniform(0, 0.05))
            # Then stall: the service closes it after REQUEST_TIMEOUT without a reply.
            try:
                left = sock.recv(100)
            except socket.timeout:
                run.fail("a stalled client was not cut off within 5 s")
                return
            if left:
                run.fail(f"a stalled client got a reply: {left!r}")
    else:  # drop: half a body, then hang up
        with socket.create_connection(("127.0.0.1", run.port), timeout=5) as sock:
            sock.sendall(b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 500\r\n\r\n{\"ip\":\"10.99.99.99\"")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/ip-counter")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--max-rss-mib", type=float, default=256)
    args = parser.parse_args()

    data_dir = tempfile.TemporaryDirectory(prefix="ip-counter-chaos.")
    proc, port = start(args.binary, data_dir.name)
    run = Run(port, args.seed)
    rss_start = rss_mib(proc.pid)
    rss_max = rss_start
    deadline = time.monotonic() + args.seconds

    def client(n):
        rng = random.Random(args.seed * 1000 + n)
        while time.monotonic() < deadline:
            try:
                action(run, rng)
            except (OSError, http.client.HTTPException) as e:
                run.fail(f"client error: {e!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if proc.poll() is not None:
            run.fail(f"the service exited with {proc.returncode}")
            break
        rss_max = max(rss_max, rss_mib(proc.pid))
        time.sleep(0.2)
    for t in threads:
        t.join()

    alive = proc.poll() is None
    count = None
    if alive:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/stats")
        count = json.loads(conn.getresponse().read())["unique_ip_addresses"]
        proc.terminate()
        if proc.wait(10) != 0:
            run.fail(f"the service exited with {proc.returncode} after SIGTERM")
    data_dir.cleanup()
    if count != len(run.valid):
        run.fail(f"final count {count}, but {len(run.valid)} distinct valid addresses were acknowledged")
    if rss_max > args.max_rss_mib:
        run.fail(f"RSS reached {rss_max:.1f} MiB (limit {args.max_rss_mib})")

    requests = sum(run.actions.values())
    print(f"chaos: {args.seconds:g} s, {args.clients} clients, seed {args.seed}: {requests} actions "
          f"({', '.join(f'{k} {v}' for k, v in sorted(run.actions.items()))})")
    print(f"chaos: replies by status: {', '.join(f'{k}: {v}' for k, v in sorted(run.statuses.items()))}")
    print(f"chaos: final count {count}, distinct valid addresses acknowledged {len(run.valid)}; "
          f"RSS {rss_start:.1f} MiB at start, {rss_max:.1f} MiB at most; service up to the end: {alive}")
    if run.failures:
        print("chaos: FAILED", *run.failures, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print("chaos: passed")


if __name__ == "__main__":
    main()
