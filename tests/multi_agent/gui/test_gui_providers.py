"""Provider settings: the server's model list (asked off the GUI thread, with the API key), the API
key kept out of the settings file, and a check that the embedder and the reranker load."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from multi_agent.gui.dialogs import SettingsDialog


class _Models(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        if self.headers.get("Authorization") != "Bearer k123":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "bad key"}}')
            return
        body = json.dumps({"object": "list", "data": [{"id": "qwen3-vl-4b", "object": "model"},
                                                      {"id": "qwen2.5-vl-3b", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def models_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_model_list_api_key_and_model_checks(make_window, make_assistant, ui, qtbot, models_server, gui_settings,
                                             monkeypatch):
    import multi_agent.providers as providers
    from multi_agent.gui.window import assistant_config

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(providers, "keyring_available", lambda: False)     # this machine has none anyway
    w = make_window(make_assistant())
    d = SettingsDialog(w.prefs, w.tr_, w)
    d.backend.setCurrentText("openai")
    d.openai_url.setText(models_server)
    assert d.api_key_edit.isEnabled() and "session" in d.api_key_edit.placeholderText()

    d.list_models()                                         # no key: the server says 401, in one line
    qtbot.waitUntil(lambda: d.check_result.text().startswith("✗"), timeout=30_000)
    assert "cannot list models" in d.check_result.text()
    d.api_key_edit.setText("k123")
    d.list_models()
    qtbot.waitUntil(lambda: d.openai_model.count() == 2, timeout=30_000)
    assert d.openai_model.currentText() == "qwen3-vl-4b" and d.check_result.text().startswith("✓ 2 models")

    d.reranker.setText("")                                  # default reranker: not on this machine
    d.check_models()
    qtbot.waitUntil(lambda: "\n" in d.check_result.text(), timeout=120_000)
    emb, rer = d.check_result.text().splitlines()
    assert emb.startswith("✓") and "384-dim" in emb
    assert rer.startswith("✗") and "not available on this machine" in rer
    d.reranker.setText("none")
    d.check_models()
    qtbot.waitUntil(lambda: "no reranker" in d.check_result.text(), timeout=60_000)

    d.ocr.setChecked(True)
    w.set_api_key(d.api_key())
    prefs = d.prefs()
    from multi_agent.assistant import knowledge_base
    assert knowledge_base(assistant_config(prefs)).config.ocr is True
    assert (prefs.openai_model, prefs.reranker) == ("qwen3-vl-4b", "none")
    assert assistant_config(prefs, w._api_key()).openai_api_key == "k123"
    gui_settings.save(prefs)
    assert "k123" not in open(gui_settings.path, encoding="utf-8").read()   # never in the settings file
    d.reject()
