package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"stagesub.dev/registry"
)

// Collector defaults.
const (
	DefaultConcurrency = 16
	DefaultTimeout     = 2 * time.Second
)

// Collector fans one stats read out to every tenant database of a fleet
// snapshot. At most Concurrency reads (and so database connections) run at
// once, each bounded by Timeout. A failing or slow tenant is recorded in its
// row and never fails or delays the others beyond its own Timeout.
//
// A Collector is safe for concurrent use once configured; its fields must not
// change afterwards.
type Collector struct {
	Source      StatsSource
	Concurrency int                      // default DefaultConcurrency
	Timeout     time.Duration            // per tenant, default DefaultTimeout
	PanelURL    func(slug string) string // link to a tenant's own panel; nil = none
	Logger      *slog.Logger             // default slog.Default()
	Now         func() time.Time         // default time.Now
}

func (c *Collector) concurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return DefaultConcurrency
}

func (c *Collector) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Collector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Collector) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Collect reads every tenant of snap and returns a new, unpublished Report
// (Generation 0). prev, if not nil, supplies the last good numbers and the
// failure counts of tenants that fail now.
//
// Collect returns ctx.Err() (and no report) when ctx ends before every
// tenant is done: a cancelled refresh must not publish partial numbers.
func (c *Collector) Collect(ctx context.Context, snap *registry.Snapshot, prev *Report) (*Report, error) {
	if snap == nil {
		return nil, ErrNoSnapshot
	}
	start := c.now()
	slugs := make([]string, 0, len(snap.Tenants))
	for s := range snap.Tenants {
		slugs = append(slugs, s)
	}
	sort.Strings(slugs)
	rows := make([]TenantStats, len(slugs))

	var g errgroup.Group
	g.SetLimit(c.concurrency()) // Go blocks while Concurrency reads run
	for i, slug := range slugs {
		if ctx.Err() != nil {
			break // the check below reports it
		}
		t := snap.Tenants[slug]
		rows[i] = c.baseRow(t, snap.Instances[slug])
		row := &rows[i]
		g.Go(func() error {
			c.read(ctx, t, row)
			return nil // a tenant's failure is data, not an error of the fan-out
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("admin: refresh cancelled: %w", err)
	}

	failed := 0
	for i := range rows {
		r := &rows[i]
		var old *TenantStats
		if prev != nil {
			old = prev.Tenant(r.Slug)
		}
		if old != nil {
			r.Failures = old.Failures
		}
		if r.Reachable {
			continue
		}
		failed++
		r.Failures++
		if old != nil && old.StatsAt != nil {
			r.Musicians, r.Projects, r.OpenRequests = old.Musicians, old.Projects, old.OpenRequests
			r.LastActivity, r.SchemaVersion, r.DatabaseBytes = old.LastActivity, old.SchemaVersion, old.DatabaseBytes
			r.StatsAt = old.StatsAt
		}
	}
	end := c.now()
	rep := &Report{StartedAt: start, FinishedAt: end, Duration: end.Sub(start), Tenants: rows, Totals: Sum(rows)}
	c.logger().Info("stats refresh", "tenants", len(rows), "failed", failed, "duration", rep.Duration)
	return rep, nil
}

func (c *Collector) baseRow(t *registry.Tenant, instances []registry.Instance) TenantStats {
	r := TenantStats{Slug: t.Slug, Name: t.Name, Status: t.Status, InstancesTotal: len(instances)}
	for _, in := range instances {
		if in.Health == registry.HealthPassing {
			r.InstancesPassing++
		}
	}
	if c.PanelURL != nil {
		r.PanelURL = c.PanelURL(t.Slug)
	}
	return r
}

// read fills row with what t's database reports, or with the failure.
func (c *Collector) read(ctx context.Context, t *registry.Tenant, row *TenantStats) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	begin := time.Now()
	st, err := c.Source.FetchStats(ctx, t.Database)
	row.QueryDuration = time.Since(begin)
	if err != nil {
		row.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		if row.TimedOut {
			row.Error = fmt.Sprintf("timed out after %s", c.timeout())
		} else {
			row.Error = err.Error()
		}
		if ctx.Err() == nil || row.TimedOut {
			c.logger().Warn("tenant stats failed", "tenant", t.Slug, "timed_out", row.TimedOut, "err", err)
		}
		return
	}
	at := c.now()
	row.Reachable = true
	row.Musicians, row.Projects, row.OpenRequests = st.Musicians, st.Projects, st.OpenRequests
	row.LastActivity, row.SchemaVersion, row.DatabaseBytes = st.LastActivity, st.SchemaVersion, st.SizeBytes
	row.StatsAt = &at
}
