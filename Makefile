# The two commands of the README.  Each installs what it needs first.
PY ?= python3

.PHONY: demo test setup bench
setup:
	@PY="$(PY)" bash scripts/setup.sh

demo: setup
	$(PY) -m dyadsim.demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) benchmarks/bench_core.py --skip-ode
	$(PY) benchmarks/bench_spice.py --skip-tran
