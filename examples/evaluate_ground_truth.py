"""Check maps against ground truth: do they point at the object, and does the score follow them?

The shapes zoo models come with a held-out set whose objects' positions are known. ``evaluate``
explains each held-out image's object class and scores every method by where its map lies (the
pointing game, energy in the box and mask) and by what it is for: deleting the pixels it ranks
first should remove the class's probability (deletion, lower is better) and inserting them should
restore it (insertion, higher is better), plus ROAD and a randomisation sanity check (how much
the map changes when the last layer's weights are randomised: lower correlation is better).
``taskcam eval --models shapes-cnn --method gradcam,layercam`` prints the same table.

Run: ``python examples/evaluate_ground_truth.py [--out DIR]``
"""

import argparse
from pathlib import Path

from taskcam.evaluate import evaluate, format_table, write_table

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/evaluate", help="output folder")
out = Path(parser.parse_args().out)

rows = evaluate(["shapes-cnn"], ["gradcam", "layercam", "eigencam"], n=20, progress=False)
print(format_table(rows))
best = max(rows, key=lambda r: r.insertion - r.deletion)
print(f"best insertion - deletion: {best.method} ({best.insertion - best.deletion:.3f})")
print("tables: " + ", ".join(str(p) for p in write_table(rows, out)))
