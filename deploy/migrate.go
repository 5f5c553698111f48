package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"time"

	"stagesub.dev/app/schema"
	"stagesub.dev/registry"
)

// MigrateOptions selects the tenants of a fleet migration.
type MigrateOptions struct {
	// Slugs lists the tenants to migrate; empty means every tenant whose
	// status is not provisioning or deleting.
	Slugs []string
	// Concurrency bounds the tenants migrated at once; default 8.
	Concurrency int
	// DryRun reports versions and pending migrations without migrating.
	DryRun bool
	// OnResult, when set, is called once per tenant as it finishes, from
	// one goroutine at a time, with the count done so far and the total.
	OnResult func(r MigrateResult, done, total int)
}

// MigrateResult is the outcome for one tenant.
type MigrateResult struct {
	Slug     string
	From, To int64 // versions before and after (To == From on dry runs)
	Latest   int64 // the binary's latest version
	Skipped  string
	Err      error
	Elapsed  time.Duration
}

// Pending is the number of versions still to apply.
func (r MigrateResult) Pending() int64 {
	if r.Err != nil || r.Latest < r.To {
		return 0
	}
	return r.Latest - r.To
}

// Migrate runs the embedded migrations on tenant databases, in parallel but
// bounded by Concurrency, each as its own tenant role with the credentials
// in the secrets sink.
//
// Invariants: every tenant is tried on its own; one tenant's failure never
// stops the others and is reported in its result. Each successful tenant's
// schema version is written to its record. The results are sorted by slug.
// The error is non-nil only when the tenant list itself cannot be read.
func (p *Provisioner) Migrate(ctx context.Context, o MigrateOptions) ([]MigrateResult, error) {
	var slugs []string
	var results []MigrateResult
	if len(o.Slugs) == 0 {
		all, invalid, err := p.Store.FindTenants(ctx)
		if err != nil {
			return nil, p.consulErr("list tenants", err)
		}
		for _, t := range all {
			switch t.Status {
			case registry.StatusProvisioning, registry.StatusDeleting:
				results = append(results, MigrateResult{Slug: t.Slug, Latest: schema.Latest(), Skipped: "status " + string(t.Status)})
			default:
				slugs = append(slugs, t.Slug)
			}
		}
		for key, why := range invalid {
			results = append(results, MigrateResult{Slug: key, Latest: schema.Latest(), Err: fmt.Errorf("invalid tenant record: %s", why)})
		}
	} else {
		slugs = append(slugs, o.Slugs...)
	}
	n := o.Concurrency
	if n <= 0 {
		n = 8
	}
	total := len(slugs) + len(results)
	var mu sync.Mutex
	done := 0
	report := func(r MigrateResult) {
		mu.Lock()
		defer mu.Unlock()
		results = append(results, r)
		done++
		if o.OnResult != nil {
			o.OnResult(r, done, total)
		}
	}
	mu.Lock()
	for _, r := range results {
		done++
		if o.OnResult != nil {
			o.OnResult(r, done, total)
		}
	}
	mu.Unlock()

	work := make(chan string)
	var wg sync.WaitGroup
	for range min(n, len(slugs)) {
		wg.Go(func() {
			for slug := range work {
				report(p.migrateOne(ctx, slug, o.DryRun))
			}
		})
	}
	for _, s := range slugs {
		work <- s
	}
	close(work)
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].Slug < results[j].Slug })
	return results, nil
}

func (p *Provisioner) migrateOne(ctx context.Context, slug string, dryRun bool) (r MigrateResult) {
	start := time.Now()
	r = MigrateResult{Slug: slug, Latest: schema.Latest()}
	defer func() { r.Elapsed = time.Since(start) }()
	if err := registry.ValidateSlug(slug); err != nil {
		r.Err = err
		return r
	}
	env, err := p.Secrets.Read(slug)
	if errors.Is(err, fs.ErrNotExist) {
		r.Err = fmt.Errorf("no credentials in %s", p.Secrets.File(slug))
		return r
	}
	if err != nil {
		r.Err = err
		return r
	}
	u := env[registry.EnvDatabaseURL]
	if u == "" {
		r.Err = fmt.Errorf("%s has no %s", p.Secrets.File(slug), registry.EnvDatabaseURL)
		return r
	}
	db, err := p.OpenDB(ctx, u)
	if err != nil {
		r.Err = fmt.Errorf("connect as %s: %w", registry.RoleName(slug), err)
		return r
	}
	defer db.Close()
	if dryRun {
		r.From, r.Err = schema.Current(ctx, db)
		r.To = r.From
		return r
	}
	r.From, r.To, r.Err = schema.Migrate(ctx, db)
	if r.Err != nil {
		r.Err = fmt.Errorf("migrate: %w", r.Err)
		return r
	}
	if cur, err := p.Store.FindTenant(ctx, slug); err == nil && cur.SchemaVersion == r.To {
		return r // record already up to date: no write
	}
	_, err = p.Store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		t.SchemaVersion = r.To
		t.UpdatedAt = p.now()
		return nil
	})
	if err != nil {
		r.Err = p.consulErr("record schema version", err)
	}
	return r
}
