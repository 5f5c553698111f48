package needbin_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"stagesub.dev/internal/needbin"
)

func TestPath(t *testing.T) {
	if got := needbin.Path(t, "sh", "apt-get install dash"); got == "" {
		t.Error("sh not found on PATH")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool-7f3a")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, want := needbin.Path(t, "tool-7f3a", "none", filepath.Join(dir, "tool-*")), bin; got != want {
		t.Errorf("fallback glob: got %q, want %q", got, want)
	}
}

func TestRequired(t *testing.T) {
	t.Setenv("CI", "true")
	t.Setenv("PGTEST_REQUIRED", "")
	if !needbin.Required() {
		t.Error("CI=true: Required() = false, want true")
	}
	t.Setenv("CI", "")
	t.Setenv("PGTEST_REQUIRED", "1")
	if !needbin.Required() {
		t.Error("PGTEST_REQUIRED=1: Required() = false, want true")
	}
	t.Setenv("PGTEST_REQUIRED", "")
	if needbin.Required() {
		t.Error("neither set: Required() = true, want false")
	}
}

// TestMissingFailsWhenRequired runs Missing in a subprocess with CI=true and
// checks that the test fails rather than skips.
func TestMissingFailsWhenRequired(t *testing.T) {
	if os.Getenv("NEEDBIN_CHILD") == "1" {
		needbin.Path(t, "no-such-binary-7f3a", "nothing to install")
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ci       string
		wantFail bool
	}{{"true", true}, {"", false}} {
		cmd := exec.Command(exe, "-test.run=^TestMissingFailsWhenRequired$", "-test.v")
		cmd.Env = append(os.Environ(), "NEEDBIN_CHILD=1", "CI="+tt.ci, "PGTEST_REQUIRED=")
		out, err := cmd.CombinedOutput()
		if got := err != nil; got != tt.wantFail {
			t.Errorf("CI=%q: failed = %v, want %v\n%s", tt.ci, got, tt.wantFail, out)
		}
	}
}
