"""Fine-tune Qwen-VL with LoRA / DoRA / IA3 (QLoRA by default on CUDA).

    python lora.py --model ./qwen3-vl-4b-instruct --train_json ./coco_2014_caption/train.json \
        --output_dir ./output/Qwen3-VL-4Blora [--adapter lora|dora|ia3] [--config configs/lora.yaml]
"""


def main(argv=None) -> int:
    from vlft.train.cli import lora_main
    return lora_main(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
