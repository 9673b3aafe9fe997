"""Training core shared by lora.py and MoeLORA.py: config, collator, recipe, trainer, callbacks."""

from vlft.train.config import MoeTrainConfig, TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Run the whole training stage (see vlft.train.recipe.train)."""
    from vlft.train.recipe import train as _train
    return _train(cfg)


__all__ = ["MoeTrainConfig", "TrainConfig", "train"]
