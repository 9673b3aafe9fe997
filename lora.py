"""Fine-tune Qwen-VL with LoRA / DoRA / IA3 (QLoRA by default on CUDA).

    python lora.py --model ./qwen3-vl-4b-instruct --train_json ./coco_2014_caption/train.json \
        --output_dir ./output/Qwen3-VL-4Blora [--adapter lora|dora|ia3] [--config configs/lora.yaml]
"""

import os
import sys


def main(argv=None) -> int:
    # Before torch touches CUDA: grow allocator segments instead of fragmenting them (varying
    # batch shapes), so reserved stays close to allocated (docs/performance.md). A user's own setting wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from vlft.train import TrainConfig
    from vlft.train.cli import main as run
    return run(TrainConfig, argv)


if __name__ == "__main__":
    sys.exit(main())
