"""Turns oha's JSON output into the summary bench/openloop.py prints, so both generators feed one table.

    oha_summary.py OHA_JSON RATE DURATION > summary.json

oha runs with -q RATE, --latency-correction and -w: each latency is measured from the instant the request
was due, not from when a connection was free to send it (no coordinated omission), and requests in flight
at the deadline are waited for, as openloop.py does. As there, "scheduled" is every request due in the
run (RATE x DURATION), so requests never sent count as not answered, and the achieved rate counts 202s only.
"""

import json
import sys


def main():
    path, rate, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    data = json.load(open(path))
    summary = data.get("summary", {})
    statuses = {str(code): count for code, count in data.get("statusCodeDistribution", {}).items()}
    errors = sum(data.get("errorDistribution", {}).values())
    answered = sum(statuses.values())
    percentiles = data.get("latencyPercentiles", {})

    def ms(value):
        return None if value is None else round(value * 1000, 2)

    print(json.dumps({
        "generator": "oha",
        "target_rate": rate,
        "duration": duration,
        "scheduled": round(rate * duration),
        "answered": answered,
        "ok": statuses.get("202", 0),
        "errors": errors,
        "statuses": statuses,
        "achieved_rate": round(statuses.get("202", 0) / summary["total"], 1) if summary.get("total") else 0.0,
        "p50_ms": ms(percentiles.get("p50")),
        "p90_ms": ms(percentiles.get("p90")),
        "p99_ms": ms(percentiles.get("p99")),
        "max_ms": ms(summary.get("slowest")),
    }))


if __name__ == "__main__":
    main()
