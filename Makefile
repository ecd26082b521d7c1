# rebalancer — see README.md.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GO_TEST_FLAGS ?=

.PHONY: build test unit lint demo bench fuzz cluster-binaries cluster-up cluster-down clean

build: ## Build bin/rebalancer
	go build -ldflags "$(LDFLAGS)" -o bin/rebalancer ./cmd/rebalancer

cluster-binaries: ## Build etcd, kube-apiserver, scheduler, controller-manager, kubectl and kwok once per machine
	./hack/build-k8s.sh >/dev/null

test: lint cluster-binaries ## Everything CI runs: lint, then every test (the local control plane included)
	go test $(GO_TEST_FLAGS) -count=1 -timeout 60m ./...

unit: ## Tests without building the control plane first
	go test -count=1 ./...

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...

cluster-up: ## Start the local control plane in the background; prints the kubeconfig
	go run ./hack/localcluster up

cluster-down: ## Stop it
	go run ./hack/localcluster down

demo: build ## The main job end to end on a local cluster and git remote (the first run builds the control plane: ~30 min)
	./hack/demo.sh

bench: ## Benchmarks, printed as a table
	./bench/run.sh

fuzz: ## Run every fuzz target for FUZZTIME each (default 2m)
	./hack/fuzz.sh $${FUZZTIME:-2m}

clean:
	rm -rf bin
