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

.PHONY: install demo test clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml scripts/torch_spec.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch in the same pip command as the rest, so no dependency pulls another build.
	$(PY) -m pip install $$(PIP="$(PY) -m pip" sh scripts/torch_spec.sh) -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) download_model.py --tiny --target $(DEMO)/tiny-qwen3-vl
	$(PY) download_data2csv.py --coco-json data/coco_sample/captions_val2017_coco-mini.json \
	    --images data/coco_sample/images --output $(DEMO)/data/captions.csv \
	    --image-dir $(DEMO)/data/images --all-captions
	$(PY) csv2json.py --csv $(DEMO)/data/captions.csv --json $(DEMO)/data/train.json --val-ratio 0.2 --seed 0
	@echo
	@echo "demo finished: model $(DEMO)/tiny-qwen3-vl, data $(DEMO)/data"

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO)
