"""torch.compile's persistent caches: one folder, set in one place before the layers compile."""

from __future__ import annotations

import os


def test_compiling_points_pytorchs_caches_at_the_planned_folder(tiny_model_dir, tmp_path, monkeypatch):
    import torch._dynamo
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from transformers import AutoModelForImageTextToText

    from vlft.train import fast
    from vlft.train.config import TrainConfig
    from vlft.train.plan import make_plan
    from vlft.train.recipe import setup_layers

    # torch's own patch() restores its config; monkeypatch's undo left the option hidden ("does not exist")
    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test, like
        monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)         # every variable the cache sets
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
        eager = make_plan(TrainConfig(compile_cache_dir=str(tmp_path / "c")), device="cpu")
        setup_layers(model, eager)
        assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # the eager path touches nothing
        plan = make_plan(TrainConfig(compile=True, compile_mode="default", compile_cache_dir=str(tmp_path / "c")),
                         device="cpu")
        try:
            setup_layers(model, plan)
            folder = (tmp_path / "c").resolve()
            assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder / "inductor")
            assert os.environ["TRITON_CACHE_DIR"] == str(folder / "triton")
            assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
            from torch._inductor.runtime.cache_dir_utils import cache_dir
            assert cache_dir() == str(folder / "inductor")  # what inductor itself will use
        finally:
            fast.uncompile_decoder_layers(model)
            torch._dynamo.reset()
