"""The clue writer's LoRA adapter: one slot in the memory model, swapped by loading weights.

peft injects LoRA layers into the loaded model in place, so the model object
(and its fingerprint, and every stored memory) stays the same. The layers are
off by default: memory formation and answers run on the frozen base model, and
only a ``LocalBackend`` built with ``adapter=True`` switches them on, under the
model's lock, for the clue programs it runs. A new version is hot-swapped by
loading its weights into the slot; nothing is reloaded or restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from agent.models import LoadedModel

SLOT = "clues"
FORMAT = "memorag-adapter/1"


class AdapterMismatch(ValueError):
    """Adapter weights made for another base model or another LoRA shape."""


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")


_loaded: dict[int, str | None] = {}  # id(model) -> version in the slot (None: base behaviour)
_fusions: dict[int, str | None] = {}  # id(model) -> the fusion the loaded version was gated with
_guard = threading.Lock()


def _layers(lm: LoadedModel) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in lm.model.modules() if isinstance(m, BaseTunerLayer)]


def ensure_slot(lm: LoadedModel, spec: LoraSpec = LoraSpec()) -> None:
    """Inject the LoRA slot once (weights start as the identity: B = 0), switched off."""
    with _guard:
        if _layers(lm):
            return
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, target_modules=list(spec.targets))
        inject_adapter_in_model(config, lm.model, adapter_name=SLOT)
        lm.model._memorag_lora = spec  # what shape the slot has, for checking loaded weights
        for name, param in lm.model.named_parameters():
            if "lora_" in name:  # float32 whatever the base computes in: exact hot swaps, stable training
                param.data = param.data.float()
            param.requires_grad_("lora_" in name)
        _set_enabled(lm, False)
        _loaded[id(lm.model)] = None


def _set_enabled(lm: LoadedModel, on: bool) -> None:
    for layer in _layers(lm):
        layer.enable_adapters(on)


@contextlib.contextmanager
def active(lm: LoadedModel, on: bool = True) -> Iterator[None]:
    """Run the block with the slot switched on (when it holds a version) or off; restores it after."""
    layers = _layers(lm)
    if not layers:
        yield
        return
    use = on and loaded_version(lm) is not None
    before = not layers[0].disable_adapters
    _set_enabled(lm, use)
    try:
        yield
    finally:
        _set_enabled(lm, before)


def loaded_version(lm: LoadedModel) -> str | None:
    return _loaded.get(id(lm.model))


def loaded_fusion(lm: LoadedModel) -> str | None:
    """How the loaded version's spans were fused when it was trained and gated (None: the pipeline's default)."""
    return _fusions.get(id(lm.model))


def trainable_parameters(lm: LoadedModel) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in lm.model.named_parameters() if "lora_" in name}


def state(lm: LoadedModel) -> dict[str, torch.Tensor]:
    """The slot's weights, detached on the CPU, named independently of the slot name."""
    return {portable_name(n): p.detach().to("cpu", torch.float32).clone() for n, p in trainable_parameters(lm).items()}


def portable_name(name: str) -> str:
    return name.replace(f".{SLOT}.", ".")


def load(
    lm: LoadedModel,
    weights: dict[str, torch.Tensor],
    version: str | None,
    spec: LoraSpec | None = None,
    *,
    fusion: str | None = None,
) -> None:
    """Put ``weights`` in the slot and mark it as ``version``, retrieved with ``fusion`` (the hot swap)."""
    ensure_slot(lm, spec or spec_of(lm))
    if spec is not None and spec != spec_of(lm):
        raise AdapterMismatch(f"adapter shape {spec} does not fit this model's LoRA slot {spec_of(lm)}")
    params = {portable_name(n): p for n, p in trainable_parameters(lm).items()}
    if set(weights) != set(params):
        raise AdapterMismatch("adapter weights do not fit this model's LoRA slot (another base model or rank)")
    with torch.no_grad():
        for name, tensor in weights.items():
            if params[name].shape != tensor.shape:
                raise AdapterMismatch(f"{name}: shape {tuple(tensor.shape)} != {tuple(params[name].shape)}")
            params[name].copy_(tensor.to(params[name].dtype))
    mark(lm, version, fusion)


def clear(lm: LoadedModel, seed: int = 0) -> None:
    """Back to base behaviour, as peft initialises LoRA: A random (seeded), B = 0, so the slot is the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(trainable_parameters(lm).items()):
            if "lora_B" in name:
                p.zero_()
            else:
                bound = 1.0 / p.shape[1] ** 0.5  # kaiming-uniform with a = sqrt(5), peft's default for A
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
    mark(lm, None)


def mark(lm: LoadedModel, version: str | None, fusion: str | None = None) -> None:
    """Record which version the slot now holds (after training wrote its weights in place)."""
    _loaded[id(lm.model)] = version
    _fusions[id(lm.model)] = fusion


def spec_of(lm: LoadedModel) -> LoraSpec:
    return getattr(lm.model, "_memorag_lora", LoraSpec())


def to_bytes(
    weights: dict[str, torch.Tensor], *, base_fingerprint: str, spec: LoraSpec, info: dict | None = None
) -> bytes:
    meta = {
        "format": FORMAT,
        "base_fingerprint": base_fingerprint,
        "spec": json.dumps(asdict(spec)),
        "info": json.dumps(info or {}),
    }
    return save_tensors({k: v.contiguous() for k, v in weights.items()}, metadata=meta)


def from_bytes(data: bytes, *, base_fingerprint: str) -> tuple[dict[str, torch.Tensor], LoraSpec, dict]:
    """Weights, LoRA shape and info of a stored adapter; refuses one made for another base model."""
    weights = load_tensors(data)
    meta = _metadata(data)
    if meta.get("format") != FORMAT:
        raise AdapterMismatch("not a memorag adapter")
    if meta.get("base_fingerprint") != base_fingerprint:
        raise AdapterMismatch(
            f"adapter made for model {meta.get('base_fingerprint')}, this worker runs {base_fingerprint}"
        )
    spec = json.loads(meta["spec"])
    return weights, LoraSpec(spec["rank"], spec["alpha"], tuple(spec["targets"])), json.loads(meta.get("info", "{}"))


def _metadata(data: bytes) -> dict:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
