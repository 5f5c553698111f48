package deploy_test

import (
	"context"
	"fmt"
	"testing"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// BenchmarkCreateTenant measures `tenant create` without starting an
// instance: Consul record, lock, role, database, grants, migrations as the
// tenant role, bind, stats grant, env file. Goal: under 1 s.
func BenchmarkCreateTenant(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		slug := fmt.Sprintf("bench-create-%d", i)
		i++
		e.dropTenant(b, slug)
		if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: slug, Name: "Bench " + slug}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMigrateAll200 runs `migrate --all` (concurrency 8) over 200
// tenants: with nothing pending (goal under 5 s) and with one new migration
// pending on every tenant (goal under 30 s). The schema has one migration
// so far, so "one new migration" empties each database (as right after its
// creation) and applies it: an upper bound for an incremental migration.
func BenchmarkMigrateAll200(b *testing.B) {
	const n = 200
	e := newEnv(b)
	ctx := context.Background()
	var slugs []string
	for i := range n {
		s := fmt.Sprintf("bench-fleet-%03d", i)
		slugs = append(slugs, s)
		e.dropTenant(b, s)
		if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: s, Name: "Fleet " + s}); err != nil {
			b.Fatal(err)
		}
	}
	migrateAll := func(b *testing.B, wantChanged int) {
		res, err := e.p.Migrate(ctx, deploy.MigrateOptions{Concurrency: 8})
		if err != nil {
			b.Fatal(err)
		}
		changed := 0
		for _, r := range res {
			if r.Err != nil {
				b.Fatalf("%s: %v", r.Slug, r.Err)
			}
			if r.From != r.To {
				changed++
			}
		}
		if len(res) != n || changed != wantChanged {
			b.Fatalf("%d results, %d changed; want %d, %d", len(res), changed, n, wantChanged)
		}
	}
	b.Run("nothing-pending", func(b *testing.B) {
		for b.Loop() {
			migrateAll(b, 0)
		}
	})
	b.Run("one-new-migration", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			for _, s := range slugs {
				db, role := registry.DatabaseName(s), registry.RoleName(s)
				if err := e.c.Exec(ctx, "postgres", "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
					b.Fatal(err)
				}
				if err := e.srv.EnsureDatabase(ctx, db, role); err != nil {
					b.Fatal(err)
				}
				if err := e.srv.LockDown(ctx, db, role); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			migrateAll(b, n)
		}
		b.ReportMetric(float64(schema.Latest()), "schema-version")
	})
}
