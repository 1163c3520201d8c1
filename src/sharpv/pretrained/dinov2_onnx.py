"""Convert the DINOv2 backbone of an ONNX graph (a PyTorch export of transformers' ``Dinov2Model``
under the prefix ``backbone``) to transformers' ``Dinov2Model``.

What the export left where:

- named initializers ``backbone.embeddings.cls_token``, ``backbone.embeddings.patch_embeddings.*``,
  ``backbone.encoder.layer.N.{norm1,norm2,layer_scale1,layer_scale2}.*``, the biases of the
  attention and MLP projections and ``backbone.layernorm.*``, under transformers' older names
  (``attention.attention.query`` for today's ``attention.q_proj``);
- the projection weights as anonymous initializers (``onnx::MatMul_1966``), the second input of
  MatMul nodes named ``/backbone/encoder/layer.N/<module path>/MatMul``, stored (in, out): the
  transpose of ``nn.Linear``'s (out, in);
- the position embeddings split in two anonymous initializers: the class token's, concatenated
  (``/backbone/embeddings/Concat_*``), and the patches', reshaped to a grid
  (``/backbone/embeddings/Reshape_*``) before the bicubic resize.

Nothing is executed: initializers are read with ``onnx.numpy_helper`` and nodes by name.
"""

from __future__ import annotations

import math
import re

import torch

from sharpv.errors import SharpVError

PREFIX = "backbone."

#: module paths of the ONNX export (older transformers names) -> today's Dinov2Model names
_RENAMES = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
}

_MATMUL = re.compile(r"^/backbone/(encoder/layer\.\d+/.+)/MatMul$")


class ConversionError(SharpVError):
    """The ONNX graph is not the DINOv2 export this converter reads."""


def _rename(name: str) -> str:
    for old, new in _RENAMES.items():
        name = name.replace(f".{old}.", f".{new}.")
    return name


def onnx_state_dict(graph) -> dict[str, torch.Tensor]:
    """``Dinov2Model`` state-dict entries read from an ONNX ``GraphProto`` (everything but
    ``embeddings.mask_token``, which only masked-image pretraining uses)."""
    from onnx import numpy_helper

    arrays = {t.name: t for t in graph.initializer}

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(arrays[name]).copy())

    state: dict[str, torch.Tensor] = {}
    for name in arrays:
        if name.startswith(PREFIX):
            state[_rename(name[len(PREFIX):])] = tensor(name)
    cls_pos, patch_pos = [], []
    for node in graph.node:
        match = _MATMUL.match(node.name)
        if node.op_type == "MatMul" and match and len(node.input) == 2 and node.input[1] in arrays:
            key = _rename(match.group(1).replace("/", ".") + ".weight")
            if key in state:
                raise ConversionError(f"two MatMul nodes give {key}")
            state[key] = tensor(node.input[1]).T.contiguous()
        elif node.name.startswith("/backbone/embeddings/") and node.op_type in ("Concat", "Reshape"):
            for name in node.input:
                if name in arrays and not name.startswith(PREFIX):
                    (cls_pos if node.op_type == "Concat" else patch_pos).append(name)
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ConversionError(f"expected one class and one patch position embedding under /backbone/embeddings, "
                              f"found {len(cls_pos)} and {len(patch_pos)}")
    cls, patches = tensor(cls_pos[0]), tensor(patch_pos[0])
    state["embeddings.position_embeddings"] = torch.cat([cls.reshape(1, 1, -1), patches.reshape(1, -1, cls.numel())], 1)
    return state


def dinov2_config(state: dict[str, torch.Tensor], num_attention_heads: int, layer_norm_eps: float = 1e-6):
    """The ``Dinov2Config`` the weights in ``state`` fit (sizes read off the tensors; heads given)."""
    from transformers import Dinov2Config

    try:
        hidden = state["embeddings.cls_token"].shape[-1]
        patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
        channels = state["embeddings.patch_embeddings.projection.weight"].shape[1]
        positions = state["embeddings.position_embeddings"].shape[1] - 1
        mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise ConversionError(f"the ONNX graph has no backbone weight for {exc.args[0]}") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    if mlp % hidden:
        raise ConversionError(f"MLP width {mlp} is not a multiple of the hidden size {hidden}")
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"{positions} patch position embeddings do not form a square grid")
    return Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=num_attention_heads,
        mlp_ratio=mlp // hidden, image_size=side * patch, patch_size=patch, num_channels=channels,
        layer_norm_eps=layer_norm_eps, layerscale_value=1.0, use_swiglu_ffn=False, hidden_act="gelu",
    )


def dinov2_from_onnx(graph, num_attention_heads: int):
    """A float32 ``Dinov2Model`` holding the backbone weights of the ONNX ``graph`` (a ``GraphProto``),
    in eval mode. Every weight of the model must come from the graph, every backbone weight of the
    graph must land in the model, and shapes must agree: otherwise ``ConversionError``."""
    from transformers import Dinov2Model

    state = onnx_state_dict(graph)
    config = dinov2_config(state, num_attention_heads)
    model = Dinov2Model(config).eval()
    expected = dict(model.state_dict())
    expected.pop("embeddings.mask_token")
    missing = sorted(set(expected) - set(state))
    unused = sorted(set(state) - set(expected))
    if missing or unused:
        what = f"missing {missing[0]}" if missing else f"unused {unused[0]}"
        raise ConversionError(f"ONNX backbone does not match Dinov2Model ({what}; {len(missing)} missing, "
                              f"{len(unused)} unused)")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ConversionError(f"{key}: ONNX gives shape {tuple(value.shape)}, Dinov2Model has "
                                  f"{tuple(expected[key].shape)}")
    state["embeddings.mask_token"] = torch.zeros_like(model.embeddings.mask_token)
    model.load_state_dict(state, strict=True)
    return model


@torch.no_grad()
def at_resolution(model, image_size: int):
    """``model`` rebuilt for ``image_size`` x ``image_size`` inputs: the position embeddings resampled
    once, exactly as the model itself resamples them at that size, so both give the same output there
    (and LLaVA-OneVision, which reads the grid off ``image_size``, pools the right grid)."""
    from transformers import Dinov2Model

    patch = model.config.patch_size
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
    grid = (image_size // patch) ** 2
    probe = torch.zeros(1, grid + 1, model.config.hidden_size)
    positions = model.embeddings.interpolate_pos_encoding(probe, image_size, image_size)
    config = model.config.__class__(**{**model.config.to_dict(), "image_size": image_size})
    resized = Dinov2Model(config).eval()
    state = dict(model.state_dict())
    state["embeddings.position_embeddings"] = positions.detach().clone()
    resized.load_state_dict(state, strict=True)
    return resized
