"""The global memory as a plain value, and its safetensors bytes.

Never pickle: a memory is tensors plus JSON metadata, so bytes written by
one worker can be read by any other, and a loaded memory is bit-identical.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from agent.memory import int8
from store.errors import CorruptMemory, IncompatibleMemory

FORMAT_VERSION = 1
_META_KEY = "memorag"


@dataclass(frozen=True)
class MemoryMeta:
    model_fingerprint: str
    model_name: str
    tokenizer: str
    beta: int
    window: int
    scorer: str
    doc_tokens: int
    memory_tokens: int
    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    format_version: int = FORMAT_VERSION
    created_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GlobalMemory:
    """Per-layer K and V [kv_heads, M, head_dim] at contiguous positions 0..M-1.

    ``token_indices`` [layers, kv_heads, M] holds the document token each
    memory slot came from (heads may keep different tokens), mapping memory
    back to text. An int8 memory (``meta.dtype == "int8"``) keeps its K/V as
    int8 with float16 scales (``agent/memory/int8.py``) in memory as on disk,
    so what is stored is what was read; it is widened only into a cache.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    token_indices: torch.Tensor
    meta: MemoryMeta
    key_scales: list[torch.Tensor] | None = None
    value_scales: list[torch.Tensor] | None = None

    @classmethod
    def int8_of(
        cls, keys: list[torch.Tensor], values: list[torch.Tensor], token_indices: torch.Tensor, meta: MemoryMeta
    ) -> GlobalMemory:
        """The int8 memory of float K/V (``meta.dtype`` becomes ``int8``)."""
        qk = [int8.quantize_keys(k) for k in keys]
        qv = [int8.quantize_values(v) for v in values]
        return cls(
            [k for k, _ in qk],
            [v for v, _ in qv],
            token_indices,
            replace(meta, dtype="int8"),
            [s for _, s in qk],
            [s for _, s in qv],
        )

    @property
    def quantized(self) -> bool:
        return self.key_scales is not None

    def __len__(self) -> int:
        return self.meta.memory_tokens

    @property
    def nbytes(self) -> int:
        scales = (self.key_scales or []) + (self.value_scales or [])
        kv = sum(t.numel() * t.element_size() for t in self.keys + self.values + scales)
        return kv + self.token_indices.numel() * self.token_indices.element_size()

    def check_model(self, fingerprint: str) -> None:
        if self.meta.model_fingerprint != fingerprint:
            raise IncompatibleMemory(
                f"memory was built by model {self.meta.model_name} ({self.meta.model_fingerprint}), "
                f"not by the loaded model ({fingerprint})"
            )

    def to_cache(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A fresh transformers cache holding the memory (callers may extend it)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer, (k, v) in enumerate(self.float_layers(dtype or torch.bfloat16)):
            cache.update(k[None].to(device, dtype), v[None].to(device, dtype), layer)
        return cache

    def float_layers(self, dtype: torch.dtype = torch.bfloat16):
        """Each layer's (K, V) as floating-point tensors (an int8 memory is widened to ``dtype``)."""
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            if self.quantized:
                k = int8.dequantize(k, self.key_scales[layer], dtype)
                v = int8.dequantize(v, self.value_scales[layer], dtype)
            yield k, v

    def to_bytes(self) -> bytes:
        tensors = {"token_indices": self.token_indices.contiguous()}
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            tensors[f"k.{layer}"] = k.contiguous()
            tensors[f"v.{layer}"] = v.contiguous()
            if self.quantized:
                tensors[f"ks.{layer}"] = self.key_scales[layer].contiguous()
                tensors[f"vs.{layer}"] = self.value_scales[layer].contiguous()
        return st_save(tensors, metadata={_META_KEY: json.dumps(self.meta.as_dict(), sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes) -> GlobalMemory:
        meta = read_meta(data)
        try:
            tensors = st_load(data)
        except Exception as exc:
            raise CorruptMemory(f"memory tensors are unreadable: {exc}") from exc
        layers = meta.num_layers
        try:
            keys = [tensors[f"k.{i}"] for i in range(layers)]
            values = [tensors[f"v.{i}"] for i in range(layers)]
            if meta.dtype != "int8":
                return cls(keys, values, tensors["token_indices"], meta)
            key_scales = [tensors[f"ks.{i}"] for i in range(layers)]
            value_scales = [tensors[f"vs.{i}"] for i in range(layers)]
            return cls(keys, values, tensors["token_indices"], meta, key_scales, value_scales)
        except KeyError as exc:
            raise CorruptMemory(f"memory lacks tensor {exc}") from exc


def read_meta(data: bytes) -> MemoryMeta:
    """Metadata from the safetensors header alone (8-byte length, then JSON)."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
        raw = json.loads(header["__metadata__"][_META_KEY])
    except Exception as exc:
        raise CorruptMemory(f"memory header is unreadable: {exc}") from exc
    if raw.get("format_version") != FORMAT_VERSION:
        raise IncompatibleMemory(f"memory format {raw.get('format_version')} is not {FORMAT_VERSION}")
    try:
        return MemoryMeta(**raw)
    except TypeError as exc:
        raise CorruptMemory(f"memory metadata is malformed: {exc}") from exc
