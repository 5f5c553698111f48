// Package needbin finds the external programs a test needs (postgres,
// pebble, named, prometheus, chromium, ...). A missing program skips the
// test on a developer's machine but fails it when the run is required to be
// complete: CI=true or PGTEST_REQUIRED=1, as scripts/test sets. No test of
// the project may pass in CI by skipping over a missing binary.
package needbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Required reports whether a missing program must fail the test:
// CI=true or PGTEST_REQUIRED=1.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("PGTEST_REQUIRED") == "1"
}

// Missing ends the test because a program it needs is unavailable: tb.Fatal
// when Required, else tb.Skip. why says what is missing and how to install it.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	if Required() {
		tb.Fatalf("%s (required: CI=true or PGTEST_REQUIRED=1)", why)
		return // for a testing.TB whose Fatalf does not stop the goroutine
	}
	tb.Skipf("%s (set CI=true to fail instead)", why)
}

// Path returns the path of program name on PATH, or of the first of
// fallbacks (absolute paths or globs) that exists. When none is found it
// calls Missing with install, e.g. "apt-get install pebble".
func Path(tb testing.TB, name, install string, fallbacks ...string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, f := range fallbacks {
		m, _ := filepath.Glob(f)
		for _, p := range m {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
	}
	Missing(tb, name+" not found on PATH ("+install+")")
	return ""
}
