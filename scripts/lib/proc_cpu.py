#!/usr/bin/env python3
"""CPU seconds per process group while a load test runs, from /proc.

    proc_cpu.py OUT.jsonl INTERVAL NAME=SPEC ...

SPEC is `pid:N` (one process), `pidfile:PATH` (the pid on the first line of
PATH, read again at every sample, so a restarted process is followed) or
`tree:PATH` (like pidfile, plus every live child of that process and the
CPU of children it has reaped: a PostgreSQL postmaster and its backends).
A process counts utime+stime (+cutime+cstime for `tree`).

Every INTERVAL seconds one JSON line goes to OUT: {"t": epoch seconds,
"cpu": {NAME: CPU seconds since the start}, "machine": busy CPU seconds of
the whole machine since the start (/proc/stat), "columns": the same per
/proc/stat column (user, system, softirq, ...), "pids": {NAME: [pids]}}.
The sampler adds itself as "proc_cpu.py". A process that disappears keeps what it used; one that appears (a restart)
adds what it uses from then on. Stops on SIGTERM or SIGINT after writing a
last line.
"""
import json
import os
import signal
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces.
    rest = raw[raw.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17, ppid 4.
    return {
        "state": rest[0],
        "ppid": int(rest[1]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "cutime": int(rest[13]),
        "cstime": int(rest[14]),
    }


def read_pid(path):
    try:
        with open(path) as f:
            line = f.readline().strip()
        return int(line) if line.isdigit() else None
    except OSError:
        return None


def children_of(parent):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat_fields(entry)
            if st and st["ppid"] == parent:
                out.append((int(entry), st))
    return out


STAT_COLUMNS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def machine_cpu():
    """/proc/stat's first line: CPU seconds per column (guest time is in user already)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    return {c: int(v) / TICK for c, v in zip(STAT_COLUMNS, parts)}


def machine_busy(cols):
    return sum(v for c, v in cols.items() if c not in ("idle", "iowait"))


class Group:
    """Accumulated ticks of one NAME: per root pid, the last value seen."""

    def __init__(self, spec):
        kind, _, arg = spec.partition(":")
        if kind not in ("pid", "pidfile", "tree"):
            raise SystemExit(f"unknown spec {spec!r}")
        self.kind, self.arg = kind, arg
        self.total = 0
        self.last = {}  # root pid -> ticks at the last sample
        self.first = True
        self.pids = []

    def root(self):
        if self.kind == "pid":
            return int(self.arg)
        return read_pid(self.arg)

    def sample(self):
        pid = self.root()
        st = stat_fields(pid) if pid else None
        self.pids = []
        if st is None or st["state"] == "Z":
            self.first = False
            return
        ticks = st["utime"] + st["stime"]
        self.pids = [pid]
        if self.kind == "tree":
            ticks += st["cutime"] + st["cstime"]
            for cpid, cst in children_of(pid):
                ticks += cst["utime"] + cst["stime"]
                self.pids.append(cpid)
        if pid in self.last:
            self.total += max(0, ticks - self.last[pid])
        elif not self.first:
            # A process that appeared during the run: all it used is the run's.
            self.total += ticks
        self.last[pid] = ticks
        self.first = False


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    out_path, interval = sys.argv[1], float(sys.argv[2])
    groups = {}
    for arg in sys.argv[3:]:
        name, _, spec = arg.partition("=")
        groups[name] = Group(spec)
    # The sampler's own cost, so that it is not hidden in the machine's.
    groups["proc_cpu.py"] = Group(f"pid:{os.getpid()}")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    cols0 = machine_cpu()
    with open(out_path, "w") as out:
        while True:
            for g in groups.values():
                g.sample()
            cols = machine_cpu()
            line = {
                "t": round(time.time(), 3),
                "cpu": {n: round(g.total / TICK, 2) for n, g in groups.items()},
                "machine": round(machine_busy(cols) - machine_busy(cols0), 2),
                "columns": {c: round(cols[c] - cols0[c], 2) for c in STAT_COLUMNS},
                "pids": {n: g.pids for n, g in groups.items()},
            }
            out.write(json.dumps(line) + "\n")
            out.flush()
            if stop:
                break
            # Sleep in small steps so a stop request is answered quickly.
            deadline = time.time() + interval
            while not stop and time.time() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.time())))


if __name__ == "__main__":
    main()
