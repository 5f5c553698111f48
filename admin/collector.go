package admin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
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
	DefaultFullEvery   = 10 * time.Minute
)

// Collector fans one stats read out to every tenant database of a fleet
// snapshot. At most Concurrency connections are open at once (tenant reads
// and counter reads together), each read bounded by Timeout. A failing or
// slow tenant is recorded in its row and never fails or delays the others
// beyond its own Timeout.
//
// Change detection (Activity set): every refresh first reads the write
// counters of every database with one connection per server (grouped by
// Activity.ServerKey), then queries only the tenants that may have changed.
// A tenant is kept from the previous report, unqueried, only when all of
// these hold:
//   - its last read succeeded and recorded a baseline: the counters read
//     just before that query, for the same database location;
//   - the counters read now equal that baseline (same oid, tup_inserted,
//     tup_updated, tup_deleted, stats_reset and server statistics epoch, see
//     DBActivity.StatsEpoch) and the database accepts the stats role
//     (datallowconn, CONNECT);
//   - its numbers are younger than its forced re-query age: a point between
//     half of FullEvery and FullEvery drawn per tenant and query (fullDue), so
//     that the forced re-queries of a fleet read at start-up spread over
//     refreshes instead of making every 10th minute a cold refresh.
//
// Why counters and not times: a backend flushes its statistics with a delay
// (PostgreSQL 15: at most once a second, within about 10 s when idle, 60 s
// under contention), so a write may show in pg_stat_database well after it
// committed. The baseline is read before the query, so a write the query did
// not see can only move the counters after the baseline: when its flush
// arrives, the tenant is queried again. The numbers of a skipped tenant are
// therefore at most one flush delay plus one refresh interval behind, and
// never older than FullEvery. What the counters do not see (TRUNCATE) is
// caught by FullEvery; statistics lost in a crash change the epoch.
//
// prev may come from an earlier process (Cache's state file, LoadState):
// its baselines and StatsAt are compared like any others, so a restart
// queries what changed or fell due while the admin was down.
//
// A server's counters are read through one of its tenant databases (those
// that answered last time first; up to activityAttempts of them within one
// Timeout). The tenants of a server whose counters cannot be read, and a
// tenant whose last read failed, are queried as without change detection.
// Database sizes are read with every query, so a skipped tenant's size is
// refreshed when it changes or FullEvery passes.
//
// A Collector is safe for concurrent use once configured; its fields must not
// change afterwards.
type Collector struct {
	Source StatsSource
	// Activity, if not nil, enables change detection (see above).
	Activity    ActivitySource
	Concurrency int                      // default DefaultConcurrency
	Timeout     time.Duration            // per tenant and per counter read, default DefaultTimeout
	FullEvery   time.Duration            // with Activity: re-query every tenant at least this often (see fullDue); default DefaultFullEvery
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

func (c *Collector) fullEvery() time.Duration {
	if c.FullEvery > 0 {
		return c.FullEvery
	}
	return DefaultFullEvery
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

// serverActivity is the result of one counter read: the counters by
// database name, or nil when the read failed.
type serverActivity struct {
	activity map[string]DBActivity
}

// Collect reads every tenant of snap and returns a new, unpublished Report
// (Generation 0). prev, if not nil, supplies the last good numbers and the
// failure counts of tenants that fail now, and (with change detection) the
// rows of tenants that did not change.
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
	for i, slug := range slugs {
		rows[i] = c.baseRow(snap.Tenants[slug], snap.Instances[slug])
	}
	prevRows := map[string]*TenantStats{}
	if prev != nil {
		for i := range prev.Tenants {
			prevRows[prev.Tenants[i].Slug] = &prev.Tenants[i]
		}
	}

	// One errgroup for both phases: at most Concurrency connections at once.
	var g errgroup.Group
	g.SetLimit(c.concurrency()) // Go blocks while Concurrency reads run

	// Phase 1: the write counters of every server, before any query (the
	// baseline of a query must be read before it).
	servers := c.readActivity(ctx, &g, snap, slugs, prevRows)
	activityFailures := 0
	for _, sa := range servers {
		if sa.activity == nil {
			activityFailures++
		}
	}

	// Phase 2: query every tenant that may have changed.
	queried := 0
	for i, slug := range slugs {
		if ctx.Err() != nil {
			break // the check below reports it
		}
		t := snap.Tenants[slug]
		row := &rows[i]
		var now *baseline
		if c.Activity != nil {
			if sa := servers[c.Activity.ServerKey(t.Database)]; sa != nil {
				if act, ok := sa.activity[t.Database.Name]; ok {
					now = &baseline{db: t.Database, activity: act}
				}
			}
		}
		if old := prevRows[slug]; c.unchanged(old, now, start) {
			row.keepNumbers(old)
			row.baseline = old.baseline
			verified := start
			row.VerifiedAt, row.Reachable, row.Unchanged = &verified, true, true
			continue
		}
		queried++
		g.Go(func() error {
			if c.read(ctx, t, row) {
				row.baseline = now
			}
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
		old := prevRows[r.Slug]
		if old != nil {
			r.Failures = old.Failures
		}
		if r.Reachable {
			continue
		}
		failed++
		r.Failures++
		if old != nil && old.StatsAt != nil {
			r.keepNumbers(old)
			r.VerifiedAt = old.VerifiedAt
		}
	}
	end := c.now()
	rep := &Report{StartedAt: start, FinishedAt: end, Duration: end.Sub(start), Tenants: rows, Totals: Sum(rows),
		Queried: queried, Unchanged: len(rows) - queried, ActivityFailures: activityFailures}
	c.logger().Info("stats refresh", "tenants", len(rows), "queried", rep.Queried, "unchanged", rep.Unchanged,
		"failed", failed, "activity_failures", activityFailures, "duration", rep.Duration)
	return rep, nil
}

// unchanged reports whether old, the tenant's row in the previous report,
// may be kept without a query, given now, the counters just read (nil when
// unknown) at the start of this refresh.
func (c *Collector) unchanged(old *TenantStats, now *baseline, start time.Time) bool {
	switch {
	case c.Activity == nil, old == nil, now == nil:
		return false
	case !old.Reachable, old.baseline == nil, old.StatsAt == nil:
		return false // never read, or failed last time: query
	case !now.activity.Connectable:
		return false // the stats role is refused: let the query flag it
	case start.Sub(*old.StatsAt) >= c.fullDue(old.Slug, *old.StatsAt):
		return false // forced re-query
	}
	return *old.baseline == *now
}

// fullDue is how old the numbers of slug, queried at statsAt, may get
// before a forced re-query: a point between half of FullEvery and FullEvery
// drawn from a hash of both. Tenants queried together (at start-up) thus
// come due over half of FullEvery instead of in one refresh, and every
// query draws a new point, so their phases keep drifting apart: in the long
// run the forced re-queries are spread evenly over refreshes. No tenant goes
// unqueried longer than FullEvery.
func (c *Collector) fullDue(slug string, statsAt time.Time) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(slug))
	_, _ = h.Write(binary.LittleEndian.AppendUint64(nil, uint64(statsAt.UnixNano())))
	x := h.Sum64() // FNV's high bits vary little across similar inputs: mix them (murmur3's fmix64)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	full := c.fullEvery()
	frac := float64(x>>11) / (1 << 53) // [0, 1)
	return full - time.Duration(frac*float64(full/2))
}

// activityAttempts bounds the tenant databases tried, one after another
// within one Timeout, to read a server's counters: a database that refuses
// the stats role must not turn change detection off for its whole server.
const activityAttempts = 3

// readActivity reads the counters of every server of snap at once (within
// g's limit) and waits for them. Without Activity it returns an empty map.
// A failed server's entry has a nil activity. Each server is read through
// one of its tenant databases, preferring those that answered the last
// refresh (prevRows), in slug order.
func (c *Collector) readActivity(ctx context.Context, g *errgroup.Group, snap *registry.Snapshot, slugs []string,
	prevRows map[string]*TenantStats) map[string]*serverActivity {
	servers := map[string]*serverActivity{}
	if c.Activity == nil {
		return servers
	}
	var keys []string
	candidates := map[string][]registry.Database{}
	for pass := 0; pass < 2; pass++ { // first the tenants that answered last time, then the others
		for _, slug := range slugs {
			old := prevRows[slug]
			if answered := old != nil && old.Reachable; answered != (pass == 0) {
				continue
			}
			db := snap.Tenants[slug].Database
			key := c.Activity.ServerKey(db)
			if _, ok := candidates[key]; !ok {
				keys = append(keys, key)
			}
			if len(candidates[key]) < activityAttempts {
				candidates[key] = append(candidates[key], db)
			}
		}
	}
	for _, key := range keys {
		if ctx.Err() != nil {
			break
		}
		sa := &serverActivity{}
		servers[key] = sa
		dbs := candidates[key]
		g.Go(func() error {
			rctx, cancel := context.WithTimeout(ctx, c.timeout())
			defer cancel()
			var errs []error
			for _, db := range dbs {
				act, err := c.Activity.ReadActivity(rctx, db)
				if err == nil {
					sa.activity = act
					return nil
				}
				errs = append(errs, err)
				if rctx.Err() != nil {
					break
				}
			}
			if ctx.Err() == nil {
				c.logger().Warn("reading write counters failed; querying every tenant on the server",
					"server", key, "err", errors.Join(errs...))
			}
			return nil
		})
	}
	_ = g.Wait()
	return servers
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

// read fills row with what t's database reports, or with the failure, and
// reports whether the read succeeded.
func (c *Collector) read(ctx context.Context, t *registry.Tenant, row *TenantStats) bool {
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
		return false
	}
	at := c.now()
	row.Reachable = true
	row.Musicians, row.Projects, row.OpenRequests = st.Musicians, st.Projects, st.OpenRequests
	row.LastActivity, row.SchemaVersion, row.DatabaseBytes = st.LastActivity, st.SchemaVersion, st.SizeBytes
	row.StatsAt, row.VerifiedAt = &at, &at
	return true
}

// keepNumbers copies the queried numbers of old, and when they were
// queried, into r: for a tenant not queried again (unchanged) or not
// reachable. A new queried column belongs here.
func (r *TenantStats) keepNumbers(old *TenantStats) {
	r.Musicians, r.Projects, r.OpenRequests = old.Musicians, old.Projects, old.OpenRequests
	r.LastActivity, r.SchemaVersion, r.DatabaseBytes = old.LastActivity, old.SchemaVersion, old.DatabaseBytes
	r.StatsAt = old.StatsAt
}
