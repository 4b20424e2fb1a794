"""A model's conversation format, read from its tokenizer.

Programs write ``sgl.user(...)`` and ``sgl.assistant(...)``; the strings
each role is wrapped in come from the tokenizer's own chat template, so no
model-specific markup lives in the project. A tokenizer without a template
(a base model) gets a plain ``User:`` / ``Assistant:`` format.
"""

from __future__ import annotations

import functools

from sglang.lang.chat_template import ChatTemplate

PLAIN = ChatTemplate(
    name="plain",
    default_system_prompt=None,
    role_prefix_and_suffix={
        "system": ("", "\n\n"),
        "user": ("User: ", "\n\n"),
        "assistant": ("Assistant: ", "\n\n"),
    },
    stop_str=("\nUser:",),
)


def _derive(tokenizer, name: str) -> ChatTemplate:
    """Render probe conversations and cut them at sentinel contents: the exact role wrappings."""
    a, b, c = "\x01SYS\x01", "\x01USR\x01", "\x01AST\x01"

    def render(messages, gen=False) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    system = [{"role": "system", "content": a}]
    try:
        sys_only = render(system)
    except Exception:  # templates that reject a system turn (Gemma): programs do not use one
        system, sys_only = [], ""
    sys_user = render([*system, {"role": "user", "content": b}])
    sys_user_gen = render([*system, {"role": "user", "content": b}], gen=True)
    full = render([*system, {"role": "user", "content": b}, {"role": "assistant", "content": c}])
    sys_prefix, sys_suffix = sys_only.split(a) if system else ("", "")
    user_prefix, user_suffix = sys_user[len(sys_only) :].split(b)
    assistant_prefix = sys_user_gen[len(sys_user) :]
    assistant_suffix = full.split(c)[1]
    default_system = None
    if system:
        user_alone = render([{"role": "user", "content": b}])
        injected = user_alone.split(b)[0][: -len(user_prefix) or None]
        if injected.startswith(sys_prefix) and injected.endswith(sys_suffix) and injected != sys_prefix + sys_suffix:
            default_system = injected[len(sys_prefix) : len(injected) - len(sys_suffix)]
    return ChatTemplate(
        name=f"hf:{name}",
        default_system_prompt=default_system,
        role_prefix_and_suffix={
            "system": (sys_prefix, sys_suffix),
            "user": (user_prefix, user_suffix),
            "assistant": (assistant_prefix, assistant_suffix),
        },
        stop_str=tuple(s for s in (assistant_suffix.strip(),) if s),
    )


@functools.lru_cache(maxsize=32)
def chat_template(tokenizer, name: str = "model") -> ChatTemplate:
    """The SGLang template equivalent to ``tokenizer.apply_chat_template`` (``PLAIN`` without one)."""
    if not getattr(tokenizer, "chat_template", None):
        return PLAIN
    return _derive(tokenizer, name)


def user_turn(tokenizer, user: str) -> str:
    """One user turn and the opening of the reply, as text."""
    template = chat_template(tokenizer)
    default = template.default_system_prompt
    system = template.role_prefix_and_suffix["system"]
    user_prefix, user_suffix = template.role_prefix_and_suffix["user"]
    return (
        (system[0] + default + system[1] if default else "")
        + user_prefix
        + user
        + user_suffix
        + template.role_prefix_and_suffix["assistant"][0]
    )


def chat_prompt(tokenizer, user: str) -> list[int]:
    """Token ids of one user turn in the model's chat format, ready for the reply."""
    return tokenizer(user_turn(tokenizer, user), add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer) -> list[int]:
    """What closes a reply: the template's end-of-turn marker, else the end-of-sequence token."""
    end = chat_template(tokenizer).role_prefix_and_suffix["assistant"][1].strip()
    if end:
        return tokenizer(end, add_special_tokens=False)["input_ids"]
    return [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
