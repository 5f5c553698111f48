package ctl_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
	"stagesub.dev/registry"
)

// TestMigrateFleet creates 20 tenants, makes every database need its
// migrations again, breaks one, and migrates them all: the broken one is
// reported, the other 19 migrate and record their version, and a re-run
// after the fix completes it.
func TestMigrateFleet(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const n = 20
	var slugs []string
	for i := range n {
		s := fmt.Sprintf("fleet-%02d", i)
		slugs = append(slugs, s)
		f.mustRun(t, "tenant", "create", s, "--name", "Orchestra "+s)
	}
	f.drop(t, slugs...)
	f.mustRun(t, "tenant", "suspend", "fleet-07") // suspended tenants are migrated too

	// Empty every database (as it was right after "create database") and
	// reset the recorded versions, so every tenant has its migrations pending.
	for _, s := range slugs {
		db, role := registry.DatabaseName(s), registry.RoleName(s)
		if err := f.c.Exec(ctx, "postgres", "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.EnsureDatabase(ctx, db, role); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.LockDown(ctx, db, role); err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.UpdateTenant(ctx, s, func(t *registry.Tenant) error { t.SchemaVersion = 0; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	const broken = "fleet-13"
	if err := f.c.Exec(ctx, "postgres", "ALTER DATABASE "+registry.DatabaseName(broken)+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}

	code, out, _ := f.run(t, "migrate", "--all", "--dry-run")
	if code != 1 {
		t.Errorf("dry run with a broken tenant: exit %d, want 1", code)
	}
	contains(t, "dry run", out, fmt.Sprintf("%d tenants: %d checked (dry run, %d with pending migrations), 0 skipped, 1 failed", n, n-1, n-1), broken)

	code, out, errs := f.run(t, "migrate", "--all", "--concurrency", "4")
	t.Logf("migrate --all with one broken tenant:\n%s", out)
	if code != 1 {
		t.Fatalf("migrate with a broken tenant: exit %d, want 1\n%s\n%s", code, out, errs)
	}
	contains(t, "summary", out, fmt.Sprintf("%d tenants: %d migrated (%d changed), 0 skipped, 1 failed", n, n-1, n-1),
		"failures:\n  "+broken+": ", "not currently accepting connections")
	if got := regexp.MustCompile(`(?m)^fleet-\d\d\s+migrated 0 → `+fmt.Sprint(schema.Latest())).FindAllString(out, -1); len(got) != n-1 {
		t.Errorf("%d tenants reported migrated, want %d:\n%s", len(got), n-1, out)
	}
	contains(t, "plain progress lines (not a terminal)", errs, "["+fmt.Sprint(n)+"/"+fmt.Sprint(n)+"]", broken+" FAILED")
	for _, s := range slugs {
		rec, err := f.store.FindTenant(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		want := schema.Latest()
		if s == broken {
			want = 0
		}
		if rec.SchemaVersion != want {
			t.Errorf("%s recorded version %d, want %d", s, rec.SchemaVersion, want)
		}
	}

	if err := f.c.Exec(ctx, "postgres", "ALTER DATABASE "+registry.DatabaseName(broken)+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	out = f.mustRun(t, "migrate", "--all")
	contains(t, "re-run", out, fmt.Sprintf("%d tenants: %d migrated (1 changed), 0 skipped, 0 failed", n, n))
	if !regexp.MustCompile(`(?m)^` + broken + `\s+migrated 0 → `).MatchString(out) {
		t.Errorf("re-run did not migrate %s:\n%s", broken, out)
	}
	if strings.Contains(out, "failures") {
		t.Errorf("re-run reports failures:\n%s", out)
	}
	if rec, _ := f.store.FindTenant(ctx, broken); rec.SchemaVersion != schema.Latest() {
		t.Errorf("%s recorded version %d after re-run", broken, rec.SchemaVersion)
	}
	out = f.mustRun(t, "migrate", "fleet-00", "fleet-01")
	contains(t, "migrate slugs", out, "2 tenants: 2 migrated (0 changed)")

	// On a terminal: a progress bar redrawn in place, no per-tenant lines.
	var stdout, stderr bytes.Buffer
	m := &ctl.Main{Stdout: &stdout, Stderr: &stderr, Terminal: func(io.Writer) bool { return true }}
	if code := m.Exec(ctx, []string{"migrate", "--all"}, f.env); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	contains(t, "progress bar", stderr.String(), "\r\033[K[", "] 20/20 ")
	if strings.Contains(stderr.String(), "\n") {
		t.Errorf("terminal output has lines: %q", stderr.String())
	}
}
