// Package e2e holds StageSub's whole-system test (e2e_test.go): the five
// binaries as real processes on free loopback ports in temporary
// directories, a real PostgreSQL server, the Consul stand-in, Debian's
// prometheus scraping every instance, and headless Chromium logging in
// through the router over TLS.
//
// The binaries come from $STAGESUB_BIN_DIR when it holds all five (as
// scripts/build writes them to bin/), else the test builds them with
// `go build`. Logs, the Prometheus configuration and the browser screenshots
// are written to $STAGESUB_ARTIFACTS_DIR/e2e (default
// <repo>/test-artifacts/e2e). Missing external binaries (postgres,
// prometheus, chromium) skip the test on a laptop and fail it when CI=true.
package e2e
