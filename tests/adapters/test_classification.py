"""Classification targets: class and softmax scores, top-k, CLI specs, logits in any wrapper."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from taskcam import TaskcamError
from taskcam.adapters.classification import (
    ClassTarget,
    SoftmaxTarget,
    logits_of,
    parse_targets,
    top_k_targets,
)

LOGITS = torch.tensor([[0.5, 3.0, -1.0, 2.0], [4.0, -2.0, 1.0, 0.0]])
NAMES = ["tench", "goldfish", "great white shark", "tiger shark"]


# -- targets -------------------------------------------------------------------------------------
def test_class_target_is_the_logit():
    assert_close(ClassTarget(1)(LOGITS), torch.tensor([3.0, -2.0]))
    assert_close(ClassTarget(3)(LOGITS), torch.tensor([2.0, 0.0]))
    assert ClassTarget(2).class_index == 2


def test_softmax_target_is_the_probability():
    expected = torch.exp(LOGITS[:, 1]) / torch.exp(LOGITS).sum(dim=1)
    assert_close(SoftmaxTarget(1)(LOGITS), expected)
    assert_close(sum(SoftmaxTarget(k)(LOGITS) for k in range(4)), torch.ones(2))
    assert SoftmaxTarget(0).class_index == 0


def test_targets_are_differentiable():
    logits = LOGITS.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(SoftmaxTarget(1)(logits).sum(), logits)
    p = LOGITS.softmax(dim=1)
    expected = p[:, 1:2] * (torch.nn.functional.one_hot(torch.tensor(1), 4) - p)
    assert_close(grad, expected)


@pytest.mark.parametrize("bad", [-1, 1.0, "3", True, None])
def test_class_target_rejects_bad_index(bad):
    with pytest.raises(TaskcamError, match="class_index"):
        ClassTarget(bad)


@pytest.mark.parametrize("cls", [ClassTarget, SoftmaxTarget])
def test_index_beyond_the_classes_names_the_number_of_classes(cls):
    with pytest.raises(TaskcamError, match=r"class index 4 .*4 classes"):
        cls(4)(LOGITS)


def test_target_equality_and_repr():
    assert ClassTarget(3) == ClassTarget(3)
    assert ClassTarget(3) != ClassTarget(2)
    assert ClassTarget(3) != SoftmaxTarget(3)
    assert len({ClassTarget(3), ClassTarget(3), SoftmaxTarget(3)}) == 2
    assert repr(ClassTarget(7)) == "ClassTarget(7)"
    assert repr(SoftmaxTarget(7)) == "SoftmaxTarget(7)"


# -- top k ----------------------------------------------------------------------------------------
def test_top_k_targets_per_image_best_first():
    assert top_k_targets(LOGITS, k=2) == [
        [ClassTarget(1), ClassTarget(3)],
        [ClassTarget(0), ClassTarget(2)],
    ]
    assert top_k_targets(LOGITS) == [[ClassTarget(1)], [ClassTarget(0)]]
    soft = top_k_targets(LOGITS, k=1, softmax=True)
    assert soft == [[SoftmaxTarget(1)], [SoftmaxTarget(0)]]
    assert all(type(t) is SoftmaxTarget for row in soft for t in row)


@pytest.mark.parametrize("k", [0, 5, -1, 1.5])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(TaskcamError, match=r"between 1 and 4"):
        top_k_targets(LOGITS, k=k)


# -- CLI specs ------------------------------------------------------------------------------------
def test_parse_top1_is_the_default():
    expected = [[ClassTarget(1)], [ClassTarget(0)]]
    assert parse_targets("top1", LOGITS) == expected
    assert parse_targets("", LOGITS) == expected
    assert parse_targets(None, LOGITS) == expected  # type: ignore[arg-type]
    assert parse_targets("TOP1", LOGITS) == expected


def test_parse_top3():
    out = parse_targets("top3", LOGITS)
    assert out == [
        [ClassTarget(1), ClassTarget(3), ClassTarget(0)],
        [ClassTarget(0), ClassTarget(2), ClassTarget(3)],
    ]
    logits = torch.randn(1, 1000)
    out = parse_targets("top3", logits)
    assert [t.class_index for t in out[0]] == logits[0].topk(3).indices.tolist()


def test_parse_indices_shared_by_every_image():
    logits = torch.randn(3, 1000)
    out = parse_targets("285,281", logits)
    assert out == [[ClassTarget(285), ClassTarget(281)]] * 3
    assert parse_targets(" 2 , 0 ", LOGITS) == [[ClassTarget(2), ClassTarget(0)]] * 2
    soft = parse_targets("3", LOGITS, softmax=True)
    assert soft == [[SoftmaxTarget(3)]] * 2


def test_parse_class_names():
    out = parse_targets("Goldfish,tiger shark", LOGITS, class_names=NAMES)
    assert out == [[ClassTarget(1), ClassTarget(3)]] * 2
    mixed = parse_targets("great white shark, 0", LOGITS, class_names=NAMES)
    assert mixed == [[ClassTarget(2), ClassTarget(0)]] * 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("topx", r"topK"),
        ("goldfish", r"'goldfish' is neither a class index nor a class name"),
        ("tabby", r"'tabby'"),
        ("4", r"class 4 does not exist.*4 classes"),
        ("1000", r"1000 .*4 classes"),
        ("-1", r"class -1 does not exist"),
        (",,", r"no class given"),
        ("top0", r"between 1 and 4"),
    ],
)
def test_parse_bad_specs(spec, message):
    names = None if spec == "goldfish" else NAMES
    with pytest.raises(TaskcamError, match=message):
        parse_targets(spec, LOGITS, class_names=names)


# -- logits in every wrapper ----------------------------------------------------------------------
HFOutput = namedtuple("HFOutput", ["logits", "hidden"])


@pytest.mark.parametrize(
    "output",
    [
        LOGITS,
        {"logits": LOGITS, "aux": torch.zeros(2)},
        {"out": LOGITS},
        (LOGITS, torch.zeros(2, 8)),
        [LOGITS],
        SimpleNamespace(logits=LOGITS),
        HFOutput(LOGITS, torch.zeros(2, 8)),
    ],
    ids=["tensor", "dict-logits", "dict-out", "tuple", "list", "attr", "namedtuple"],
)
def test_logits_of_every_wrapper(output):
    assert logits_of(output) is LOGITS
    assert_close(ClassTarget(1)(output), LOGITS[:, 1])
    assert top_k_targets(output, k=1) == [[ClassTarget(1)], [ClassTarget(0)]]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("logits", r"str"),
        ({"boxes": LOGITS}, r"dict"),
        ((), r"tuple"),
        (("a", LOGITS), r"tuple"),
        (torch.zeros(2, 3, 4), r"Tensor\[B, K\].*\(2, 3, 4\)"),
        (torch.zeros(4), r"\(4,\)"),
    ],
)
def test_logits_of_rejects_what_is_not_class_scores(output, message):
    with pytest.raises(TaskcamError, match=message):
        logits_of(output)
