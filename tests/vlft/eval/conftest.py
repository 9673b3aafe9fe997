"""Evaluation fixtures: a peaked tiny model, a LoRA adapter for it, a val split with one broken image,
and a local OpenAI-compatible chat server standing in for a remote judge."""

from __future__ import annotations

import http.server
import json
import threading

import pytest





@pytest.fixture(scope="session")
def val_split(tmp_path_factory, coco_sample_dir):
    """6 COCO images with all their reference captions (+ one Chinese-captioned) and one broken image."""
    root = tmp_path_factory.mktemp("val")
    coco = json.loads((coco_sample_dir / "captions_val2017_coco-mini.json").read_text(encoding="utf-8"))
    caps: dict[int, list[str]] = {}
    for a in coco["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"].strip())
    present = [im for im in coco["images"] if (coco_sample_dir / "images" / im["file_name"]).is_file()][:6]
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    records = []
    for im in present:
        refs = caps[im["id"]]
        records.append({"id": str(im["id"]), "references": refs, "messages": [
            {"role": "user", "content": [{"type": "image", "image": str(coco_sample_dir / "images" / im["file_name"])},
                                         {"type": "text", "text": "COCO Yes:"}]},
            {"role": "assistant", "content": [{"type": "text", "text": refs[0]}]}]})
    records[0]["references"] = records[0]["references"] + ["一个男人在厨房里做披萨。"]
    records.append({"id": "broken", "references": ["a broken file"], "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(root / "broken.jpg")},
                                     {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a broken file"}]}]})
    path = root / "val.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


class FakeOpenAI:
    """Minimal /v1/chat/completions: answers with a JSON score; records each request body."""

    def __init__(self, answer: str = '{"score": 4, "reason": "mostly right"}'):
        self.answer, self.requests = answer, []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": fake.answer}}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out.encode())))
                self.end_headers()
                self.wfile.write(out.encode())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_openai():
    srv = FakeOpenAI()
    yield srv
    srv.server.shutdown()
