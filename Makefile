# keywarden — build, test and run locally.
#
#   make check                     the fast lane: go test -short (no moto, no emulator), gofmt, go vet
#   make test                      every test, then lint (what .ci/run runs)
#   make lint                      gofmt, go vet, staticcheck, cfn-lint (template.yaml in both modes, member.yaml)
#   make build                     every function's Lambda bootstrap, into bin/<LogicalId>/
#   make local-up / local-down     the embedded local stack (moto + the Lambda emulator)
#   make invoke FN=<LogicalId> EVENT=<file>
#   make emit EVENT=<file>         deliver an event through template.yaml's EventBridge rules
#   make demo                      the story so far, on the local stack
#   make demo-org                  one incident across an organisation's accounts, fixed in each
#   make bench / make bench-scale / make bench-latency / make bench-cold / make bench-org / make fuzz
#
# `sam build` calls build-<LogicalId> (BuildMethod: makefile) with ARTIFACTS_DIR set.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# FUNCTIONS maps each template.yaml logical ID to its folder under functions/.
FUNCTIONS := \
	KeyEventFunction:key-event \
	RdsEventFunction:rds-event \
	SlackActionFunction:slack-action \
	RemediateFunction:remediate \
	ReconcileFunction:reconcile

function_ids = $(foreach f,$(FUNCTIONS),$(word 1,$(subst :, ,$(f))))
function_dir = $(word 2,$(subst :, ,$(filter $(1):%,$(FUNCTIONS))))
# Functions whose folder exists: the others are still being written.
built_ids = $(foreach id,$(function_ids),$(if $(wildcard functions/$(call function_dir,$(id))/*.go),$(id)))

# Lambda's build: Linux on Graviton, static, the RPC-free runtime, and one -ldflags only (a
# second would replace the first).
LAMBDA_GOENV := GOOS=linux GOARCH=arm64 CGO_ENABLED=0
LAMBDA_FLAGS := -tags lambda.norpc -trimpath -ldflags='-s -w'

GO_TEST_TIMEOUT ?= 15m
# -race doubles compile time but the tests are I/O bound on moto and the emulator; turn it off
# with RACE= when iterating.
RACE ?= -race
FUZZTIME ?= 15s

define build_function
.PHONY: build-$(1)
build-$(1):
	@test -n "$$(ARTIFACTS_DIR)" || { echo "build-$(1): ARTIFACTS_DIR is not set (sam build sets it; or use make build)" >&2; exit 2; }
	$(LAMBDA_GOENV) go build $(LAMBDA_FLAGS) -o $$(ARTIFACTS_DIR)/bootstrap ./functions/$(2)
endef
$(foreach id,$(function_ids),$(eval $(call build_function,$(id),$(call function_dir,$(id)))))

.PHONY: help
help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

.PHONY: build
build:
	@$(if $(built_ids),,echo "no function folders yet" >&2;)
	@$(foreach id,$(built_ids),$(MAKE) --no-print-directory build-$(id) ARTIFACTS_DIR=$(CURDIR)/bin/$(id) &&) true

# The Go tests start what they need themselves: moto through internal/awstest, the emulator
# through cmd/keywarden/internal/stack. Nothing is started by hand here.
.PHONY: test
test:
	go test $(RACE) -count=1 -timeout $(GO_TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory lint

# The fast lane: every test that needs neither moto nor the Lambda emulator (those skip under
# -short, saying what they need), then gofmt and go vet. Under a minute from a warm build cache.
.PHONY: check
check:
	go test -short -count=1 -timeout 5m ./...
	$(MAKE) --no-print-directory gofmt-check
	go vet ./...

.PHONY: gofmt-check
gofmt-check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l: not formatted:" >&2; echo "$$unformatted" >&2; exit 1; fi

.PHONY: lint
lint:
	$(MAKE) --no-print-directory gofmt-check
	go vet ./...
	go tool staticcheck ./...
	cfn-lint template.yaml member.yaml
	$(MAKE) --no-print-directory lint-org

# template.yaml in organization mode (issue 13). cfn-lint runs SAM's transform with the
# parameters' defaults, so it lints a copy whose defaults say organization.
.PHONY: lint-org
lint-org:
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	sed -e '/^  DeploymentMode:/,/^  [A-Z]/ s/^    Default: account$$/    Default: organization/' \
	    -e '/^  OrganizationId:/,/^  [A-Z]/ s/^    Default: ""$$/    Default: o-a1b2c3d4e5/' template.yaml > "$$tmp/template.yaml"; \
	grep -q '^    Default: organization$$' "$$tmp/template.yaml" && grep -q '^    Default: o-a1b2c3d4e5$$' "$$tmp/template.yaml" || \
	  { echo "lint-org: could not set DeploymentMode=organization in a copy of template.yaml" >&2; exit 1; }; \
	echo "cfn-lint template.yaml (DeploymentMode=organization)"; cfn-lint "$$tmp/template.yaml"

.PHONY: local-up
local-up:
	@go run ./cmd/keywarden local up

.PHONY: local-down
local-down:
	@go run ./cmd/keywarden local down

.PHONY: invoke
invoke:
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<LogicalId> EVENT=<event file>" >&2; exit 2; }
	@go run ./cmd/keywarden local invoke "$(FN)" "$(EVENT)"

# Like invoke, but the event goes through the template's EventBridge rules (loaded into the local
# EventBridge) to whichever functions they match; EMIT_FLAGS=--route-only shows the match only.
.PHONY: emit
emit:
	@test -n "$(EVENT)" || { echo "usage: make emit EVENT=<event file> [EMIT_FLAGS='--route-only --json']" >&2; exit 2; }
	@go run ./cmd/keywarden local emit $(EMIT_FLAGS) "$(EVENT)"

.PHONY: demo
demo:
	@go run ./cmd/keywarden local demo

# Issue 13: the organisation story on the local stack (one moto, four accounts).
.PHONY: demo-org
demo-org:
	@go run ./cmd/keywarden local demo-org

# The blast radius at 2,000 clusters seeds moto for minutes: it has a target of its own.
.PHONY: bench
bench:
	go test -run '^$$' -bench . -skip FindAtScale -benchmem -timeout $(GO_TEST_TIMEOUT) ./...

# Each function's cold start under the emulator against an aws-lambda-go hello world (issue 12).
.PHONY: bench-cold
bench-cold:
	@go run ./cmd/keywarden local bench-cold

.PHONY: bench-scale
bench-scale:
	go test -run '^$$' -bench FindAtScale -benchtime 3x -timeout 30m ./internal/blast/

# The blast radius at the API floor (issue 14): 1,000 clusters seeded into a moto of its own, then
# the finder and a plain sequential lister through a proxy adding 250 ms per call. Minutes.
.PHONY: bench-latency
bench-latency:
	KEYWARDEN_BENCH_LATENCY=1 go test -run '^$$' -bench '^BenchmarkLatency$$' -benchtime 1x -timeout 30m ./internal/blast/

# One key followed across an organisation (issue 13): 20 accounts of 50 Aurora clusters each,
# through proxies adding 50 ms per AWS call, keywarden against a sequential account-by-account
# peer in the same run. About a minute, most of it seeding.
.PHONY: bench-org
bench-org:
	KEYWARDEN_BENCH_ORG=1 go test -run '^$$' -bench '^BenchmarkOrgRadius$$' -benchtime 1x -timeout 30m ./internal/org/

# Each Fuzz target for FUZZTIME: go test -fuzz takes one target of one package at a time.
.PHONY: fuzz
fuzz:
	@for pkg in $$(go list ./...); do \
		for target in $$(go test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done
