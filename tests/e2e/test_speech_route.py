"""The built llama-server carries our overlay: the speech routes exist everywhere. A server whose model
is no speech model (here the tiny talker without its --mmproj) answers 501 with an OpenAI error that
the official client parses; a router (no -m) forwards them by `model` and, without one, answers a 400
naming it (router mode serving two speech models: test_speech_serve.py). Uses the host build staged
by `make` (built on demand)."""

from __future__ import annotations

import os

import openai
import pytest
import requests

from q3build.speech.server import Server, free_port

from ..conftest import REPO

pytestmark = pytest.mark.slow


def start(argv, tmp_path_factory, name):
    port = free_port()
    server = Server([*argv, "--host", "127.0.0.1", "--port", str(port)], os.environ,
                    tmp_path_factory.mktemp(name) / "server.log", port)
    return server


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    # a model, but no audio-generating mmproj: speech stays off
    binary = built / "work" / "stage" / "host" / "bin" / "llama-server"
    with start([str(binary), "-m", str(built / "custom_voice" / "talker.gguf"), "-c", "256"], tmp_path_factory,
               "route") as s:
        why = s.wait_healthy(60)
        assert why is None, why
        yield s.base


@pytest.fixture(scope="module")
def router(host_work, tmp_path_factory):
    with start([str(host_work / "stage" / "host" / "bin" / "llama-server")], tmp_path_factory, "router") as s:
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


@pytest.mark.parametrize("method,path", [("POST", "/v1/audio/speech"), ("POST", "/audio/speech"),
                                         ("GET", "/v1/audio/voices"), ("GET", "/audio/voices")])
def test_a_router_asks_which_model(router, method, path):
    r = requests.request(method, f"{router}{path}", json={"input": "x"}, timeout=5)
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == "model"


def test_a_router_names_an_unknown_model(router):
    r = requests.post(f"{router}/v1/audio/speech", json={"input": "x", "model": "qwen3-tts"}, timeout=5)
    assert r.status_code == 400 and "model 'qwen3-tts' not found" in r.json()["error"]["message"]


def test_servers_keep_serving_after_errors(server, router):
    for base in (server, router):
        for body in ("not json", "[1]", '{"model": 5}'):
            requests.post(f"{base}/v1/audio/speech", data=body, timeout=5)
        assert requests.get(f"{base}/health", timeout=5).json() == {"status": "ok"}
@pytest.mark.parametrize("path,kind", [("/speech", "text/html"), ("/speech/app.js", "application/javascript"),
                                       ("/speech/app.css", "text/css")])
def test_the_speech_page_is_served(server, path, kind):
    r = requests.get(f"{server}{path}", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == f"{kind}; charset=utf-8"
    page = (REPO / "patches" / "overlay" / "tools" / "server" / "speech-page" /
            {"/speech": "index.html"}.get(path, path.rsplit("/", 1)[1])).read_bytes()
    assert r.content == page   # embedded at configure time, byte for byte


def test_the_speech_page_is_served_without_the_web_ui(host_work, tmp_path):
    port = free_port()
    argv = [str(host_work / "stage" / "host" / "bin" / "llama-server"), "--host", "127.0.0.1", "--port", str(port),
            "--no-ui"]
    with Server(argv, os.environ, tmp_path / "server.log", port) as s:
        assert s.wait_healthy(30) is None
        assert requests.get(f"{s.base}/", timeout=5).status_code == 404
        r = requests.get(f"{s.base}/speech", timeout=5)
        assert r.status_code == 200 and b'<script src="speech/app.js">' in r.content


def test_the_web_ui_is_served_at_the_root(server):
    r = requests.get(f"{server}/", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert b'href="./speech"' in r.content   # hook patch 0050's link, in upstream's built index.html
