#!/usr/bin/env python3
"""Soak load for tests/soak.sh: steady mixed create/rotate/delete over keep-alive HTTP.

Loopback only, stdlib only. A few threads, each with its own connection and its own live
tokens, paced to a fixed total rate; the main thread samples the server's RSS. Fails (exit 1)
on any 5xx, any transport error, any failed rotation of a token it holds, or RSS that does
not stay within 10% of its value right after the warm-up (first 20% of the run).
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time

HOST = "127.0.0.1"  # never anything but loopback
JSON = {"Content-Type": "application/json"}
MIN_LIVE, MAX_LIVE = 50, 300  # live tokens per thread: a steady, bounded working set


class Worker(threading.Thread):
    def __init__(self, index, port, rate, deadline, max_requests):
        super().__init__(daemon=True)
        self.index = index
        self.port = port
        self.interval = 1.0 / rate
        self.deadline = deadline
        self.max_requests = max_requests
        self.random = random.Random(index)
        self.live = []
        self.counts = {"create": 0, "rotate": 0, "delete": 0}
        self.errors = []
        self.latencies = []
        self.conn = None

    def request(self, method, body):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        started = time.monotonic()
        try:
            self.conn.request(method, "/token", body=json.dumps(body), headers=JSON)
            reply = self.conn.getresponse()
            data = reply.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as err:
            self.conn.close()
            self.conn = None
            raise RuntimeError(f"{method} transport error: {err!r}") from err
        self.latencies.append(time.monotonic() - started)
        if reply.status >= 500:
            raise RuntimeError(f"{method} answered {reply.status}: {data[:200]}")
        return reply.status, data

    def one(self, n):
        live = len(self.live)
        roll = self.random.random()
        if live < MIN_LIVE or (live < MAX_LIVE and roll < 0.3):
            op = "create"
        elif live >= MAX_LIVE or roll < 0.6:
            op = "delete"
        else:
            op = "rotate"
        self.counts[op] += 1
        if op == "create":
            meta = {"user": f"u{self.index}-{n}", "n": n, "pad": "x" * self.random.randrange(64)}
            status, token = self.request("POST", {"meta": meta})
            if status != 200 or len(token) != 22:
                raise RuntimeError(f"create answered {status}: {token[:200]}")
            self.live.append(token)
        elif op == "rotate":
            i = self.random.randrange(live)
            token = self.live[i]
            body = {"token": token}
            if self.random.random() < 0.5:
                body["meta"] = {"n": n}
            status, data = self.request("PUT", body)
            answer = json.loads(data) if status == 200 else None
            if not (isinstance(answer, dict) and "Ok" in answer):
                raise RuntimeError(f"rotation of a live token failed: {status} {data[:200]}")
            self.live[i] = answer["Ok"]["token"]
        else:
            token = self.live.pop(self.random.randrange(live))
            status, data = self.request("DELETE", {"token": token})
            if status != 202:
                raise RuntimeError(f"delete answered {status}: {data[:200]}")

    def run(self):
        next_at = time.monotonic()
        n = 0
        while n < self.max_requests and time.monotonic() < self.deadline:
            n += 1
            try:
                self.one(n)
            except RuntimeError as err:
                self.errors.append(str(err))
            next_at += self.interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            elif pause < -1.0:
                next_at = time.monotonic()  # fell behind: do not burst to catch up
        # Leave the server as found: delete what this thread still holds.
        for token in self.live:
            try:
                self.request("DELETE", {"token": token})
            except RuntimeError as err:
                self.errors.append(str(err))
        self.live.clear()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process, for RSS")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=800, help="total requests per second")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    started = time.monotonic()
    deadline = started + args.seconds
    per_thread = args.rate / args.threads
    max_requests = int(per_thread * args.seconds * 1.1) + 1
    workers = [Worker(i, args.port, per_thread, deadline, max_requests) for i in range(args.threads)]
    for worker in workers:
        worker.start()

    every = max(1.0, min(5.0, args.seconds / 20))
    samples = []  # (seconds since start, RSS KiB)
    while any(worker.is_alive() for worker in workers):
        samples.append((time.monotonic() - started, rss_kib(args.pid)))
        time.sleep(every)
    for worker in workers:
        worker.join()
    samples.append((time.monotonic() - started, rss_kib(args.pid)))
    elapsed = time.monotonic() - started

    failures = []
    errors = [err for worker in workers for err in worker.errors]
    counts = {op: sum(w.counts[op] for w in workers) for op in ("create", "rotate", "delete")}
    total = sum(counts.values())
    latencies = sorted(l for w in workers for l in w.latencies)
    print(f"requests: {total} in {elapsed:.1f}s ({total / elapsed:.0f}/s): {counts}")
    if latencies:
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1000
        print(f"latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"errors: {len(errors)}")
    for err in errors[:10]:
        print(f"  {err}")
    if errors:
        failures.append(f"{len(errors)} errors (5xx, transport or failed rotation)")

    warm = args.seconds * 0.2
    after = [(t, kib) for t, kib in samples if t >= warm]
    print("rss samples (s: KiB): " + ", ".join(f"{t:.0f}: {kib}" for t, kib in samples))
    if len(after) < 2:
        failures.append("too few RSS samples after the warm-up; run longer")
    else:
        base = after[0][1]
        low, high = min(k for _, k in after), max(k for _, k in after)
        print(
            f"rss after warm-up ({warm:.0f}s): baseline {base} KiB, min {low}, max {high}, "
            f"drift {100 * (high - base) / base:+.1f}% / {100 * (low - base) / base:+.1f}%"
        )
        if high > base * 1.10 or low < base * 0.90:
            failures.append("RSS not flat: moved more than 10% from its post-warm-up value")
    if total < args.rate * args.seconds * 0.5:
        failures.append(f"load fell short: {total} requests, wanted ~{args.rate * args.seconds:.0f}")

    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
