"""Remote generators against a small server speaking the SGLang and OpenAI protocols."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import programs
from agent.backends import GeneratorUnavailable, LocalBackend, OpenAIChat, SGLangServer, generator_backend
from core.settings import get_settings


class FakeGenerator(BaseHTTPRequestHandler):
    requests: list[dict]
    mode = "ok"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict | str) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/get_model_info":
            self._reply(200, {"model_path": "Qwen/Qwen2.5-7B-Instruct", "is_generation": True})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.server.mode == "error":
            return self._reply(500, "model exploded")
        if self.server.mode == "slow":
            time.sleep(2)
        if self.path == "/generate" and body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            text = ""
            for piece in ["Fri", "day at", " noon."]:
                text += piece
                self.wfile.write(f"data: {json.dumps({'text': text, 'meta_info': {}})}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            return None
        if self.path == "/generate":
            return self._reply(200, {"text": "Friday at noon.", "meta_info": {"completion_tokens": 4}})
        if self.path == "/v1/chat/completions":
            return self._reply(200, {"choices": [{"message": {"content": "Friday at noon."}}], "usage": {}})
        return self._reply(404, {"error": "not found"})


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeGenerator)
    httpd.seen, httpd.mode = [], "ok"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


EVIDENCE = programs.format_evidence(["The meeting moved to Friday at noon."])


def test_sglang_server_runs_the_answer_program(server):
    backend = SGLangServer(_url(server))
    state = programs.answer.run(question="When is the meeting?", evidence=EVIDENCE, backend=backend)
    assert state["answer"] == "Friday at noon."
    sent = server.seen[-1]
    assert sent["path"] == "/generate"
    assert "Friday at noon" in sent["body"]["text"] and "<|im_start|>user" in sent["body"]["text"]  # Qwen chatml
    assert sent["body"]["sampling_params"]["max_new_tokens"] == programs.ANSWER_TOKENS
    assert sent["body"]["sampling_params"]["temperature"] == 0.0


def test_sglang_server_streams(server):
    backend = SGLangServer(_url(server))
    state = programs.answer.run(question="When?", evidence=EVIDENCE, backend=backend, stream=True)
    assert "".join(state.text_iter(var_name="answer")) == "Friday at noon."


def test_openai_endpoint_gets_messages_and_key(server):
    backend = OpenAIChat(_url(server), model="served-model", api_key="sk-test")
    state = programs.answer.run(question="When is the meeting?", evidence=EVIDENCE, backend=backend)
    assert state["answer"] == "Friday at noon."
    sent = server.seen[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "served-model"
    assert sent["body"]["messages"][-1]["role"] == "user"
    assert "Friday at noon" in sent["body"]["messages"][-1]["content"]


def test_settings_choose_the_backend(server, monkeypatch, tiny_lm):
    monkeypatch.setenv("MEMORAG_GENERATOR_URL", _url(server))
    assert isinstance(generator_backend(None, get_settings()), SGLangServer)
    monkeypatch.setenv("MEMORAG_GENERATOR_API", "openai")
    assert isinstance(generator_backend(None, get_settings()), OpenAIChat)
    monkeypatch.delenv("MEMORAG_GENERATOR_URL")
    assert isinstance(generator_backend(tiny_lm, get_settings()), LocalBackend)


def test_connection_refused_is_clear():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GeneratorUnavailable, match=f"cannot reach the generator at http://127.0.0.1:{port}"):
        SGLangServer(f"http://127.0.0.1:{port}")


@pytest.mark.parametrize("kind", ["sglang", "openai"])
def test_server_error_is_clear(server, kind):
    backend = SGLangServer(_url(server)) if kind == "sglang" else OpenAIChat(_url(server), "m")
    server.mode = "error"
    with pytest.raises(GeneratorUnavailable, match="answered 500: model exploded"):
        state = programs.answer.run(question="q", evidence=EVIDENCE, backend=backend)
        raise state.error()


def test_timeout_is_clear(server):
    backend = OpenAIChat(_url(server), "m", timeout=0.3)
    server.mode = "slow"
    state = programs.answer.run(question="q", evidence=EVIDENCE, backend=backend)
    assert isinstance(state.error(), GeneratorUnavailable)
    assert "did not answer within 0.3 s" in str(state.error())
