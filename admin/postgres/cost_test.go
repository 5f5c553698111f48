package postgres_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/admin"
	"stagesub.dev/admin/internal/admintest"
	"stagesub.dev/admin/postgres"
	"stagesub.dev/app/schema"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

// BenchmarkCost breaks the per-tenant cost of a refresh down: the same
// 16-way fan-out (admin.Collector) over N tenant databases doing only part
// of the work, with the wall time, the client's CPU (getrusage of this
// process) and the server's CPU (utime+stime of the postmaster's reaped
// children, i.e. the backends that exited, read from /proc) per tenant.
// ADMIN_BENCH_TENANTS picks N (default 1000); ADMIN_BENCH_COST_STEPS picks the
// steps (comma-separated names below; default all).
func BenchmarkCost(b *testing.B) {
	n := 1000
	if v := os.Getenv("ADMIN_BENCH_TENANTS"); v != "" {
		f := strings.Split(v, ",")
		n, _ = strconv.Atoi(f[len(f)-1])
	}
	c := pgtest.Start(b, pgtest.WithTCP())
	tmpl := filledTemplate(b, c)
	dbs := make([]string, n)
	start := time.Now()
	for i := range dbs {
		dbs[i], _ = c.CreateDB(b, tmpl)
	}
	b.Logf("created %d tenant databases in %s", n, time.Since(start).Round(time.Millisecond))

	tcp := func(extra string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s sslmode=disable %s", c.Port(), registry.StatsRole, admintest.StatsPassword, extra)
	}
	unix := func(extra string) string {
		return fmt.Sprintf("host=%s port=%d user=%s sslmode=disable %s", c.SocketDir(), c.Port(), registry.StatsRole, extra)
	}
	prod, err := postgres.New(postgres.Config{DSN: "sslmode=disable", Password: admintest.StatsPassword})
	if err != nil {
		b.Fatal(err)
	}
	steps := []struct {
		name  string
		conc  int
		unix  bool
		fetch func(ctx context.Context, db registry.Database) (admin.DBStats, error)
	}{
		{"tcp_connect_close", 16, false, stepFunc(tcp, "")},
		{"unix_connect_close", 16, true, stepFunc(unix, "")},
		{"tcp_select1", 16, false, stepFunc(tcp, "SELECT 1")},
		{"tcp_statsview", 16, false, stepFunc(tcp, schema.StatsQuery)},
		{"tcp_size", 16, false, stepFunc(tcp, "SELECT pg_database_size(current_database())")},
		{"tcp_statsview_size", 16, false, stepFunc(tcp, "SELECT q.*, pg_database_size(current_database()) FROM ("+schema.StatsQuery+") q")},
		{"tcp_source", 16, false, prod.FetchStats},
		{"unix_source", 16, true, prod.FetchStats},
		{"tcp_source_c8", 8, false, prod.FetchStats},
		{"tcp_source_c4", 4, false, prod.FetchStats},
		{"tcp_source_c2", 2, false, prod.FetchStats},
	}
	want := map[string]bool{}
	if v := os.Getenv("ADMIN_BENCH_COST_STEPS"); v != "" {
		for _, s := range strings.Split(v, ",") {
			want[s] = true
		}
	}
	pm := postmasterPID(b, c)
	// Warm-up: the first connection to a fresh database writes its relcache
	// init file; every later one reads it.
	warm := &admin.Collector{Source: sourceFunc(stepFunc(unix, "")), Logger: discard}
	wstart, wcpu := time.Now(), childCPU(b, pm)
	if _, err := warm.Collect(context.Background(), fleet(dbs, c, true), nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("first connections (relcache init files written): %s, server cpu %s", time.Since(wstart).Round(time.Millisecond), childCPU(b, pm)-wcpu)
	for _, st := range steps {
		if len(want) > 0 && !want[st.name] {
			continue
		}
		b.Run(fmt.Sprintf("tenants=%d/%s", n, st.name), func(b *testing.B) {
			col := &admin.Collector{Source: sourceFunc(st.fetch), Concurrency: st.conc, Logger: discard}
			snap := fleet(dbs, c, st.unix)
			var srv, cli time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s0, c0 := childCPU(b, pm), selfCPU()
				rep, err := col.Collect(context.Background(), snap, nil)
				if err != nil {
					b.Fatal(err)
				}
				if rep.Totals.Unreachable != 0 {
					b.Fatalf("%d unreachable: %s", rep.Totals.Unreachable, rep.Tenants[0].Error)
				}
				srv += childCPU(b, pm) - s0
				cli += selfCPU() - c0
			}
			per := float64(b.N * n)
			b.ReportMetric(float64(srv.Microseconds())/per, "server_cpu_us/tenant")
			b.ReportMetric(float64(cli.Microseconds())/per, "client_cpu_us/tenant")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/per, "wall_us/tenant")
		})
	}
}

type sourceFunc func(ctx context.Context, db registry.Database) (admin.DBStats, error)

func (f sourceFunc) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	return f(ctx, db)
}

// stepFunc connects with dsn(dbname=...), runs q (if any) and closes.
func stepFunc(dsn func(string) string, q string) func(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	return func(ctx context.Context, db registry.Database) (admin.DBStats, error) {
		cc, err := pgx.ParseConfig(dsn("dbname=" + db.Name))
		if err != nil {
			return admin.DBStats{}, err
		}
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return admin.DBStats{}, err
		}
		defer conn.Close(context.Background())
		if q != "" {
			rows, err := conn.Query(ctx, q)
			if err != nil {
				return admin.DBStats{}, err
			}
			rows.Close()
			if rows.Err() != nil {
				return admin.DBStats{}, rows.Err()
			}
		}
		return admin.DBStats{}, nil
	}
}

func fleet(dbs []string, c *pgtest.Cluster, unix bool) *registry.Snapshot {
	snap := &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}
	for i, name := range dbs {
		slug := fmt.Sprintf("t%04d", i)
		d := registry.Database{Host: "127.0.0.1", Port: c.Port(), Name: name}
		if unix {
			d.Host = c.SocketDir()
		}
		snap.Tenants[slug] = &registry.Tenant{Slug: slug, Name: slug, Status: registry.StatusActive, Database: d}
	}
	return snap
}

func postmasterPID(tb testing.TB, c *pgtest.Cluster) int {
	b, err := os.ReadFile(filepath.Join(c.Dir(), "data", "postmaster.pid"))
	if err != nil {
		tb.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		tb.Fatal(err)
	}
	return pid
}

// childCPU returns the CPU time of pid's reaped children (cutime+cstime).
func childCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// fields after "(comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14
	var t int64
	for _, i := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		t += v
	}
	return time.Duration(t) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
