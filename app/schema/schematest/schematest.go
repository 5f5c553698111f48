// Package schematest gives tests of every module a fresh, migrated tenant
// database on the package's pgtest cluster.
package schematest

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"stagesub.dev/app/schema"
	"stagesub.dev/internal/pgtest"
)

// TemplateName is the migrated template database on a cluster.
const TemplateName = "tmpl_stagesub_app"

// Template returns the name of a database on c migrated to schema.Latest(),
// created once per cluster. Databases cloned from it are owned by the
// superuser; see pgtest for roles.
func Template(tb testing.TB, c *pgtest.Cluster) string {
	tb.Helper()
	return c.Template(tb, TemplateName, func(ctx context.Context, url string) error {
		db, err := sql.Open("pgx", url)
		if err != nil {
			return err
		}
		defer db.Close()
		_, _, err = schema.Migrate(ctx, db)
		return err
	})
}

// NewDB creates a fresh migrated database bound to tenant slug ("" = not
// bound) and returns its superuser URL. It is dropped when tb ends.
func NewDB(tb testing.TB, c *pgtest.Cluster, slug string) (url string) {
	tb.Helper()
	_, url = c.CreateDB(tb, Template(tb, c))
	if slug != "" {
		db := MustOpen(tb, url)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := schema.Bind(ctx, db, slug, slug); err != nil {
			tb.Fatalf("schematest: %v", err)
		}
	}
	return url
}

// MustOpen opens url with database/sql (driver pgx), closed when tb ends.
func MustOpen(tb testing.TB, url string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		tb.Fatalf("schematest: open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
