"""Saving and loading a KAN as bytes: safetensors weights plus a versioned JSON config. No files.

    weights, config = dumps(model)      # bytes (safetensors), JSON-able dict
    model = loads(weights, config)      # the same network: bitwise-equal predictions

    blob = to_bytes(model)              # one safetensors buffer, the config in its metadata
    model = from_bytes(blob)

The config is ``{"format": "kan_core", "format_version": 1, "model": KAN.config()}``; the model part
holds the architecture (widths, grid size, spline order, dtype, construction arguments) and the
symbolic function name of every edge. The weights hold every parameter and buffer of the model
(knot grids, coefficients, scales, masks, affine parameters) under its ``state_dict`` name.

Artifacts may come from clients, so `loads` trusts nothing: it never unpickles (safetensors holds
raw tensors only), checks the config's format, and checks every tensor's name, shape and dtype
against the architecture the config describes, plus finiteness and the 0/1 masks, before loading.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import torch as st

from kan_core.functions import SymbolicFunction
from kan_core.model import KAN

FORMAT = "kan_core"
FORMAT_VERSION = 1
CONFIG_METADATA_KEY = "kan_config"  # where to_bytes puts the JSON config in the safetensors metadata


def dumps(model: KAN) -> tuple[bytes, dict[str, Any]]:
    """``model`` -> ``(weights, config)``: safetensors bytes of every tensor, and a JSON-able dict."""
    if not isinstance(model, KAN):
        raise ValueError(f"expected a kan_core KAN, got {type(model).__name__}")
    # clone: safetensors refuses tensors that share storage, and wants contiguous CPU memory
    tensors = {name: t.detach().to("cpu").clone().contiguous() for name, t in model.state_dict().items()}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config()}
    return st.save(tensors), config


def loads(
    weights: bytes,
    config: Mapping[str, Any],
    *,
    library: Mapping[str, SymbolicFunction] | None = None,
    device: torch.device | str | None = None,
) -> KAN:
    """Rebuild the model saved by `dumps`. Symbolic edges are resolved by name in ``library``
    (default: ``kan_core.functions``). ValueError naming the problem on any malformed or
    inconsistent input."""
    model_config = _check_config(config)
    tensors = _read_tensors(weights)
    _check_sizes(model_config, tensors)  # before building: the config cannot make us allocate much more
    try:
        model = KAN.from_config(model_config, library=library)
    except (TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid model config: {exc}") from None
    _check_tensors(model, tensors)
    model.load_state_dict(tensors, strict=True)
    # from_config set the symbolic edges with identity affines; load_state_dict restored the real
    # ones. The spline coefficients under a symbolic edge are kept (unused until cleared).
    return model.to(device) if device is not None else model


def to_bytes(model: KAN) -> bytes:
    """One safetensors buffer: the weights, with the JSON config in metadata[CONFIG_METADATA_KEY]."""
    weights, config = dumps(model)
    return to_bytes_from(weights, config)


def to_bytes_from(weights: bytes, config: Mapping[str, Any]) -> bytes:
    """`to_bytes` from stored ``dumps`` output, without rebuilding the model."""
    _check_config(config)
    tensors = _read_tensors(weights)
    return st.save(tensors, metadata={CONFIG_METADATA_KEY: json.dumps(config, allow_nan=False)})


def from_bytes(
    blob: bytes,
    *,
    library: Mapping[str, SymbolicFunction] | None = None,
    device: torch.device | str | None = None,
) -> KAN:
    """Inverse of `to_bytes` (same checks as `loads`)."""
    metadata = _read_metadata(blob)
    if CONFIG_METADATA_KEY not in metadata:
        raise ValueError(f"safetensors metadata has no {CONFIG_METADATA_KEY!r} entry: not a kan_core artifact")
    try:
        config = json.loads(metadata[CONFIG_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"metadata {CONFIG_METADATA_KEY!r} is not valid JSON: {exc}") from None
    return loads(blob, config, library=library, device=device)


# ----------------------------------------------------------------------------------------------
# checks


def _check_config(config: Any) -> Mapping[str, Any]:
    """The model part of a config, after checking the envelope."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be an object, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise ValueError(f"config format must be {FORMAT!r}, got {config.get('format')!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"unsupported config format_version {config.get('format_version')!r} (this engine reads {FORMAT_VERSION})"
        )
    model_config = config.get("model")
    if not isinstance(model_config, Mapping):
        raise ValueError("config.model must be an object (the KAN architecture)")
    return model_config


