"""The command line starts without the heavy libraries: ``taskcam --help`` (and ``import
taskcam``) load neither torch nor OpenCV; each command imports what it uses when it runs
(``benchmarks/startup.py`` measures the seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "torchvision", "cv2", "numpy", "tqdm", "ultralytics", "timm", "transformers"]


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_taskcam_help_imports_no_torch_nor_opencv():
    code = (
        "from taskcam.cli import main\n"
        "for argv in (['--help'], ['explain', '--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
    )
    assert _loaded_after(code) == []


def test_import_taskcam_is_light_and_its_names_load_on_use():
    assert _loaded_after("import taskcam") == []
    assert "torch" in _loaded_after("import taskcam\ntaskcam.ClassTarget")
