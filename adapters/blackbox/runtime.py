"""Models taskcam runs but never differentiates: an ONNX file through ONNX Runtime
(:class:`OnnxRuntimeModel`) and a plain Python callable (:class:`CallableModel`), each as an
``nn.Module`` without parameters so the engine's perturbation methods run them like any model.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from taskcam.adapters.ultralytics.export import export_metadata
from taskcam.errors import TaskcamError

__all__ = ["CallableModel", "OnnxRuntimeModel", "onnx_metadata"]

_NUMPY_OF = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


class OnnxRuntimeModel(nn.Module):
    """An ONNX model run by ONNX Runtime, as a module whose forward takes and returns tensors.

    The forward converts ``Tensor[B, 3, h, w]`` to the input's dtype, runs the session (one
    image at a time when the file fixes the batch dimension) and returns the outputs as
    tensors on the input's device: one tensor, or a tuple when the model has several outputs.
    Nothing is differentiable; the module has no parameters.

    Args:
        path: the ``.onnx`` file.
        providers: ONNX Runtime execution providers (default: CUDA where ONNX Runtime has it
            and ``device`` is a GPU, else the CPU).
        device: where the returned tensors go and, for a GPU, where ONNX Runtime runs.

    Raises:
        TaskcamError: a missing or unreadable file, or ONNX Runtime not installed.

    Example:
        >>> import glob, os, nudenet
        >>> path = glob.glob(os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx"))[0]
        >>> net = OnnxRuntimeModel(path)
        >>> net(torch.zeros(2, 3, 64, 64)).shape  # ultralytics' [B, 4 + classes, anchors]
        torch.Size([2, 22, 84])
    """

    def __init__(
        self,
        path: Union[str, Path],
        providers: Optional[list[str]] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.providers = providers
        self.device = torch.device(device)
        self._open()

    def _open(self) -> None:
        if not self.path.is_file():
            raise TaskcamError(f"onnx:{self.path}: no such file")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise TaskcamError(
                f"onnx:{self.path}: running an ONNX model needs onnxruntime "
                "(pip install 'taskcam[onnx]')"
            ) from e
        providers = self.providers
        if providers is None:
            gpu = self.device.type == "cuda"
            available = ort.get_available_providers()
            providers = ["CUDAExecutionProvider"] * (gpu and "CUDAExecutionProvider" in available)
            providers += ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise TaskcamError(
                f"onnx:{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})"
            ) from e
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = _NUMPY_OF.get(first.type, np.float32)
        self.input_shape = [d if isinstance(d, int) else None for d in first.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size the file fixes, or None for a dynamic batch."""
        return self.input_shape[0] if self.input_shape else None

    @property
    def fixed_size(self) -> Optional[tuple[int, int]]:
        """``(h, w)`` when the file fixes the input's height and width, else None."""
        if len(self.input_shape) == 4 and None not in self.input_shape[2:]:
            return int(self.input_shape[2]), int(self.input_shape[3])
        return None

    def metadata(self) -> dict[str, str]:
        """The file's custom metadata (an ultralytics export keeps its task, class names,
        size and stride there)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, ...]]:
        arr = np.ascontiguousarray(x.detach().cpu().numpy().astype(self.input_dtype, copy=False))
        step = self.fixed_batch or len(arr)
        runs = []
        for i in range(0, len(arr), max(step, 1)):
            chunk = arr[i : i + step]
            if len(chunk) < step:  # a file of a fixed batch: the last chunk padded with zeros
                chunk = np.concatenate(
                    [chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)]
                )
            runs.append(self.session.run(self.output_names, {self.input_name: chunk}))
        outs = tuple(
            torch.from_numpy(np.concatenate([r[k] for r in runs])[: len(arr)]).to(x.device)
            for k in range(len(self.output_names))
        )
        return outs[0] if len(outs) == 1 else outs

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"

    # an InferenceSession cannot be pickled or copied: a copy opens the file again
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("session", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()


class CallableModel(nn.Module):
    """A Python callable as a module: ``fn(Tensor[B, 3, h, w]) -> output``, run without
    gradients (a remote service, a TensorRT engine, another framework's model).

    Example:
        >>> m = CallableModel(lambda x: x.mean(dim=(2, 3)))
        >>> m(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        if not callable(fn):
            raise TaskcamError(f"fn: expected a callable, got {type(fn).__name__}")
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            return self.fn(x)

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__qualname__', type(self.fn).__name__)}"


def onnx_metadata(meta: dict[str, str], path: Union[str, Path]) -> dict[str, Any]:
    """An ultralytics export's metadata, parsed: ``task``, ``names`` (list by id), ``imgsz``
    ``(h, w)``, ``stride``, ``end2end`` (the export selects its detections itself: an
    end-to-end head, or ``nms=True``), ``batch``.

    Raises:
        TaskcamError: metadata without ``task`` and ``names`` (not an ultralytics export), or
            unreadable values; the message names the file and what it found.

    Example:
        >>> onnx_metadata({"task": "detect", "names": "{0: 'cat'}", "imgsz": "[320, 320]"}, "m")
        ... # doctest: +NORMALIZE_WHITESPACE
        {'task': 'detect', 'names': ['cat'], 'imgsz': (320, 320), 'stride': 32,
         'end2end': False, 'batch': 1}
    """
    task, names, imgsz = export_metadata(
        meta,
        f"onnx:{path}",
        hint=": name how to read its output with "
        "taskcam.adapters.blackbox.BlackBox.from_onnx(path, decode=...) in a factory and "
        "pass --model package.module:factory",
    )

    def literal(key: str, default: str) -> Any:
        try:
            return ast.literal_eval(meta.get(key, default))
        except (ValueError, SyntaxError) as e:
            raise TaskcamError(f"onnx:{path}: unreadable metadata {key}={meta[key]!r}") from e

    args = literal("args", "{}")
    args = args if isinstance(args, dict) else {}
    side = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[-1]))
    return {
        "task": task,
        "names": [str(names[i]) for i in sorted(names)],
        "imgsz": side,
        "stride": int(float(meta.get("stride", 32))),
        "end2end": bool(literal("end2end", "False")) or bool(args.get("nms", False)),
        "batch": int(literal("batch", "1")),
    }
