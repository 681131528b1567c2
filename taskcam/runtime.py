"""Faster CPU forwards for the black-box methods: a PyTorch model exported to ONNX and run by
OpenVINO or ONNX Runtime, returning what the model returns.

RISE and D-RISE only call the model thousands of times on masked copies of one image; they
read its outputs and never its layers or gradients, so the forwards can run in another
runtime. :func:`compiled_forward` exports the model once per input size (the batch dimension
left free), compiles it, and checks the compiled outputs against PyTorch's on the image and on
a changed copy before any mask is scored: a model whose export differs is refused, never
explained wrongly. On this project's 2-core CPU a YOLOv8s forward at 640 × 480 took 197 ms in
PyTorch, 113 ms in OpenVINO and 59 ms in OpenVINO in bf16
(``benchmarks/drise_convergence.py --forward-cost``; ONNX Runtime: about 125-145 ms).
"""

from __future__ import annotations

import io
import os
import tempfile
import weakref
from typing import Any, Optional

import torch
from torch import nn
from torch.utils import _pytree as pytree

from taskcam.errors import TaskcamError, check_choice
from taskcam.masking import sample_bytes

__all__ = [
    "PRECISIONS",
    "AutocastForward",
    "RUNTIMES",
    "CompiledForward",
    "check_run_settings",
    "compiled_forward",
    "perturbed_forward",
    "with_precision",
]

#: runtimes a black-box method's forwards can run in; "torch" is the model itself
RUNTIMES = ("torch", "openvino", "onnxruntime")
_PACKAGE = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
# outputs of the two runtimes may differ from PyTorch's by float rounding in a different order
# of operations: relative to the largest output, well below what moves a score
_RTOL = 1e-4

# looser for an OpenVINO run in bf16 or fp16, whose raw outputs moved by up to 4 % of their
# range on NudeNet's YOLOv8n at 640 (its class scores by 0.017): an export that computes
# something else is off by the whole range
_RTOL_REDUCED = 0.15
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

# model -> {(runtime, precision, input shape without the batch, dtype, threads): compiled}
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, CompiledForward]] = (
    weakref.WeakKeyDictionary()
)


