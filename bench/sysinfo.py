"""Process-tree accounting from /proc: CPU ticks and resident memory of one system.

A "system" is a master process and all its descendants. CPU of a system over an
interval is the delta of utime+stime+cutime+cstime summed over the live tree: a
process that exits is reaped by its parent, whose cutime/cstime then carries it,
so short-lived children (Postfix's smtpd after max_use, delivery agents) count too.
"""
from __future__ import annotations

import os
import threading

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_all() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, cpu ticks incl. reaped children, rss bytes)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(b")") + 2:].split()
        # rest[0]=state [1]=ppid ... [11]=utime [12]=stime [13]=cutime [14]=cstime [21]=rss
        out[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
                       int(rest[21]) * PAGE)
    return out


def tree_pids(roots, table=None) -> set[int]:
    table = table if table is not None else _stat_all()
    pids = {r for r in roots if r in table}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(pids)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in pids:
                pids.add(c)
                todo.append(c)
    return pids


def tree_usage(roots) -> tuple[int, int, int]:
    """(cpu ticks, rss bytes, process count) of the trees under roots."""
    table = _stat_all()
    pids = tree_pids(roots, table)
    return (sum(table[p][1] for p in pids), sum(table[p][2] for p in pids), len(pids))


def tree_pss(roots) -> int:
    """Sum of proportional set size (shared pages split among sharers), bytes."""
    total = 0
    for p in tree_pids(roots):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class PeakRSS:
    """Samples the RSS sum of a process tree every `interval` s; .peak in bytes."""

    def __init__(self, roots, interval: float = 0.2) -> None:
        self.roots = roots
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_usage(self.roots)[1])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, tree_usage(self.roots)[1])
