# StageSub: thin wrappers around scripts/ (the scripts are the real entry points).
.PHONY: all build dev dev-detach stop test bench fmt vet clean

all: build

build:            ## bin/stagesub-router, -app, -admin, stagesubctl, stagesub-consul
	scripts/build

dev:              ## the whole stack in the foreground (Ctrl-C stops it)
	scripts/dev

dev-detach:       ## the whole stack in the background
	scripts/dev --detach

stop:             ## stop a detached dev stack
	scripts/dev stop

test:             ## every module's tests, the Consul conformance run, the e2e tests
	scripts/test

bench:            ## every benchmark; rewrites docs/benchmarks.md
	scripts/bench

fmt:
	for m in registry internal app router admin deploy; do (cd $$m && gofmt -w .); done

vet:
	for m in registry internal app router admin deploy; do (cd $$m && go vet ./...) || exit 1; done

clean:            ## remove build output and test artifacts (not .stagesub/)
	rm -rf bin test-artifacts
