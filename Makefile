# The two commands a newcomer runs (both bootstrap the environment first):
#   make demo   - the main job
#   make test   - the test suite (what CI runs)
.PHONY: env demo test test-slow

env:
	bash scripts/setup_env.sh

demo:
	bash scripts/run_demo.sh

test:
	bash scripts/run_tests.sh

test-slow:
	bash scripts/run_tests.sh -m slow
