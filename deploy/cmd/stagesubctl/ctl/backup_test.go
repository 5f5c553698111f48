package ctl_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/hashicorp/consul/api"

	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/local"
	"stagesub.dev/registry"
)

// waitPassing waits until slug has n passing instances in Consul.
func waitPassing(tb testing.TB, c *api.Client, slug string, n int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _, err := c.Health().Service(registry.ServiceApp, registry.TenantTag(slug), true, nil)
		if err == nil && len(entries) == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %d passing instances after 30s, want %d (err %v)", slug, len(entries), n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBackupRestoreDeleteCLI drives backup, restore and delete through
// stagesubctl with a real app instance on the local target.
func TestBackupRestoreDeleteCLI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.drop(t, "cycle", "cycle-copy")
	dir := t.TempDir()
	bin := buildBinary(t, dir, "stagesub.dev/app/cmd/stagesub-app")
	logDir := filepath.Join(dir, "logs")
	backups := filepath.Join(dir, "backups")
	env := append(append([]string(nil), f.env...),
		"STAGESUB_TARGET=local", "STAGESUB_APP_BIN="+bin, "STAGESUB_LOG_DIR="+logDir,
		"STAGESUB_BACKUP_DIR="+backups, "PATH="+os.Getenv("PATH"))
	t.Cleanup(func() {
		if tg, err := local.New(local.Config{Binary: bin, LogDir: logDir}); err == nil {
			tg.Stop(context.Background(), "cycle")
		}
	})
	run := func(args ...string) (int, string, string) { return runEnv(t, env, args...) }
	must := func(args ...string) string {
		t.Helper()
		code, out, errs := run(args...)
		if code != 0 {
			t.Fatalf("stagesubctl %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	id, _ := age.GenerateX25519Identity()
	keyFile := filepath.Join(dir, "ops.agekey")
	os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600)

	must("tenant", "create", "cycle", "--name", "Cycle SO", "--admin-email", "a@cycle.se", "--start")
	c := f.consul.Client(t)
	waitPassing(t, c, "cycle", 1)

	// No recipient: backup is a clear error, and delete is a no-op.
	code, out, _ := run("backup", "cycle")
	if code != 1 || !strings.Contains(out, "no backup recipient") {
		t.Errorf("backup without recipient: exit %d\n%s", code, out)
	}
	code, _, errs := run("tenant", "delete", "cycle", "--confirm", "cycle")
	if code != 1 || !strings.Contains(errs, "nothing deleted") {
		t.Errorf("delete with failing backup: exit %d\n%s", code, errs)
	}
	rec, err := f.store.FindTenant(ctx, "cycle")
	if err != nil || rec.Status != registry.StatusActive {
		t.Fatalf("after failed delete: %+v, %v; want active", rec, err)
	}
	if ok, _ := f.srv.DatabaseExists(ctx, "orchestra_cycle"); !ok {
		t.Errorf("database gone after failed delete")
	}
	if _, err := os.Stat(filepath.Join(f.secrets, "cycle.env")); err != nil {
		t.Errorf("env file gone after failed delete: %v", err)
	}
	waitPassing(t, c, "cycle", 1) // instance back

	if code, _, _ := run("tenant", "delete", "cycle", "--confirm", "malmo"); code != 2 {
		t.Errorf("delete with wrong --confirm: exit %d, want 2", code)
	}
	if code, _, _ := run("tenant", "backup-key", "cycle", "set", "age1bogus"); code != 1 {
		t.Errorf("backup-key set bogus: exit %d, want 1", code)
	}
	must("tenant", "backup-key", "cycle", "set", id.Recipient().String())
	contains(t, "backup-key", must("tenant", "backup-key", "cycle"), id.Recipient().String())

	out = must("backup", "--all", "--keep", "1")
	contains(t, "backup --all", out, "cycle", "1 backed up", "0 failed")
	ms, _ := backup.List(backups, "cycle")
	if len(ms) != 1 {
		t.Fatalf("manifests = %d", len(ms))
	}
	file := filepath.Join(backups, ms[0].File)

	// Wrong identity: exit 1 with a clear message.
	other, _ := age.GenerateX25519Identity()
	otherKey := filepath.Join(dir, "other.agekey")
	os.WriteFile(otherKey, []byte(other.String()+"\n"), 0o600)
	code, _, errs = run("restore", "cycle", "--from", file, "--identity", otherKey, "--force")
	if code != 1 || !strings.Contains(errs, "identity does not match") {
		t.Errorf("restore with wrong identity: exit %d\n%s", code, errs)
	}
	// Live database without --force: refused.
	if code, _, errs := run("restore", "cycle", "--from", file, "--identity", keyFile); code != 1 || !strings.Contains(errs, "--force") {
		t.Errorf("restore over live: exit %d\n%s", code, errs)
	}
	out = must("restore", "cycle", "--from", file, "--identity", keyFile, "--force")
	contains(t, "restore", out, "orchestra_cycle_r", "verified", "orchestra_cycle kept", "restarted")
	rec, _ = f.store.FindTenant(ctx, "cycle")
	if !strings.HasPrefix(rec.Database.Name, "orchestra_cycle_r") {
		t.Errorf("record database = %s", rec.Database.Name)
	}
	waitPassing(t, c, "cycle", 1) // restarted on the new database
	logs, _ := os.ReadFile(filepath.Join(logDir, "cycle.log"))
	if !strings.Contains(string(logs), rec.Database.Name) && testing.Verbose() {
		t.Logf("app log does not name %s", rec.Database.Name)
	}

	out = must("restore", "cycle", "--from", file, "--identity", keyFile, "--into", "cycle-copy")
	contains(t, "restore --into", out, "restored cycle-copy", "created")

	out = must("tenant", "delete", "cycle", "--confirm", "cycle")
	contains(t, "delete", out, "final backup:", "instance:     stopped", "orchestra_cycle_r", "database orchestra_cycle\n")
	if _, err := f.store.FindTenant(ctx, "cycle"); registry.ErrorCode(err) != registry.ENOTFOUND {
		t.Errorf("record after delete: %v", err)
	}
	if dbs, _ := f.srv.DatabasesOwnedBy(ctx, "orchestra_cycle"); len(dbs) != 0 {
		t.Errorf("databases left: %v", dbs)
	}
	if _, err := os.Stat(filepath.Join(f.secrets, "cycle.env")); !os.IsNotExist(err) {
		t.Errorf("env file after delete: %v", err)
	}
	waitPassing(t, c, "cycle", 0)
	if ms, _ := backup.List(backups, "cycle"); len(ms) != 2 {
		t.Errorf("backups after delete = %d, want 2 (the --all one and the final one)", len(ms))
	}
	// The copy is untouched; a deleted tenant comes back from its final backup.
	if _, err := f.store.FindTenant(ctx, "cycle-copy"); err != nil {
		t.Errorf("copy: %v", err)
	}
	ms, _ = backup.List(backups, "cycle")
	must("restore", "cycle", "--from", filepath.Join(backups, ms[1].File), "--identity", keyFile)
	if rec, err := f.store.FindTenant(ctx, "cycle"); err != nil || rec.Status != registry.StatusActive {
		t.Errorf("restored deleted tenant: %+v %v", rec, err)
	}
	must("tenant", "delete", "cycle", "--confirm", "cycle", "--no-backup")
}