class CompiledForward(nn.Module):
    """A model's forward run by OpenVINO or ONNX Runtime on the CPU.

    Called with ``Tensor[N, C, H, W]`` of the size it was exported at (any ``N``), it returns
    the model's output structure (tensor, tuple, list or dict of tensors, as PyTorch's forward
    returns it) with CPU tensors. It has no parameters and no gradients.

    Args:
        model: the PyTorch model, in the mode it is explained in.
        example: ``Tensor[1, C, H, W]``: the size every call uses.
        runtime: ``"openvino"`` or ``"onnxruntime"``.
        threads: CPU threads of the runtime (default: PyTorch's ``torch.get_num_threads()``).
        outputs: the model's output on ``example`` when the caller has it (its structure is
            what every call returns); ``None`` runs the model once for it.
        precision: ``"fp32"``, or OpenVINO's ``"bf16"``/``"fp16"`` inference precision (bf16
            halved a YOLOv8s forward on this project's CPU, which has AVX-512 BF16).
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        runtime: str,
        threads: Optional[int] = None,
        precision: str = "fp32",
        outputs: Any = None,
    ) -> None:
        super().__init__()
        check_choice("runtime", runtime, tuple(_PACKAGE))
        self.runtime, self.precision = runtime, precision
        self.per_sample: Optional[int] = None  # bytes one input needs, set by compiled_forward
        self.size = tuple(example.shape[1:])
        threads = threads or torch.get_num_threads()
        if outputs is None:
            with torch.no_grad():
                outputs = model(example)
        leaves, self._spec = pytree.tree_flatten(outputs)
        self._tensor_at = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
        self._constants = [None if isinstance(v, torch.Tensor) else v for v in leaves]
        onnx = _export(model, example, len(self._tensor_at))
        self._run = _session(onnx, runtime, threads, precision)

    def forward(self, x: torch.Tensor) -> Any:
        if tuple(x.shape[1:]) != self.size:
            raise TaskcamError(
                f"runtime {self.runtime}: compiled for inputs [N, {', '.join(map(str, self.size))}]"
                f", got {list(x.shape)}"
            )
        arrays = self._run(x.detach().float().cpu().contiguous().numpy())
        leaves = list(self._constants)
        for i, a in zip(self._tensor_at, arrays):
            leaves[i] = torch.from_numpy(a)
        return pytree.tree_unflatten(leaves, self._spec)


def compiled_forward(
    model: nn.Module,
    example: torch.Tensor,
    runtime: str,
    reference: Any,
    precision: str = "fp32",
) -> nn.Module:
    """``model`` itself for ``runtime="torch"``, else its :class:`CompiledForward` for
    inputs of ``example``'s size, checked against ``reference`` (the model's output on
    ``example``).

    Compiled forwards are kept per model and input size, and checked again at every call, so
    a model whose weights changed since is exported anew.

    Raises:
        TaskcamError: an unknown runtime, one not installed, a model on a GPU, a model the
            exporter cannot trace, or compiled outputs that differ from PyTorch's.
    """
    if runtime == "torch":
        return model
    check_choice("runtime", runtime, RUNTIMES)
    if example.device.type != "cpu":
        raise TaskcamError(
            f"runtime {runtime} runs on the CPU; the model is on {example.device}: run it with "
            "--device cpu, or keep --runtime torch on a GPU"
        )
    precision = "fp32" if precision == "auto" else precision
    rtol = _RTOL if precision == "fp32" else _RTOL_REDUCED
    key = (runtime, precision, tuple(example.shape[1:]), example.dtype, torch.get_num_threads())
    cached = _CACHE.setdefault(model, {})
    compiled = cached.get(key)
    if compiled is not None and _same(compiled(example), reference, rtol):
        return compiled
    compiled = CompiledForward(model, example[:1], runtime, precision=precision, outputs=reference)
    # the image, and a changed copy: a trace can bake what the model computed in Python
    # from the image it saw into constants, right on that image and wrong on every mask
    other = example.flip(-1) * 0.5
    with torch.no_grad():
        want = model(other)
    if not (_same(compiled(example), reference, rtol) and _same(compiled(other), want, rtol)):
        raise TaskcamError(
            f"runtime {runtime}: the exported {type(model).__name__} gives other outputs than "
            "PyTorch (more than float rounding); explain it with --runtime torch"
        )
    # what one input needs, measured on the PyTorch model: the masked batches are then
    # sized as Score-CAM's are (taskcam.masking.auto_batch_size)
    compiled.per_sample = sample_bytes(model, example[:1])
    cached[key] = compiled
    return compiled


def perturbed_forward(
    model: nn.Module,
    example: torch.Tensor,
    reference: Any,
    *,
    runtime: str,
    precision: str,
    method: Any,
) -> nn.Module:
    """What a layer-free method's masked forwards call: the model compiled for ``runtime``
    (:func:`compiled_forward`), or in PyTorch under ``precision`` (:func:`with_precision`)."""
    if runtime != "torch":
        return compiled_forward(model, example, runtime, reference, precision)
    return with_precision(model, precision, method, example.device)


def _same(got: Any, want: Any, rtol: float = _RTOL) -> bool:
    """Whether two output structures hold the same tensors up to float rounding."""
    a, spec_a = pytree.tree_flatten(got)
    b, spec_b = pytree.tree_flatten(want)
    if spec_a != spec_b:
        return False
    for u, v in zip(a, b):
        if not isinstance(v, torch.Tensor):
            continue
        u, v = u.float().cpu(), v.detach().float().cpu()
        if u.shape != v.shape:
            return False
        scale = float(v.abs().max()) if v.numel() else 0.0
        if v.numel() and float((u - v).abs().max()) > rtol * max(scale, 1.0):
            return False
    return True


def _export(model: nn.Module, example: torch.Tensor, outputs: int) -> bytes:
    """The ONNX bytes of ``model`` traced on ``example``, the batch dimension left free."""
    names = [f"out{i}" for i in range(outputs)]
    axes = {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    buffer = io.BytesIO()
    was_training = model.training
    try:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                buffer,
                input_names=["x"],
                output_names=names,
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except Exception as e:  # the tracer's many failures: one clear message
        raise TaskcamError(
            f"runtime: {type(model).__name__} could not be exported to ONNX for a faster runtime "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); explain it "
            "with --runtime torch"
        ) from e
    finally:
        model.train(was_training)
    return buffer.getvalue()


def _session(onnx: bytes, runtime: str, threads: int, precision: str = "fp32"):
    """A function ``float32[N, C, H, W] -> list of arrays`` running ``onnx`` in ``runtime``."""
    try:
        module = __import__(_PACKAGE[runtime])
    except ImportError as e:
        raise TaskcamError(
            f"runtime {runtime} needs the {_PACKAGE[runtime]} package: "
            f"pip install 'taskcam[{runtime}]'"
        ) from e
    if runtime == "onnxruntime":
        options = module.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = module.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        # an export that does not read the image has no input (its outputs are constants)
        reads = [i.name for i in session.get_inputs()]
        return lambda x: session.run(None, {name: x for name in reads})
    core = module.Core()
    with tempfile.TemporaryDirectory() as tmp:  # OpenVINO reads external weights by path
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as fh:
            fh.write(onnx)
        read = core.read_model(path)
    # f32 kept even on CPUs with bf16 units, where OpenVINO would otherwise lower precision
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION.get(precision, "f32"),
    }
    compiled = core.compile_model(read, "CPU", config)
    request = compiled.create_infer_request()

    reads = len(compiled.inputs) > 0

    def run(x):
        results = request.infer({0: x} if reads else {})
        return [results[out].copy() for out in compiled.outputs]

    return run


#: ``precision=`` of :class:`taskcam.Explainer`: "auto" is fp16 for the forward-only methods
#: on a GPU and fp32 everywhere else
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_run_settings(precision: str, runtime: str, method: Any, bound: bool) -> None:
    """Refuse a precision or runtime the method cannot use, by name, before any forward.

    Args:
        precision: one of :data:`PRECISIONS`.
        runtime: one of :data:`RUNTIMES`.
        method: the :class:`taskcam.methods.Method`.
        bound: whether the model's forwards carry other inputs (``forward_kwargs``,
            ``input_builder``), which an export of the image alone cannot take.
    """
    check_choice("precision", precision, PRECISIONS)
    check_choice("runtime", runtime, RUNTIMES)
    forward_only = method.perturbation and not method.needs_grad
    if precision in _DTYPES and not forward_only:
        raise TaskcamError(
            f"precision {precision}: mixed precision is for the forward-only (perturbation) "
            f"methods; {method.name} reads gradients, which keep fp32"
        )
    if runtime == "torch":
        return
    if method.uses_layers or not forward_only:
        raise TaskcamError(
            f"runtime {runtime}: only the methods that read nothing but the model's outputs "
            f"(rise, drise, fast-drise) run in another runtime; {method.name} reads layers "
            "or gradients of the PyTorch model"
        )
    if bound:
        raise TaskcamError(
            f"runtime {runtime}: a model with other inputs bound (forward_kwargs, "
            "input_builder) runs in PyTorch; keep runtime='torch'"
        )
    if precision in _DTYPES and runtime != "openvino":
        raise TaskcamError(
            f"runtime {runtime} runs in fp32; precision {precision} is for torch and openvino"
        )


class AutocastForward(nn.Module):
    """A model whose forward runs under ``torch.autocast`` and returns float32 tensors, so
    that what the scores and sums downstream add up stays in full precision."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def __getattr__(self, name: str) -> Any:
        """The wrapped model's attributes (the ``placement`` Score-CAM reads of a model that
        letterboxes), as the model itself would answer."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")  # None while unpickling
            if model is None:
                raise
            return getattr(model, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        return pytree.tree_map(
            lambda v: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v,
            out,
        )


def with_precision(model: nn.Module, precision: str, method: Any, device: torch.device):
    """``model`` itself, or an :class:`AutocastForward` of it for a method's perturbed
    forwards. ``"auto"`` is fp16 for a forward-only method on a CUDA device (half the memory
    traffic of the masked batches; maps are min-max normalised, and fp16 rounding of the
    scores moves them far less than the sampling noise), fp32 otherwise."""
    if precision == "auto":
        forward_only = method.perturbation and not method.needs_grad
        precision = "fp16" if forward_only and device.type == "cuda" else "fp32"
    if precision not in _DTYPES:
        return model
    return AutocastForward(model, device.type, _DTYPES[precision])
