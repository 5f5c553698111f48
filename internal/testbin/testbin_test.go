package testbin_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"stagesub.dev/internal/testbin"
)

func TestFreePort(t *testing.T) {
	p := testbin.FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}

func TestTail(t *testing.T) {
	f := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(f, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := testbin.Tail(f, 4); got != "6789" {
		t.Errorf("Tail(4) = %q, want 6789", got)
	}
	if got := testbin.Tail(f, 100); got != "0123456789" {
		t.Errorf("Tail(100) = %q", got)
	}
	if got := testbin.Tail(filepath.Join(t.TempDir(), "none"), 4); got != "" {
		t.Errorf("Tail of a missing file = %q", got)
	}
}

// TestBuildFromBinDir: a STAGESUB_BIN_DIR holding every binary is used as is.
func TestBuildFromBinDir(t *testing.T) {
	dir := t.TempDir()
	for name := range testbin.StageSub {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("STAGESUB_BIN_DIR", dir)
	if got := testbin.Build(t, "/nonexistent"); got != dir {
		t.Errorf("Build = %q, want %q", got, dir)
	}
}
