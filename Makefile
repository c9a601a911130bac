# One entry point for the common tasks. Every target runs inside the uv workspace (.venv at the root).
SHELL := /bin/bash
UV ?= uv
BUF_VERSION ?= 1.75.0
BUF = npx --yes @bufbuild/buf@$(BUF_VERSION)
# Images of the released protos (`buf build`), one per version: `buf breaking` checks against the newest.
PROTO_RELEASES = proto-definitions/releases
PROTO_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' proto-definitions/pyproject.toml)

.PHONY: help install test test-quick lint bench bench-smoke load format proto proto-check proto-lint proto-release dev seed bootstrap profile compose-validate check-images k8s-validate k8s-local-secrets clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# Bytecode compiled once, at install: the suite starts about 150 service processes, and where
# PYTHONDONTWRITEBYTECODE is set (as on some CI machines) each compiled every module it imports
# from source again: 1.8 s of CPU for a service's imports instead of 0.7.
install: ## install every package and tool from the lock file
	$(UV) sync --frozen --compile-bytecode

# The suite runs on xdist workers (pyproject addopts: -n auto, at most 4 as the PostgreSQL server has room for, grouped by what tests share; see the
# root conftest.py); tests that stop a server every run shares (`serial`, gated by their own
# variables) run after it, alone. Exit code 5 (nothing collected) is not a failure there.
# The suite writes bytecode whatever PYTHONDONTWRITEBYTECODE says: the project's own modules and
# pytest's rewritten test modules are then compiled once, not again in every worker and process
# (10 s of each worker's start went to rewriting and compiling the 460 test modules).
PYTEST = PYTHONDONTWRITEBYTECODE= $(UV) run pytest
test: install ## run the whole test suite against the servers named in the environment
	$(PYTEST) -m "not serial"
	$(PYTEST) -n 0 -m serial || [ $$? -eq 5 ]

test-quick: install ## the quick round (about 70 s here): unit and service suites, gateway over HTTP, manifests, compose; no end-to-end platform, process or outage test
	$(PYTEST) -m "not slow"

lint: install proto-check ## ruff, formatting, mypy and the proto checks
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: install ## apply ruff fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

proto: install ## regenerate proto-definitions/src from the .proto files
	$(UV) run python proto-definitions/scripts/generate.py

proto-check: proto proto-lint ## fail when the generated code differs from the protos
	@git diff --quiet --exit-code -- proto-definitions/src && \
	  test -z "$$(git status --porcelain -- proto-definitions/src)" || \
	  { echo "generated code is out of date: run 'make proto' and commit proto-definitions/src"; git status --short -- proto-definitions/src; exit 1; }

proto-lint: ## buf lint, and buf breaking against the last released protos (skipped, with a note, when npx is missing)
	@if command -v npx >/dev/null 2>&1; then \
	  last=$$(ls $(PROTO_RELEASES)/*.binpb | sort -V | tail -n 1); \
	  cd proto-definitions && $(BUF) lint && echo "buf lint: ok" && \
	  $(BUF) breaking --against "../$$last" && echo "buf breaking: ok against $${last##*/}"; \
	else echo "buf lint and breaking: skipped (npx not found)"; fi

proto-release: ## when a release is cut: keep the image of its protos (version from proto-definitions/pyproject.toml)
	@image=$(PROTO_RELEASES)/v$(PROTO_VERSION).binpb; \
	  if [ -e "$$image" ]; then echo "$$image exists: a released image never changes (bump the version first)"; exit 1; fi; \
	  cd proto-definitions && $(BUF) build --exclude-source-info -o "../$$image" && echo "wrote $$image: commit it"

bench: install ## run every benchmark at its full size and write the tables to bench/RESULTS.md (~15 min; run on a quiet machine)
	$(UV) run python bench/run_benchmarks.py --output bench/RESULTS.md

