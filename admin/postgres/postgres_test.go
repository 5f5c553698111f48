package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"stagesub.dev/admin/internal/admintest"
	"stagesub.dev/admin/postgres"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// MustSource returns a StatsSource that reaches c over TCP, where the
// stats role's password is checked.
func MustSource(tb testing.TB, c *pgtest.Cluster, pw string) *postgres.StatsSource {
	tb.Helper()
	s, err := postgres.New(postgres.Config{DSN: "postgres://127.0.0.1/?sslmode=disable", Password: pw})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func tcpDB(c *pgtest.Cluster, name string) registry.Database {
	return registry.Database{Host: "127.0.0.1", Port: c.Port(), Name: name}
}

func TestFetchStats(t *testing.T) {
	c := pgtest.Start(t, pgtest.WithTCP())
	last := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	name := admintest.CreateTenantDB(t, c, admintest.Data{
		Musicians: 7, InactiveMusicians: 2, Projects: 3, OpenRequests: 4, ClosedRequests: 1, LastActivity: last,
	})
	src := MustSource(t, c, admintest.StatsPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("OK", func(t *testing.T) {
		st, err := src.FetchStats(ctx, tcpDB(c, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			what      string
			got, want int64
		}{
			{"musicians", st.Musicians, 7},
			{"projects", st.Projects, 3},
			{"open requests", st.OpenRequests, 4},
			{"schema version", st.SchemaVersion, 1},
		} {
			if tt.got != tt.want {
				t.Errorf("%s = %d, want %d", tt.what, tt.got, tt.want)
			}
		}
		if st.LastActivity == nil || !st.LastActivity.Equal(last) {
			t.Errorf("last activity = %v, want %v", st.LastActivity, last)
		}
		if st.SizeBytes < 1<<20 {
			t.Errorf("size = %d, want a real database size", st.SizeBytes)
		}
		if got := src.Open(); got != 0 {
			t.Errorf("open connections after FetchStats = %d, want 0", got)
		}
	})

	t.Run("UnixSocket", func(t *testing.T) {
		s, err := postgres.New(postgres.Config{DSN: "sslmode=disable"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.FetchStats(ctx, registry.Database{Host: c.SocketDir(), Port: c.Port(), Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := st.Musicians, int64(7); got != want {
			t.Errorf("musicians = %d, want %d", got, want)
		}
	})

	t.Run("ErrWrongPassword", func(t *testing.T) {
		_, err := MustSource(t, c, "wrong").FetchStats(ctx, tcpDB(c, name))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28P01" {
			t.Errorf("err = %v, want invalid_password (28P01)", err)
		}
	})

	t.Run("ErrNoDatabase", func(t *testing.T) {
		if _, err := src.FetchStats(ctx, tcpDB(c, "no_such_db")); err == nil {
			t.Error("FetchStats of a missing database succeeded")
		}
	})

	t.Run("ErrDeadline", func(t *testing.T) {
		// Hold a lock the stats view needs: the read must give up at the
		// deadline, and the server must cancel the statement by itself.
		lock, err := pgx.Connect(ctx, c.URL(name))
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Close(ctx)
		tx, err := lock.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "LOCK TABLE musicians IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer dcancel()
		_, err = src.FetchStats(dctx, tcpDB(c, name))
		if err == nil {
			t.Fatal("FetchStats under a lock succeeded")
		}
		// The backend is gone or idle soon after: nothing left waiting.
		waitFor(t, 5*time.Second, func() bool {
			return countBackends(t, c, "stagesub_stats", "active") == 0
		})
	})
}

// TestStatsRoleCannotReadTables checks the isolation the admin relies on:
// the stats role reads the stats view and nothing else.
func TestStatsRoleCannotReadTables(t *testing.T) {
	c := pgtest.Start(t, pgtest.WithTCP())
	name := admintest.CreateTenantDB(t, c, admintest.Data{Musicians: 1, Projects: 1, OpenRequests: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.TCPURL(registry.StatsRole, admintest.StatsPassword, name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT * FROM stagesub_stats_v"); err != nil {
		t.Fatalf("stats view: %v", err)
	}
	for _, q := range []string{
		"SELECT * FROM musicians", "SELECT * FROM users", "SELECT * FROM sessions", "SELECT * FROM requests",
		"SELECT * FROM projects", "SELECT * FROM activity_log", "SELECT * FROM api_tokens", "SELECT * FROM tenant_meta",
		"INSERT INTO musicians (name, instrument) VALUES ('x', 'y')",
		"CREATE TABLE t (x int)",
	} {
		t.Run(q, func(t *testing.T) {
			_, err := conn.Exec(ctx, q)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42501" {
				t.Errorf("err = %v, want insufficient_privilege (42501)", err)
			}
		})
	}
}

func countBackends(tb testing.TB, c *pgtest.Cluster, user, state string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	q := "SELECT count(*) FROM pg_stat_activity WHERE usename = $1"
	args := []any{user}
	if state != "" {
		q += " AND state = $2"
		args = append(args, state)
	}
	if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func waitFor(tb testing.TB, d time.Duration, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
