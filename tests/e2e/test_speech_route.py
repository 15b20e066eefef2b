"""The built llama-server carries our overlay: the speech routes exist and, with no speech model
loaded, answer 501 with an OpenAI error that the official client parses. Uses the host build
staged by `make` (built on demand)."""

from __future__ import annotations

import os

import openai
import pytest
import requests

from q3build.speech.server import Server, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(host_work, tmp_path_factory):
    work = host_work
    port = free_port()
    # no model: the server starts in router mode, our routes are registered regardless
    argv = [str(work / "stage" / "host" / "bin" / "llama-server"), "--host", "127.0.0.1", "--port", str(port)]
    with Server(argv, os.environ, tmp_path_factory.mktemp("route") / "server.log", port) as s:
        why = s.wait_healthy(30)
        assert why is None, why
        yield s.base


def test_openai_client_gets_a_clear_501(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.speech.create(model="qwen3-tts", voice="alloy", input="hello")
    assert e.value.status_code == 501
    body = e.value.body
    assert body["type"] == "not_supported_error"
    assert body["code"] == "speech_not_enabled"
    assert body["param"] is None
    assert "Qwen3-TTS" in body["message"]


@pytest.mark.parametrize("method,path", [("POST", "/audio/speech"), ("GET", "/v1/audio/voices"),
                                         ("GET", "/audio/voices")])
def test_all_speech_routes_are_registered(server, method, path):
    r = requests.request(method, f"{server}{path}", json={"input": "x"}, timeout=5)
    assert r.status_code == 501
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_server_keeps_serving_after_errors(server):
    for _ in range(3):
        requests.post(f"{server}/v1/audio/speech", data="not json", timeout=5)
    assert requests.get(f"{server}/health", timeout=5).json() == {"status": "ok"}
