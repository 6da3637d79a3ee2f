#!/usr/bin/env python3
"""Summarize bench JSON lines (ours and Academy's anchor script) as medians per backend label.

Usage: bench_summary.py FILE.jsonl [FILE.jsonl ...]
"""
import json
import statistics
import sys
from collections import defaultdict

METRICS = {
    'throughput': ['msgs_per_s', 'send_msgs_per_s', 'recv_msgs_per_s'],
    'fanin': ['msgs_per_s'],
    'rtt': ['p50_us', 'p99_us', 'rtt_per_s'],
    'payload': ['p50_us', 'payload_MBps'],
    'stack-seq': ['calls_per_s', 'p50_us', 'p99_us'],
    'stack-conc': ['calls_per_s', 'p50_us', 'p99_us'],
}


def main() -> None:
    rows = defaultdict(list)
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith('{'):
                    continue
                rec = json.loads(line)
                scenario = rec.get('scenario')
                if scenario not in METRICS or 'error' in rec:
                    continue
                key = scenario if scenario != 'payload' else f"payload {rec['size']}"
                for metric in METRICS[scenario]:
                    if metric in rec:
                        rows[(key, metric, rec['backend'])].append(rec[metric])
    backends = sorted({b for (_, _, b) in rows})
    print('| scenario | metric | ' + ' | '.join(backends) + ' |')
    print('|---|---|' + '---:|' * len(backends))
    for key, metric in sorted({(k, m) for (k, m, _) in rows}):
        cells = []
        for b in backends:
            vals = rows.get((key, metric, b))
            cells.append(f'{statistics.median(vals):,.1f}' if vals else '')
        print(f'| {key} | {metric} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
