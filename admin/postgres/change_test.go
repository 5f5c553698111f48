package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/admin"
	"stagesub.dev/admin/internal/admintest"
	"stagesub.dev/admin/postgres"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

// counting wraps a StatsSource and counts reads per database.
type counting struct {
	admin.StatsSource
	mu    sync.Mutex
	reads map[string]int
}

func (s *counting) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	s.mu.Lock()
	if s.reads == nil {
		s.reads = map[string]int{}
	}
	s.reads[db.Name]++
	s.mu.Unlock()
	return s.StatsSource.FetchStats(ctx, db)
}

// take returns the reads since the last take.
func (s *counting) take() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reads
	s.reads = map[string]int{}
	return r
}

// tenantFleet is a snapshot of tenants "a", "b", ... on dbs over TCP.
func tenantFleet(c *pgtest.Cluster, dbs ...string) *registry.Snapshot {
	snap := &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}
	for i, name := range dbs {
		slug := string(rune('a' + i))
		snap.Tenants[slug] = &registry.Tenant{Slug: slug, Name: slug, Status: registry.StatusActive, Database: tcpDB(c, name)}
	}
	return snap
}

// writeFlushed runs sql in db as the superuser and flushes the session's
// statistics before the call returns: pg_stat_force_next_flush() (PG 15+)
// in the same implicit transaction makes the backend flush when it goes
// idle, which it does before it answers ReadyForQuery.
func writeFlushed(tb testing.TB, c *pgtest.Cluster, db, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql+"; SELECT pg_stat_force_next_flush()"); err != nil {
		tb.Fatal(err)
	}
}

const addMusicians = "INSERT INTO musicians (name, instrument) SELECT 'n' || g, 'cello' FROM generate_series(1, %d) g"

