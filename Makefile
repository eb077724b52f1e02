# The two README commands: `make play` (the playground) and `make test` (the whole suite).
# Both create the virtual environment first; nothing needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: play test docs tmux chromium lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
	touch $(STAMP)

play: $(STAMP)
	$(BIN)/wmtui $(ARGS)

# Two processes, each test module whole on one (its module fixtures built once): measured 338 s
# against 629 s serial on 2 quiet cores. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: $(STAMP) tmux chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The playground's end-to-end test drives the real app in tmux; install it where we can.
tmux:
	@command -v tmux >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq tmux >/dev/null) \
		|| echo "tmux not installed: the terminal test will be skipped"; }

# The report test renders a report in headless Chromium; install it where we can.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the browser test of reports will be skipped"; }

# The documentation site (mkdocs.yml) into site/; the `docs` extra is installed when missing.
docs: $(STAMP)
	@$(BIN)/python -c "import mkdocs, material" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache site
