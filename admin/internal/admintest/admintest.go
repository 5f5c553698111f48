// Package admintest builds tenant databases with known contents for the
// admin's tests and benchmarks: the app's schema (schema.Migrate), the
// read-only stats role with a password, and rows whose counts are given.
package admintest

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"stagesub.dev/app/schema"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

// StatsPassword is the password of registry.StatsRole in test clusters.
const StatsPassword = "stats-pw-for-tests-only"

// TemplateName is the migrated template database in a test cluster.
const TemplateName = "tmpl_admin"

// Data is what a tenant database holds; the stats view must report
// Musicians, Projects, OpenRequests and LastActivity for it.
type Data struct {
	Musicians         int // active
	InactiveMusicians int
	Projects          int
	OpenRequests      int // pending; needs Projects >= 1 and Musicians >= OpenRequests
	ClosedRequests    int // declined; needs Musicians >= ClosedRequests
	LastActivity      time.Time
}

// Template creates (once per cluster) the stats role with StatsPassword and
// a migrated template database with the stats grants, and returns its name.
func Template(tb testing.TB, c *pgtest.Cluster) string {
	tb.Helper()
	return c.Template(tb, TemplateName, func(ctx context.Context, url string) error {
		role := pgx.Identifier{registry.StatsRole}.Sanitize()
		err := c.Exec(ctx, "postgres", fmt.Sprintf(`DO $$BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN
				CREATE ROLE %s LOGIN PASSWORD '%s';
			END IF; END$$`, registry.StatsRole, role, StatsPassword))
		if err != nil {
			return err
		}
		db, err := sql.Open("pgx", url)
		if err != nil {
			return err
		}
		defer db.Close()
		if _, _, err := schema.Migrate(ctx, db); err != nil {
			return err
		}
		return schema.GrantStats(ctx, db, registry.StatsRole)
	})
}

// CreateTenantDB creates a database from Template holding d and returns
// its name. It is dropped when tb ends.
func CreateTenantDB(tb testing.TB, c *pgtest.Cluster, d Data) string {
	tb.Helper()
	name, url := c.CreateDB(tb, Template(tb, c))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Fill(ctx, url, d); err != nil {
		tb.Fatalf("admintest: %v", err)
	}
	return name
}

// Fill grants the stats role CONNECT on the database at url (a superuser
// URL) and inserts d.
func Fill(ctx context.Context, url string, d Data) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("admintest: %w", err)
	}
	defer conn.Close(ctx)
	var dbname string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbname); err != nil {
		return fmt.Errorf("admintest: %w", err)
	}
	stmts := []struct {
		sql  string
		args []any
	}{
		{"GRANT CONNECT ON DATABASE " + pgx.Identifier{dbname}.Sanitize() + " TO " + pgx.Identifier{registry.StatsRole}.Sanitize(), nil},
		{"INSERT INTO musicians (name, instrument, active) SELECT 'm' || g, 'violin', true FROM generate_series(1, $1) g", []any{d.Musicians}},
		{"INSERT INTO musicians (name, instrument, active) SELECT 'x' || g, 'viola', false FROM generate_series(1, $1) g", []any{d.InactiveMusicians}},
		{"INSERT INTO projects (name, starts_on, ends_on) SELECT 'p' || g, current_date, current_date + 3 FROM generate_series(1, $1) g", []any{d.Projects}},
		{`INSERT INTO requests (project_id, musician_id, position, answer_token)
		  SELECT (SELECT min(id) FROM projects), m.id, 'tutti', md5('o' || m.id) || md5(random()::text)
		  FROM musicians m WHERE m.active ORDER BY m.id LIMIT $1`, []any{d.OpenRequests}},
		{`INSERT INTO requests (project_id, musician_id, position, answer_token, status)
		  SELECT (SELECT max(id) FROM projects), m.id, 'tutti', md5('c' || m.id) || md5(random()::text), 'declined'
		  FROM musicians m ORDER BY m.id DESC LIMIT $1`, []any{d.ClosedRequests}},
	}
	if !d.LastActivity.IsZero() {
		stmts = append(stmts, struct {
			sql  string
			args []any
		}{"INSERT INTO activity_log (at, action) VALUES ($1, 'test.activity')", []any{d.LastActivity}})
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s.sql, s.args...); err != nil {
			return fmt.Errorf("admintest: %s: %w", s.sql, err)
		}
	}
	return nil
}

// Settle waits until the statistics of a freshly filled database are
// flushed: its tup_inserted reaches inserted (the filling backend flushes
// when it exits, a moment after it has disconnected).
func Settle(tb testing.TB, c *pgtest.Cluster, db string, inserted int64) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, _, _ := Counters(tb, c, db)
		if n >= inserted {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: tup_inserted = %d, want %d: statistics not flushed", db, n, inserted)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Counters returns db's write counters (pg_stat_database) as the superuser
// sees them now.
func Counters(tb testing.TB, c *pgtest.Cluster, db string) (ins, upd, del int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT pg_stat_clear_snapshot(), tup_inserted, tup_updated, tup_deleted
		FROM pg_stat_database WHERE datname = $1`, db).Scan(nil, &ins, &upd, &del)
	if err != nil {
		tb.Fatal(err)
	}
	return ins, upd, del
}

// Inserts is how many rows Fill inserts for d.
func Inserts(d Data) int64 {
	n := d.Musicians + d.InactiveMusicians + d.Projects + d.OpenRequests + d.ClosedRequests
	if !d.LastActivity.IsZero() {
		n++
	}
	return int64(n)
}
