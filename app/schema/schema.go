// Package schema holds the tenant database schema of StageSub: versioned SQL
// migrations embedded in the binary (goose v3), the tenant binding, the first
// staff admin, the read-only stats view for the admin's stats role, and demo
// data. The app and stagesubctl run the same migrations.
//
// Run Migrate connected as the tenant role, so that it owns every object,
// including the stats view (a plain view reads its tables with its owner's
// rights; the stats role only needs SELECT on the view).
package schema

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"stagesub.dev/app"
	"stagesub.dev/app/password"
)

//go:embed migrations/*.sql
var embedded embed.FS

// Migrations returns the embedded migration files (NNNNN_name.sql).
func Migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// VersionTable is goose's table of applied versions.
const VersionTable = "goose_db_version"

// LockID is the pg_advisory_lock key held while migrating ("stagesub" in ASCII).
const LockID int64 = 0x73746167657375

// StatsView is the read-only view of a tenant's counts for the stats role.
const StatsView = "stagesub_stats_v"

// StatsQuery reads the one row of StatsView; scan it into Stats with ScanStats.
const StatsQuery = "SELECT musicians, projects, open_requests, last_activity, schema_version FROM stagesub_stats_v"

// Stats is the row of StatsView: active musicians, projects, pending
// requests, the time of the last activity (nil when none) and the schema
// version.
type Stats struct {
	Musicians     int64
	Projects      int64
	OpenRequests  int64
	LastActivity  *time.Time
	SchemaVersion int64
}

var latest = sync.OnceValue(func() int64 {
	var max int64
	entries, err := fs.ReadDir(Migrations(), ".")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		var v int64
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err == nil && v > max {
			max = v
		}
	}
	return max
})

// Latest returns the highest embedded migration version.
func Latest() int64 { return latest() }

// Current returns the highest applied migration version, 0 when the database
// was never migrated. It only reads.
func Current(ctx context.Context, db *sql.DB) (int64, error) {
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", VersionTable).Scan(&exists); err != nil {
		return 0, fmt.Errorf("schema: current version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	err := db.QueryRowContext(ctx, "SELECT coalesce(max(version_id), 0) FROM "+VersionTable+" WHERE is_applied").Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("schema: current version: %w", err)
	}
	return v, nil
}

// Migrate applies every pending migration under a session advisory lock
// (LockID), so concurrent callers on one database run them once. It is
// idempotent and returns the versions before and after.
func Migrate(ctx context.Context, db *sql.DB) (from, to int64, err error) {
	return migrate(ctx, db, 0)
}

// MigrateTo is Migrate up to version (for upgrade tests).
func MigrateTo(ctx context.Context, db *sql.DB, version int64) (from, to int64, err error) {
	if version <= 0 {
		return 0, 0, fmt.Errorf("schema: migrate to %d: version must be positive", version)
	}
	return migrate(ctx, db, version)
}

func migrate(ctx context.Context, db *sql.DB, target int64) (from, to int64, err error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(LockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return 0, 0, fmt.Errorf("schema: migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		return 0, 0, fmt.Errorf("schema: migrate: %w", err)
	}
	if from, err = Current(ctx, db); err != nil {
		return 0, 0, err
	}
	if target == 0 {
		_, err = p.Up(ctx)
	} else {
		_, err = p.UpTo(ctx, target)
	}
	if err != nil {
		return from, 0, fmt.Errorf("schema: migrate: %w", err)
	}
	to, err = Current(ctx, db)
	return from, to, err
}

// Bind records slug (and display name) as the tenant of the database. It is
// idempotent for the same slug (the name is updated) and returns an
// app.EINVALID error when another slug is recorded: a database belongs to
// one tenant forever.
func Bind(ctx context.Context, db *sql.DB, slug, name string) error {
	if slug == "" {
		return app.Errorf(app.EINVALID, "tenant slug is empty")
	}
	var got string
	err := db.QueryRowContext(ctx, `
		INSERT INTO tenant_meta (slug, name) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET name = CASE WHEN tenant_meta.slug = EXCLUDED.slug THEN EXCLUDED.name ELSE tenant_meta.name END
		RETURNING slug`, slug, name).Scan(&got)
	if err != nil {
		return fmt.Errorf("schema: bind tenant %s: %w", slug, err)
	}
	if got != slug {
		return app.Errorf(app.EINVALID, "database belongs to tenant %q, not %q", got, slug)
	}
	return nil
}

// BoundTenant returns the slug recorded by Bind, "" when none.
func BoundTenant(ctx context.Context, db *sql.DB) (string, error) {
	var slug string
	err := db.QueryRowContext(ctx, "SELECT slug FROM tenant_meta").Scan(&slug)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("schema: bound tenant: %w", err)
	}
	return slug, nil
}

