package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/admin"
	"stagesub.dev/admin/internal/admintest"
	"stagesub.dev/admin/postgres"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

// BenchmarkRefresh measures refreshes (admin.Collector over this package's
// StatsSource, as cmd/stagesub-admin wires it: change detection on,
// concurrency 16, timeout 2 s) across 100 and 1,000 tenant databases cloned
// from a filled template. Modes:
//
//	cold/tcp, cold/unix  every tenant queried (no previous report), over TCP
//	                     with scram-sha-256 (as in production) or the unix socket
//	floor/unix           connect, SELECT 1, disconnect per tenant, same fan-out:
//	                     the least any per-database refresh costs on the machine
//	steady/tcp           the previous report is current and nothing changed:
//	                     one pg_stat_database read, no tenant queried
//	steady5pct/tcp       5% of the tenants written between refreshes (their
//	                     statistics flushed): those are queried, the rest kept
//	restart/tcp          an admin restart with a state file: a previous refresh
//	                     saved its report (untimed); each op is a new Cache
//	                     loading the file (admin.CacheOptions.StateFile) and
//	                     its first refresh (which saves again), nothing
//	                     changed in between: no tenant queried
//
// Reported besides ns/op: worst_s, queried (tenants queried per refresh),
// max_server_conns (most stagesub_stats backends pg_stat_activity showed at
// once, sampled continuously; the benchmark fails above 16) and
// max_client_conns (most connections the source had open at once);
// restart/tcp also load_ms (reading and checking the state file) and
// state_kb (its size). Every
// refresh checks that all tenants answered and the totals are exact.
// ADMIN_BENCH_TENANTS (e.g. "100,1000") picks the fleet sizes,
// ADMIN_BENCH_MODES (e.g. "cold/tcp,steady/tcp") the modes.
func BenchmarkRefresh(b *testing.B) {
	sizes := []int{100, 1000}
	if v := os.Getenv("ADMIN_BENCH_TENANTS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("ADMIN_BENCH_TENANTS: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	modes := []string{"cold/tcp", "cold/unix", "floor/unix", "steady/tcp", "steady5pct/tcp", "restart/tcp"}
	if v := os.Getenv("ADMIN_BENCH_MODES"); v != "" {
		modes = strings.Split(v, ",")
	}
	c := pgtest.Start(b, pgtest.WithTCP())
	tmpl := filledTemplate(b, c)
	f := &benchFleet{c: c, added: map[string]int64{}}
	for _, n := range sizes {
		if len(f.dbs) < n {
			start := time.Now()
			for len(f.dbs) < n {
				name, _ := c.CreateDB(b, tmpl)
				f.dbs = append(f.dbs, name)
			}
			b.Logf("created %d tenant databases from template %s in %s", n, tmpl, time.Since(start).Round(time.Millisecond))
		}
		for _, mode := range modes {
			b.Run(fmt.Sprintf("tenants=%d/%s", n, mode), func(b *testing.B) {
				benchRefresh(b, f, n, mode)
			})
		}
	}
}

// benchFleet is the benchmark's tenant databases and the musicians added to
// each by steady5pct writes (for exact totals).
type benchFleet struct {
	c     *pgtest.Cluster
	dbs   []string
	added map[string]int64
	next  int // next database to write to
}

func (f *benchFleet) musicians(n int) int64 {
	t := int64(n * benchData.Musicians)
	for _, db := range f.dbs[:n] {
		t += f.added[db]
	}
	return t
}

// write adds one musician to k of the first n databases (round robin) and
// flushes the writers' statistics.
func (f *benchFleet) write(tb testing.TB, n, k int) {
	for i := 0; i < k; i++ {
		db := f.dbs[f.next%n]
		f.next++
		writeFlushed(tb, f.c, db, fmt.Sprintf(addMusicians, 1))
		f.added[db]++
	}
}

func benchRefresh(b *testing.B, f *benchFleet, n int, mode string) {
	c := f.c
	kind, transport, _ := strings.Cut(mode, "/")
	snap := fleet(f.dbs[:n], c, transport == "unix")
	src, err := postgres.New(postgres.Config{DSN: "sslmode=disable", Password: admintest.StatsPassword})
	if err != nil {
		b.Fatal(err)
	}
	col := &admin.Collector{Source: src, Activity: src, Logger: discard}
	if kind == "floor" {
		// The floor: connect, SELECT 1, disconnect, with the same fan-out.
		col.Source, col.Activity = floorSource{}, nil
	}
	if v := os.Getenv("ADMIN_BENCH_CONCURRENCY"); v != "" {
		col.Concurrency, _ = strconv.Atoi(v)
	}
	ctx := context.Background()
	check := func(rep *admin.Report) {
		b.Helper()
		if rep.Totals.Unreachable != 0 {
			for _, t := range rep.Tenants {
				if !t.Reachable {
					b.Fatalf("%d of %d tenants unreachable, e.g. %s: %s", rep.Totals.Unreachable, n, t.Slug, t.Error)
				}
			}
		}
		want := f.musicians(n)
		if kind == "floor" {
			want = 0
		}
		if got := rep.Totals.Musicians; got != want {
			b.Fatalf("musicians = %d, want %d", got, want)
		}
	}
	var prev *admin.Report
	statePath := b.TempDir() + "/stats.json"
	if kind == "steady" || kind == "steady5pct" || kind == "restart" {
		// The cold refresh before, untimed, with its own source so that
		// max_client_conns counts only the timed refreshes.
		warm, err := postgres.New(postgres.Config{DSN: "sslmode=disable", Password: admintest.StatsPassword})
		if err != nil {
			b.Fatal(err)
		}
		wcol := *col
		wcol.Source, wcol.Activity = warm, warm
		if prev, err = wcol.Collect(ctx, snap, nil); err != nil {
			b.Fatal(err)
		}
		check(prev)
		if kind == "restart" {
			// The state file of a running admin comes from a steady
			// refresh: one more, untimed, so that the statistics flush of
			// the databases just created (it may land after the cold
			// refresh read its baselines) is in the saved baselines.
			if prev, err = wcol.Collect(ctx, snap, prev); err != nil {
				b.Fatal(err)
			}
			check(prev)
			prev.Generation = 1
			if err := admin.SaveState(statePath, prev); err != nil {
				b.Fatal(err)
			}
		}
	}

	stop := sampleBackends(b, c)
	b.ResetTimer()
	var worst, load time.Duration
	queried := 0
	for i := 0; i < b.N; i++ {
		if kind == "steady5pct" {
			b.StopTimer()
			f.write(b, n, n/20)
			b.StartTimer()
		}
		var rep *admin.Report
		var err error
		if kind == "restart" {
			// A new process: a new cache loads the state file, then its
			// first refresh runs (and saves) with the loaded report as prev.
			began := time.Now()
			cache := admin.NewCache(admin.CacheOptions{Collector: col, Snapshot: func() *registry.Snapshot { return snap },
				StateFile: statePath, Logger: discard})
			load += time.Since(began)
			if r := cache.Report(); !r.Restored || r.Totals.Musicians != f.musicians(n) {
				b.Fatalf("state file not loaded: restored %v, musicians %d", r.Restored, r.Totals.Musicians)
			}
			rep, err = cache.Refresh(ctx)
		} else {
			rep, err = col.Collect(ctx, snap, prev)
		}
		if err != nil {
			b.Fatal(err)
		}
		check(rep)
		if kind == "steady" || kind == "steady5pct" {
			prev = rep
		}
		worst = max(worst, rep.Duration)
		queried += rep.Queried
	}
	b.StopTimer()
	maxServer := stop()
	b.ReportMetric(worst.Seconds(), "worst_s")
	b.ReportMetric(float64(queried)/float64(b.N), "queried")
	if kind == "restart" {
		b.ReportMetric(float64(load.Microseconds())/1e3/float64(b.N), "load_ms")
		if fi, err := os.Stat(statePath); err == nil {
			b.ReportMetric(float64(fi.Size())/1024, "state_kb")
		}
	}
	if kind == "floor" {
		return
	}
	b.ReportMetric(float64(maxServer), "max_server_conns")
	b.ReportMetric(float64(src.Peak()), "max_client_conns")
	limit := col.Concurrency
	if limit <= 0 {
		limit = admin.DefaultConcurrency
	}
	if maxServer > limit {
		b.Errorf("%d stats connections open at once, want at most %d", maxServer, limit)
	}
	if want := map[string]int{"steady": 0, "steady5pct": n / 20, "restart": 0}[kind]; kind != "cold" && queried != want*b.N {
		b.Errorf("queried %d tenants in %d refreshes, want %d each", queried, b.N, want)
	}
}

var benchData = admintest.Data{Musicians: 25, InactiveMusicians: 5, Projects: 6, OpenRequests: 10, ClosedRequests: 4,
	LastActivity: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}

// filledTemplate returns a template database holding benchData.
func filledTemplate(tb testing.TB, c *pgtest.Cluster) string {
	tb.Helper()
	base := admintest.Template(tb, c)
	return c.Template(tb, "tmpl_admin_bench", func(ctx context.Context, _ string) error {
		if err := c.Exec(ctx, "postgres", "DROP DATABASE tmpl_admin_bench"); err != nil {
			return err
		}
		if err := c.Exec(ctx, "postgres", "CREATE DATABASE tmpl_admin_bench TEMPLATE "+base); err != nil {
			return err
		}
		return admintest.Fill(ctx, c.URL("tmpl_admin_bench"), benchData)
	})
}

// sampleBackends counts the stats role's backends in pg_stat_activity
// until the returned func is called, which returns the maximum seen.
func sampleBackends(tb testing.TB, c *pgtest.Cluster) func() int {
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	peak := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var n int
			// A new snapshot of the statistics on every query.
			err := conn.QueryRow(ctx, "SELECT pg_stat_clear_snapshot(), count(*) FROM pg_stat_activity WHERE usename = $1",
				registry.StatsRole).Scan(nil, &n)
			if err != nil {
				return
			}
			mu.Lock()
			peak = max(peak, n)
			mu.Unlock()
		}
	}()
	return func() int {
		cancel()
		<-done
		conn.Close(context.Background())
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// floorSource only connects (as the superuser, trust), runs SELECT 1 and
// disconnects: what any per-database fan-out costs at least.
type floorSource struct{}

func (floorSource) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d dbname=%s user=postgres sslmode=disable", db.Host, db.Port, db.Name))
	if err != nil {
		return admin.DBStats{}, err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT 1")
	return admin.DBStats{}, err
}

var discard = slog.New(slog.DiscardHandler)
