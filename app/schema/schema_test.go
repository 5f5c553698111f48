package schema_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"stagesub.dev/app"
	"stagesub.dev/app/password"
	"stagesub.dev/app/schema"
	"stagesub.dev/app/schema/schematest"
	"stagesub.dev/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrate(t *testing.T) {
	c := pgtest.Start(t)
	_, url := c.CreateDB(t, "")
	db := schematest.MustOpen(t, url)
	ctx := context.Background()

	if got := schema.Latest(); got < 1 {
		t.Fatalf("Latest() = %d, want >= 1", got)
	}
	v, err := schema.Current(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v, int64(0); got != want {
		t.Errorf("Current on an empty db = %d, want %d", got, want)
	}

	// Concurrent migrations run once under the advisory lock.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = schema.Migrate(ctx, db)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate #%d: %v", i, err)
		}
	}
	from, to, err := schema.Migrate(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if from != schema.Latest() || to != schema.Latest() {
		t.Errorf("second Migrate = %d→%d, want %d→%d", from, to, schema.Latest(), schema.Latest())
	}
	if v, _ := schema.Current(ctx, db); v != schema.Latest() {
		t.Errorf("Current = %d, want %d", v, schema.Latest())
	}
}

func TestBind(t *testing.T) {
	c := pgtest.Start(t)
	db := schematest.MustOpen(t, schematest.NewDB(t, c, ""))
	ctx := context.Background()

	if got, err := schema.BoundTenant(ctx, db); err != nil || got != "" {
		t.Fatalf("BoundTenant = %q, %v; want \"\", nil", got, err)
	}
	if err := schema.Bind(ctx, db, "goteborg", "Göteborgs Symfoniker"); err != nil {
		t.Fatal(err)
	}
	if err := schema.Bind(ctx, db, "goteborg", "GSO"); err != nil {
		t.Errorf("Bind same slug again: %v", err)
	}
	err := schema.Bind(ctx, db, "malmo", "Malmö")
	if got, want := app.ErrorCode(err), app.EINVALID; got != want {
		t.Errorf("Bind other slug: code %q (%v), want %q", got, err, want)
	}
	if got, _ := schema.BoundTenant(ctx, db); got != "goteborg" {
		t.Errorf("BoundTenant = %q, want goteborg", got)
	}
}

func TestCreateStaffAdmin(t *testing.T) {
	c := pgtest.Start(t)
	db := schematest.MustOpen(t, schematest.NewDB(t, c, "goteborg"))
	ctx := context.Background()

	created, err := schema.CreateStaffAdmin(ctx, db, "boss@example.org", "s3cret-pass")
	if err != nil || !created {
		t.Fatalf("CreateStaffAdmin = %v, %v; want true, nil", created, err)
	}
	created, err = schema.CreateStaffAdmin(ctx, db, "BOSS@example.org", "other-pass")
	if err != nil || created {
		t.Errorf("CreateStaffAdmin again = %v, %v; want false, nil", created, err)
	}
	var hash, role string
	if err := db.QueryRowContext(ctx, "SELECT password_hash, role FROM users WHERE email = 'boss@example.org'").Scan(&hash, &role); err != nil {
		t.Fatal(err)
	}
	if err := password.Verify(hash, "s3cret-pass"); err != nil {
		t.Errorf("stored hash does not verify: %v", err)
	}
	if role != app.RoleAdmin {
		t.Errorf("role = %q, want admin", role)
	}
	for _, tt := range []struct{ name, email, pw string }{
		{"ErrEmail", "not-an-email", "s3cret-pass"},
		{"ErrShortPassword", "x@example.org", "short"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := schema.CreateStaffAdmin(ctx, db, tt.email, tt.pw)
			if got, want := app.ErrorCode(err), app.EINVALID; got != want {
				t.Errorf("code = %q (%v), want %q", got, err, want)
			}
		})
	}
}

// TestStatsRole runs the migrations as a tenant role that owns its database,
// as stagesubctl does, and reads the stats as a role that may read the view
// and nothing else.
func TestStatsRole(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	for _, q := range []string{
		"CREATE ROLE orchestra_stats_t LOGIN PASSWORD 'tenantpw'",
		"CREATE ROLE stagesub_stats_t LOGIN PASSWORD 'statspw'",
		"CREATE DATABASE orchestra_stats_t OWNER orchestra_stats_t",
		"REVOKE ALL ON DATABASE orchestra_stats_t FROM PUBLIC",
	} {
		if err := c.Exec(ctx, "postgres", q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = c.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS orchestra_stats_t WITH (FORCE)")
		_ = c.Exec(ctx, "postgres", "DROP ROLE IF EXISTS orchestra_stats_t")
		_ = c.Exec(ctx, "postgres", "DROP ROLE IF EXISTS stagesub_stats_t")
	})
	tenant := schematest.MustOpen(t, c.RoleURL("orchestra_stats_t", "tenantpw", "orchestra_stats_t"))
	if _, _, err := schema.Migrate(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	stats := schematest.MustOpen(t, c.RoleURL("stagesub_stats_t", "statspw", "orchestra_stats_t"))
	if err := stats.PingContext(ctx); err == nil {
		t.Fatal("stats role connected before GrantStats")
	}
	if err := schema.GrantStats(ctx, tenant, "stagesub_stats_t"); err != nil {
		t.Fatal(err)
	}
	if err := schema.SeedDemo(ctx, tenant, schema.SeedOptions{Musicians: 5, Projects: 2, Requests: 2}); err != nil {
		t.Fatal(err)
	}
	got, err := schema.ReadStats(ctx, stats)
	if err != nil {
		t.Fatal(err)
	}
	if got.Musicians != 5 || got.Projects != 2 || got.OpenRequests != 2 || got.SchemaVersion != schema.Latest() {
		t.Errorf("stats = %+v, want 5 musicians, 2 projects, 2 open requests, version %d", got, schema.Latest())
	}
	if got.LastActivity == nil || time.Since(*got.LastActivity) > time.Minute {
		t.Errorf("LastActivity = %v, want about now", got.LastActivity)
	}
	var owner string
	if err := tenant.QueryRowContext(ctx, "SELECT viewowner FROM pg_views WHERE viewname = $1", schema.StatsView).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner != "orchestra_stats_t" {
		t.Errorf("view owner = %q, want orchestra_stats_t", owner)
	}
	for _, q := range []string{"SELECT count(*) FROM musicians", "SELECT count(*) FROM users", "DELETE FROM activity_log"} {
		_, err := stats.ExecContext(ctx, q)
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("stats role %q: err = %v, want permission denied", q, err)
		}
	}
}

func TestSeedDemoIdempotent(t *testing.T) {
	c := pgtest.Start(t)
	db := schematest.MustOpen(t, schematest.NewDB(t, c, "goteborg"))
	ctx := context.Background()
	o := schema.SeedOptions{Musicians: 30, Projects: 4, Requests: 3}
	if err := schema.SeedDemo(ctx, db, o); err != nil {
		t.Fatal(err)
	}
	first, err := schema.ReadStats(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.SeedDemo(ctx, db, o); err != nil {
		t.Fatal(err)
	}
	second, err := schema.ReadStats(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if first.Musicians != 30 || first.Projects != 4 || first.OpenRequests != 3 {
		t.Errorf("after seed: %+v, want 30/4/3", first)
	}
	if second.Musicians != first.Musicians || second.Projects != first.Projects || second.OpenRequests != first.OpenRequests {
		t.Errorf("second seed changed counts: %+v → %+v", first, second)
	}
}
