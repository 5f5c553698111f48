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

// DBActivity is what PostgreSQL's cumulative statistics (pg_stat_database)
// say about one database's writes. Two readings that are equal mean, as far
// as the statistics can tell, that no row was inserted, updated or deleted
// in between (see Collector for the limits of that).
//
// Transaction counts are deliberately not part of it: xact_commit also
// counts read-only transactions, the admin's own stats query included, so
// it would move on every refresh.
type DBActivity struct {
	OID         uint32 `json:"oid"` // pg_database.oid: a dropped and recreated database differs
	TupInserted int64  `json:"tup_inserted"`
	TupUpdated  int64  `json:"tup_updated"`
	TupDeleted  int64  `json:"tup_deleted"`
	// StatsReset is stats_reset in Unix microseconds; 0 when never reset.
	StatsReset int64 `json:"stats_reset_us"`
	// StatsEpoch identifies the server's current set of cumulative
	// statistics, in Unix microseconds (0 if unknown): PostgreSQL's
	// pg_stat_bgwriter.stats_reset, which the server sets whenever it
	// discards all statistics (crash recovery, immediate shutdown, a
	// missing or corrupt statistics file; also pg_stat_reset_shared). After
	// such a discard a database's counters restart from 0 without a
	// stats_reset of their own and could come back to an old value, so
	// counters of different epochs are never compared. A clean restart
	// keeps the statistics and the epoch. It also tells apart a different
	// server answering at the same address.
	StatsEpoch int64 `json:"stats_epoch_us"`
	// Connectable is false when the database refuses the stats role
	// (datallowconn off, or no CONNECT privilege): never trust counters
	// then; a query must find out and flag it.
	Connectable bool `json:"connectable"`
}

// ActivitySource reads the write counters of every database on a server
// with one connection, so a refresh can skip tenants that did not change.
// Implementations must honour ctx and be safe for concurrent use.
type ActivitySource interface {
	// ServerKey names the server that db lives on (e.g. "host:port"):
	// tenants with the same key are covered by one ReadActivity.
	ServerKey(db registry.Database) string
	// ReadActivity connects to db (any database on the server the stats
	// role may connect to) and returns the counters of every database on
	// that server, by name.
	ReadActivity(ctx context.Context, db registry.Database) (map[string]DBActivity, error)
}

// TenantStats is one row of the dashboard: a tenant record, its instances as
// seen in Consul and what its database reported.
//
// When the database could not be read in the last refresh, Reachable is
// false, Error says why, and the numbers are the last ones read successfully
// (StatsAt tells when; nil if never).
//
// With change detection (Collector.Activity), a tenant whose write counters
// did not move since its last query is not queried again: its row keeps the
// numbers of that query (StatsAt), Unchanged is true and VerifiedAt is the
// time of the refresh that checked the counters. Without it, or when the
// tenant was queried, VerifiedAt equals StatsAt.
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
	StatsAt          *time.Time      `json:"stats_at"`    // when the numbers were queried (database_bytes included)
	VerifiedAt       *time.Time      `json:"verified_at"` // when they were last known current (queried, or counters unchanged)
	Unchanged        bool            `json:"unchanged"`   // this refresh kept the numbers: counters did not move
	QueryDuration    time.Duration   `json:"-"`
	Failures         uint64          `json:"failures_total"` // failed reads since the process started (or since the state file began, see SaveState)

	// baseline is what the tenant's server reported about its database
	// just before the query that produced these numbers; nil when unknown
	// (no change detection, the counters could not be read, or the query
	// failed). Only a row with a baseline may be kept unchanged.
	baseline *baseline
}

// baseline ties a DBActivity reading to the database it was read for, so a
// tenant whose record moved to another database or server is queried.
type baseline struct {
	db       registry.Database
	activity DBActivity
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
	// Queried counts tenants whose database was queried in this refresh;
	// Unchanged those kept from the previous report because their write
	// counters did not move. Queried + Unchanged = len(Tenants).
	Queried   int
	Unchanged int
	// ActivityFailures counts servers whose write counters could not be
	// read; every tenant on them was queried.
	ActivityFailures int
	// Restored is true for a report loaded from the state file at start
	// (LoadState): its numbers were collected by an earlier process, before
	// a restart, at FinishedAt. Reports produced by Collect have it false.
	Restored bool
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
