# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up first.
# TORCH picks the torch build to install when the virtualenv has none (CI: TORCH=torch==2.13.0).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch>=2.3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convnet-installed
DEMO := out/demo

.PHONY: setup demo test bench proto clean fuzz

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $(STAMP)

CONVNET := $(VENV)/bin/convnet
NET := prototxt/alexnet.prototxt

demo: setup
	@mkdir -p $(DEMO)
	@echo "== 1. the graph: shapes, parameters, multiply-adds"
	$(CONVNET) build $(NET)
	@echo "== 2. seeded weights from the net's fillers, written as a caffemodel and read back"
	$(CONVNET) init $(NET) -o $(DEMO)/alexnet.caffemodel --seed 1
	$(CONVNET) build $(NET) --weights $(DEMO)/alexnet.caffemodel --json > $(DEMO)/build.json
	@echo "== 3. classify an image (a generated one: the weights are untrained, the path is real)"
	$(PY) tools/make_demo_image.py $(DEMO)/demo.png
	$(CONVNET) run $(NET) --weights $(DEMO)/alexnet.caffemodel $(DEMO)/demo.png --mean-value 104,117,123 --top-k 3
	@echo "== 4. export to ONNX, checked in ONNX Runtime against PyTorch"
	$(CONVNET) export $(NET) --weights $(DEMO)/alexnet.caffemodel --onnx $(DEMO)/alexnet.onnx
	@echo "== 5. layer-by-layer diff: PyTorch vs ONNX Runtime, and the prototxt vs the Caffe2 listing"
	$(CONVNET) diff $(NET) --weights $(DEMO)/alexnet.caffemodel --against onnxruntime
	$(CONVNET) diff $(NET) prototxt/alexnet_caffe2.txt --weights $(DEMO)/alexnet.caffemodel

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

# 10,000 mutated inputs per reader (prototxt, Caffe2 listing, solver, shapes, caffemodel,
# binaryproto, solverstate, Datum, images): cases and failures per target.
fuzz: setup
	$(PY) tools/fuzz.py --cases 10000

bench: setup
	$(PY) bench/run.py

proto: setup
	$(PY) tools/gen_proto.py

clean:
	rm -rf out build *.egg-info .pytest_cache