def _read_tensors(weights: Any) -> dict[str, torch.Tensor]:
    if not isinstance(weights, (bytes, bytearray, memoryview)):
        raise ValueError(f"weights must be bytes, got {type(weights).__name__}")
    try:
        return st.load(bytes(weights))
    except SafetensorError as exc:
        raise ValueError(f"weights are not a valid safetensors buffer: {exc}") from None


def _read_metadata(blob: Any) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer: an 8-byte little-endian header size, then a
    JSON header."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"artifact must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < 8:
        raise ValueError("artifact is too short to be a safetensors buffer")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError("artifact header size exceeds the buffer: not a safetensors buffer")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"artifact header is not valid JSON: {exc}") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _check_sizes(model_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Compare the coefficient shape ``(I, O, G + k)`` of every layer the config describes with the
    weights, so that a config cannot describe a network much larger than its weights."""
    width, grid, k = model_config.get("width"), model_config.get("grid"), model_config.get("k")
    if not (isinstance(width, list) and len(width) >= 2 and all(_is_int(w) and w >= 1 for w in width)):
        raise ValueError(f"config.model.width must list >= 2 integers >= 1, got {width!r}")
    if not (_is_int(grid) and grid >= 1 and _is_int(k) and k >= 1):
        raise ValueError(f"config.model grid and k must be integers >= 1, got grid={grid!r}, k={k!r}")
    for l, (n_in, n_out) in enumerate(zip(width[:-1], width[1:])):
        name, shape = f"layers.{l}.coef", (n_in, n_out, grid + k)
        if name not in tensors:
            raise ValueError(f"weights have no tensor {name!r} for layer {l} of width {width}")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(tensors[name].shape)}, config implies {shape}")


def _check_tensors(model: KAN, tensors: Mapping[str, torch.Tensor]) -> None:
    """Names, shapes, dtypes against the rebuilt architecture; finite values; 0/1 masks that agree
    with the symbolic function names."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weights do not match the config: missing {missing}, unexpected {unexpected}")
    for name, ref in expected.items():
        t = tensors[name]
        if t.shape != ref.shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
        if t.dtype != ref.dtype:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, expected {ref.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"tensor {name!r} contains NaN or infinite values")
    for l, layer in enumerate(model.layers):
        for buf in ("mask", "sym_mask"):
            t = tensors[f"layers.{l}.{buf}"]
            if not bool(((t == 0) | (t == 1)).all()):
                raise ValueError(f"tensor 'layers.{l}.{buf}' must hold only 0 and 1")
        named = torch.tensor([[bool(n) for n in row] for row in layer.sym_names])  # (I, O)
        if not torch.equal(tensors[f"layers.{l}.sym_mask"].bool(), named):
            raise ValueError(f"'layers.{l}.sym_mask' disagrees with the symbolic function names of layer {l}")
        grid = tensors[f"layers.{l}.grid"]  # (I, G+2k+1)
        if not bool((grid[:, 1:] >= grid[:, :-1]).all()) or not bool((grid[:, -1] > grid[:, 0]).all()):
            raise ValueError(f"tensor 'layers.{l}.grid' must be increasing along each row")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


__all__ = ["CONFIG_METADATA_KEY", "FORMAT", "FORMAT_VERSION", "dumps", "from_bytes", "loads", "to_bytes", "to_bytes_from"]
