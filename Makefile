# codex-shield: every task a newcomer or CI needs, one command each.
CARGO ?= cargo
MUSL  := x86_64-unknown-linux-musl

.PHONY: run build test check fmt clippy links torture static image replicas longstreams manifests e2e bench soak monitoring fuzz clean

run: ## start the proxy with ./.env (cp .env.example .env first)
	$(CARGO) run --release --quiet --

build: ## release binary at target/release/codex-shield
	$(CARGO) build --release

test: ## unit and integration tests (no network), and the vendored tiny_http's own tests
	$(CARGO) test --all-targets
	$(CARGO) test -p tiny_http --lib

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

links: ## every relative link in the Markdown files resolves
	bash scripts/check_links.sh

check: fmt clippy links test ## the project gate: fmt, clippy -D warnings, links, tests

static: ## static musl binary at target/$(MUSL)/release/codex-shield
	bash scripts/static.sh

image: ## container image localhost/codex-shield (FROM scratch, static binary), smoke-tested
	bash scripts/image.sh

replicas: ## three proxy containers behind nginx, upstream faults, one replica restarted mid-run
	bash tests/replicas/run.sh

longstreams: ## one instance holding 500/1000/2000 concurrent 10 s answers (bench/LONGSTREAMS.md)
	bash bench/longstreams.sh

manifests: ## validate deploy/kubernetes against the Kubernetes schemas, offline
	bash deploy/kubernetes/validate.sh

e2e: ## real clients (Codex CLI; the openai Python and node SDKs, Vercel AI, LangChain, the Agents SDK) through the proxy
	bash tests/e2e/run.sh

bench: ## floor, nginx, the baseline (bench/BASELINE) and this build, Content-Length and chunked upstreams; writes bench/RESULTS.md
	bash bench/run.sh

monitoring: ## a real Prometheus and headless Chromium read /metrics and /status after known faults
	bash tests/monitoring/run.sh

torture: ## exhaustion at full size: descriptors, slow clients, memory per request, dripping upstreams
	bash tests/torture/run.sh

soak: ## thousands of requests against a fault-injecting mock
	bash tests/soak/run.sh

clean:
	$(CARGO) clean
