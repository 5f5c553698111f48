// Package admin holds the domain of the StageSub superadmin dashboard: the
// per-tenant statistics (TenantStats) and their Totals, one fan-out over every
// tenant database (Collector) and the cache that answers pages at once while
// it refreshes in the background (Cache).
//
// Adapters live in subpackages that do not import one another: postgres (the
// StatsSource that reads one tenant database as the read-only stats role),
// http (pages, JSON API, login), prometheus (metrics) and password (superadmin
// password hashes). cmd/stagesub-admin wires them together.
package admin

import (
	"context"
	"errors"
	"time"

	"stagesub.dev/registry"
)

// DBStats is what one tenant database reports about itself.
type DBStats struct {
	Musicians     int64
	Projects      int64
	OpenRequests  int64
	LastActivity  *time.Time // nil when the tenant has no activity yet
	SchemaVersion int64      // migration version recorded in the database
	SizeBytes     int64      // pg_database_size
}

// StatsSource reads the statistics of one tenant database. Implementations
// must honour ctx (deadline and cancellation), must not keep a connection
// open after FetchStats returns and must be safe for concurrent use.
type StatsSource interface {
	FetchStats(ctx context.Context, db registry.Database) (DBStats, error)
}

// TenantStats is one row of the dashboard: a tenant record, its instances as
// seen in Consul and what its database reported.
//
// When the database could not be read in the last refresh, Reachable is
// false, Error says why, and the numbers are the last ones read successfully
// (StatsAt tells when; nil if never).
type TenantStats struct {
	Slug             string          `json:"slug"`
	Name             string          `json:"name"`
	Status           registry.Status `json:"status"`
	PanelURL         string          `json:"panel_url"`
	Musicians        int64           `json:"musicians"`
	Projects         int64           `json:"projects"`
	OpenRequests     int64           `json:"open_requests"`
	LastActivity     *time.Time      `json:"last_activity"`
	SchemaVersion    int64           `json:"schema_version"`
	DatabaseBytes    int64           `json:"database_bytes"`
	InstancesPassing int             `json:"instances_passing"`
	InstancesTotal   int             `json:"instances_total"`
	Reachable        bool            `json:"database_reachable"`
	TimedOut         bool            `json:"timed_out"`
	Error            string          `json:"error,omitempty"`
	StatsAt          *time.Time      `json:"stats_at"`
	QueryDuration    time.Duration   `json:"-"`
	Failures         uint64          `json:"failures_total"` // failed reads since the process started
}

// Totals sums a Report. Customers counts every tenant record; the sums count
// only tenants whose database answered in that refresh.
type Totals struct {
	Customers         int                     `json:"customers"`
	CustomersByStatus map[registry.Status]int `json:"customers_by_status"`
	Musicians         int64                   `json:"musicians"`
	Projects          int64                   `json:"projects"`
	OpenRequests      int64                   `json:"open_requests"`
	DatabaseBytes     int64                   `json:"database_bytes"`
	Reachable         int                     `json:"databases_reachable"`
	Unreachable       int                     `json:"databases_unreachable"`
}

// Report is the result of one full refresh. A Report is never modified after
// a Cache publishes it; readers share it without locks.
type Report struct {
	// Generation counts published reports, starting at 1; 0 marks the empty
	// report a Cache holds before its first refresh.
	Generation uint64
	StartedAt  time.Time
	FinishedAt time.Time
	Duration   time.Duration
	Totals     Totals
	// Tenants holds one row per tenant record, sorted by slug.
	Tenants []TenantStats
}

// Empty reports whether r holds no refresh yet.
func (r *Report) Empty() bool { return r.Generation == 0 }

// Age returns how old r is at now; 0 for an empty report.
func (r *Report) Age(now time.Time) time.Duration {
	if r.Empty() {
		return 0
	}
	return now.Sub(r.FinishedAt)
}

// Tenant returns the row of slug, or nil.
func (r *Report) Tenant(slug string) *TenantStats {
	for i := range r.Tenants {
		if r.Tenants[i].Slug == slug {
			return &r.Tenants[i]
		}
	}
	return nil
}

// ErrNoSnapshot is returned by a refresh before the fleet watcher has
// published its first snapshot.
var ErrNoSnapshot = errors.New("admin: no fleet snapshot from Consul yet")

// Sum computes the totals of rows.
func Sum(rows []TenantStats) Totals {
	t := Totals{CustomersByStatus: map[registry.Status]int{}}
	for _, r := range rows {
		t.Customers++
		t.CustomersByStatus[r.Status]++
		if !r.Reachable {
			t.Unreachable++
			continue
		}
		t.Reachable++
		t.Musicians += r.Musicians
		t.Projects += r.Projects
		t.OpenRequests += r.OpenRequests
		t.DatabaseBytes += r.DatabaseBytes
	}
	return t
}
