"""VLGenerator and test.py on the tiny Qwen3-VL (CPU): adapters change the output, streaming and
batching give the greedy one-at-a-time text, stop_event cancels, bad input gets one line."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import subprocess
import sys
import threading
import time

import pytest

from vlft.infer import ImageLoadError, VLGenerator, caption_messages, list_images, load_image
from vlft.paths import REPO_DIR

MAX_NEW = 8




@pytest.fixture(scope="module")
def gen(peaked_dir):
    return VLGenerator(peaked_dir, precision="none")


@pytest.fixture(scope="module")
def images(coco_sample_dir):
    return [str(p) for p in list_images(coco_sample_dir / "images")]


def test_adapter_changes_the_output(gen, peaked_dir, lora_dir, images):
    msgs = caption_messages([images[0]], "COCO Yes:")
    base = gen.generate(msgs, max_new_tokens=MAX_NEW)
    tuned = VLGenerator(peaked_dir, adapter=lora_dir, precision="none").generate(msgs, max_new_tokens=MAX_NEW)
    assert base.strip() and tuned.strip()
    assert base != tuned
    # The image matters too: a different picture, a different greedy caption.
    others = {gen.generate(caption_messages([im], "COCO Yes:"), max_new_tokens=MAX_NEW) for im in images[:4]}
    assert len(others) > 1


def test_streaming_gives_the_same_text(gen, images):
    msgs = caption_messages([images[1]], "描述这张图片")
    pieces: list[str] = []
    streamed = gen.generate(msgs, max_new_tokens=12, on_token=pieces.append)
    assert len(pieces) >= 1
    assert "".join(pieces) == streamed == gen.generate(msgs, max_new_tokens=12)


def test_batched_equals_one_at_a_time(gen, images):
    from PIL import Image

    small = Image.open(images[2]).convert("RGB").resize((200, 120))  # other size -> other token count
    convs = [caption_messages([images[0]], "COCO Yes:"),
             caption_messages([small], "What is in the picture?"),
             caption_messages([images[3], images[4]], "这两张图片有什么不同？"),
             [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]}]
             + caption_messages([images[5]], "COCO Yes:"),
             [{"role": "user", "content": [{"type": "text", "text": "Hello, who are you?"}]}]]
    one_by_one = [gen.generate(c, max_new_tokens=MAX_NEW) for c in convs]
    assert gen.generate_batch(convs, max_new_tokens=MAX_NEW, batch_size=3) == one_by_one
    assert gen.generate_batch(convs, max_new_tokens=MAX_NEW, batch_size=8) == one_by_one


def test_stop_event_cancels_promptly(gen, images):
    msgs = caption_messages([images[0]], "COCO Yes:")
    ev = threading.Event()
    ev.set()  # already set: one decoding step at most
    out = gen.generate(msgs, max_new_tokens=50, stop_event=ev)
    assert len(gen.tokenizer(out)["input_ids"]) <= 1

    ev = threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        text=gen.generate(msgs, max_new_tokens=3000, stop_event=ev, on_token=lambda t: None)))
    worker.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    ev.set()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert time.perf_counter() - t0 < 5
    assert len(gen.tokenizer(result["text"])["input_ids"]) < 3000


def test_one_generation_at_a_time_across_threads(gen, images):
    msgs = [caption_messages([im], "COCO Yes:") for im in images[:2]]
    expected = [gen.generate(m, max_new_tokens=MAX_NEW) for m in msgs]
    got: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, gen.generate(msgs[i], max_new_tokens=MAX_NEW)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [got[0], got[1]] == expected


def test_sampling_runs_and_greedy_is_deterministic(gen, images):
    msgs = caption_messages([images[0]], "COCO Yes:")
    assert gen.generate(msgs, max_new_tokens=MAX_NEW) == gen.generate(msgs, max_new_tokens=MAX_NEW)
    assert isinstance(gen.generate(msgs, max_new_tokens=MAX_NEW, temperature=0.9, top_p=0.9), str)


def test_bad_images_get_one_line(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageLoadError) as e:
        load_image(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")


def _cli():
    # "test" would import the standard library's test package: load the file under another name.
    spec = importlib.util.spec_from_file_location("vlft_test_cli", REPO_DIR / "test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_seed_command_runs(peaked_dir):
    """The seed README's command, as a user types it (tiny model in place of the 4B download)."""
    r = subprocess.run([sys.executable, "test.py", "--model", str(peaked_dir), "--image", "./image/demo.jpg",
                        "--prompt", "描述这张图片", "--max_new_tokens", "6"],
                       cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_cli_stream_several_images_and_url(peaked_dir, images, capsys, gen):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    folder = str(images[0]).rsplit("/", 1)[0]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{images[1].rsplit('/', 1)[1]}"
        argv = ["--model", str(peaked_dir), "--image", images[0], "--image", url, "--prompt", "Compare them.",
                "--max_new_tokens", str(MAX_NEW), "--no-load_in_4bit"]
        assert _cli().main(argv + ["--stream"]) == 0
        streamed = capsys.readouterr().out
        assert _cli().main(argv) == 0
        plain = capsys.readouterr().out
    finally:
        server.shutdown()
    expected = gen.generate(caption_messages([images[0], images[1]], "Compare them."), max_new_tokens=MAX_NEW)
    assert plain.strip() == streamed.strip() == expected.strip()


def test_cli_batch_split_skips_bad_image(peaked_dir, images, tmp_path, capsys, gen):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    recs = [{"id": f"img{i}", "references": ["a photo"],
             "messages": [{"role": "user", "content": [{"type": "image", "image": im},
                                                      {"type": "text", "text": "COCO Yes:"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "a photo"}]}]}
            for i, im in enumerate(images[:3] + [str(bad)])]
    split = tmp_path / "val.json"
    split.write_text(json.dumps(recs), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    rc = _cli().main(["--model", str(peaked_dir), "--data_path", str(split), "--batch_size", "2",
                      "--max_new_tokens", str(MAX_NEW), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["img0", "img1", "img2"]
    assert rows[0]["references"] == ["a photo"]
    assert rows[0]["prediction"] == gen.generate(caption_messages([images[0]], "COCO Yes:"),
                                                 max_new_tokens=MAX_NEW).strip()
    assert "skipped 1" in err and "bad.jpg" in err


def test_cli_folder_and_errors(peaked_dir, coco_sample_dir, tmp_path, capsys):
    assert _cli().main(["--model", str(peaked_dir), "--image", str(coco_sample_dir / "images"),
                        "--max_new_tokens", "2", "--batch_size", "8"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(list_images(coco_sample_dir / "images"))
    assert _cli().main(["--model", str(peaked_dir), "--image", str(tmp_path / "nope.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.jpg: image file not found" in err
    assert _cli().main(["--model", str(tmp_path / "no-model"), "--image", str(REPO_DIR / "image/demo.jpg")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_caption_benchmark_smoke(capsys):
    """bench/caption_throughput.py --tiny: the GPU benchmark's code path, on the CPU."""
    spec = importlib.util.spec_from_file_location("caption_throughput", REPO_DIR / "bench" / "caption_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--n_images", "4", "--batch_sizes", "2,4", "--max_new_tokens", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["one_at_a_time"]["images"] == 4 and [b["batch_size"] for b in result["batched"]] == [2, 4]
    assert all(b["images_per_s"] > 0 for b in result["batched"])


def test_third_party_warnings_are_quiet_unless_verbose(peaked_dir, images, capsys):
    """Issue 19: every 4-bit load printed bitsandbytes' 'Failed to load CPU gemm_4bit_forward ...'."""
    import logging

    bnb = logging.getLogger("bitsandbytes")
    argv = ["--model", str(peaked_dir), "--image", str(images[0]), "--max_new_tokens", "2", "--load_in_4bit"]
    assert _cli().main(argv) == 0
    assert "gemm_4bit_forward" not in capsys.readouterr().err
    assert not bnb.isEnabledFor(logging.WARNING)
    assert _cli().main(argv + ["--verbose"]) == 0
    assert bnb.isEnabledFor(logging.WARNING)


def test_batch_output_over_the_split_is_refused(tmp_path, capsys):
    """Beyond the issue's list: test.py --data_path val.jsonl --output val.jsonl replaced the split."""
    split = tmp_path / "val.jsonl"
    split.write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        _cli().main(["--model", str(tmp_path / "m"), "--data_path", str(split), "--output", str(split)])
    assert e.value.code == 2 and "would be overwritten" in capsys.readouterr().err
    assert split.read_text(encoding="utf-8") == '{"id": "a"}\n'


def test_test_py_prints_the_answer_without_library_warnings(tiny_model_dir):
    """A user's `python test.py ...` printed transformers' FutureWarning about the min_pixels/max_pixels
    spelling on every run (the quiet-mode warning filter sat in the verbose branch)."""
    p = subprocess.run([sys.executable, "test.py", "--model", str(tiny_model_dir), "--image",
                        str(REPO_DIR / "image" / "demo.jpg"), "--max_new_tokens", "2"],
                       cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Warning" not in p.stderr, p.stderr[-2000:]
