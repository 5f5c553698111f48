package ctl_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
	"stagesub.dev/deploy/local"
	"stagesub.dev/registry"
)

// TestCreateStartLocal creates a tenant with --start on the local target
// running the real stagesub-app binary: the app gets its DATABASE_URL from
// the env file (a password-checked TCP login), registers in Consul, and its
// instance turns up passing in `tenant show`.
func TestCreateStartLocal(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "startme")
	dir := t.TempDir()
	bin := buildBinary(t, dir, "stagesub.dev/app/cmd/stagesub-app")
	logDir := filepath.Join(dir, "logs")
	env := append(append([]string(nil), f.env...),
		"STAGESUB_TARGET=local", "STAGESUB_APP_BIN="+bin, "STAGESUB_LOG_DIR="+logDir, "PATH="+os.Getenv("PATH"))
	t.Cleanup(func() {
		tg, err := local.New(local.Config{Binary: bin, LogDir: logDir})
		if err == nil {
			_ = tg.Stop(context.Background(), "startme")
		}
	})
	code, out, errs := runEnv(t, env, "tenant", "create", "startme", "--name", "Start Me", "--start")
	if code != 0 {
		t.Fatalf("create --start: exit %d\n%s\n%s", code, out, errs)
	}
	contains(t, "create", out, "instance:  started on target local")

	var show ctl.ShowResult
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, out, _ := runEnv(t, env, "tenant", "show", "startme", "--json")
		if err := json.Unmarshal([]byte(out), &show); err != nil {
			t.Fatalf("show --json: %v\n%s", err, out)
		}
		if len(show.Instances) == 1 && show.Instances[0].Health == registry.HealthPassing {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(logDir, "startme.log"))
			t.Fatalf("no passing instance after 30s: %+v\napp log:\n%s", show.Instances, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	logs, _ := os.ReadFile(filepath.Join(logDir, "startme.log"))
	if strings.Contains(string(logs), "password authentication failed") {
		t.Errorf("app log shows an auth failure:\n%s", logs)
	}
}

// buildBinary builds pkg into dir and returns the binary's path.
func buildBinary(tb testing.TB, dir, pkg string) string {
	tb.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestSetupCustomerScript runs scripts/setup-customer with a built
// stagesubctl and app: the customer ends up active with a running instance
// and an admin whose one-time password is printed.
func TestSetupCustomerScript(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "scripted")
	dir := t.TempDir()
	app := buildBinary(t, dir, "stagesub.dev/app/cmd/stagesub-app")
	ctlBin := buildBinary(t, dir, "stagesub.dev/deploy/cmd/stagesubctl")
	logDir := filepath.Join(dir, "logs")
	t.Cleanup(func() {
		if tg, err := local.New(local.Config{Binary: app, LogDir: logDir}); err == nil {
			_ = tg.Stop(context.Background(), "scripted")
		}
	})
	script, err := filepath.Abs("../../../../scripts/setup-customer")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script, "scripted", "Scripted Sinfonietta")
	cmd.Env = append(append([]string(nil), f.env...),
		"STAGESUB_TARGET=local", "STAGESUB_APP_BIN="+app, "STAGESUB_LOG_DIR="+logDir,
		"STAGESUBCTL="+ctlBin, "STAGESUB_DEV_DIR="+dir, "PATH="+os.Getenv("PATH"), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("setup-customer: %v\n%s", err, out)
	}
	contains(t, "setup-customer output", string(out), "tenant scripted created", "admin@scripted.example.org",
		"one-time password", "started on target local", "name:      Scripted Sinfonietta", "status:    active")
	if rec, err := f.store.FindTenant(context.Background(), "scripted"); err != nil || rec.Status != registry.StatusActive {
		t.Errorf("record = %+v, %v", rec, err)
	}
	// A second run is a duplicate: exit 1, nothing changed.
	cmd = exec.Command("bash", script, "scripted")
	cmd.Env = append(append([]string(nil), f.env...), "STAGESUBCTL="+ctlBin, "STAGESUB_DEV_DIR="+dir, "PATH="+os.Getenv("PATH"))
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(string(out), "already exists") {
		t.Errorf("second run: exit %d, %v\n%s", code, err, out)
	}
}
