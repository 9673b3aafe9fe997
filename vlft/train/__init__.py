"""Training core shared by lora.py and MoeLORA.py: config -> plan -> recipe -> trainer (docs/architecture.md)."""

from vlft.train.config import MoeTrainConfig, TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Run the whole training stage (see vlft.train.recipe.FinetuneRecipe)."""
    from vlft.train.recipe import train as _train
    return _train(cfg)


def __getattr__(name: str):
    if name == "FinetuneRecipe":  # imported lazily: the recipe pulls in transformers
        from vlft.train.recipe import FinetuneRecipe
        return FinetuneRecipe
    raise AttributeError(f"module 'vlft.train' has no attribute {name!r}")


__all__ = ["FinetuneRecipe", "MoeTrainConfig", "TrainConfig", "train"]
