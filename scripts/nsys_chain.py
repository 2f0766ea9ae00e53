#!/usr/bin/env python3
"""Chain costs of one decode step from an nsys SQLite export.

  nsys profile --cuda-graph-trace=node -t cuda -o tl cuda_decode_bench --iters 8
  nsys export --type sqlite -o tl.sqlite tl.nsys-rep
  scripts/nsys_chain.py tl.sqlite [STEP] [ROWS]

A step starts at the embedding kernel; STEP picks which one (default 5, past the warm-up).
With programmatic dependent launch a kernel starts long before its predecessor ends, so each
kernel is charged the time from the latest end before it to its own end ("end+"): the cost it
adds to the chain. Prints the first ROWS kernels (default 40) with grid, block, start (relative
to that end), duration and end+, then the per-name totals.
"""
import collections
import sqlite3
import sys


def main():
    db = sqlite3.connect(sys.argv[1])
    which = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    shown = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    rows = db.execute(
        "select k.start, k.end, s.value, k.gridX, k.gridY, k.blockX from CUPTI_ACTIVITY_KIND_KERNEL k "
        "join StringIds s on k.shortName = s.id order by k.start").fetchall()
    starts = [i for i, r in enumerate(rows) if 'embed' in r[2]]
    if len(starts) < which + 2:
        sys.exit(f'only {len(starts)} steps in the trace')
    step = rows[starts[which]:starts[which + 1]]
    print(f'step {which}: {len(step)} kernels, {(step[-1][1] - step[0][0]) / 1e3:.1f} us')
    totals = collections.OrderedDict()
    prev = step[0][0]
    for n, (s, e, name, gx, gy, bx) in enumerate(step):
        add = (e - prev) / 1e3
        if n < shown:
            print(f'{n:4d} {name[:34]:34s} grid {gx}x{gy} block {bx:4d} start {(s - prev) / 1e3:8.2f} '
                  f'dur {(e - s) / 1e3:7.2f} end+ {add:7.2f}')
        t = totals.setdefault(name[:60], [0, 0.0, 0.0])
        t[0] += 1
        t[1] += add
        t[2] += (e - s) / 1e3
        prev = max(prev, e)
    print('--- per kernel: launches, sum of end+ (us), sum of durations (us), end+ per launch')
    for name, (c, add, dur) in sorted(totals.items(), key=lambda x: -x[1][1]):
        print(f'{name:60s} {c:4d} {add:9.1f} {dur:9.1f} {add / c:7.2f}')


if __name__ == '__main__':
    main()
