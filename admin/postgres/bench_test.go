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

// BenchmarkRefresh measures one full refresh (admin.Collector over this
// package's StatsSource, default concurrency 16 and timeout 2 s) across
// 100 and 1,000 tenant databases cloned from a filled template, over TCP
// with scram-sha-256 (as in production) and over the unix socket.
//
// Reported besides ns/op: max_server_conns, the most stagesub_stats
// backends pg_stat_activity showed at once (sampled continuously), and
// max_client_conns, the most connections the source had open at once.
// transport=unix-floor is the same fan-out doing only connect, SELECT 1,
// disconnect: the least any per-database refresh can cost on the machine.
// ADMIN_BENCH_TENANTS (e.g. "100,1000") picks the fleet sizes.
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
	c := pgtest.Start(b, pgtest.WithTCP())
	tmpl := filledTemplate(b, c)
	var dbs []string
	for _, n := range sizes {
		if len(dbs) < n {
			start := time.Now()
			for len(dbs) < n {
				name, _ := c.CreateDB(b, tmpl)
				dbs = append(dbs, name)
			}
			b.Logf("created %d tenant databases from template %s in %s", n, tmpl, time.Since(start).Round(time.Millisecond))
		}
		for _, transport := range []string{"tcp", "unix", "unix-floor"} {
			b.Run(fmt.Sprintf("tenants=%d/transport=%s", n, transport), func(b *testing.B) {
				benchRefresh(b, c, dbs[:n], transport)
			})
		}
	}
}

func benchRefresh(b *testing.B, c *pgtest.Cluster, dbs []string, transport string) {
	snap := &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}
	for i, name := range dbs {
		slug := fmt.Sprintf("t%04d", i)
		d := registry.Database{Host: "127.0.0.1", Port: c.Port(), Name: name}
		if strings.HasPrefix(transport, "unix") {
			d.Host = c.SocketDir()
		}
		snap.Tenants[slug] = &registry.Tenant{Slug: slug, Name: slug, Status: registry.StatusActive, Database: d}
	}
	src, err := postgres.New(postgres.Config{DSN: "sslmode=disable", Password: admintest.StatsPassword})
	if err != nil {
		b.Fatal(err)
	}
	col := &admin.Collector{Source: src, Logger: discard}
	want := int64(len(dbs) * benchData.Musicians)
	if transport == "unix-floor" {
		// The floor: connect, SELECT 1, disconnect, with the same fan-out.
		col.Source, want = floorSource{}, 0
	}
	if v := os.Getenv("ADMIN_BENCH_CONCURRENCY"); v != "" {
		col.Concurrency, _ = strconv.Atoi(v)
	}
	ctx := context.Background()

	stop := sampleBackends(b, c)
	b.ResetTimer()
	var worst time.Duration
	for i := 0; i < b.N; i++ {
		rep, err := col.Collect(ctx, snap, nil)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Totals.Unreachable != 0 {
			for _, t := range rep.Tenants {
				if !t.Reachable {
					b.Fatalf("%d of %d tenants unreachable, e.g. %s: %s", rep.Totals.Unreachable, len(dbs), t.Slug, t.Error)
				}
			}
		}
		if got := rep.Totals.Musicians; got != want {
			b.Fatalf("musicians = %d, want %d", got, want)
		}
		worst = max(worst, rep.Duration)
	}
	b.StopTimer()
	maxServer := stop()
	b.ReportMetric(worst.Seconds(), "worst_s")
	if transport == "unix-floor" {
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
