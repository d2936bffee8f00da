# `make test` and `make demo` work on a fresh clone: they create .venv and install into it.
# `make demo` needs only the runtime (tensorflow, numpy, safetensors, tokenizers); `make test`
# adds the test extra (pytest, the CPU torch, transformers, apache-beam, lm-eval and accelerate for the
# harness test).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
RUNTIME := $(VENV)/.runtime-installed
STAMP := $(VENV)/.installed
# transformers 4.55.4, the last release with contrastive search in its core: the reference of
# tests/test_contrastive.py and of `make bench`'s contrastive row, in a venv of its own
REF_VENV ?= .venv-ref
REF := $(REF_VENV)/.installed

.PHONY: test soak demo bench docs clean reference-venv

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	# the CPU build of torch on local disk, before transformers can ask for a multi-GB CUDA one
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

$(REF):
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q --upgrade pip
	$(REF_VENV)/bin/python -m pip install -q torch==2.13.0
	$(REF_VENV)/bin/python -m pip install -q "transformers==4.55.4" safetensors
	touch $(REF)

reference-venv: $(REF)

test: $(STAMP) $(REF)
	$(PY) tests/suite.py -q

soak: $(STAMP) $(REF)
	# the tests marked slow, grouped and run as `make test` runs the default ones
	$(PY) tests/suite.py -q -m slow

bench: $(STAMP) $(REF)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_generate.py $(BENCH_ARGS)

docs: $(RUNTIME)
	$(PY) -c "import minigen.generation.options as o; print(o.markdown(), end='')" > docs/options.md

demo: $(RUNTIME)
	$(PY) -m minigen.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(REF_VENV) build *.egg-info
