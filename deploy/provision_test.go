package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"

	"database/sql"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/registry"
)

func TestCreate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.dropTenant(t, "goteborg")
	target := &fakeTarget{}
	e.p.Target = target
	e.p.AppEnv = []string{"CONSUL_HTTP_ADDR=127.0.0.1:1"}
	res, err := e.p.Create(ctx, deploy.CreateRequest{
		Slug: "goteborg", Name: "Göteborgs Symfoniorkester", AdminEmail: "admin@gso.se",
		Domains: []string{"Vikarier.GSO.se."}, Start: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed || !res.AdminCreated || len(res.AdminPassword) < 20 || !res.Started {
		t.Errorf("result = %+v, want fresh create with admin password and a start", res)
	}
	got, err := e.store.FindTenant(ctx, "goteborg")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != registry.StatusActive || got.SchemaVersion != schema.Latest() ||
		got.Database.Name != "orchestra_goteborg" || got.Database.Host != "127.0.0.1" ||
		got.Name != "Göteborgs Symfoniorkester" || strings.Join(got.Domains, ",") != "vikarier.gso.se" {
		t.Errorf("record = %+v", got)
	}
	fi, err := os.Stat(e.secrets.File("goteborg"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
		t.Errorf("env file mode = %v, want %v", got, want)
	}
	env, _ := e.secrets.Read("goteborg")
	if got, want := env[registry.EnvTenant], "goteborg"; got != want {
		t.Errorf("STAGESUB_TENANT = %q, want %q", got, want)
	}
	db := deploytest.MustTenantDB(t, e.secrets, "goteborg")
	if slug, err := schema.BoundTenant(ctx, db); err != nil || slug != "goteborg" {
		t.Errorf("BoundTenant = %q, %v", slug, err)
	}
	var admins int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE role = 'admin'").Scan(&admins); err != nil || admins != 1 {
		t.Errorf("admins = %d, %v; want 1", admins, err)
	}
	var owner string
	if err := db.QueryRowContext(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'musicians'").Scan(&owner); err != nil || owner != "orchestra_goteborg" {
		t.Errorf("musicians owner = %q, %v; migrations must run as the tenant role", owner, err)
	}
	if len(target.starts) != 1 || target.starts[0].EnvFile != e.secrets.File("goteborg") || target.starts[0].Env[0] != "CONSUL_HTTP_ADDR=127.0.0.1:1" {
		t.Errorf("starts = %+v", target.starts)
	}
}

// TestCreateResumes fails a create at every step and checks that a re-run
// finishes the tenant, without duplicating anything.
func TestCreateResumes(t *testing.T) {
	steps := []string{"stats", "role", "database", "lockdown", "opendb", "start", "envfile-lost"}
	for i, step := range steps {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			slug := fmt.Sprintf("resume-%d", i)
			e.dropTenant(t, slug)
			good := e.p.Servers["default"]
			fs := &faultyServer{DBServer: good, failAt: step}
			if step == "envfile-lost" {
				fs.failAt = "lockdown"
			}
			e.p.Servers["default"] = fs
			target := &fakeTarget{fail: step == "start"}
			e.p.Target = target
			openDB := e.p.OpenDB
			if step == "opendb" {
				e.p.OpenDB = func(ctx context.Context, url string) (*sql.DB, error) { return nil, errInjected }
			}
			req := deploy.CreateRequest{Slug: slug, Name: "Orchestra " + step, AdminEmail: "a@b.se", Start: true}
			if _, err := e.p.Create(ctx, req); !errors.Is(err, errInjected) {
				t.Fatalf("first create: err = %v, want the injected failure", err)
			}
			got, err := e.store.FindTenant(ctx, slug)
			if err != nil {
				t.Fatalf("half-created tenant has no record: %v", err)
			}
			if got.Status != registry.StatusProvisioning {
				t.Errorf("status after failure = %s, want provisioning", got.Status)
			}
			if step == "envfile-lost" {
				if err := e.secrets.Remove(slug); err != nil {
					t.Fatal(err)
				}
			}
			e.p.Servers["default"], e.p.OpenDB, target.fail = good, openDB, false
			res, err := e.p.Create(ctx, req)
			if err != nil {
				t.Fatalf("re-run: %v", err)
			}
			if !res.Resumed {
				t.Errorf("re-run Resumed = false")
			}
			if res.Tenant.Status != registry.StatusActive || res.Tenant.SchemaVersion != schema.Latest() {
				t.Errorf("record after re-run = %+v", res.Tenant)
			}
			db := deploytest.MustTenantDB(t, e.secrets, slug)
			var admins int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM users").Scan(&admins); err != nil || admins != 1 {
				t.Errorf("users = %d, %v; want exactly 1", admins, err)
			}
			if len(target.starts) != 1 {
				t.Errorf("instance started %d times, want 1", len(target.starts))
			}
		})
	}
}

func TestCreateBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.dropTenant(t, "dup")
	if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: "dup", Name: "First"}); err != nil {
		t.Fatal(err)
	}
	before, _ := e.store.FindTenant(ctx, "dup")
	envBefore, _ := os.ReadFile(e.secrets.File("dup"))
	tests := []struct {
		name string
		req  deploy.CreateRequest
		code string
	}{
		{"invalid", deploy.CreateRequest{Slug: "Bad_Slug", Name: "x"}, registry.EINVALID},
		{"reserved", deploy.CreateRequest{Slug: "admin", Name: "x"}, registry.EINVALID},
		{"no name", deploy.CreateRequest{Slug: "noname", Name: " "}, registry.EINVALID},
		{"bad email", deploy.CreateRequest{Slug: "bademail", Name: "x", AdminEmail: "nope"}, registry.EINVALID},
		{"bad domain", deploy.CreateRequest{Slug: "baddomain", Name: "x", Domains: []string{"*.x.se"}}, registry.EINVALID},
		{"unknown server", deploy.CreateRequest{Slug: "noserver", Name: "x", DBServer: "eu9"}, registry.EINVALID},
		{"duplicate", deploy.CreateRequest{Slug: "dup", Name: "Second"}, registry.ECONFLICT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.p.Create(ctx, tt.req)
			if got, want := registry.ErrorCode(err), tt.code; got != want {
				t.Fatalf("code = %q (%v), want %q", got, err, want)
			}
			if tt.req.Slug != "dup" {
				if _, err := e.store.FindTenant(ctx, tt.req.Slug); err == nil {
					t.Errorf("record of %s exists after bad input: %v", tt.req.Slug, err)
				}
				if _, err := os.Stat(e.secrets.File(tt.req.Slug)); err == nil {
					t.Errorf("env file of %s exists after bad input", tt.req.Slug)
				}
			}
		})
	}
	after, _ := e.store.FindTenant(ctx, "dup")
	envAfter, _ := os.ReadFile(e.secrets.File("dup"))
	if after.ModifyIndex != before.ModifyIndex || after.Name != "First" || string(envAfter) != string(envBefore) {
		t.Errorf("duplicate create changed the tenant: %+v", after)
	}
	var n int
	conn, err := pgx.Connect(ctx, e.c.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname IN ('orchestra_noname','orchestra_bademail','orchestra_baddomain','orchestra_noserver')").Scan(&n); err != nil || n != 0 {
		t.Errorf("databases created for bad input: %d, %v", n, err)
	}
}

// TestCreateConcurrent runs several creates of one slug at once: exactly
// one succeeds, the others get ECONFLICT, and the tenant is complete.
func TestCreateConcurrent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.dropTenant(t, "race")
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.p.Create(ctx, deploy.CreateRequest{Slug: "race", Name: fmt.Sprintf("Racer %d", i), AdminEmail: "a@race.se"})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch registry.ErrorCode(err) {
		case "":
			ok++
		case registry.ECONFLICT:
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d creates succeeded, want exactly 1: %v", ok, errs)
	}
	got, err := e.store.FindTenant(ctx, "race")
	if err != nil || got.Status != registry.StatusActive {
		t.Fatalf("record = %+v, %v", got, err)
	}
	db := deploytest.MustTenantDB(t, e.secrets, "race")
	var users int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM users").Scan(&users); err != nil || users != 1 {
		t.Errorf("users = %d, %v; want 1", users, err)
	}
}

