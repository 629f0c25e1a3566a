"""Drive a Pipeline in a separate process (the SIGKILL tests): submit synthetic documents.

    python -m tests.delivery.pipeline_driver TMPDIR URL --count N [--start K] [--hold] [--close S]

Prints "READY <first seq> <last seq>" once every document is submitted and the spool is
flushed; with --hold it then keeps ticking until killed, otherwise it closes the pipeline
(draining for --close seconds) and prints "CLOSED".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.delivery.helpers import make_config, new_pipeline, synthetic_doc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tmp", type=Path)
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--close", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=0.0, help="documents/s (0: unpaced)")
    args = parser.parse_args()
    cfg = make_config(args.tmp, args.url, batch={"max_docs": 200, "max_wait_s": 0.05})
    pipeline = new_pipeline(cfg)
    first = pipeline.sealer.head.seq + 1
    for n in range(args.start, args.start + args.count):
        pipeline.submit(synthetic_doc(n))
        if n % 50 == 0:
            pipeline.tick()
            print(f"SUBMITTED {pipeline.sealer.head.seq}", flush=True)
        if args.rate:
            time.sleep(1 / args.rate)
    pipeline.tick()
    print(f"READY {first} {pipeline.sealer.head.seq}", flush=True)
    if args.hold:
        while True:
            pipeline.tick()
            time.sleep(0.1)
    pipeline.close(args.close)
    print("CLOSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