BENCH_SMOKE_OUTPUT ?= var/bench-smoke.md
bench-smoke: install ## run every benchmark for a few seconds (CI: a broken script fails; figures mean nothing)
	@mkdir -p $(dir $(BENCH_SMOKE_OUTPUT))
	$(UV) run python bench/run_benchmarks.py --smoke --output $(BENCH_SMOKE_OUTPUT)

# The load generator against a running platform (`make dev` in another terminal, or compose).
LOAD_URL ?= http://127.0.0.1:8080
LOAD_USERS ?= 50
LOAD_SPAWN_RATE ?= 10
LOAD_RUN_TIME ?= 2m
LOAD_MIX ?= shop
export LOAD_MIX
load: ## locust headless against LOAD_URL (LOAD_USERS, LOAD_RUN_TIME, LOAD_MIX): summary here, HTML report in var/load/
	@mkdir -p var/load
	$(UV) run --frozen --project loadgenerator locust -f loadgenerator/locustfile.py --headless \
	  --host $(LOAD_URL) --users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) --run-time $(LOAD_RUN_TIME) \
	  --only-summary --html var/load/report.html --csv var/load/locust
	@echo "HTML report: var/load/report.html; CSV: var/load/locust_*.csv"

# Each service's own credentials for `make dev` (made by the first `make bootstrap`, git-ignored);
# honcho reads them after .env, and the Procfile hands each line its own URLs.
DEV_ACCOUNTS ?= var/dev-accounts.env
HONCHO = $(UV) run honcho -e .env,$(DEV_ACCOUNTS)

# Readable coloured lines for a person (honcho pipes the output, so `auto` would choose JSON);
# LOG_FORMAT=json make dev keeps JSON.
dev: export LOG_FORMAT ?= console

# REPLICAS=N runs N replicas of every gRPC service (ports N x 10 apart) behind the one gateway,
# from a Procfile platform-procfile writes; every client's target lists all the replicas.
REPLICAS ?= 1

dev: install bootstrap ## run every service locally (root Procfile, honcho); REPLICAS=2 for two of each
	$(HONCHO) run sh -c 'POSTGRES_URL=$$PRODUCT_POSTGRES_URL exec service-product seed'
	@if [ "$(REPLICAS)" = 1 ]; then $(HONCHO) start; else \
	  $(HONCHO) run platform-procfile --replicas $(REPLICAS) > var/Procfile.replicas && \
	  $(HONCHO) -f var/Procfile.replicas start; fi

seed: install bootstrap ## load the sample catalogue (idempotent)
	$(HONCHO) run sh -c 'POSTGRES_URL=$$PRODUCT_POSTGRES_URL exec service-product seed'

bootstrap: install ## each service's own PostgreSQL role and database, Redis ACL user, RabbitMQ user (idempotent; deploy/accounts)
	$(HONCHO) run platform-bootstrap --dev-credentials $(DEV_ACCOUNTS)

# py-spy (PyPI, run with `uv tool run`) samples the process without stopping it; reading another process's
# memory needs root or CAP_SYS_PTRACE. PYSPY=dump prints every thread's stack once.
PYSPY ?= top
profile: ## live profile of a running local service: make profile SERVICE=service-order [PYSPY=dump]
	@pid=$$(pgrep -nf "bin/$(SERVICE)$$") || { echo "no running process ends with bin/$(SERVICE)"; exit 1; }; \
	  $(UV) tool run py-spy $(PYSPY) --pid $$pid

compose-validate: ## offline checks of the compose environment and Dockerfiles (see its README)
	docker-compose-environment/validate.sh

check-images: install ## build every service image, run each container as its pod runs and wait for its HEALTHCHECK
	docker-compose-environment/check-images.sh

k8s-validate: install ## render the Kubernetes overlays, strict schema validation, checkov, consistency tests (offline)
	deploy/kubernetes/validate.sh

k8s-local-secrets: ## make the local overlay's git-ignored secret files (random passwords, a new signing key)
	deploy/kubernetes/overlays/local/make-secrets.sh

clean: ## remove caches
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache
