package ctl_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/registry"
)

// TestTenantRepair breaks one security or setup property of a tenant at a
// time, runs `tenant repair`, and checks that it reports the finding and
// restores isolation; a second repair finds nothing.
func TestTenantRepair(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.c.Exec(ctx, "postgres", "DO $$BEGIN CREATE ROLE repair_outsider LOGIN PASSWORD 'pw'; EXCEPTION WHEN duplicate_object THEN NULL; END$$"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		slug      string
		breakSQL  []string // run as superuser in the tenant database
		rmEnvFile bool
		wantFixed []string
	}{
		{
			name:      "stats view and PUBLIC connect",
			slug:      "rep-grants",
			breakSQL:  []string{"REVOKE SELECT ON stagesub_stats_v FROM stagesub_stats", "GRANT CONNECT ON DATABASE orchestra_rep_grants TO PUBLIC"},
			wantFixed: []string{"PUBLIC holds CONNECT on database orchestra_rep_grants", "stagesub_stats lacked SELECT on stagesub_stats_v"},
		},
		{
			name:      "connect revoked from stats and tenant role",
			slug:      "rep-connect",
			breakSQL:  []string{"REVOKE CONNECT ON DATABASE orchestra_rep_connect FROM stagesub_stats", "REVOKE ALL ON DATABASE orchestra_rep_connect FROM orchestra_rep_connect"},
			wantFixed: []string{"stagesub_stats lacks CONNECT", "orchestra_rep_connect lacks CONNECT", "orchestra_rep_connect lacks TEMPORARY"},
		},
		{
			name:      "unbound database",
			slug:      "rep-bind",
			breakSQL:  []string{"DELETE FROM tenant_meta"},
			wantFixed: []string{"bound to rep-bind"},
		},
		{
			name:      "env file lost",
			slug:      "rep-env",
			rmEnvFile: true,
			wantFixed: []string{"was missing: wrote a new password"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.drop(t, tt.slug)
			f.mustRun(t, "tenant", "create", tt.slug, "--name", tt.name)
			db := registry.DatabaseName(tt.slug)
			for _, q := range tt.breakSQL {
				if err := f.c.Exec(ctx, db, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if tt.rmEnvFile {
				if err := os.Remove(filepath.Join(f.secrets, tt.slug+".env")); err != nil {
					t.Fatal(err)
				}
			}

			out := f.mustRun(t, "tenant", "repair", tt.slug)
			contains(t, "repair output", out, tt.wantFixed...)
			if got, want := strings.Contains(out, "restart the tenant's instance"), tt.rmEnvFile; got != want {
				t.Errorf("restart hint = %v, want %v:\n%s", got, want, out)
			}
			assertIsolated(t, f, tt.slug)

			if got, want := f.mustRun(t, "tenant", "repair", tt.slug), "tenant "+tt.slug+": nothing to fix\n"; !strings.HasPrefix(got, want) {
				t.Errorf("second repair = %q, want prefix %q", got, want)
			}
		})
	}
}

// assertIsolated checks that slug's database is locked down: its own role
// works with the env file's password, an outsider login role is refused, and
// the stats role reads the stats view and nothing else.
func assertIsolated(t *testing.T, f *fixture, slug string) {
	t.Helper()
	ctx := context.Background()
	db := registry.DatabaseName(slug)
	env, err := os.ReadFile(filepath.Join(f.secrets, slug+".env"))
	if err != nil {
		t.Fatal(err)
	}
	var url string
	for _, l := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(l, registry.EnvDatabaseURL+"="); ok {
			url = strings.Trim(v, `"'`)
		}
	}
	own, err := postgres.OpenTenant(ctx, url)
	if err != nil {
		t.Fatalf("tenant role with its env file: %v", err)
	}
	if bound, err := schema.BoundTenant(ctx, own); err != nil || bound != slug {
		t.Errorf("BoundTenant = %q, %v; want %q", bound, err, slug)
	}
	own.Close()
	if c, err := pgx.Connect(ctx, f.c.TCPURL("repair_outsider", "pw", db)); err == nil {
		c.Close(ctx)
		t.Errorf("an outsider login role connects to %s", db)
	} else if !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("outsider on %s: err = %v, want permission denied", db, err)
	}
	stats, err := postgres.OpenTenant(ctx, f.c.TCPURL(registry.StatsRole, "stats-pw", db))
	if err != nil {
		t.Fatalf("stats role on %s: %v", db, err)
	}
	defer stats.Close()
	if _, err := schema.ReadStats(ctx, stats); err != nil {
		t.Errorf("stats role reads the stats view: %v", err)
	}
	if _, err := stats.ExecContext(ctx, "SELECT count(*) FROM users"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("stats role reads users: err = %v, want permission denied", err)
	}
}

// TestTenantWithoutAdmin: create without --admin-email warns that there is
// no staff login; repair --admin-email creates the first admin once, and
// refuses a second one.
func TestTenantWithoutAdmin(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "noadmin")
	code, out, errs := f.run(t, "tenant", "create", "noadmin", "--name", "No Admin")
	if code != 0 {
		t.Fatalf("create: exit %d\n%s\n%s", code, out, errs)
	}
	contains(t, "create stderr", errs, "warning", "no staff login", "stagesubctl tenant repair noadmin --admin-email")

	tests := []struct {
		name     string
		email    string
		wantCode int
		want     string // in stdout (exit 0) or stderr
	}{
		{"first admin", "chef@noadmin.se", 0, "one-time password (shown once; change it on the Account page after logging in): "},
		{"same admin again", "chef@noadmin.se", 0, "chef@noadmin.se (already existed; password unchanged)"},
		{"second admin refused", "other@noadmin.se", 1, "already has staff admin(s) chef@noadmin.se"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := f.run(t, "tenant", "repair", "noadmin", "--admin-email", tt.email)
			if got := code; got != tt.wantCode {
				t.Fatalf("exit %d, want %d\n%s\n%s", got, tt.wantCode, out, errs)
			}
			if got := out + errs; !strings.Contains(got, tt.want) {
				t.Errorf("output does not contain %q:\n%s", tt.want, got)
			}
		})
	}
	code, out, errs = f.run(t, "tenant", "create", "noadmin2", "--name", "With Admin", "--admin-email", "a@b.se")
	f.drop(t, "noadmin2")
	if code != 0 || strings.Contains(errs, "no staff login") || !strings.Contains(out, "Account page") {
		t.Errorf("create with admin: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}
