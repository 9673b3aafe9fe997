"""Chat-model backends: message conversion, scripted, OpenAI-compatible (over real HTTP to a
stand-in server), and the local Qwen-VL client on the tiny Qwen3-VL."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from PIL import Image

from multi_agent.llm import local as local_mod
from multi_agent.llm.base import GenerationCancelled, generate_text, to_normalized, user_message
from multi_agent.llm.registry import make_chat_model
from multi_agent.llm.scripted import ScriptedChatModel


@pytest.fixture(scope="module")
def image_path(coco_sample_dir):
    return sorted((coco_sample_dir / "images").glob("*.jpg"))[0]


def test_to_normalized_accepts_paths_pil_data_urls_and_openai_parts(image_path):
    pil = Image.new("RGB", (8, 8))
    msgs = [SystemMessage("sys"), user_message("what is this?", [image_path, pil]), AIMessage("a cat"),
            HumanMessage(content=[{"type": "image_url", "image_url": {"url": f"file://{image_path}"}},
                                  {"type": "text", "text": "and this?"}])]
    out = to_normalized(msgs)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[1]["content"][0] == {"type": "image", "image": str(image_path.resolve())}
    assert out[1]["content"][1]["image"] is pil and out[1]["content"][2]["text"] == "what is this?"
    assert out[3]["content"][0]["image"] == str(image_path)


def test_factory_table_names_the_backends():
    with pytest.raises(ValueError, match="backend: 'nope' is not one of local, openai, scripted"):
        make_chat_model("nope")


def test_scripted_rules_queue_and_recording():
    m = ScriptedChatModel(rules={"Reviewer": ["RETRY: x", "PASS"], "custom marker": "hit"},
                          responses=["queued"])
    ask = lambda role: generate_text(m, [SystemMessage(f"You are the {role}."), HumanMessage("q")])  # noqa: E731
    assert ask("Reviewer") == "queued"                    # the queue first
    assert [ask("Reviewer"), ask("Reviewer"), ask("Reviewer")] == ["RETRY: x", "PASS", "PASS"]
    assert generate_text(m, [SystemMessage("a custom marker here"), HumanMessage("q")]) == "hit"
    assert len(m.prompts) == 5 and len(m.calls("Reviewer")) == 4


# -- OpenAI-compatible --------------------------------------------------------------------------
class _FakeOpenAI(BaseHTTPRequestHandler):
    """Just enough of /v1/models and streaming /v1/chat/completions."""
    requests: list = []
    words = ["Hello", " from", " the", " server", "."]

    def log_message(self, *a):
        pass

    def _send(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, json.dumps({"object": "list", "data": [
            {"id": "qwen3-vl-4b", "object": "model", "created": 0, "owned_by": "me"}]}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for w in self.words:
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def openai_server():
    _FakeOpenAI.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_compatible_streams_and_sends_images_as_data_urls(openai_server, image_path):
    m = make_chat_model("openai", base_url=openai_server, max_new_tokens=33)   # no model: first listed
    tokens = []
    text = generate_text(m, [SystemMessage("sys"), user_message("describe", [image_path])], on_token=tokens.append)
    assert text == "Hello from the server." and tokens == _FakeOpenAI.words
    req = _FakeOpenAI.requests[0]
    assert req["model"] == "qwen3-vl-4b" and req["stream"] is True and req["max_tokens"] == 33
    assert req["messages"][0] == {"role": "system", "content": "sys"}
    parts = req["messages"][1]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,") and parts[1]["text"] == "describe"


def test_openai_compatible_stops_on_cancel(openai_server):
    m = make_chat_model("openai", base_url=openai_server, model="m")
    cancel = threading.Event()
    tokens = []

    def on_token(t):
        tokens.append(t)
        cancel.set()

    with pytest.raises(GenerationCancelled) as e:
        generate_text(m, [HumanMessage("hi")], on_token=on_token, cancel=cancel)
    assert tokens == ["Hello"] and e.value.partial == "Hello"


# -- local Qwen-VL on the tiny model ----------------------------------------------------------------
def test_local_streams_tokens_and_shares_one_model(tiny_model_dir, image_path):
    a = make_chat_model("local", model_dir=str(tiny_model_dir), max_new_tokens=12)
    b = make_chat_model("local", model_dir=str(tiny_model_dir), temperature=0.5)
    assert a.generator() is b.generator()                 # one loaded model per (folder, adapter)
    assert "tiny random-weight" in a.notice
    tokens = []
    text = generate_text(a, [user_message("Describe the image.", [image_path])], on_token=tokens.append)
    assert tokens and "".join(tokens) == text
    # the same conversation straight through VLGenerator gives the same greedy text
    direct = a.generator().generate(to_normalized([user_message("Describe the image.", [image_path])]),
                                    max_new_tokens=12)
    assert direct == text
    pil = Image.open(image_path)
    assert generate_text(a, [user_message("Describe the image.", [pil])]) == text   # PIL works too


def test_local_cancel_stops_generation_early(tiny_model_dir):
    m = make_chat_model("local", model_dir=str(tiny_model_dir), max_new_tokens=200)
    cancel = threading.Event()
    tokens = []

    def on_token(t):
        tokens.append(t)
        if len(tokens) == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        generate_text(m, [HumanMessage("Count to one hundred.")], on_token=on_token, cancel=cancel)
    assert 2 <= len(tokens) < 10
    assert not local_mod.GENERATE_LOCK.locked()            # the worker let go of the model
    assert generate_text(m, [HumanMessage("hi")], max_new_tokens=3) is not None   # usable again


def test_one_generation_at_a_time(tiny_model_dir, monkeypatch):
    m = make_chat_model("local", model_dir=str(tiny_model_dir), max_new_tokens=8)
    gen = m.generator()
    running, peak, results = [0], [0], []
    real = gen.generate

    def counting(*a, **k):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)                     # widen the window two unserialized calls would overlap in
            return real(*a, **k)
        finally:
            running[0] -= 1

    monkeypatch.setattr(gen, "generate", counting)
    threads = [threading.Thread(target=lambda: results.append(generate_text(m, [HumanMessage("hello")])))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and len(set(results)) == 1 and peak[0] == 1


def test_no_model_configured_builds_the_embedded_tiny_model(tmp_path, monkeypatch):
    from vlft.models.tiny import is_tiny
    monkeypatch.setattr(local_mod, "DEFAULT_TINY_DIR", tmp_path / "tiny")
    assert local_mod.model_notice(None) == local_mod.TINY_NOTICE
    path = local_mod.resolve_model_dir(None)
    assert path == tmp_path / "tiny" and is_tiny(path)
    assert local_mod.resolve_model_dir(None) == path       # built once, reused


def test_local_loads_a_trained_adapter_as_its_own_shared_instance(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from vlft.models.loading import load_model

    base = load_model(tiny_model_dir)
    # init_lora_weights=False: B != 0, so the adapter really changes the model
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    with_adapter = make_chat_model("local", model_dir=str(tiny_model_dir), adapter=str(tmp_path / "lora"),
                                   max_new_tokens=6)
    plain = make_chat_model("local", model_dir=str(tiny_model_dir), max_new_tokens=6)
    gen = with_adapter.generator()
    assert gen is not plain.generator() and gen.adapter == tmp_path / "lora"
    assert gen is make_chat_model("local", model_dir=str(tiny_model_dir),
                                  adapter=str(tmp_path / "lora")).generator()
    assert isinstance(generate_text(with_adapter, [HumanMessage("hello")]), str)


def test_assistant_on_an_openai_compatible_server(openai_server, tmp_path):
    from multi_agent.assistant import Assistant, AssistantConfig
    a = Assistant(AssistantConfig(backend="openai", openai_url=openai_server, reports_dir=tmp_path,
                                  temperature=0.7))
    a.warm_up()                                               # lists the server's models
    trace = a.ask("Hello?", use_kb=False)
    assert trace.error is None and trace.answer == "Hello from the server."
    temps = {r["messages"][0]["content"].split(" of ")[0]: r["temperature"] for r in _FakeOpenAI.requests}
    assert temps == {"You are the Planner": 0.0, "You are the Manager": 0.0, "You are the Responder": 0.7,
                     "You are the Reviewer": 0.0}             # structured steps stay greedy
    down = Assistant(AssistantConfig(backend="openai", openai_url="http://127.0.0.1:9/v1"))
    with pytest.raises(Exception):
        down.warm_up()
    assert "Connection" in down.ask("Hello?", use_kb=False).error


def test_release_generators_frees_all_but_the_kept_model(tiny_model_dir, tmp_path):
    from multi_agent.llm import local
    from vlft.adapters.testing import make_random_adapter

    adapter = make_random_adapter(tiny_model_dir, tmp_path / "lora", "lora", seed=1)
    a = local.shared_generator(tiny_model_dir, None, quant="none")
    b = local.shared_generator(tiny_model_dir, adapter, quant="none")
    assert a is not b
    keep = local.generator_key(tiny_model_dir, adapter)
    assert local.release_generators(keep=keep) >= 1
    assert local.shared_generator(tiny_model_dir, adapter, quant="none") is b   # kept
    assert local.shared_generator(tiny_model_dir, None, quant="none") is not a  # dropped, reloaded


def test_interface_module_does_not_import_its_backends():
    """multi_agent.llm.base is the interface the backends import; the factory table lives in
    multi_agent.llm.registry, so base never refers back to local/openai_compat/scripted."""
    import ast
    import inspect

    import multi_agent.llm.base as base

    tree = ast.parse(inspect.getsource(base))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.startswith("multi_agent.llm.")}
    assert not hasattr(base, "CHAT_MODELS")
