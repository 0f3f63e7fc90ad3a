"""ONNX programs from torch's exporter, traced once per architecture and refilled with weights.

Every trial ends in ``B``, which exports its final model to ONNX, and most trials of a search
share one architecture and differ only in weights. Contract: the first export of an architecture
in a process traces it with ``torch.onnx.export(dynamo=True)`` and keeps the translated,
*unoptimized* graph; the next model of the same architecture gets its weights put into a copy of
that graph (the exporter's own ``ONNXProgram.apply_weights``), which the exporter's optimizer
(``ONNXProgram.optimize``) then optimizes. The file written is the one a fresh export writes
(``bench/cache_speedup.py`` measures what reuse saves).

Why the graph is kept unoptimized: the optimizer folds BatchNorm into the preceding convolution,
so an optimized graph's initializers are no longer the model's state dict and new weights cannot
be applied to it. Unoptimized, every initializer is a state-dict entry by name, which is checked
before a graph is reused: a graph with any other constant is never reused.

Hand-written (about 40 lines) because neither torch nor onnxscript caches exports; the exporter's
public ``ONNXProgram`` methods do the work.
"""

from __future__ import annotations

from collections import OrderedDict

import onnx_ir as ir
import torch
from torch import nn

__all__ = ["export_program", "clear_templates"]

_MAX_TEMPLATES = 2  # architectures kept per process; each holds one copy of its weights
_templates: OrderedDict[tuple, ir.Model] = OrderedDict()


def export_program(
    model: nn.Module,
    example: torch.Tensor,
    *,
    opset: int,
    dynamic_shapes: tuple | None,
    input_name: str,
    output_name: str,
) -> torch.onnx.ONNXProgram:
    """An optimized ``ONNXProgram`` of ``model`` (plain: eval mode, no pruning hooks, on the CPU).

    The first model of an architecture is exported by ``torch.onnx.export(..., dynamo=True,
    optimize=False)`` and its graph kept; later models with the same module tree, state-dict
    names, shapes and dtypes, example shape, opset and batch dimension reuse that graph with their
    own weights. A model with forward hooks (whose effect the key cannot see) is always exported
    afresh. Either way the program is optimized before it is returned.
    """
    key = _key(model, example, opset, dynamic_shapes)
    template = _templates.get(key) if key is not None else None
    if template is None:
        program = torch.onnx.export(
            model, (example,), input_names=[input_name], output_names=[output_name], opset_version=opset,
            dynamo=True, dynamic_shapes=dynamic_shapes, optimize=False, verbose=False, report=False,
        )
        if key is not None and _initializers_are_weights(program.model, model):
            _remember(key, ir.from_proto(ir.to_proto(program.model)))
    else:
        _templates.move_to_end(key)
        program = torch.onnx.ONNXProgram(ir.from_proto(ir.to_proto(template)), None)
        names = program.model.graph.initializers
        program.apply_weights({k: v for k, v in model.state_dict().items() if k in names})
    program.optimize()
    return program


def clear_templates() -> None:
    """Forget every kept graph (the next export of each architecture traces again)."""
    _templates.clear()


def _key(model: nn.Module, example: torch.Tensor, opset: int, dynamic_shapes: tuple | None) -> tuple | None:
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    weights = tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items())
    return (repr(model), weights, tuple(example.shape[1:]), example.dtype, opset, repr(dynamic_shapes))


def _initializers_are_weights(graph_model: ir.Model, model: nn.Module) -> bool:
    """Every initializer of the graph is a state-dict entry, so applying weights replaces them all."""
    return set(graph_model.graph.initializers) <= set(model.state_dict())


def _remember(key: tuple, template: ir.Model) -> None:
    _templates[key] = template
    while len(_templates) > _MAX_TEMPLATES:
        _templates.popitem(last=False)
