"""Accept-to-arrival latency from the messages Postfix's smtp-sink dumped (`smtp-sink -d`).

smtp-sink writes each message it receives to a file of its own; the file's modification time is when the
message arrived. A message carrying `X-Bench-Sent: <unix time>` (stamped by bench/openloop.py with the
instant the request was due) gives arrival - sent. Reading the files after the run costs the measured run nothing:
the sink itself is the same C program as in the delivery section.

    dump_latency.py DIR     prints {"messages", "stamped", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
"""

import json
import os
import re
import sys

from timing_sink import latency_summary

STAMP = re.compile(rb"^X-Bench-Sent:[ \t]*([0-9.]+)", re.IGNORECASE | re.MULTILINE)


def main(directory):
    messages = 0
    latencies = []
    for entry in os.scandir(directory):
        if not entry.is_file():
            continue
        messages += 1
        arrived = entry.stat().st_mtime_ns / 1e9
        with open(entry.path, "rb") as handle:
            head = handle.read(8192).split(b"\n\n", 1)[0]
        match = STAMP.search(head)
        if match:
            latencies.append(arrived - float(match.group(1)))
    json.dump(latency_summary(messages, latencies), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
