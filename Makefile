# Image used by deploy, build-installer and docker-build.
IMG ?= ghcr.io/tlsbootstrap/tls-bootstrap-operator:v0.1.0

# Built tools and the local control plane live in bin/ (git-ignored).
LOCALBIN ?= $(shell pwd)/bin
K8S_BIN ?= $(LOCALBIN)/k8s
$(LOCALBIN):
	mkdir -p $(LOCALBIN)

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

KUBECTL ?= $(K8S_BIN)/kubectl

# Generated files: `make verify` regenerates these and fails when they differ.
GENERATED := api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/role.yaml

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and the operator's ClusterRole from markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run --timeout 10m

.PHONY: verify
verify: controller-gen ## Regenerate code and manifests; fail when the committed ones are stale.
	@snap=$$(mktemp -d); \
	for f in $(GENERATED); do mkdir -p $$snap/$$(dirname $$f); cp -r $$f $$snap/$$f; done; \
	$(MAKE) --no-print-directory manifests generate >/dev/null; \
	stale=0; for f in $(GENERATED); do diff -ru $$snap/$$f $$f || stale=1; done; \
	rm -rf $$snap; \
	if [ $$stale = 1 ]; then echo "generated files were stale: commit the regenerated ones"; exit 1; fi; \
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

.PHONY: test
test: verify vet lint controlplane build kustomize ## Everything that runs locally: unit, fuzz seeds, envtest and end-to-end.
	KUBEBUILDER_ASSETS=$(K8S_BIN) OPERATOR_BIN=$(LOCALBIN)/manager KUSTOMIZE=$(KUSTOMIZE) \
		go test ./... -count=1 -timeout 40m -coverprofile cover.out

.PHONY: test-unit
test-unit: ## Only the pure packages (no API server).
	go test ./api/... ./internal/... -count=1

.PHONY: bench
bench: controlplane build ## Approval throughput, latency and memory on the local control plane, plus Go benchmarks.
	go test ./internal/... -run '^$$' -bench . -benchmem -benchtime 2000x
	KUBEBUILDER_ASSETS=$(K8S_BIN) go run ./test/bench -operator $(LOCALBIN)/manager $(BENCH_ARGS)

.PHONY: controlplane
controlplane: ## Build kube-apiserver, etcd, kubectl, kube-controller-manager and kubelet v1.37.2 from source into bin/k8s (skipped when present).
	hack/build-controlplane.sh $(K8S_BIN)

##@ Build

.PHONY: build
build: ## Build the manager binary.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/manager .

.PHONY: run
run: ## Run the manager against the cluster of the current kubeconfig.
	go run . --metrics-bind-address=:8080 --metrics-secure=false

.PHONY: demo
demo: controlplane build ## A local control plane, the operator, the sample policy and a real kubelet joining.
	KUBEBUILDER_ASSETS=$(K8S_BIN) go run ./hack/demo -operator $(LOCALBIN)/manager -sample config/samples/bootstrap_v1alpha1_bootstrappolicy.yaml

.PHONY: docker-build
docker-build: ## Build the operator image (needs a Docker engine).
	docker build -t $(IMG) .

# The image is set in a throwaway overlay under dist/ (git-ignored), so building with
# another IMG never edits a tracked file; config/manager names the released image.
RELEASE_IMAGE := ghcr.io/tlsbootstrap/tls-bootstrap-operator
define overlay
rm -rf dist/overlay && mkdir -p dist/overlay
cd dist/overlay && $(KUSTOMIZE) create --resources ../../config/default && $(KUSTOMIZE) edit set image $(RELEASE_IMAGE)=$(IMG)
endef

.PHONY: build-installer
build-installer: manifests kustomize ## Write dist/install.yaml: namespace, CRD, RBAC, Deployment and metrics Service in one file.
	$(overlay)
	$(KUSTOMIZE) build dist/overlay > dist/install.yaml

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD (and with it every policy) from the cluster.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator with image IMG.
	$(overlay)
	$(KUSTOMIZE) build dist/overlay | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools (pinned, built with go install into bin/)

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
GINKGO ?= $(LOCALBIN)/ginkgo

CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT_VERSION ?= v2.15.0
GINKGO_VERSION ?= $(shell go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)

.PHONY: controller-gen kustomize golangci-lint ginkgo
controller-gen: $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))
kustomize: $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))
golangci-lint: $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))
ginkgo: $(LOCALBIN)
	$(call go-install-tool,$(GINKGO),github.com/onsi/ginkgo/v2/ginkgo,$(GINKGO_VERSION))

# go-install-tool installs package $(2) at version $(3) as $(1)-$(3), linked from $(1),
# so a version bump in this file rebuilds the tool and nothing else does.
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$$(basename $(1))-$(3)" ] || { \
set -e; \
echo "Installing $(2)@$(3)"; \
rm -f "$(1)"; \
GOBIN="$(LOCALBIN)" GOFLAGS=-mod=mod go install "$(2)@$(3)"; \
mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)"; \
ln -sf "$$(basename $(1))-$(3)" "$(1)"; \
}
endef
