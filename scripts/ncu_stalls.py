#!/usr/bin/env python3
"""Warp-stall samples of one kernel per reason and per SASS instruction.

  ncu --clock-control none --section SourceCounters --section WarpStateStats -k regex:gemv2 \\
      --launch-skip 6 --launch-count 1 -o rep exl2_gemv_bench --only probe --kernels 2
  ncu -i rep.ncu-rep --page source --csv --print-source sass > sass.csv
  scripts/ncu_stalls.py sass.csv [TOP]

Prints the share of each stall reason over all samples, the samples per opcode, and the TOP
instructions (default 25) with the most samples and their main reasons.
"""
import collections
import csv
import re
import sys


def main():
    rows = list(csv.reader(open(sys.argv[1])))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    head = next(i for i, r in enumerate(rows) if 'Source' in r and 'Address' in r)
    hdr, data = rows[head], [r for r in rows[head + 1:] if len(r) == len(rows[head])]
    col = {h: i for i, h in enumerate(hdr)}
    reasons = [h for h in hdr if h.startswith('stall_') and 'Not Issued' not in h]
    by_reason, by_op, per = collections.Counter(), collections.Counter(), []
    for r in data:
        n = int(r[col['Warp Stall Sampling (All Samples)']] or 0)
        src = r[col['Source']].strip()
        op = re.sub(r'^@!?U?P\w+\s+', '', src).split(' ')[0]
        by_op[op] += n
        why = {h[6:]: int(r[col[h]] or 0) for h in reasons if int(r[col[h]] or 0) > 0}
        by_reason.update(why)
        per.append((n, r[col['Address']][-5:], src[:60], int(r[col['Instructions Executed']] or 0), why))
    total = sum(by_op.values()) or 1
    print(f'{total} samples')
    for k, v in by_reason.most_common():
        print(f'  {k:20s} {v:7d} {100 * v / total:5.1f} %')
    print('per opcode')
    for k, v in by_op.most_common(12):
        print(f'  {k:20s} {v:7d} {100 * v / total:5.1f} %')
    print(f'top {top} instructions: samples, address, SASS, executions, main reasons')
    for n, addr, src, execs, why in sorted(per, key=lambda x: -x[0])[:top]:
        main_why = ', '.join(f'{k} {v}' for k, v in sorted(why.items(), key=lambda x: -x[1])[:3])
        print(f'  {n:6d} {addr} {src:60s} {execs:8d}  {main_why}')


if __name__ == '__main__':
    main()
