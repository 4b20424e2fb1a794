"""Any RoPE model runs through the memory engine: a matrix of tiny random models.

Each model is built from transformers' own config class (2 layers, small
hidden size, random weights), saved to a directory and loaded through the
project's local-directory path, as a user's model would be. The reference
for exactness is the same weights loaded with transformers' eager attention
and read as one plain full-context prompt.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from agent import programs
from agent.backends import LocalBackend
from agent.memory.decoding import SamplingParams, generate
from agent.memory.formation import form_memory, memory_length
from agent.memory.rope import key_rotation
from agent.memory.types import GlobalMemory
from agent.models import UnsupportedModel, load_model
from store.memories import MemoryStore
from tests.conftest import _default_dir

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
WINDOW = 64  # shorter than the documents below: formation reads several windows over its memory


def _llama_rope(rope: dict) -> dict:
    return {"rope_parameters": {"rope_theta": 10000.0, **rope}}


# name -> (config class path, config arguments). Sliding windows are shorter than the test documents.
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {}),
    "llama-linear": ("LlamaConfig", _llama_rope({"rope_type": "linear", "factor": 2.0})),
    "llama-llama3": (
        "LlamaConfig",
        _llama_rope(
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128,
            }
        ),
    ),
    "llama-yarn": (
        "LlamaConfig",
        _llama_rope(
            {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 128,
            }
        ),
    ),
    "qwen2": ("Qwen2Config", {}),  # biases on q, k, v
    "qwen3": ("Qwen3Config", {"head_dim": 16}),  # RMS norms on q and k
    "mistral": ("MistralConfig", {"sliding_window": 48}),
    "phi3": ("Phi3Config", {"partial_rotary_factor": 0.5}),
    "gemma2": (
        "Gemma2Config",
        {
            "head_dim": 16,
            "sliding_window": 48,
            "attn_logit_softcapping": 2.0,
            "final_logit_softcapping": 4.0,
            "query_pre_attn_scalar": 16,
        },
    ),
    "gemma3": (
        "Gemma3TextConfig",
        {
            "head_dim": 16,
            "sliding_window": 48,
            "layer_types": ["sliding_attention", "full_attention"],
            "query_pre_attn_scalar": 16,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        },
    ),
    "stablelm": ("StableLmConfig", {"partial_rotary_factor": 0.25}),
    "gpt_neox": ("GPTNeoXConfig", {"rotary_pct": 0.25}),
    "phi": ("PhiConfig", {"partial_rotary_factor": 0.5}),
}

# Not RoPE models: refused at load, naming the architecture.
UNSUPPORTED: dict[str, tuple[str, dict, str]] = {
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4}, "gpt2"),
    "bloom (alibi)": ("BloomConfig", {"hidden_size": 64, "n_layer": 2, "n_head": 4}, "bloom"),
    "falcon (alibi)": ("FalconConfig", {**SMALL, "alibi": True, "new_decoder_architecture": False}, "falcon"),
    "mamba (state space)": ("MambaConfig", {"hidden_size": 64, "num_hidden_layers": 2, "state_size": 4}, "mamba"),
    "llama (dynamic rope)": (
        "LlamaConfig",
        {**SMALL, **_llama_rope({"rope_type": "dynamic", "factor": 2.0})},
        "dynamic",
    ),
}


def _build(path: Path, config_class: str, overrides: dict, *, tokenizer=None) -> Path:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(_default_dir())
    base = {} if "n_embd" in overrides or "n_layer" in overrides or "state_size" in overrides else dict(SMALL)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,  # random weights that react to position, so a wrong rotation shows
        **{**base, **overrides},
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch(request, tmp_path_factory):
    """(name, model loaded the project's way, the same weights with eager attention for reference)."""
    from transformers import AutoModelForCausalLM

    config_class, overrides = ARCHITECTURES[request.param]
    path = _build(tmp_path_factory.mktemp(request.param), config_class, overrides)
    lm = load_model(str(path), dtype="fp32", device="cpu")
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    return request.param, lm, reference


def _ids(n: int, seed: int = 0) -> list[int]:
    return torch.randint(100, 20000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def test_beta_one_memory_gives_the_full_context_logits(arch):
    _, lm, reference = arch
    ids = _ids(200)
    memory = form_memory(lm, ids[:-8], beta=1, window=WINDOW, storage_dtype=torch.float32)
    assert len(memory) == len(ids) - 8
    tail = torch.tensor([ids[-8:]])
    positions = torch.arange(len(memory), len(ids))[None]
    read = lm.model(input_ids=tail, position_ids=positions, cache=memory.to_cache("cpu", torch.float32)).logits[0]
    full = reference(input_ids=torch.tensor([ids])).logits[0, -8:]
    assert (full - full.mean()).abs().max() > 1e-2  # the model is not flat: a difference would show
    torch.testing.assert_close(read, full, rtol=1e-4, atol=2e-4)


@torch.inference_mode()
def test_rerotated_keys_equal_keys_computed_at_the_new_positions(arch):
    from transformers import DynamicCache

    _, lm, _ = arch

    def keys_at(start: int) -> list[torch.Tensor]:
        cache = DynamicCache()
        ids = torch.tensor([_ids(24, seed=3)])
        lm.model.base_model(input_ids=ids, position_ids=torch.arange(start, start + 24)[None], cache=cache)
        return [layer.keys[0] for layer in cache.layers]

    rotation = key_rotation(lm.model)
    for layer, (old, new) in enumerate(zip(keys_at(300), keys_at(5), strict=True)):
        assert not torch.allclose(old, new, atol=1e-3)  # position really is in the keys
        moved = rotation.rerotate(old[None], torch.full(old.shape[:2], -295), layer)[0]
        torch.testing.assert_close(moved, new, rtol=1e-4, atol=1e-4)


def test_a_document_longer_than_the_window_forms_a_memory_of_the_expected_size(arch):
    _, lm, _ = arch
    memory = form_memory(lm, _ids(300, seed=1), beta=4, window=WINDOW)
    expected = memory_length(300, WINDOW, 4)
    assert expected == sum(math.ceil(min(WINDOW, 300 - s) / 4) for s in range(0, 300, WINDOW))
    assert len(memory) == memory.meta.memory_tokens == expected
    kv_heads, head_dim = memory.meta.kv_heads, memory.meta.head_dim
    assert len(memory.keys) == len(memory.values) == lm.model.config.num_hidden_layers
    assert all(k.shape == (kv_heads, expected, head_dim) for k in memory.keys + memory.values)
    assert memory.token_indices.shape == (lm.model.config.num_hidden_layers, kv_heads, expected)
    assert int(memory.token_indices.max()) >= 300 - WINDOW  # the last window is remembered


def test_the_memory_round_trips_through_the_store_bit_identically(arch, redis_client):
    name, lm, _ = arch
    memory = form_memory(lm, _ids(200, seed=2), beta=2, window=WINDOW)
    store = MemoryStore(redis_client, chunk_bytes=50_000)
    store.put("kb", name, memory.to_bytes(), memory.meta.as_dict())
    data, _ = store.get("kb", name, fingerprint=lm.fingerprint)
    again = GlobalMemory.from_bytes(data)
    assert again.meta == memory.meta and data == memory.to_bytes()
    for a, b in zip(memory.keys + memory.values, again.keys + again.values, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(memory.token_indices, again.token_indices)


def test_decoding_runs_after_the_memory_read_plain_and_spread(arch):
    _, lm, _ = arch
    memory = form_memory(lm, _ids(300, seed=4), beta=2, window=WINDOW)
    prompt = _ids(6, seed=5)
    params = SamplingParams(max_new_tokens=6)
    for reader in (lm, replace(lm, read_span=len(memory) // 3)):  # spread: keys re-rotated to fractional positions
        text = generate(reader, memory, prompt, params)
        assert text and text == generate(reader, memory, prompt, params)  # greedy is repeatable
    # and an SGLang clue program runs on the memory with the tokenizer's chat template
    state = programs.execute(programs.draft_answer, LocalBackend(lm, memory), question="What happened?", max_tokens=4)
    assert isinstance(state["answer"], str)


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_models_without_rope_are_refused_at_load_naming_the_architecture(name, tmp_path):
    config_class, overrides, named = UNSUPPORTED[name]
    path = _build(tmp_path / "model", config_class, overrides)
    with pytest.raises(UnsupportedModel, match=named) as caught:
        load_model(str(path), dtype="fp32", device="cpu")
    assert "\n" not in str(caught.value)


GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.mark.parametrize("template", [None, GEMMA_LIKE_TEMPLATE], ids=["no template", "no system role"])
def test_the_chat_format_comes_from_the_tokenizer(template, tmp_path):
    """A base model without a template gets a plain format; a template without a system turn still works."""
    from transformers import AutoTokenizer

    from agent.chat import chat_prompt, chat_template, end_of_turn_ids

    tokenizer = AutoTokenizer.from_pretrained(_default_dir())
    tokenizer.chat_template = template
    path = _build(tmp_path / "model", "LlamaConfig", {}, tokenizer=tokenizer)
    lm = load_model(str(path), dtype="fp32", device="cpu")
    backend = LocalBackend(lm, form_memory(lm, _ids(100), beta=2, window=WINDOW))
    state = programs.execute(programs.draft_answer, backend, question="Who?", max_tokens=3)
    prompt = programs.PROMPTS["draft_answer"].format(question="Who?")
    if template is None:
        assert chat_template(lm.tokenizer).name == "plain"
        assert state.text().startswith(f"User: {prompt}\n\nAssistant: ")
        assert end_of_turn_ids(lm.tokenizer) == [lm.tokenizer.eos_token_id]
    else:
        rendered = lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        assert state.text().startswith(rendered) and "<start_of_turn>model\n" in rendered
        assert chat_prompt(lm.tokenizer, prompt) == lm.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        assert lm.tokenizer.decode(end_of_turn_ids(lm.tokenizer)) == "<end_of_turn>"
