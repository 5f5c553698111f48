package ctl_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
	"stagesub.dev/registry"
)

func TestTenantLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.drop(t, "goteborg", "malmo")

	out := f.mustRun(t, "tenant", "create", "goteborg", "--name", "Göteborgs Symfoniorkester",
		"--admin-email", "chef@gso.se", "--domain", "vikarier.gso.se")
	contains(t, "create output", out, "tenant goteborg created", "https://goteborg.stagesub.test/",
		"https://vikarier.gso.se/", "orchestra_goteborg", "one-time password", "status:    active")
	f.mustRun(t, "tenant", "create", "--name", "Malmö SO", "malmo")

	out = f.mustRun(t, "tenant", "list")
	contains(t, "list", out, "SLUG", "goteborg", "malmo", "active", "Göteborgs Symfoniorkester", "vikarier.gso.se")
	out = f.mustRun(t, "tenant", "list", "--json")
	var list []registry.Tenant
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if len(list) != 2 || list[0].Slug != "goteborg" || list[1].Slug != "malmo" {
		t.Errorf("list --json = %+v", list)
	}

	out = f.mustRun(t, "tenant", "show", "goteborg")
	contains(t, "show", out, "status:    active", "size:", "instances: 0", "vikarier.gso.se")
	var show ctl.ShowResult
	if err := json.Unmarshal([]byte(f.mustRun(t, "tenant", "show", "goteborg", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if show.LiveSchema == nil || *show.LiveSchema != schema.Latest() || show.DatabaseBytes == nil || *show.DatabaseBytes < 1000 || len(show.Problems) != 0 {
		t.Errorf("show --json = %+v", show)
	}

	// An instance registered in Consul shows up with its health.
	c := f.consul.Client(t)
	if err := c.Agent().ServiceRegister(&apiService{ID: "app-goteborg-1", Name: registry.ServiceApp, Tags: []string{registry.TenantTag("goteborg")},
		Meta: map[string]string{registry.MetaTenant: "goteborg"}, Address: "127.0.0.1", Port: 9}); err != nil {
		t.Fatal(err)
	}
	contains(t, "show with instance", f.mustRun(t, "tenant", "show", "goteborg"), "instances: 1", "app-goteborg-1", "127.0.0.1:9")

	contains(t, "suspend", f.mustRun(t, "tenant", "suspend", "goteborg"), "active → suspended")
	if got, _ := f.store.FindTenant(ctx, "goteborg"); got.Status != registry.StatusSuspended {
		t.Errorf("status = %s, want suspended", got.Status)
	}
	contains(t, "suspend again", f.mustRun(t, "tenant", "suspend", "goteborg"), "already suspended")
	contains(t, "resume", f.mustRun(t, "tenant", "resume", "goteborg"), "suspended → active")

	contains(t, "domains add", f.mustRun(t, "tenant", "domains", "malmo", "add", "Vikarier.MSO.se"), "added domain vikarier.mso.se")
	if code, _, errs := f.run(t, "tenant", "domains", "malmo", "add", "vikarier.gso.se"); code != 1 || !strings.Contains(errs, "belongs to tenant \"goteborg\"") {
		t.Errorf("taking another tenant's domain: exit %d, %s", code, errs)
	}
	contains(t, "domains rm", f.mustRun(t, "tenant", "domains", "malmo", "rm", "vikarier.mso.se"), "removed domain")
	if got, _ := f.store.FindTenant(ctx, "malmo"); len(got.Domains) != 0 {
		t.Errorf("malmo domains = %v", got.Domains)
	}
	if code, _, errs := f.run(t, "tenant", "show", "nosuch"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("show unknown: exit %d, %s", code, errs)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "dup")
	f.mustRun(t, "tenant", "create", "dup", "--name", "Dup")
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"invalid slug", []string{"tenant", "create", "Bad_Slug", "--name", "x"}, 1, "may only contain"},
		{"too short", []string{"tenant", "create", "a", "--name", "x"}, 1, "2 to 40"},
		{"reserved", []string{"tenant", "create", "admin", "--name", "x"}, 1, "reserved"},
		{"duplicate", []string{"tenant", "create", "dup", "--name", "x"}, 1, "already exists"},
		{"no name", []string{"tenant", "create", "noname"}, 1, "name must be"},
		{"unknown server", []string{"tenant", "create", "srv", "--name", "x", "--db-server", "eu9"}, 1, "unknown database server"},
		{"no slug", []string{"tenant", "create", "--name", "x"}, 2, "want exactly one"},
		{"unknown flag", []string{"tenant", "create", "x1", "--nope"}, 2, "flag provided but not defined"},
		{"unknown command", []string{"tenant", "explode"}, 2, "unknown command"},
		{"migrate without target", []string{"migrate"}, 2, "--all or one or more"},
		{"domain under base", []string{"tenant", "create", "under", "--name", "x", "--domain", "shop.stagesub.test"}, 1, "under the base domain"},
		{"base domain as domain", []string{"tenant", "create", "base", "--name", "x", "--domain", "Stagesub.Test."}, 1, "under the base domain"},
		{"domains add under base", []string{"tenant", "domains", "dup", "add", "Vikarier.Stagesub.Test"}, 1, "under the base domain"},
		{"domains add base domain", []string{"tenant", "domains", "dup", "add", "stagesub.test"}, 1, "under the base domain"},
		{"repair unknown tenant", []string{"tenant", "repair", "nosuch"}, 1, "not found"},
		{"repair bad email", []string{"tenant", "repair", "dup", "--admin-email", "nope"}, 1, "not a plain e-mail"},
		{"repair no slug", []string{"tenant", "repair"}, 2, "want exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := f.run(t, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.err) {
				t.Errorf("exit %d (want %d), stderr:\n%s\nwant it to contain %q", code, tt.code, errs, tt.err)
			}
		})
	}
	out := f.mustRun(t, "tenant", "list")
	if strings.Count(out, "\n") != 2 {
		t.Errorf("bad input created records:\n%s", out)
	}
	got, err := f.store.FindTenant(context.Background(), "dup")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Domains) != 0 {
		t.Errorf("dup domains = %v, want none", got.Domains)
	}
}

