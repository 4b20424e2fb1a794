"""SGLang backends: the in-process memory-aware model, and remote generators.

``LocalBackend`` runs a model from ``agent.models`` inside this process,
optionally bound to one re-hydrated ``GlobalMemory`` (the program's text
continues after the memory). Remote generators serve the answer step: an
SGLang server's ``/generate`` or any OpenAI-compatible chat endpoint.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.chat_template import get_chat_template, get_chat_template_by_model_path
from sglang.lang.choices import ChoicesDecision, ChoicesSamplingMethod, token_length_normalized
from sglang.lang.ir import SglSamplingParams

from agent import adapters
from agent.chat import chat_template
from agent.memory.decoding import SamplingParams, generate_batch, stream_generate, token_logprobs
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel
from core.settings import Settings, get_settings


class GeneratorUnavailable(RuntimeError):
    """A remote generator failed; the message names the URL and what happened."""


# in-process -----------------------------------------------------------------
_model_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(lm: LoadedModel) -> threading.Lock:
    with _locks_guard:
        return _model_locks.setdefault(id(lm.model), threading.Lock())


class LocalBackend(BaseBackend):
    """Run SGLang programs on an in-process model, optionally after a memory.

    Forward passes on one model are serialised (the CPU or GPU is saturated
    by one anyway), which keeps ``run_batch`` threads safe and greedy results
    identical to sequential runs.
    """

    def __init__(
        self,
        lm: LoadedModel,
        memory: GlobalMemory | None = None,
        *,
        repetition_penalty: float = 1.15,
        no_repeat_ngram: int = 6,
        adapter: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if memory is not None:
            memory.check_model(lm.fingerprint)
        self.lm = lm
        self.memory = memory
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram = no_repeat_ngram
        self.adapter = adapter  # write with the clue adapter, when one is loaded
        self.seed = seed  # sampled generations are reproducible: call i uses seed + i
        self._calls = 0
        self.chat_template = chat_template(lm.tokenizer, lm.name)
        self.is_chat_model = False
        self._lock = _lock_for(lm)
        self._gather: _Gather | None = None

    def _like(self, **changes) -> LocalBackend:
        kept = dict(
            memory=self.memory,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram=self.no_repeat_ngram,
            adapter=self.adapter,
            seed=self.seed,
        )
        return LocalBackend(self.lm, **{**kept, **changes})

    def with_adapter(self, on: bool = True) -> LocalBackend:
        """The same model and memory, writing with (or without) the clue adapter."""
        return self._like(adapter=on)

    def batched(self, size: int) -> LocalBackend:
        """The same model and memory, decoding ``size`` concurrent generations as one batch.

        SGLang runs each branch of ``s.fork(size)`` in its own thread; here
        their ``generate`` calls meet and decode together over the memory
        built once (``decoding.generate_batch``), instead of one after another.
        """
        backend = self._like()
        backend._gather = _Gather(size, backend._decode_together)
        return backend

    def has_adapter(self) -> bool:
        """Whether a trained clue adapter is loaded (and so writes differently from the base model)."""
        return adapters.loaded_version(self.lm) is not None

    def get_model_name(self) -> str:
        return self.lm.name

    def _ids(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _params(self, sp: SglSamplingParams) -> SamplingParams:
        stop = sp.stop if isinstance(sp.stop, (list, tuple)) else [sp.stop]
        stop = [*stop, *self.chat_template.stop_str]
        return SamplingParams(
            max_new_tokens=sp.max_new_tokens or 128,
            temperature=sp.temperature or 0.0,
            top_p=sp.top_p if sp.top_p is not None else 1.0,
            stop=tuple(s for s in stop if s),
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram=self.no_repeat_ngram,
            seed=None if self.seed is None else self.seed + self._calls,
        )

    def generate(self, s, sampling_params: SglSamplingParams):
        if self._gather is not None:
            prompt = self._ids(s.text_)
            text = self._gather.submit(prompt, self._params(sampling_params))
            self._calls += 1
            return text, {"prompt_tokens": len(prompt), "completion_tokens": len(self._ids(text))}
        pieces = list(self.generate_stream(s, sampling_params))
        text = "".join(piece for piece, _ in pieces)
        meta = pieces[-1][1] if pieces else {"prompt_tokens": len(self._ids(s.text_)), "completion_tokens": 0}
        return text, meta

    def generate_stream(self, s, sampling_params: SglSamplingParams) -> Iterator[tuple[str, dict]]:
        prompt = self._ids(s.text_)
        params = self._params(sampling_params)
        self._calls += 1
        produced = ""
        with self._lock, adapters.active(self.lm, self.adapter):
            for piece in stream_generate(self.lm, self.memory, prompt, params):
                produced += piece
                yield piece, {"prompt_tokens": len(prompt), "completion_tokens": len(self._ids(produced))}

    def _decode_together(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[str]:
        with self._lock, adapters.active(self.lm, self.adapter):
            return generate_batch(self.lm, self.memory, prompts, params)

    def select(
        self,
        s,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod | None = None,
    ) -> ChoicesDecision:
        method = choices_method or token_length_normalized
        if method.requires_unconditional_logprobs:
            raise ValueError("LocalBackend.select does not compute unconditional log-probabilities")
        prompt = self._ids(s.text_)
        per_choice: list[list[tuple[float, int, None]]] = []
        with self._lock, adapters.active(self.lm, self.adapter):
            for choice in choices:
                ids = self._ids(choice)
                lps = token_logprobs(self.lm, self.memory, prompt, ids)
                per_choice.append([(lp, tid, None) for lp, tid in zip(lps, ids, strict=True)])
        return method(
            choices=choices,
            normalized_prompt_logprobs=[sum(lp for lp, _, _ in c) / max(1, len(c)) for c in per_choice],
            input_token_logprobs=per_choice,
            output_token_logprobs=[[] for _ in choices],
        )


class _Gather:
    """Where ``size`` concurrent generation requests meet and run as one batch.

    The request that completes the group runs it; a request left waiting
    longer than ``patience`` seconds (a sibling branch failed before asking)
    runs whatever has gathered, so nobody waits for ever.
    """

    def __init__(self, size: int, run, patience: float = 2.0) -> None:
        self.size = size
        self.run = run
        self.patience = patience
        self.ready = threading.Condition()
        self.pending: list[_Request] = []

    def submit(self, prompt: list[int], params: SamplingParams) -> str:
        request = _Request(prompt, params)
        with self.ready:
            self.pending.append(request)
            if len(self.pending) < self.size:
                self.ready.wait_for(lambda: request.taken, timeout=self.patience)
            group = [] if request.taken else self._take()
        if group:
            self._run(group)
        with self.ready:
            self.ready.wait_for(lambda: request.done)
        if request.error is not None:
            raise request.error
        return request.text

    def _take(self) -> list[_Request]:
        group, self.pending = self.pending, []
        for request in group:
            request.taken = True
        self.ready.notify_all()
        return group

    def _run(self, group: list[_Request]) -> None:
        try:
            texts = self.run([r.prompt for r in group], [r.params for r in group])
        except BaseException as exc:  # every waiter sees the failure, not a hang
            texts, error = [""] * len(group), exc
        else:
            error = None
        with self.ready:
            for request, text in zip(group, texts, strict=True):
                request.text, request.error, request.done = text, error, True
            self.ready.notify_all()


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    text: str = ""
    error: BaseException | None = None
    taken: bool = False
    done: bool = False


# remote ---------------------------------------------------------------------
class _HttpBackend(BaseBackend):
    """Shared HTTP plumbing: timeouts and errors that name the server."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.is_chat_model = False

    def _post(self, path: str, payload: dict, stream: bool = False) -> requests.Response:
        return self._request("POST", path, payload, stream)

    def _request(self, method: str, path: str, payload: dict | None = None, stream: bool = False):
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = self.base_url + path
        try:
            response = requests.request(method, url, json=payload, headers=headers, timeout=self.timeout, stream=stream)
        except requests.Timeout as exc:
            message = f"generator at {self.base_url} did not answer within {self.timeout:g} s"
            raise GeneratorUnavailable(message) from exc
        except requests.ConnectionError as exc:
            raise GeneratorUnavailable(
                f"cannot reach the generator at {self.base_url}: start the server or unset MEMORAG_GENERATOR_URL"
            ) from exc
        if response.status_code != 200:
            detail = response.text[:200].strip().replace("\n", " ")
            raise GeneratorUnavailable(f"generator at {self.base_url} answered {response.status_code}: {detail}")
        return response