// TestIsolation checks the guarantees of the issue on a server that checks
// passwords (scram-sha-256 over TCP).
func TestIsolation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, s := range []string{"iso-a", "iso-b"} {
		e.dropTenant(t, s)
		if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: s, Name: s}); err != nil {
			t.Fatal(err)
		}
	}
	envA, _ := e.secrets.Read("iso-a")
	pwA := deploy.PasswordOf(envA[registry.EnvDatabaseURL])
	connect := func(role, pw, db string) error {
		c, err := pgx.Connect(ctx, e.c.TCPURL(role, pw, db))
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	if err := connect("orchestra_iso_a", pwA, "orchestra_iso_a"); err != nil {
		t.Fatalf("A cannot reach its own database: %v", err)
	}
	if err := connect("orchestra_iso_a", pwA, "orchestra_iso_b"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("A's credentials on B's database: err = %v, want permission denied", err)
	}
	if err := connect("orchestra_iso_b", pwA, "orchestra_iso_b"); err == nil {
		t.Errorf("A's password works for B's role")
	}
	if err := connect("orchestra_iso_a", "wrong", "orchestra_iso_a"); err == nil {
		t.Errorf("a wrong password connects")
	}

	// PUBLIC: any other login role cannot connect to a tenant database.
	if err := e.c.Exec(ctx, "postgres", "DO $$BEGIN CREATE ROLE some_user LOGIN PASSWORD 'pw'; EXCEPTION WHEN duplicate_object THEN NULL; END$$"); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"orchestra_iso_a", "orchestra_iso_b"} {
		if err := connect("some_user", "pw", db); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("PUBLIC role on %s: err = %v, want permission denied", db, err)
		}
	}
	var acl string
	conn, err := pgx.Connect(ctx, e.c.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT datacl::text FROM pg_database WHERE datname = 'orchestra_iso_a'").Scan(&acl); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(acl, "{=") || strings.Contains(acl, ",=") {
		t.Errorf("PUBLIC still has privileges on orchestra_iso_a: %s", acl)
	}

	// The stats role reads the stats view and nothing else.
	for _, db := range []string{"orchestra_iso_a", "orchestra_iso_b"} {
		stats, err := postgres.OpenTenant(ctx, e.c.TCPURL(registry.StatsRole, statsPassword, db))
		if err != nil {
			t.Fatalf("stats role on %s: %v", db, err)
		}
		s, err := schema.ReadStats(ctx, stats)
		if err != nil || s.SchemaVersion != schema.Latest() {
			t.Errorf("stats on %s = %+v, %v", db, s, err)
		}
		for _, q := range []string{
			"SELECT count(*) FROM musicians",
			"SELECT count(*) FROM users",
			"SELECT * FROM tenant_meta",
			"INSERT INTO musicians (name, instrument) VALUES ('x', 'y')",
			"DELETE FROM activity_log",
			"CREATE TABLE evil (x int)",
			"CREATE TEMP TABLE evil (x int)",
		} {
			if _, err := stats.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("stats role on %s: %q: err = %v, want permission denied", db, q, err)
			}
		}
		stats.Close()
	}
}

func TestMigrateReportsEachTenant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	slugs := []string{"mig-a", "mig-b", "mig-c"}
	for _, s := range slugs {
		e.dropTenant(t, s)
		if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: s, Name: s}); err != nil {
			t.Fatal(err)
		}
	}
	// mig-b's database refuses connections; mig-c's record claims version 0.
	if err := e.c.Exec(ctx, "postgres", "ALTER DATABASE orchestra_mig_b ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdateTenant(ctx, "mig-c", func(t *registry.Tenant) error { t.SchemaVersion = 0; return nil }); err != nil {
		t.Fatal(err)
	}
	calls := 0
	res, err := e.p.Migrate(ctx, deploy.MigrateOptions{Concurrency: 2, OnResult: func(deploy.MigrateResult, int, int) { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 || len(res) != 3 {
		t.Fatalf("results = %+v, calls %d", res, calls)
	}
	for _, r := range res {
		if got, want := r.Err != nil, r.Slug == "mig-b"; got != want {
			t.Errorf("%s: err = %v, want failure=%v", r.Slug, r.Err, want)
		}
	}
	if c, _ := e.store.FindTenant(ctx, "mig-c"); c.SchemaVersion != schema.Latest() {
		t.Errorf("mig-c recorded version = %d, want %d", c.SchemaVersion, schema.Latest())
	}
	if err := e.c.Exec(ctx, "postgres", "ALTER DATABASE orchestra_mig_b ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	res, _ = e.p.Migrate(ctx, deploy.MigrateOptions{Slugs: []string{"mig-b"}})
	if len(res) != 1 || res[0].Err != nil || res[0].To != schema.Latest() {
		t.Errorf("re-run = %+v", res)
	}
}

// TestValidateDomains: Validate normalizes, sorts and de-duplicates domains.
func TestValidateDomains(t *testing.T) {
	r := deploy.CreateRequest{Slug: "dedupe", Name: "x", Domains: []string{"B.se.", "a.se", "b.se"}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(r.Domains, ","), "a.se,b.se"; got != want {
		t.Errorf("domains = %s, want %s", got, want)
	}
}
