"""Fine-tune Qwen-VL with Mixture-of-Experts LoRA (top-k routed LoRA experts per Linear).

    python MoeLORA.py --model ./qwen3-vl-4b-instruct --train_json ./coco_2014_caption/train.json \
        --output_dir ./output/Qwen3-VL-4Bmoelora [--num_experts 4 --top_k 2 --router_aux_loss_coef 0.01]
"""


def main(argv=None) -> int:
    from vlft.train.cli import moelora_main
    return moelora_main(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
