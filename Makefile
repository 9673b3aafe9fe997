# Two entry points for a fresh clone:
#   make demo   create .venv, install, run the whole pipeline on the embedded tiny model
#   make test   install test deps, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
EXTRAS ?= train,app,dev
DEMO   ?= output/demo
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test screenshots clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml scripts/torch_spec.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch in the same pip command as the rest, so no dependency pulls another build.
	$(PY) -m pip install -q $$(PIP="$(PY) -m pip" sh scripts/torch_spec.sh) -e ".[$(EXTRAS)]"
	touch $(STAMP)

# The demo's adapters must visibly learn in about a minute each on a CPU (docs/demo.md says why these
# settings): every Linear of the tiny model's language model, rank 16, a high learning
# rate, 40 steps of 4 samples (about 2 epochs of the sample), images at most 128 x 128 pixels.
DEMO_PIXELS ?= --max_pixels 16384
DEMO_TRAIN  ?= --eval_data_path $(DEMO)/data/val.json --max_steps 40 --per_device_train_batch_size 4 \
	--gradient_accumulation_steps 1 --learning_rate 3e-3 --warmup_ratio 0 --lora_target_modules all \
	--lora_r 16 --lora_alpha 32 --lora_dropout 0 --no-gradient_checkpointing --logging_steps 2 \
	--save_steps 10 --num_sample_predictions 2 --max_new_tokens 16 --swanlab_mode offline $(DEMO_PIXELS)

demo: $(STAMP)
	@echo "== 1/7 data: bundled COCO sample -> CSV (records without images are skipped and listed) -> train/val split"
	$(PY) download_data2csv.py --coco-json data/coco_sample/captions_val2017_coco-mini.json \
	    --images data/coco_sample/images --output $(DEMO)/data/captions.csv \
	    --image-dir $(DEMO)/data/images --all-captions
	$(PY) csv2json.py --csv $(DEMO)/data/captions.csv --json $(DEMO)/data/train.json --val-ratio 0.2 --seed 0
	@echo "== 2/7 model: tiny Qwen3-VL (real tokenizer/template) + a language prior from the train captions (cached)"
	$(PY) download_model.py --tiny --target $(DEMO)/tiny-qwen3-vl --tiny_prior_data $(DEMO)/data/train.json
	@echo "== 3/7 train: LoRA and MoE-LoRA on the train split, eval loss on val, logged to SwanLab (offline)"
	$(PY) lora.py --model $(DEMO)/tiny-qwen3-vl --train_json $(DEMO)/data/train.json \
	    --output_dir $(DEMO)/lora $(DEMO_TRAIN)
	$(PY) MoeLORA.py --model $(DEMO)/tiny-qwen3-vl --train_json $(DEMO)/data/train.json \
	    --output_dir $(DEMO)/moelora $(DEMO_TRAIN)
	@echo "== 4/7 evaluate: base vs LoRA vs MoE-LoRA on the held-out val images (BLEU/ROUGE-L/CIDEr-D) + loss curves"
	$(PY) evaluate.py --model $(DEMO)/tiny-qwen3-vl --adapter $(DEMO)/lora $(DEMO)/moelora \
	    --data_path $(DEMO)/data/val.json --output_dir $(DEMO)/eval --max_new_tokens 16 $(DEMO_PIXELS)
	@echo "== 5/7 export: merge the LoRA into 16-bit weights, then caption with the merged model"
	$(PY) export.py --model $(DEMO)/tiny-qwen3-vl --adapter $(DEMO)/lora --output $(DEMO)/merged --overwrite
	$(PY) test.py --model $(DEMO)/merged --image image/demo.jpg --max_new_tokens 16 $(DEMO_PIXELS)
	@echo "== 6/7 knowledge base: index the sample documents, query in Chinese and English"
	$(PY) -m multi_agent.rag index
	$(PY) -m multi_agent.rag query "如何防止所有词元挤到同一个专家?" --k 3
	$(PY) -m multi_agent.rag query "which LoRA rank and learning rate should I use" --k 3
	@echo "== 7/7 assistant: one turn through Planner/Manager/Knowledge/Responder/Reviewer + summary"
	$(PY) -m multi_agent.assistant --model_dir $(DEMO)/tiny-qwen3-vl --adapter $(DEMO)/lora \
	    --max_new_tokens 32 -q "Describe the image." --image image/demo.jpg --summary $(DEMO_PIXELS)
	@echo
	@echo "demo finished:"
	@echo "  model            $(DEMO)/tiny-qwen3-vl"
	@echo "  data             $(DEMO)/data/{train,val}.json"
	@echo "  adapters         $(DEMO)/lora  $(DEMO)/moelora  (merged: $(DEMO)/merged)"
	@echo "  metrics          $(DEMO)/eval/report.md  $(DEMO)/eval/report.json"
	@echo "  loss curves      $(DEMO)/eval/loss_curves.png"
	@echo "  SwanLab logs     $(DEMO)/lora/swanlog  $(DEMO)/moelora/swanlog  $(DEMO)/eval/swanlog"
	@echo "  session report   multi_agent/output/reports/"

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

# The README pictures of the desktop assistant (docs/app.md): the real window, offscreen, over the
# sample knowledge base, on the scripted demo backend. The Chinese one needs a CJK font (else one line says so).
screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) scripts/screenshots.py --lang en
	QT_QPA_PLATFORM=offscreen $(PY) scripts/screenshots.py --lang zh

clean-demo:
	rm -rf $(DEMO)
