PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test test-fast bench lint clean

# Everything a fresh machine needs: virtualenv, the package, tokenizer ranks, JVM jars.
setup: $(STAMP)

$(STAMP): pyproject.toml conf/jvm.yaml
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)" || { echo "Python >= 3.11 is required (set PYTHON=...)"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[spark,dev]"
	$(PY) -m graphgen_spark.cli setup
	touch $@

# The main job on the embedded default: local Spark, tables under ./out/, the sample corpus,
# the bundled stand-in endpoint unless SYNTHESIZER_BASE_URL is set.
demo: setup
	$(PY) -m graphgen_spark.cli demo --output out

test: setup
	$(PY) -m pytest -q --durations=15

test-fast: setup
	$(PY) -m pytest -q -m "not cluster"

bench: setup
	$(PY) -m bench

lint: setup
	$(PY) -m ruff check graphgen_spark jobs tests bench
	$(PY) -m ruff format --check graphgen_spark jobs tests bench

clean:
	rm -rf out spark-warehouse metastore_db derby.log .pytest_cache