// TestChangeDetection runs the collector with change detection against
// real databases: unchanged tenants are not queried, changed ones are, and
// the totals stay exact throughout.
func TestChangeDetection(t *testing.T) {
	c := pgtest.Start(t, pgtest.WithTCP())
	data := admintest.Data{Musicians: 3, Projects: 1, OpenRequests: 1, LastActivity: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	dbs := make([]string, 3)
	for i := range dbs {
		dbs[i] = admintest.CreateTenantDB(t, c, data)
	}
	for _, db := range dbs {
		admintest.Settle(t, c, db, admintest.Inserts(data))
	}
	src := MustSource(t, c, admintest.StatsPassword)
	cnt := &counting{StatsSource: src}
	var offset atomic.Int64 // moves the collector's clock
	col := &admin.Collector{Source: cnt, Activity: src, FullEvery: time.Hour, Logger: discard,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }}
	snap := tenantFleet(c, dbs...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var rep *admin.Report
	refresh := func(t *testing.T) {
		t.Helper()
		var err error
		if rep, err = col.Collect(ctx, snap, rep); err != nil {
			t.Fatal(err)
		}
	}
	type want struct {
		queried   []string // databases read, in order of dbs
		musicians int64    // total
		reachable int
	}
	check := func(t *testing.T, w want) {
		t.Helper()
		reads := cnt.take()
		var got []string
		for _, db := range dbs {
			if reads[db] > 0 {
				got = append(got, db)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(w.queried) {
			t.Errorf("queried %v, want %v", got, w.queried)
		}
		if rep.Queried != len(w.queried) || rep.Unchanged != len(dbs)-len(w.queried) {
			t.Errorf("report queried/unchanged = %d/%d, want %d/%d", rep.Queried, rep.Unchanged, len(w.queried), len(dbs)-len(w.queried))
		}
		if got := rep.Totals.Musicians; got != w.musicians {
			t.Errorf("total musicians = %d, want %d", got, w.musicians)
		}
		if got := rep.Totals.Reachable; got != w.reachable {
			t.Errorf("reachable = %d, want %d", got, w.reachable)
		}
	}

	steps := []struct {
		name   string
		before func(t *testing.T)
		want   want
	}{
		{"Cold", nil, want{dbs, 9, 3}},
		{"NothingChanged", nil, want{nil, 9, 3}},
		{"InsertFlushed", func(t *testing.T) { writeFlushed(t, c, dbs[1], fmt.Sprintf(addMusicians, 2)) }, want{dbs[1:2], 11, 3}},
		{"UpdateFlushed", func(t *testing.T) {
			writeFlushed(t, c, dbs[0], "UPDATE musicians SET active = false WHERE id = (SELECT min(id) FROM musicians)")
		}, want{dbs[:1], 10, 3}},
		{"DeleteFlushed", func(t *testing.T) {
			writeFlushed(t, c, dbs[2], "DELETE FROM requests; DELETE FROM musicians WHERE id = (SELECT max(id) FROM musicians)")
		}, want{dbs[2:], 9, 3}},
		{"NothingChangedAgain", nil, want{nil, 9, 3}},
		{"StatsReset", func(t *testing.T) { writeFlushed(t, c, dbs[1], "SELECT pg_stat_reset()") }, want{dbs[1:2], 9, 3}},
		{"FullEveryPassed", func(t *testing.T) { offset.Store(int64(time.Hour)) }, want{dbs, 9, 3}},
		{"NotConnectable", func(t *testing.T) {
			if err := c.Exec(ctx, "postgres", "ALTER DATABASE "+dbs[2]+" ALLOW_CONNECTIONS false"); err != nil {
				t.Fatal(err)
			}
		}, want{dbs[2:], 9 - 2, 2}},
		{"ConnectableAgain", func(t *testing.T) {
			if err := c.Exec(ctx, "postgres", "ALTER DATABASE "+dbs[2]+" ALLOW_CONNECTIONS true"); err != nil {
				t.Fatal(err)
			}
		}, want{dbs[2:], 9, 3}}, // failed last time: queried although the counters did not move
		{"Settled", nil, want{nil, 9, 3}},
		// The first tenant refuses: the counters are read through another.
		{"FirstNotConnectable", func(t *testing.T) {
			if err := c.Exec(ctx, "postgres", "ALTER DATABASE "+dbs[0]+" ALLOW_CONNECTIONS false"); err != nil {
				t.Fatal(err)
			}
		}, want{dbs[:1], 9 - 2, 2}},
		{"FirstConnectableAgain", func(t *testing.T) {
			if err := c.Exec(ctx, "postgres", "ALTER DATABASE "+dbs[0]+" ALLOW_CONNECTIONS true"); err != nil {
				t.Fatal(err)
			}
		}, want{dbs[:1], 9, 3}},
		{"SettledAgain", nil, want{nil, 9, 3}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before(t)
			}
			refresh(t)
			check(t, st.want)
			if rep.ActivityFailures != 0 {
				t.Errorf("activity failures = %d, want 0", rep.ActivityFailures)
			}
		})
	}
	if row := rep.Tenant("a"); !row.Unchanged || row.VerifiedAt == nil || !row.VerifiedAt.After(*row.StatsAt) {
		t.Errorf("row a = %+v, want unchanged, verified after it was queried", row)
	}

	// A write whose backend just disconnects (no forced flush) shows up
	// within the flush delay: the exit flushes the statistics.
	t.Run("WriteThenDisconnect", func(t *testing.T) {
		if err := c.Exec(ctx, dbs[0], fmt.Sprintf(addMusicians, 5)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			refresh(t)
			if rep.Totals.Musicians == 14 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("total musicians = %d after 15 s, want 14", rep.Totals.Musicians)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got, want := rep.Tenant("a").Musicians, int64(3-1+5); got != want {
			t.Errorf("a musicians = %d, want %d", got, want)
		}
	})
}

// TestChangeDetectionFallback: when the stats role cannot read
// pg_stat_database, or the counters do not move (track_counts off), every
// tenant is queried, as without change detection.
func TestChangeDetectionFallback(t *testing.T) {
	c := pgtest.Start(t, pgtest.WithTCP())
	data := admintest.Data{Musicians: 4, Projects: 1}
	dbs := []string{admintest.CreateTenantDB(t, c, data), admintest.CreateTenantDB(t, c, data)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	grant := func(t *testing.T, verb string) {
		for _, db := range dbs {
			q := "REVOKE SELECT ON pg_catalog.pg_stat_database FROM PUBLIC"
			if verb == "GRANT" {
				q = "GRANT SELECT ON pg_catalog.pg_stat_database TO PUBLIC"
			}
			// The grant updates the view's catalog row: a write in that
			// database, flushed before the step's refresh.
			writeFlushed(t, c, db, q)
		}
	}
	setAll := func(t *testing.T, set string) { // ALTER DATABASE ... for every database
		for _, db := range dbs {
			if err := c.Exec(ctx, "postgres", "ALTER DATABASE "+db+" "+set); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, db := range dbs {
		admintest.Settle(t, c, db, admintest.Inserts(data))
	}
	grant(t, "REVOKE")
	src := MustSource(t, c, admintest.StatsPassword)
	cnt := &counting{StatsSource: src}
	col := &admin.Collector{Source: cnt, Activity: src, Logger: discard}
	snap := tenantFleet(c, dbs...)

	var rep *admin.Report
	for _, st := range []struct {
		name                     string
		before                   func(t *testing.T)
		wantQueried, wantFailure int
	}{
		{"Revoked", nil, 2, 1},
		{"StillRevoked", nil, 2, 1},
		{"Granted", func(t *testing.T) { grant(t, "GRANT") }, 2, 0}, // no baseline yet
		{"GrantedSettled", nil, 0, 0},
		{"TrackCountsOff", func(t *testing.T) { setAll(t, "SET track_counts = off") }, 2, 1},
		{"TrackCountsOn", func(t *testing.T) { setAll(t, "RESET track_counts") }, 2, 0},
		{"TrackCountsOnSettled", nil, 0, 0},
	} {
		t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before(t)
			}
			var err error
			if rep, err = col.Collect(ctx, snap, rep); err != nil {
				t.Fatal(err)
			}
			cnt.take()
			for _, tt := range []struct {
				what      string
				got, want int64
			}{
				{"queried", int64(rep.Queried), int64(st.wantQueried)},
				{"activity failures", int64(rep.ActivityFailures), int64(st.wantFailure)},
				{"musicians", rep.Totals.Musicians, 8},
				{"reachable", int64(rep.Totals.Reachable), 2},
			} {
				if tt.got != tt.want {
					t.Errorf("%s = %d, want %d", tt.what, tt.got, tt.want)
				}
			}
		})
	}
}

// TestChangeDetectionServerDown: a stopped server fails the counter read and
// every tenant on it is queried and flagged, keeping its last numbers.
func TestChangeDetectionServerDown(t *testing.T) {
	c := pgtest.New(t, pgtest.WithTCP())
	data := admintest.Data{Musicians: 2, Projects: 1}
	dbs := []string{admintest.CreateTenantDB(t, c, data), admintest.CreateTenantDB(t, c, data)}
	for _, db := range dbs {
		admintest.Settle(t, c, db, admintest.Inserts(data))
	}
	src := MustSource(t, c, admintest.StatsPassword)
	col := &admin.Collector{Source: src, Activity: src, Timeout: time.Second, Logger: discard}
	snap := tenantFleet(c, dbs...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var rep *admin.Report
	for _, st := range []struct {
		name                                    string
		before                                  func(t *testing.T)
		wantQueried, wantReachable, wantActFail int
		wantMusicians                           int64
		wantFlagged                             bool
	}{
		{"Up", nil, 2, 2, 0, 4, false},
		{"UpUnchanged", nil, 0, 2, 0, 4, false},
		{"Down", func(t *testing.T) {
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
		}, 2, 0, 1, 0, true},
		{"Back", func(t *testing.T) {
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}, 2, 2, 0, 4, false},
		{"BackUnchanged", nil, 0, 2, 0, 4, false},
	} {
		t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before(t)
			}
			var err error
			if rep, err = col.Collect(ctx, snap, rep); err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				what      string
				got, want int64
			}{
				{"queried", int64(rep.Queried), int64(st.wantQueried)},
				{"reachable", int64(rep.Totals.Reachable), int64(st.wantReachable)},
				{"activity failures", int64(rep.ActivityFailures), int64(st.wantActFail)},
				{"musicians", rep.Totals.Musicians, st.wantMusicians},
			} {
				if tt.got != tt.want {
					t.Errorf("%s = %d, want %d", tt.what, tt.got, tt.want)
				}
			}
			for _, row := range rep.Tenants {
				if flagged := !row.Reachable && row.Error != ""; flagged != st.wantFlagged {
					t.Errorf("%s flagged = %v (%q), want %v", row.Slug, flagged, row.Error, st.wantFlagged)
				}
				if row.Musicians != 2 || row.StatsAt == nil {
					t.Errorf("%s = %d musicians, stats at %v; want the last good 2", row.Slug, row.Musicians, row.StatsAt)
				}
			}
		})
	}
}

// TestServerKey: tenants on one server share a key; the DSN's host and
// port apply when the record has none.
func TestServerKey(t *testing.T) {
	s, err := postgres.New(postgres.Config{DSN: "postgres://db1.internal:5433/?sslmode=disable"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		db   registry.Database
		want string
	}{
		{registry.Database{Name: "orchestra_a"}, "db1.internal:5433"},
		{registry.Database{Host: "db2.internal", Name: "orchestra_a"}, "db2.internal:5433"},
		{registry.Database{Host: "db2.internal", Port: 6432, Name: "orchestra_b"}, "db2.internal:6432"},
		{registry.Database{Host: "/run/postgresql", Port: 5432, Name: "orchestra_c"}, "/run/postgresql:5432"},
	} {
		if got := s.ServerKey(tt.db); got != tt.want {
			t.Errorf("ServerKey(%+v) = %q, want %q", tt.db, got, tt.want)
		}
	}
}
