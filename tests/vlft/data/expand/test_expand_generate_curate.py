"""Generation and curation units: pair parsing, prompts per language, the support / language / length /
duplicate filters with exact counts, the on-disk cache, and the OpenAI-compatible generator's
concurrency against a real local HTTP endpoint."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from vlft.data.expand.curate import CurateConfig, Pair, curate, language_of, support
from vlft.data.expand.generate import (GenerationCache, OpenAIGenerator, Prompt, ScriptedGenerator, generate_cached,
                                       make_generator, parse_pairs, render)

CHUNK = "The harbour handled 1,200 ships in 2023. Container traffic grew by twelve percent over the year."


def test_parse_pairs_english_chinese_numbered():
    out = "1. Q: How many ships?\nA: 1,200 ships.\n2) Question: What grew?\nAnswer: Container traffic\nspread over two lines."
    assert parse_pairs(out) == [("How many ships?", "1,200 ships."),
                                ("What grew?", "Container traffic spread over two lines.")]
    assert parse_pairs("问：港口处理了多少船？\n答：1200艘。\n问题：什么增长了？\n答案：集装箱运输。") == [
        ("港口处理了多少船？", "1200艘。"), ("什么增长了？", "集装箱运输。")]
    assert parse_pairs("I cannot help with that.") == [] and parse_pairs(None) == []


def test_prompts_follow_the_language():
    assert "Passage:" in render("qa", "en", text=CHUNK, n=2) and "2 question-answer" in render("qa", "en", text="x", n=2)
    assert "段落" in render("qa", "zh", text="港口", n=2) and "用中文" in render("qa", "zh", text="港口", n=2)
    assert language_of("港口今年处理了更多船只") == "zh" and language_of(CHUNK) == "en"


def _pair(answer, question="How many ships did the harbour handle?", **kw):
    base = dict(kind="qa", question=question, answer=answer, source="s", ref="c0", generator="g", lang="en",
                support_text=CHUNK)
    base.update(kw)
    return Pair(**base)


def test_support_threshold_separates_grounded_from_invented():
    grounded = ["The harbour handled 1,200 ships in 2023.", "Container traffic grew by twelve percent.",
                "It handled 1,200 ships."]
    invented = ["The mayor opened a new airport terminal.", "Fishing quotas were cut by half in Norway.",
                "Ships were delayed by storms and strikes."]
    threshold = CurateConfig().min_support
    assert all(support(a, CHUNK) >= threshold for a in grounded)
    assert all(support(a, CHUNK) < threshold for a in invented)
    assert support("港口处理了1200艘船", "2023年港口处理了1200艘船，集装箱增长") == 1.0


def test_curate_counts_each_filter():
    pairs = [_pair("The harbour handled 1,200 ships in 2023."),
             _pair("The harbour handled 1,200 ships in 2023."),                  # exact duplicate
             _pair("The harbour handled 1,200 ships in 2023!", question="How many ships did the harbour handle ?"),  # same after normalizing
             _pair("The harbour handled 1200 ships in 2023."),                     # near duplicate
             _pair("A new airport opened downtown."),                              # unsupported
             _pair("港口处理了1200艘船。"),                                          # wrong language
             _pair("x", question="Why?"),                                          # too short
             _pair("Fishing boats at the pier.", kind="caption", generator="document", image="/i/1.png",
                   question="Describe this figure."),                               # document captions: no support check
             _pair("logo", kind="caption", generator="document", image="/i/2.png", question="Describe this figure.")]
    kept, removed = curate(pairs)
    assert [p.answer for p in kept] == ["The harbour handled 1,200 ships in 2023.", "Fishing boats at the pier."]
    assert dict(removed) == {"length": 2, "language": 1, "support": 1, "duplicate": 2, "near_duplicate": 1}
    assert kept[0].scores["support"] == 1.0


def test_same_caption_on_two_images_is_not_a_duplicate():
    a = _pair("Revenue by region, 2023.", kind="caption", generator="document", image="/i/a.png", question="Describe.")
    b = _pair("Revenue by region, 2023.", kind="caption", generator="document", image="/i/b.png", question="Describe.")
    assert len(curate([a, b])[0]) == 2


def test_cache_survives_a_torn_line_and_skips_done_prompts(tmp_path):
    cache = GenerationCache(tmp_path / "c.jsonl")
    gen = ScriptedGenerator(lambda p: p.text.upper(), name="up")
    prompts = [Prompt(f"prompt {i}", key=str(i)) for i in range(5)]
    out, cached = generate_cached(gen, prompts[:3], cache)
    assert out == ["PROMPT 0", "PROMPT 1", "PROMPT 2"] and cached == 0
    with open(tmp_path / "c.jsonl", "a", encoding="utf-8") as f:
        f.write('{"k": "torn')                                   # a crash mid-write
    cache2 = GenerationCache(tmp_path / "c.jsonl")
    gen2 = ScriptedGenerator(lambda p: p.text.upper(), name="up")
    out, cached = generate_cached(gen2, prompts, cache2)
    assert cached == 3 and gen2.calls == 2 and out[4] == "PROMPT 4"
    # another generator name is another key
    gen3 = ScriptedGenerator(lambda p: "other", name="other")
    assert generate_cached(gen3, prompts[:1], cache2)[0] == ["other"] and gen3.calls == 1


def test_make_generator_table():
    assert make_generator("none") is None
    with pytest.raises(ValueError, match="--model"):
        make_generator("local")
    with pytest.raises(ValueError, match="not none, local"):
        make_generator("gpt")


class _FakeChat:
    """/v1/chat/completions streaming (SSE) with a delay, counting concurrent requests."""

    def __init__(self, delay: float = 0.2):
        self.delay, self.active, self.peak, self.bodies = delay, 0, 0, []
        fake, lock = self, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    fake.bodies.append(body)
                    fake.active += 1
                    fake.peak = max(fake.peak, fake.active)
                time.sleep(fake.delay)
                user = body["messages"][-1]["content"]
                text = user if isinstance(user, str) else next(p["text"] for p in user if p["type"] == "text")
                if "FAIL" in text:
                    self.send_response(500)
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for piece in ("Q: echo?\n", "A: " + text[:20]):
                        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                with lock:
                    fake.active -= 1

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_openai_generator_concurrent_with_images_and_failures(tmp_path, coco_images):
    fake = _FakeChat()
    try:
        gen = OpenAIGenerator(fake.url, model="m", concurrency=4, max_new_tokens=16)
        prompts = [Prompt(f"question {i}") for i in range(6)] + [Prompt("FAIL please"),
                                                                 Prompt("about the image", image=str(coco_images[0]))]
        done = []
        out = gen.generate(prompts, done.append)
    finally:
        fake.server.shutdown()
    assert out[0] == "Q: echo?\nA: question 0" and out[6] is None and out[7].endswith("about the image")
    assert fake.peak >= 3 and sum(done) == 8
    with_image = [b["messages"][0]["content"] for b in fake.bodies if isinstance(b["messages"][0]["content"], list)]
    assert len(with_image) == 1 and with_image[0][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_short_chinese_caption_is_kept_short_latin_one_is_not():
    def cap(text, img):
        return _pair(text, kind="caption", generator="document", image=img, question="描述这张图片。", lang="zh")
    kept, removed = curate([cap("码头上的起重机", "/i/1.png"), cap("图标", "/i/2.png"), cap("logo", "/i/3.png")])
    assert [p.answer for p in kept] == ["码头上的起重机"] and removed["length"] == 2


def test_openai_generator_server_down_fails_fast(caplog):
    gen = OpenAIGenerator("http://127.0.0.1:9/v1", model="m", concurrency=2, timeout=2)
    out = gen.generate([Prompt(f"q{i}") for i in range(20)])
    assert out == [None] * 20
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert 1 <= len(warnings) <= 3          # not one line per prompt