// CreateStaffAdmin creates an active staff user with role admin, unless a
// user with that email (case-insensitive) exists. It reports whether it
// created one. The password is stored as an argon2id hash.
func CreateStaffAdmin(ctx context.Context, db *sql.DB, email, pw string) (created bool, err error) {
	email = strings.TrimSpace(email)
	if f := app.ValidateEmail(email, true); f != "" {
		return false, &app.Error{Code: app.EINVALID, Message: "invalid admin email", Fields: map[string]string{"email": f}}
	}
	if len(pw) < password.MinLength || len(pw) > password.MaxLength {
		return false, &app.Error{Code: app.EINVALID, Message: "invalid admin password",
			Fields: map[string]string{"password": fmt.Sprintf("must be %d to %d characters", password.MinLength, password.MaxLength)}}
	}
	hash, err := password.Hash(pw)
	if err != nil {
		return false, err
	}
	res, err := db.ExecContext(ctx, `
		INSERT INTO users (email, name, password_hash, role) VALUES ($1, $2, $3, 'admin')
		ON CONFLICT ((lower(email))) DO NOTHING`, email, "Administrator", hash)
	if err != nil {
		return false, fmt.Errorf("schema: create staff admin: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("schema: create staff admin: %w", err)
	}
	if n == 1 {
		_, err = db.ExecContext(ctx, "INSERT INTO activity_log (actor, action, subject) VALUES ('provisioning', 'user.create', $1)", email)
		if err != nil {
			return true, fmt.Errorf("schema: create staff admin: %w", err)
		}
	}
	return n == 1, nil
}

// GrantStats lets role read StatsView and nothing else: CONNECT on the
// current database, USAGE on schema public, SELECT on the view. The role
// must exist; run it as the database owner.
func GrantStats(ctx context.Context, db *sql.DB, role string) error {
	var dbname string
	if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&dbname); err != nil {
		return fmt.Errorf("schema: grant stats: %w", err)
	}
	r := pgx.Identifier{role}.Sanitize()
	for _, q := range []string{
		"GRANT CONNECT ON DATABASE " + pgx.Identifier{dbname}.Sanitize() + " TO " + r,
		"GRANT USAGE ON SCHEMA public TO " + r,
		"GRANT SELECT ON " + StatsView + " TO " + r,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("schema: grant stats to %s: %s: %w", role, q, err)
		}
	}
	return nil
}

// Row is what ScanStats reads from: *sql.Row, pgx.Row.
type Row interface{ Scan(dest ...any) error }

// ScanStats scans one row of StatsQuery.
func ScanStats(row Row) (Stats, error) {
	var s Stats
	var last sql.NullTime
	if err := row.Scan(&s.Musicians, &s.Projects, &s.OpenRequests, &last, &s.SchemaVersion); err != nil {
		return Stats{}, fmt.Errorf("schema: stats: %w", err)
	}
	if last.Valid {
		t := last.Time
		s.LastActivity = &t
	}
	return s, nil
}

// ReadStats runs StatsQuery on db.
func ReadStats(ctx context.Context, db *sql.DB) (Stats, error) {
	return ScanStats(db.QueryRowContext(ctx, StatsQuery))
}
