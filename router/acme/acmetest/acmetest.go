// Package acmetest starts real peers for ACME tests: BIND's named (an
// authoritative server for test zones that accepts TSIG-signed dynamic
// updates) and pebble (Let's Encrypt's small ACME test CA), both on loopback
// high ports picked free, in a temporary directory, stopped by tb.Cleanup.
//
// The binaries come from the Debian packages bind9 and pebble. When one is
// missing a test is skipped, except when CI=true (or ACMETEST_REQUIRED=1):
// then it fails, so CI never passes by skipping.
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
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// LookPath returns the path of the named binary, searched in PATH and then
// in /usr/sbin and /usr/bin (Debian puts named in /usr/sbin, which is not
// always in a test's PATH). When it is missing it skips tb, or fails tb if
// CI=true or ACMETEST_REQUIRED=1.
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
	if os.Getenv("CI") == "true" || os.Getenv("ACMETEST_REQUIRED") == "1" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// logBuffer collects a process's output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(substr string) int {
	return strings.Count(b.String(), substr)
}

// stop kills cmd and waits for it; safe to call once the process started.
func stop(cmd *exec.Cmd, done <-chan struct{}) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}
