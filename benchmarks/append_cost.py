"""Cost of appending one record (``edgeattn.runtime.records.append_jsonl``) against the number of
records already in the file: it must stay flat (one O_APPEND write + fsync under a lock), not grow
with the file as the old read-and-rewrite did.

    python benchmarks/append_cost.py [--existing 10,1000,100000] [--appends 200] [--dir DIR]

Prints µs per record (median and mean of ``--appends`` appends, each one fsynced) per file size.
The file is pre-filled with copies of a typical record (~3 kB) written in one go.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from edgeattn.runtime import records  # noqa: E402


def typical_record(i: int) -> dict:
    return records.new_record(
        id=f"softmax/N1024/D384/h6/B1#{i}",
        key=f"{i:064x}",
        meta={"method": "softmax", "tokens": 1024, "dim": 384, "heads": 6, "ops": {"MatMul": 4}},
        latency_ms={"median": 31.5, "p90": 33.0, "runs": 30, "raw": [31.5] * 30},
        memory={"peak_rss_mb": 149.96, "method": "procfs"},
        device={"cpu_model": "x" * 40, "cores_logical": 2, "ram_total_mb": 24000.0},
        notes=["y" * 1500],
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--existing", default="10,1000,100000")
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--dir", default=None, help="where the test file goes (default: a temp dir)")
    args = ap.parse_args()
    line = (records.dumps(typical_record(0)) + "\n").encode()
    print(f"record: {len(line)} bytes; {args.appends} fsynced appends per file size")
    print(f"{'records in file':>16} {'file MB':>8} {'median µs':>10} {'mean µs':>9}")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="edgeattn-append-") as td:
        for n in (int(x) for x in args.existing.split(",")):
            path = os.path.join(td, f"r{n}.jsonl")
            with open(path, "wb") as f:
                for _ in range(n // 1000):
                    f.write(line * 1000)
                f.write(line * (n % 1000))
                f.flush()
                os.fsync(f.fileno())  # else the first timed fsync flushes the whole pre-fill
            size_mb = os.path.getsize(path) / 1e6
            times = []
            for i in range(args.appends):
                rec = typical_record(n + i)
                t0 = time.perf_counter()
                records.append_jsonl(path, rec)
                times.append((time.perf_counter() - t0) * 1e6)
            os.unlink(path)
            print(
                f"{n:>16} {size_mb:>8.1f} {statistics.median(times):>10.0f} "
                f"{statistics.fmean(times):>9.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
