"""download_model.py without --tiny: fast one-line offline failure, and folder verification."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from vlft import hub
from vlft.hub import HubError, check_complete, download_model, verify_model_dir
from vlft.paths import REPO_DIR


@pytest.mark.parametrize("source", ["modelscope", "hf"])
def test_offline_download_fails_fast_with_one_line(tmp_path, source):
    env = dict(os.environ, HF_HUB_OFFLINE="0")    # reach the real network probe, not the offline switch
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(REPO_DIR / "download_model.py"), "--source", source,
                        "--target", str(tmp_path / "m")], capture_output=True, text=True, timeout=60, env=env)
    elapsed = time.monotonic() - t0
    assert p.returncode != 0
    assert elapsed < 15                                      # includes interpreter start-up
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("error: cannot reach") and ("modelscope" in lines[0] or "huggingface" in lines[0])
    assert not (tmp_path / "m").exists()                     # nothing half-made


def test_hf_offline_switch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        download_model("Qwen/Qwen3-VL-4B-Instruct", tmp_path, source="hf")


def test_probe_times_out_on_a_silent_server():
    # A listening socket that never answers: TCP connects, HTTP never comes -> our timeout, not the OS's.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(HubError, match=rf"cannot reach 127.0.0.1:{port} \(no answer in 0.5 s\)"):
            hub.probe(f"http://127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - t0 < 3


def test_probe_accepts_any_http_answer():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    try:
        hub.probe(f"http://127.0.0.1:{srv.server_address[1]}", timeout=2)
    finally:
        srv.server_close()


def fake_model_dir(path, shards_present):
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json", "tokenizer.json"):
        (path / name).write_text("{}", encoding="utf-8")
    shards = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    weight_map = {f"layer.{i}.weight": shards[i % 3] for i in range(9)}
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    for s in shards[:shards_present]:
        (path / s).write_bytes(b"\0" * 16)
    return shards


def test_verify_lists_every_missing_file(tmp_path):
    shards = fake_model_dir(tmp_path / "m", shards_present=1)
    (tmp_path / "m" / "tokenizer.json").unlink()
    (tmp_path / "m" / shards[0]).write_bytes(b"")            # an empty shard counts as missing
    missing = verify_model_dir(tmp_path / "m")
    assert missing == ["tokenizer.json (or vocab.json + merges.txt)", *shards]
    with pytest.raises(HubError) as e:
        check_complete(tmp_path / "m")
    msg = str(e.value)
    assert "\n" not in msg and all(s in msg for s in shards) and "resume" in msg


def test_verify_complete_folder(tmp_path):
    fake_model_dir(tmp_path / "m", shards_present=3)
    assert verify_model_dir(tmp_path / "m") == []
    assert verify_model_dir(tmp_path / "none") != []


def test_download_reports_incomplete_snapshot(tmp_path, monkeypatch):
    """The hub itself is the outside service: a stand-in that leaves one shard out."""
    calls = {}

    def fake_snapshot_download(model_id, revision=None, local_dir=None, **kw):
        calls.update(model_id=model_id, local_dir=local_dir)
        fake_model_dir(tmp_path / "m", shards_present=2)
        return local_dir

    import modelscope
    monkeypatch.setattr(hub, "probe", lambda *a, **k: None)
    monkeypatch.setattr(modelscope, "snapshot_download", fake_snapshot_download)
    with pytest.raises(HubError, match=r"missing: model-00003-of-00003.safetensors"):
        download_model("Qwen/Qwen3-VL-4B-Instruct", tmp_path / "m", source="modelscope")
    assert calls == {"model_id": "Qwen/Qwen3-VL-4B-Instruct", "local_dir": str(tmp_path / "m")}


def test_tiny_qwen25_without_reference_files_names_the_paths_and_the_variable(tmp_path, monkeypatch, capsys):
    """Issue 19: it said 'looked for None'."""
    import importlib.util

    import vlft.paths as paths
    from vlft.paths import REPO_DIR

    monkeypatch.setenv("VLFT_SHARED_ASSETS", str(tmp_path / "nowhere"))
    monkeypatch.setattr(paths, "REPO_DIR", tmp_path / "repo")      # no ../shared next to it either
    spec = importlib.util.spec_from_file_location("vlft_download_model_cli", REPO_DIR / "download_model.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rc = cli.main(["--tiny", "--family", "qwen2.5-vl", "--target", str(tmp_path / "t")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1
    assert "None" not in err[0] and "VLFT_SHARED_ASSETS" in err[0]
    assert str(tmp_path / "nowhere" / "qwen2.5-vl-3b-instruct") in err[0]
    assert str(tmp_path / "shared" / "assets" / "qwen2.5-vl-3b-instruct") in err[0]
