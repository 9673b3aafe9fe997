"""Fine-tune Qwen-VL with Mixture-of-Experts LoRA (top-k routed LoRA experts per Linear).

    python MoeLORA.py --model ./qwen3-vl-4b-instruct --train_json ./coco_2014_caption/train.json \
        --output_dir ./output/Qwen3-VL-4Bmoelora [--num_experts 4 --top_k 2 --router_aux_loss_coef 0.01]
"""

import os
import sys


def main(argv=None) -> int:
    # Before torch touches CUDA: grow allocator segments instead of fragmenting them (varying
    # batch shapes), so reserved stays close to allocated (docs/performance.md). A user's own setting wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from vlft.train import MoeTrainConfig
    from vlft.train.cli import main as run
    return run(MoeTrainConfig, argv)


if __name__ == "__main__":
    sys.exit(main())
