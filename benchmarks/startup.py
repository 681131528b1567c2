"""How long the command line takes to start: ``taskcam --help``, ``taskcam methods`` and
``import taskcam``, each in a fresh Python process (median of ``--runs``, after one untimed
warm-up run that fills the disk cache).

``import taskcam`` loads no torch and no OpenCV (every public name is imported on first use), so
``taskcam --help`` answers before torch would have finished importing; ``taskcam methods``
needs the method registry, hence torch. ``import taskcam.pipeline`` is what ``taskcam explain``
imports before it loads the model (torch, OpenCV, tqdm; the model's own library comes after).

Usage::

    python benchmarks/startup.py            # 5 runs each
    python benchmarks/startup.py --runs 9

The last line is a JSON object ``{"case": median seconds, ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CLI = "import sys; from taskcam.cli import main; sys.exit(main(sys.argv[1:]))"

CASES = {
    "taskcam --help": [sys.executable, "-c", CLI, "--help"],
    "taskcam methods": [sys.executable, "-c", CLI, "methods"],
    "import taskcam": [sys.executable, "-c", "import taskcam"],
    "import taskcam.pipeline": [sys.executable, "-c", "import taskcam.pipeline"],
}


def seconds(command: list[str], runs: int) -> float:
    """The median wall time of ``runs`` runs of ``command`` (one warm-up run first)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (5)")
    args = parser.parse_args()
    result = {}
    for name, command in CASES.items():
        result[name] = round(seconds(command, args.runs), 3)
        print(f"{name:26s} {result[name]:.3f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
