// Package testbin is the test kit for tests that run the StageSub binaries:
// it builds them once, hands out free TCP ports and checks for PostgreSQL
// (external programs: package needbin).
package testbin

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/pgtest"
)

// NeedPostgres skips (or fails when required) a test without the PostgreSQL
// server binaries that pgtest finds.
func NeedPostgres(tb testing.TB) {
	tb.Helper()
	if _, err := pgtest.BinDir(); err != nil {
		needbin.Missing(tb, err.Error()+" (apt-get install postgresql)")
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StageSub maps each StageSub binary to its module directory and main package.
var StageSub = map[string][2]string{
	"stagesub-router": {"router", "./cmd/stagesub-router"},
	"stagesub-app":    {"app", "./cmd/stagesub-app"},
	"stagesub-admin":  {"admin", "./cmd/stagesub-admin"},
	"stagesubctl":     {"deploy", "./cmd/stagesubctl"},
	"stagesub-consul": {"registry", "./cmd/stagesub-consul"},
}

// Build returns a directory holding the StageSub binaries: $STAGESUB_BIN_DIR
// when it has them all (scripts/test builds them once), else a temp dir it
// builds them into, two at a time. root is the checkout (holding go.work).
func Build(tb testing.TB, root string) string {
	tb.Helper()
	if dir := os.Getenv("STAGESUB_BIN_DIR"); dir != "" {
		all := true
		for name := range StageSub {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				all = false
			}
		}
		if all {
			tb.Logf("using binaries from STAGESUB_BIN_DIR=%s", dir)
			return dir
		}
		tb.Logf("STAGESUB_BIN_DIR=%s lacks some binaries; building them", dir)
	}
	dir := tb.TempDir()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(StageSub))
	sem := make(chan struct{}, 2)
	for name, mp := range StageSub {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), mp[1])
			cmd.Dir = filepath.Join(root, mp[0])
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("go build %s: %v\n%s", name, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := false
	for err := range errs {
		tb.Error(err)
		failed = true
	}
	if failed {
		tb.FailNow()
	}
	tb.Logf("built the binaries in %s", time.Since(start).Round(time.Millisecond))
	return dir
}

// Tail returns at most the last n bytes of a file (for failure messages).
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
