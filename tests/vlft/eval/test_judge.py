"""LLM-as-judge: score parsing, the OpenAI-compatible backend over real HTTP, one-line failures."""

from __future__ import annotations

import socket

import pytest

from vlft.eval.judge import JUDGE_PROMPT, JudgeError, OpenAIJudge, build_prompt, judge_rows, parse_score


@pytest.mark.parametrize("text,score", [
    ('{"score": 4, "reason": "ok"}', 4),
    ('Sure! ```json\n{"score": "5", "reason": "exact"}\n```', 5),
    ("Score: 2/5 - the dog is wrong", 2),
    ('{"score": 9}', None),
    ("no idea", None),
    ("3.5 out of 5", 4),
    ("7 out of 10", None),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_prompt_has_all_references_and_candidate():
    p = build_prompt("a dog on grass", ["A dog runs.", "一只狗在草地上奔跑"])
    assert "- A dog runs.\n- 一只狗在草地上奔跑" in p and "a dog on grass" in p and '"score"' in p


def test_openai_compatible_judge(fake_openai):
    judge = OpenAIJudge(fake_openai.url, "judge-model", api_key="k")
    rows = [{"id": "1", "prediction": "a man", "references": ["A man cooks."]},
            {"id": "2", "prediction": "", "references": ["A cat."]}]
    res = judge_rows(judge, rows)
    assert res.mean == 4 and res.n_scored == 2 and res.n_unparsed == 0
    req = fake_openai.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "judge-model"
    assert req["body"]["temperature"] == 0 and req["auth"] == "Bearer k"
    assert req["body"]["messages"][0]["content"] == build_prompt("a man", ["A man cooks."], JUDGE_PROMPT)
    assert res.items[1]["answer"] and res.items[1]["score"] == 4


def test_unreachable_judge_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    judge = OpenAIJudge(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5)
    with pytest.raises(JudgeError) as e:
        judge.complete("hi")
    assert "\n" not in str(e.value) and f"127.0.0.1:{port}" in str(e.value)
    with pytest.raises(JudgeError, match="--judge-model"):
        OpenAIJudge("http://127.0.0.1:1/v1", "")


def test_local_judge_keeps_prompt_and_raw_answer(peaked_dir, val_split):
    """The local model as judge (sees the image): a random model gives no score -> counted, not fatal."""
    import json

    from vlft.eval.judge import LocalJudge
    from vlft.infer import VLGenerator

    rec = json.loads(val_split.read_text(encoding="utf-8"))[0]
    image = rec["messages"][0]["content"][0]["image"]
    judge = LocalJudge(VLGenerator(peaked_dir, precision="none"), max_new_tokens=6)
    res = judge_rows(judge, [{"id": rec["id"], "prediction": "a man cooking", "references": rec["references"],
                              "image": image}])
    item = res.items[0]
    assert judge.name.startswith("local:") and item["prompt"] == build_prompt("a man cooking", rec["references"])
    assert isinstance(item["answer"], str) and res.n_scored + res.n_unparsed == 1


def test_judge_failure_is_recorded_not_fatal(capsys):
    from vlft.eval.run import EvalConfig, run_judge

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = EvalConfig(data_path="val.json", judge_url=f"http://127.0.0.1:{port}/v1", judge_model="m")
    assert cfg.judge == "openai"  # --judge-url alone selects the OpenAI-compatible judge
    out = run_judge(cfg, {"base": [{"id": "1", "prediction": "a", "references": ["b"]}]})
    assert "error" in out and out["prompt_template"] == JUDGE_PROMPT
    assert capsys.readouterr().err.count("error:") == 1
