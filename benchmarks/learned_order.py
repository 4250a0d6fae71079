"""TinyCD in torch on the CPU: the bare network, then the pipeline, then the bare network again, in one process.

Why: torch's CPU time for the same tiles moves with the process's history (first run, memory
already paged in), enough to decide a pipeline / bare ratio on its own. Timing both sides of the
pipeline run shows that spread. Same pair, tiles and batches as ``throughput.py --learned 2048``.

    python benchmarks/learned_order.py --work /tmp/tpw   # prints one line per timing
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deltacd  # noqa: E402
from deltacd.methods.learned import LearnedModel  # noqa: E402
from throughput import TINYCD, _fresh, _read_all, bare_network, learned_pair  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the pair (made if missing) and the output")
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    before, after = learned_pair(args.work, args.size)
    a, _ = _read_all(str(before))
    b, _ = _read_all(str(after))

    def bare(label: str) -> None:
        print(f"bare network ({label}): {bare_network('torch', a, b)[0]:.1f} s", flush=True)

    bare("first")
    out = _fresh(args.work / "learned_order_out")
    t = time.perf_counter()
    result = deltacd.detect(before, after, out, method_instance=LearnedModel.from_file(f"tinycd:{TINYCD}", device="cpu", runtime="torch"))
    print(f"pipeline: {time.perf_counter() - t:.1f} s, of which forward passes "
          f"{result.record['timings_s']['method_inside_predict']:.1f} s", flush=True)
    shutil.rmtree(out)
    bare("after the pipeline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
