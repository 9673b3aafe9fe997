"""The training data: read and measured (with the processor only) before the model loads."""

from __future__ import annotations

from vlft.train.data import load_training_data


def test_auto_batch_is_sized_for_the_longest_real_sample(make_cfg, caption_json):
    """The auto micro-batch on CUDA shrinks for long samples (plan.auto_micro_batch); the length it
    is given must be the longest batch row the collator really builds, images included."""
    from vlft.models.loading import load_processor
    from vlft.train.collator import SftCollator

    cfg = make_cfg(eval_data_path=str(caption_json))
    processor = load_processor(cfg.model_name_or_path, cfg.max_pixels, cfg.min_pixels)
    data = load_training_data(cfg, processor)
    collate = SftCollator(processor, cfg.model_max_length)
    rows = [int(collate([s])["attention_mask"].sum()) for ds in (data.train, data.eval) for s in ds]
    assert data.max_len == max(rows) > 0