func TestConsulUnreachable(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	env := append(append([]string(nil), f.env...), "CONSUL_HTTP_ADDR="+dead)
	for _, args := range [][]string{
		{"tenant", "create", "noconsul", "--name", "x"},
		{"tenant", "list"},
		{"migrate", "--all"},
	} {
		code, _, errs := runEnv(t, env, args...)
		if code != 1 || !strings.Contains(errs, "consul at "+dead) {
			t.Errorf("%v: exit %d, stderr %s; want 1 and an error naming consul", args, code, errs)
		}
	}
}

// TestPostgresUnreachable creates a tenant while its Postgres server is
// down: the error names Postgres, the half-created tenant is listed as
// provisioning, and a re-run once the server is back completes it.
func TestPostgresUnreachable(t *testing.T) {
	f := newFixture(t)
	c := pgtestNew(t)
	env := append(append([]string(nil), f.env...), "STAGESUB_PG_ADMIN_URL="+c.AdminURL())
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runEnv(t, env, "tenant", "create", "later", "--name", "Later", "--admin-email", "a@later.se")
	if code != 1 || !strings.Contains(errs, `postgres server "default"`) || !strings.Contains(errs, "re-run") {
		t.Fatalf("create with Postgres down: exit %d, stderr:\n%s", code, errs)
	}
	_, out, _ := runEnv(t, env, "tenant", "list")
	contains(t, "list", out, "later", "provisioning")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runEnv(t, env, "tenant", "create", "later", "--name", "Later", "--admin-email", "a@later.se")
	if code != 0 {
		t.Fatalf("re-run: exit %d\n%s\n%s", code, out, errs)
	}
	contains(t, "re-run", out, "resumed", "one-time password", "status:    active")
	_, out, _ = runEnv(t, env, "tenant", "show", "later")
	contains(t, "show", out, "status:    active", "live 1")
}

// TestNamedDBServer creates a tenant on a server chosen with --db-server.
func TestNamedDBServer(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "named")
	var adminURL string
	for _, kv := range f.env {
		if v, ok := strings.CutPrefix(kv, "STAGESUB_PG_ADMIN_URL="); ok {
			adminURL = v
		}
	}
	env := append(append([]string(nil), f.env...), "STAGESUB_PG_ADMIN_URL_EU2="+adminURL)
	code, out, errs := runEnv(t, env, "tenant", "create", "named", "--name", "Named", "--db-server", "EU2")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	contains(t, "create", out, "on server eu2")
	rec, err := f.store.FindTenant(context.Background(), "named")
	if err != nil || rec.Database.Server != "eu2" {
		t.Fatalf("record = %+v, %v", rec, err)
	}
	_, out, _ = runEnv(t, env, "tenant", "list")
	contains(t, "list", out, "eu2")
	code, out, _ = runEnv(t, env, "migrate", "named")
	if code != 0 || !strings.Contains(out, "1 tenants: 1 migrated") {
		t.Errorf("migrate: exit %d\n%s", code, out)
	}
}
