// Package acmetest starts real peers for ACME tests: BIND's named (an
// authoritative server for test zones that accepts TSIG-signed dynamic
// updates) and pebble (Let's Encrypt's small ACME test CA), both on loopback
// high ports picked free, in a temporary directory, stopped by tb.Cleanup.
//
// The binaries come from the Debian packages bind9 and pebble. When one is
// missing a test is skipped, except when CI=true (or PGTEST_REQUIRED=1 or
// ACMETEST_REQUIRED=1): then it fails, so CI never passes by skipping.
//
// Tests may run in parallel (every stack has its own ports and temp dirs),
// with one caveat from certmagic: it coordinates TLS handshakes that load
// or obtain a certificate per name across the whole process, so parallel
// tests must use on-demand names of their own (shop-a.customer.test,
// shop-b.customer.test), or one test may be handed another's certificate.
//
// Typical use (see router/acme/acme_test.go):
//
//	st := acmetest.Start(t, acmetest.StackConfig{Base: "stagesub.test",
//		Customers: []acmetest.Zone{{Name: "customer.test", Hosts: []string{"shop"}}},
//		HTTPPort: httpPort, TLSPort: tlsPort}) // the router's listener ports
//	cfg := st.Config(t)                      // acme.Config for acme.New
//	env := st.Environ(t.TempDir())           // or the same as env vars for the binary
//	roots := st.Pebble.Roots(t)              // verify served chains
//	n := st.Pebble.Orders()                  // orders so far
package acmetest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/syncbuf"
)

// LookPath returns the path of the named binary, searched in PATH and then
// in /usr/sbin and /usr/bin (Debian puts named in /usr/sbin, which is not
// always in a test's PATH). When it is missing it skips tb, or fails tb if
// CI=true, PGTEST_REQUIRED=1 (needbin.Required) or ACMETEST_REQUIRED=1.
func LookPath(tb testing.TB, name string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := "acmetest: " + name + " not found; install the Debian packages bind9 bind9-utils pebble"
	if os.Getenv("ACMETEST_REQUIRED") == "1" {
		tb.Fatal(msg)
	}
	needbin.Missing(tb, msg) // fails when CI=true or PGTEST_REQUIRED=1
	return ""
}

// startProcess starts cmd, its output collected in log, and calls ready
// every 50ms until it returns nil, the process exits or 15s pass. On success
// the process is stopped by tb.Cleanup, which shows its log when tb failed;
// otherwise it is stopped and the last error returned.
func startProcess(tb testing.TB, name string, cmd *exec.Cmd, log *syncbuf.Buffer, ready func() error) error {
	tb.Helper()
	dieWithParent(cmd)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("acmetest: start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if err := poll(name, done, ready); err != nil {
		stop(cmd, done)
		return err
	}
	tb.Cleanup(func() {
		stop(cmd, done)
		if tb.Failed() {
			tb.Logf("%s log:\n%s", name, log.String())
		}
	})
	return nil
}

// poll calls ready every 50ms until it returns nil, done is closed (the
// process exited) or 15s pass; it returns the last error.
func poll(name string, done <-chan struct{}, ready func() error) error {
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited", name)
		default:
		}
		if err = ready(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// stop kills cmd and waits for it; safe to call once the process started.
func stop(cmd *exec.Cmd, done <-chan struct{}) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}
