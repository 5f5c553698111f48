package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/admin"
	"stagesub.dev/admin/internal/admintest"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
)

// crash kills a backend of c with SIGKILL: the postmaster resets every
// backend and runs crash recovery, which discards the statistics. It
// returns once c accepts connections again.
func crash(tb testing.TB, c *pgtest.Cluster) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		tb.Fatal(err)
	}
	// The cluster runs with synchronous_commit off: a checkpoint first, so
	// that the crash loses the statistics but no committed row.
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		tb.Fatal(err)
	}
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	_ = conn.Close(ctx)
	time.Sleep(200 * time.Millisecond) // the postmaster notices and resets
	waitFor(tb, 30*time.Second, func() bool {
		conn, err := pgx.Connect(ctx, c.AdminURL())
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var n int64
		// Recovery done and statistics of the tenant databases gone.
		return conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_database").Scan(&n) == nil
	})
}

// TestRestartFromState runs two admin "processes" (a Cache and Collector
// each, sharing only the state file) against real databases: the first
// refreshes and saves, something happens while the admin is down, the
// second loads the file and refreshes once. With a usable file the second
// shows the saved report at once and queries only what may have changed;
// without one it refreshes cold.
func TestRestartFromState(t *testing.T) {
	c := pgtest.New(t, pgtest.WithTCP()) // private: one case crashes it
	data := admintest.Data{Musicians: 3, Projects: 1, OpenRequests: 1, LastActivity: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := MustSource(t, c, admintest.StatsPassword)
	const fullEvery = time.Hour

	type env struct {
		dbs  []string
		snap *registry.Snapshot
		path string
	}
	tests := []struct {
		name    string
		down    func(t *testing.T, e *env) // while the admin is down
		downFor time.Duration              // the second process's clock is this far ahead
		// want
		restored  bool   // the second cache starts with the saved report
		queried   []int  // indexes of e.dbs queried by the first refresh of the second process
		tenants   int    // rows in its report
		musicians int64  // total after it
		warn      string // in the second process's log
	}{
		{name: "NothingChanged", restored: true, tenants: 3, musicians: 9},
		{name: "WrittenWhileDown", down: func(t *testing.T, e *env) {
			writeFlushed(t, c, e.dbs[1], fmt.Sprintf(addMusicians, 2))
		}, restored: true, queried: []int{1}, tenants: 3, musicians: 11},
		{name: "RemovedFromRegistry", down: func(t *testing.T, e *env) {
			delete(e.snap.Tenants, "c")
		}, restored: true, tenants: 2, musicians: 6},
		{name: "MovedDatabase", down: func(t *testing.T, e *env) {
			// b's record now points at c's database: queried, c kept.
			e.snap.Tenants["b"].Database = tcpDB(c, e.dbs[2])
		}, restored: true, queried: []int{2}, tenants: 3, musicians: 9},
		{name: "DownLongerThanFullEvery", downFor: fullEvery, restored: true, queried: []int{0, 1, 2}, tenants: 3, musicians: 9},
		{name: "ServerRestartedCleanly", down: func(t *testing.T, e *env) {
			// A clean shutdown keeps the statistics: nothing to query.
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}, restored: true, tenants: 3, musicians: 9},
		{name: "ServerCrashed", down: func(t *testing.T, e *env) {
			// b is written while the admin is down, then the server
			// crashes and loses the statistics; afterwards b's counters
			// are brought back to exactly the saved baseline (other
			// writes): only the statistics epoch tells them apart.
			ins, upd, del := admintest.Counters(t, c, e.dbs[1])
			writeFlushed(t, c, e.dbs[1], fmt.Sprintf(addMusicians, 2))
			crash(t, c)
			if got, _, _ := admintest.Counters(t, c, e.dbs[1]); got >= ins {
				t.Fatalf("after the crash tup_inserted = %d, want below %d (statistics discarded)", got, ins)
			}
			// Inactive musicians and no-op updates/deletes do not change
			// the numbers (the stats view counts active musicians).
			i0, u0, d0 := admintest.Counters(t, c, e.dbs[1])
			if ins-i0 < max(upd-u0, del-d0) || upd < u0 || del < d0 {
				t.Fatalf("cannot pad %d/%d/%d to %d/%d/%d", i0, u0, d0, ins, upd, del)
			}
			pad := fmt.Sprintf(`INSERT INTO musicians (name, instrument, active) SELECT 'pad' || g, 'oboe', false FROM generate_series(1, %d) g;
				UPDATE musicians SET instrument = 'flute' WHERE name IN (SELECT 'pad' || g FROM generate_series(1, %d) g);
				DELETE FROM musicians WHERE name IN (SELECT 'pad' || g FROM generate_series(1, %d) g)`,
				ins-i0, upd-u0, del-d0)
			writeFlushed(t, c, e.dbs[1], pad)
			if i, u, d := admintest.Counters(t, c, e.dbs[1]); i != ins || u != upd || d != del {
				t.Fatalf("counters after padding = %d/%d/%d, want the baseline %d/%d/%d", i, u, d, ins, upd, del)
			}
		}, restored: true, queried: []int{0, 1, 2}, tenants: 3, musicians: 11},
		{name: "Corrupt", down: func(t *testing.T, e *env) {
			if err := os.WriteFile(e.path, []byte(`{"format":"stagesub-admin-stats","version":1,"report":{"gener`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, queried: []int{0, 1, 2}, tenants: 3, musicians: 9, warn: "corrupt"},
		{name: "NewerVersion", down: func(t *testing.T, e *env) {
			b, err := os.ReadFile(e.path)
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.Replace(b, []byte(`"version":1`), []byte(`"version":2`), 1)
			if err := os.WriteFile(e.path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, queried: []int{0, 1, 2}, tenants: 3, musicians: 9, warn: "version 2"},
		{name: "Missing", down: func(t *testing.T, e *env) {
			if err := os.Remove(e.path); err != nil {
				t.Fatal(err)
			}
		}, queried: []int{0, 1, 2}, tenants: 3, musicians: 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{path: t.TempDir() + "/stats.json"}
			for range 3 {
				e.dbs = append(e.dbs, admintest.CreateTenantDB(t, c, data))
			}
			for _, db := range e.dbs {
				admintest.Settle(t, c, db, admintest.Inserts(data))
			}
			e.snap = tenantFleet(c, e.dbs...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			// The first process: a cold refresh, saved.
			var saves []error
			first := admin.NewCache(admin.CacheOptions{
				Collector: &admin.Collector{Source: src, Activity: src, FullEvery: fullEvery, Logger: discard},
				Snapshot:  func() *registry.Snapshot { return e.snap },
				StateFile: e.path, OnStateSave: func(err error) { saves = append(saves, err) }, Logger: discard,
			})
			rep1, err := first.Refresh(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep1.Queried != 3 || rep1.Totals.Musicians != 9 || len(saves) != 1 || saves[0] != nil {
				t.Fatalf("first refresh: queried %d, musicians %d, saves %v; want 3, 9, [<nil>]", rep1.Queried, rep1.Totals.Musicians, saves)
			}

			if tt.down != nil {
				tt.down(t, e)
			}

			// The second process.
			var log syncbuf.Buffer
			cnt := &counting{StatsSource: src}
			second := admin.NewCache(admin.CacheOptions{
				Collector: &admin.Collector{Source: cnt, Activity: src, FullEvery: fullEvery, Logger: discard,
					Now: func() time.Time { return time.Now().Add(tt.downFor) }},
				Snapshot:  func() *registry.Snapshot { return e.snap },
				StateFile: e.path,
				Logger:    slog.New(slog.NewTextHandler(&log, nil)),
			})
			at := second.Report()
			if got := at.Restored; got != tt.restored {
				t.Errorf("restored = %v, want %v", got, tt.restored)
			}
			if tt.restored {
				if at.Generation != 1 || !at.FinishedAt.Equal(rep1.FinishedAt) || at.Totals.Musicians != 9 || len(at.Tenants) != 3 {
					t.Errorf("report at start: generation %d, finished %s, musicians %d, %d tenants; want 1, %s, 9, 3",
						at.Generation, at.FinishedAt, at.Totals.Musicians, len(at.Tenants), rep1.FinishedAt)
				}
			} else if !at.Empty() {
				t.Errorf("report at start = generation %d, want empty", at.Generation)
			}
			if tt.warn != "" && !strings.Contains(log.String(), tt.warn) {
				t.Errorf("log lacks %q:\n%s", tt.warn, log.String())
			}

			rep2, err := second.Refresh(ctx)
			if err != nil {
				t.Fatal(err)
			}
			reads := cnt.take()
			var got, want []string
			for _, i := range tt.queried {
				want = append(want, e.dbs[i])
			}
			for _, db := range e.dbs {
				if reads[db] > 0 {
					got = append(got, db)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("queried %v, want %v", got, want)
			}
			wantGen := uint64(1)
			if tt.restored {
				wantGen = 2
			}
			for _, x := range []struct {
				what      string
				got, want int64
			}{
				{"queried", int64(rep2.Queried), int64(len(tt.queried))},
				{"unchanged", int64(rep2.Unchanged), int64(tt.tenants - len(tt.queried))},
				{"tenants", int64(len(rep2.Tenants)), int64(tt.tenants)},
				{"customers", int64(rep2.Totals.Customers), int64(tt.tenants)},
				{"reachable", int64(rep2.Totals.Reachable), int64(tt.tenants)},
				{"musicians", rep2.Totals.Musicians, tt.musicians},
				{"generation", int64(rep2.Generation), int64(wantGen)},
			} {
				if x.got != x.want {
					t.Errorf("%s = %d, want %d", x.what, x.got, x.want)
				}
			}
			if rep2.Restored {
				t.Error("a refreshed report is marked restored")
			}
			// The second process saved its report: a third start sees it.
			third, err := admin.LoadState(e.path)
			if err != nil {
				t.Fatal(err)
			}
			if third.Generation != wantGen || third.Totals.Musicians != tt.musicians {
				t.Errorf("state after the second refresh: generation %d, musicians %d, %v; want %d, %d",
					third.Generation, third.Totals.Musicians, err, wantGen, tt.musicians)
			}
			files, err := os.ReadDir(strings.TrimSuffix(e.path, "/stats.json"))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range files {
				names = append(names, f.Name())
			}
			if got, want := fmt.Sprint(names), "[stats.json]"; got != want {
				t.Errorf("state directory = %s, want %s (no temporary files)", got, want)
			}
		})
	}
}
