"""Samples CPU time and memory of groups of processes until SIGTERM, then writes a JSON summary.

    procstat.py --out cpu.json --pid posthorn=1234 --match loadgen='^wrk ' --pg-db posthorn_bench_1 \
        [--interval 0.25]

CPU is utime + stime from /proc/PID/stat, sampled every --interval; a process's figure is its largest
sample minus its first (processes that start during the window count from zero, those that end keep their
last sample). Groups:
  --pid NAME=PID        one process
  --match NAME=REGEX    every process whose command line (NUL turned into spaces) matches
  --tree NAME=PID       a process and its children (e.g. Postfix's master and its daemons)
  --pg-master PID --pg-db DB
                        group "postgres": the postmaster PID, its auxiliary processes (WAL writer,
                        checkpointer, autovacuum, ...) and the client backends of database DB only, so that
                        other databases on a shared server are not counted
The machine's busy time comes from /proc/stat; "other" is what no group accounts for, itemised as the
busiest other processes by name (other_top), interrupt time (irq_softirq_s, where loopback TCP is mostly
counted) and the rest. For --pid groups the largest VmRSS and the final VmHWM are reported too.
"""

import argparse
import json
import os
import re
import signal
import time

TICK = os.sysconf("SC_CLK_TCK")
# "postgres: [cluster: ]user db host(port) state" for a client backend.
BACKEND = re.compile(r"^postgres: (?:\S+: )?(\S+) (\S+) (\S+\(\d+\)|\[local\])")


def read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def status_kib(pid, key):
    data = read(f"/proc/{pid}/status")
    if data is None:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def machine_busy():
    """Busy ticks of the whole machine, and the part spent in interrupt handlers."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, fields[5] + fields[6]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--pid", action="append", default=[])
    parser.add_argument("--match", action="append", default=[])
    parser.add_argument("--tree", action="append", default=[])
    parser.add_argument("--pg-db")
    parser.add_argument("--pg-master", type=int, help="the postmaster's PID (first line of postmaster.pid)")
    args = parser.parse_args()
    fixed = {}
    for item in args.pid:
        name, _, pid = item.partition("=")
        fixed.setdefault(name, set()).add(int(pid))
    patterns = []
    for item in args.match:
        name, _, regex = item.partition("=")
        patterns.append((name, re.compile(regex)))
    trees = []
    for item in args.tree:
        name, _, pid = item.partition("=")
        trees.append((name, int(pid)))
    rss_max = {}

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    first = {}  # (pid, starttime) -> ticks at first sight
    last = {}  # (pid, starttime) -> (group or None, name, ticks)
    started = time.monotonic()
    busy_start, kernel_start = machine_busy()
    initial = True
    me = os.getpid()
    while True:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            stat = read(f"/proc/{pid}/stat")
            if not stat:
                continue
            close = stat.rindex(b")")
            comm = stat[stat.index(b"(") + 1 : close].decode(errors="replace")
            fields = stat[close + 2 :].split()
            parent, ticks, start_time = int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])
            group = None
            for name, pids in fixed.items():
                if pid in pids:
                    group = name
            for name, root in trees:
                if group is None and (pid == root or parent == root):
                    group = name
            if group is None and (patterns or args.pg_db):
                raw = read(f"/proc/{pid}/cmdline") or b""
                cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                for name, regex in patterns:
                    if group is None and regex.search(cmdline):
                        group = name
                if group is None and args.pg_db and args.pg_master:
                    if pid == args.pg_master or parent == args.pg_master:
                        backend = BACKEND.match(cmdline)
                        if backend is None or backend.group(2) == args.pg_db:
                            group = "postgres"
            if pid == me:
                comm = "procstat.py"
            key = (pid, start_time)
            if group is None and key in last:
                # An exiting process loses its command line: it stays in the group it was seen in.
                group = last[key][0]
            if key not in first:
                # Seen for the first time after the window opened: it started within it.
                first[key] = ticks if initial else 0
            last[key] = (group, comm, ticks)
            if group in fixed:
                rss = status_kib(pid, "VmRSS")
                if rss is not None:
                    rss_max[group] = max(rss_max.get(group, 0), rss)
        initial = False
        if stop:
            break
        time.sleep(args.interval)
    wall = time.monotonic() - started
    busy_end, kernel_end = machine_busy()
    busy = (busy_end - busy_start) / TICK
    kernel = (kernel_end - kernel_start) / TICK
    cpu = {name: 0.0 for name in list(fixed) + [name for name, _ in trees + patterns]}
    if args.pg_db and args.pg_master:
        cpu["postgres"] = 0.0
    others = {}
    for key, (group, comm, ticks) in last.items():
        delta = (ticks - first[key]) / TICK
        if group is None:
            others[comm] = others.get(comm, 0.0) + delta
        else:
            cpu[group] += delta
    counted = sum(cpu.values())
    other_processes = sum(others.values())
    top = sorted(others.items(), key=lambda item: -item[1])[:4]
    result = {
        "wall_s": round(wall, 3),
        "cores": os.cpu_count(),
        "machine_busy_s": round(busy, 2),
        "cpu_s": {name: round(value, 2) for name, value in sorted(cpu.items())},
        # Everything the groups do not account for: other processes (by name), interrupt handling (the
        # loopback network's softirq time among it) and processes too short-lived to be sampled.
        "other_s": round(max(0.0, busy - counted), 2),
        "other_processes_s": round(other_processes, 2),
        "other_top": {name: round(100 * value / wall, 1) for name, value in top if value > 0},
        "irq_softirq_s": round(kernel, 2),
        "cpu_pct_of_one_core": {name: round(100 * value / wall, 1) for name, value in sorted(cpu.items())},
        "rss_max_kib": rss_max,
        "hwm_kib": {name: status_kib(min(pids), "VmHWM") for name, pids in fixed.items()},
    }
    result["cpu_pct_of_one_core"]["other"] = round(100 * result["other_s"] / wall, 1)
    with open(args.out, "w") as handle:
        json.dump(result, handle)
        handle.write("\n")


if __name__ == "__main__":
    main()