class SGLangServer(_HttpBackend):
    """An SGLang server's native ``/generate`` API (what ``RuntimeEndpoint`` speaks), with timeouts."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        super().__init__(base_url, api_key, timeout)
        self.model_info = self._request("GET", "/get_model_info").json()
        self.chat_template = get_chat_template_by_model_path(self.model_info.get("model_path", ""))

    def get_model_name(self) -> str:
        return self.model_info.get("model_path", "sglang")

    def _payload(self, s, sp: SglSamplingParams, stream: bool) -> dict:
        return {"text": s.text_, "sampling_params": sp.to_srt_kwargs(), "stream": stream}

    def generate(self, s, sampling_params: SglSamplingParams):
        body = self._post("/generate", self._payload(s, sampling_params, False)).json()
        return body["text"], body.get("meta_info", {})

    def generate_stream(self, s, sampling_params: SglSamplingParams):
        response = self._post("/generate", self._payload(s, sampling_params, True), stream=True)
        seen = 0
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            if line.strip() == "data: [DONE]":
                break
            body = json.loads(line[5:])
            yield body["text"][seen:], body.get("meta_info", {})
            seen = len(body["text"])


class OpenAIChat(_HttpBackend):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint; programs' roles become messages."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        super().__init__(base_url, api_key, timeout)
        self.model = model
        self.chat_template = get_chat_template("default")
        self.is_chat_model = True

    def get_model_name(self) -> str:
        return self.model

    def generate(self, s, sampling_params: SglSamplingParams):
        stop = sampling_params.stop if isinstance(sampling_params.stop, (list, tuple)) else [sampling_params.stop]
        payload = {
            "model": self.model,
            "messages": [m for m in s.messages_ if m.get("content")],
            "max_tokens": sampling_params.max_new_tokens,
            "temperature": sampling_params.temperature,
            "top_p": sampling_params.top_p,
        }
        if any(stop):
            payload["stop"] = [x for x in stop if x]
        body = self._post("/v1/chat/completions", payload).json()
        try:
            text = body["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise GeneratorUnavailable(f"generator at {self.base_url} sent an unexpected reply: {body!r:.200}") from exc
        return text, body.get("usage", {})


def generator_backend(lm: LoadedModel | None, settings: Settings | None = None) -> BaseBackend:
    """The answer step's backend: remote when ``MEMORAG_GENERATOR_URL`` is set, else in-process."""
    settings = settings or get_settings()
    if settings.generator_url:
        if settings.generator_api == "openai":
            return OpenAIChat(settings.generator_url, settings.generator_model, settings.generator_api_key or None)
        if settings.generator_api == "sglang":
            return SGLangServer(settings.generator_url, settings.generator_api_key or None)
        raise ValueError(f"MEMORAG_GENERATOR_API must be 'sglang' or 'openai', not {settings.generator_api!r}")
    if lm is None:
        raise ValueError("no generator: set MEMORAG_GENERATOR_URL or pass a loaded model")
    return LocalBackend(lm)
