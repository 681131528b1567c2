"""The Ray Data run (``--ray``) against the single-process run, on a local two-CPU Ray."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from taskcam import TaskcamError  # noqa: E402
from taskcam.cli import main  # noqa: E402
from taskcam.data import make_sample  # noqa: E402
from taskcam.distributed import check_address, explain_files_ray  # noqa: E402
from taskcam.models import load_model  # noqa: E402
from taskcam.pipeline import explain_files  # noqa: E402
from taskcam.render import save_image  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with two CPUs, quiet, shut down after the module."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def one_thread():
    """Single-process runs on one torch thread, as each CPU actor (Ray sets its
    ``OMP_NUM_THREADS`` to its one CPU): scores then match to the bit on any machine, where
    other thread counts change them in the last bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _folder(root, n, size, broken=False):
    root.mkdir()
    for i in range(n):
        save_image(root / f"img{i}.png", make_sample(i, seed=9999, size=size).image)
    if broken:
        (root / "img2_broken.png").write_bytes(b"not a png")
    return root


def _same_run(single, distributed, out_single, out_ray):
    """Equal results.json documents and equal heatmaps on disk."""
    assert distributed.results == single.results
    on_disk = json.loads((out_ray / "results.json").read_text())
    assert on_disk == json.loads((out_single / "results.json").read_text())
    n = 0
    for item in single.results["items"]:
        for target in item["targets"]:
            a = np.load(out_single / target["heatmap"])
            b = np.load(out_ray / target["heatmap"])
            assert a.shape == (item["height"], item["width"])
            np.testing.assert_allclose(a, b, atol=1e-5)
            assert (out_ray / target["overlay"]).is_file()
            n += 1
        if "grid" in item:
            assert (out_ray / item["grid"]).is_file()
    return n


def test_ray_classifier_run_equals_the_single_process_run(local_ray, tmp_path):
    folder = _folder(tmp_path / "images", 6, 64, broken=True)
    single = explain_files(
        load_model("zoo:shapes-cnn"), [folder], tmp_path / "single", progress=False
    )
    distributed = explain_files_ray("zoo:shapes-cnn", [folder], tmp_path / "ray", progress=False)
    assert len(single.results["items"]) == 6
    assert [f[0] for f in distributed.failures] == [str(folder / "img2_broken.png")]
    assert _same_run(single, distributed, tmp_path / "single", tmp_path / "ray") == 6
    assert distributed.results["layers"] and distributed.results["complete"] is True

    # the run log makes it resumable: the same run again redoes only the broken file
    again = explain_files_ray("zoo:shapes-cnn", [folder], tmp_path / "ray", progress=False)
    assert again.resumed == 6 and again.results == single.results


def test_ray_detector_run_equals_the_single_process_run(local_ray, tmp_path):
    folder = _folder(tmp_path / "images", 3, 256)
    single = explain_files(
        load_model("zoo:shapes-fasterrcnn"), [folder], tmp_path / "single", progress=False
    )
    distributed = explain_files_ray(
        "zoo:shapes-fasterrcnn", [folder], tmp_path / "ray", progress=False
    )
    assert [t["kind"] for t in single.results["items"][0]["targets"]][:1] == ["detection"]
    assert _same_run(single, distributed, tmp_path / "single", tmp_path / "ray") >= 3


def test_cli_ray_flag_writes_the_same_results(local_ray, tmp_path, capsys):
    folder = _folder(tmp_path / "images", 2, 64)
    args = [str(folder), "--model", "zoo:shapes-cnn", "--no-progress", "--method", "gradcam"]
    args += ["--faithfulness", "--faithfulness-steps", "2"]  # scored the same way by each actor
    assert main(["explain", *args, "--out", str(tmp_path / "single")]) == 0
    assert main(["explain", *args, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    assert "2 image(s)" in capsys.readouterr().out
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    assert json.loads((tmp_path / "ray" / "results.json").read_text()) == single
    assert all("faithfulness" in t for item in single["items"] for t in item["targets"])


@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:1"])
def test_unreachable_address_is_named_and_nothing_is_written(tmp_path, address, capsys):
    folder = _folder(tmp_path / "images", 1, 64)
    out = tmp_path / "out"
    with pytest.raises(TaskcamError, match=address.replace(".", r"\.")):
        explain_files_ray("zoo:shapes-cnn", [folder], out, address=address)
    assert not out.exists()
    argv = ["explain", str(folder), "--model", "zoo:shapes-cnn", "--out", str(out)]
    assert main([*argv, "--ray", address]) == 2
    assert address in capsys.readouterr().err
    assert not out.exists()


def test_check_address_rejects_a_malformed_address():
    with pytest.raises(TaskcamError, match="expected HOST:PORT"):
        check_address("nowhere")
