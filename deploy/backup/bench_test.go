package backup_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"filippo.io/age"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/registry"
)

// createFleet creates n seeded tenants (8 at a time) with e.id's recipient.
func createFleet(b *testing.B, e *testEnv, prefix string, n int) []string {
	b.Helper()
	ctx := context.Background()
	slugs := make([]string, n)
	for i := range n {
		slugs[i] = fmt.Sprintf("%s-%03d", prefix, i)
		e.drop(b, slugs[i])
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range slugs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: s, Name: "Fleet " + s}); err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = e.store.UpdateTenant(ctx, s, func(t *registry.Tenant) error {
				t.BackupRecipient = e.id.Recipient().String()
				return nil
			})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	// Demo data (40 musicians, 6 projects, 3 requests) in every tenant.
	for _, s := range slugs {
		db := deploytest.MustTenantDB(b, e.secrets, s)
		if _, err := db.ExecContext(ctx, `
			INSERT INTO musicians (name, instrument, email) SELECT 'M ' || i, 'violin', 'm' || i || '@x.se' FROM generate_series(1, 40) i;
			INSERT INTO projects (name, starts_on, ends_on) SELECT 'P ' || i, date '2027-01-01' + i, date '2027-01-03' + i FROM generate_series(1, 6) i;`); err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
	return slugs
}

// BenchmarkBackupAll100 runs `backup --all` over 100 small tenants (40
// musicians, 6 projects each) at concurrency 1, 4 and 8. Goal: under 30 s
// at the default concurrency 4.
func BenchmarkBackupAll100(b *testing.B) {
	e := newEnv(b)
	slugs := createFleet(b, e, "bk", 100)
	ctx := context.Background()
	for _, conc := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("concurrency-%d", conc), func(b *testing.B) {
			var bytes int64
			for b.Loop() {
				dir := b.TempDir()
				bytes = 0
				for _, r := range e.svc.All(ctx, slugs, backup.Options{Dir: dir}, conc, nil) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
					bytes += r.Manifest.Size
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/float64(len(slugs)), "ms/tenant")
			b.ReportMetric(float64(bytes)/float64(len(slugs))/1024, "KiB/tenant")
		})
	}
}

// BenchmarkRestore10k restores (switch with --force --drop-old) a tenant
// with 10,000 musicians, 500 projects and 10,000 requests: decrypt,
// pg_restore in one transaction as the tenant role, grant, verify row
// counts, switch the record. Goal: under 10 s. Also times its backup.
func BenchmarkRestore10k(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	slug := "big"
	e.tenant(b, slug, 1)
	db := deploytest.MustTenantDB(b, e.secrets, slug)
	if _, err := db.ExecContext(ctx, `
		INSERT INTO musicians (name, instrument, email, phone, notes)
			SELECT 'Musician ' || i, (ARRAY['violin','viola','cello','flute','horn'])[1 + i % 5], 'm' || i || '@example.org', '+46 70 ' || i, repeat('n', i % 50)
			FROM generate_series(2, 10000) i;
		INSERT INTO projects (name, starts_on, ends_on, venue) SELECT 'Project ' || i, date '2027-01-01' + i, date '2027-01-04' + i, 'Hall' FROM generate_series(1, 500) i;
		INSERT INTO requests (project_id, musician_id, position, answer_token, status)
			SELECT 1 + i % 500, 1 + i % 10000, 'violin', md5(i::text) || 'token', (ARRAY['pending','accepted','declined'])[1 + i % 3]
			FROM generate_series(1, 10000) i
			ON CONFLICT DO NOTHING;`); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var res backup.Result
	b.Run("backup", func(b *testing.B) {
		for b.Loop() {
			res = e.svc.Backup(ctx, slug, backup.Options{Dir: dir, Keep: 1})
			if res.Err != nil {
				b.Fatal(res.Err)
			}
		}
		b.ReportMetric(float64(res.Manifest.Size)/(1<<20), "MiB")
	})
	if got := res.Manifest.Rows["public.musicians"]; got != 10000 {
		b.Fatalf("musicians in manifest = %d", got)
	}
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			_, err := e.svc.Restore(ctx, backup.RestoreRequest{Slug: slug, File: res.Path,
				Identities: []age.Identity{e.id}, Force: true, DropOld: true})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
