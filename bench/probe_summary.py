#!/usr/bin/env python3
"""Summarises the commit probe's pgbench transaction logs (pgbench -l) as one JSON object.

    probe_summary.py LOG... -> {"commits": N, "p50_ms": .., "p99_ms": .., "max_ms": .., "over_50ms": N,
                                "worst_at": "HH:MM:SS.mmm"}

Each log line is "client transaction latency_us script epoch_s epoch_us [lag_us]"; with --rate the latency
counts from the transaction's scheduled start, so a stall also delays the commits queued behind it.
"""
import json
import os
import sys
import time


def main():
    samples = []
    for path in sys.argv[1:]:
        if not os.path.exists(path):
            continue
        with open(path) as log:
            for line in log:
                fields = line.split()
                if len(fields) < 6 or not fields[2].isdigit():
                    continue
                end = int(fields[4]) + int(fields[5]) / 1e6
                samples.append((int(fields[2]) / 1000.0, end))
    if not samples:
        print(json.dumps({"commits": 0}))
        return
    latencies = sorted(latency for latency, _ in samples)
    worst, end = max(samples)
    started = end - worst / 1000.0

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))], 2)

    print(json.dumps({
        "commits": len(latencies),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(worst, 2),
        "over_50ms": sum(1 for latency in latencies if latency > 50),
        "worst_at": time.strftime("%H:%M:%S", time.gmtime(started)) + ("%.3f" % (started % 1))[1:],
    }))


if __name__ == "__main__":
    main()
