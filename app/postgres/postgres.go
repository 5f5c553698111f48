// Package postgres implements the app services on one tenant's PostgreSQL
// database through a bounded pgx pool. All SQL takes its values as
// parameters. Every write records who did what in activity_log in the same
// transaction.
package postgres

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"stagesub.dev/app"
)

// PoolOptions bound the connection pool. The zero value means the defaults:
// at most 4 connections, none kept open while idle longer than a minute, so
// thousands of tenants fit one Postgres.
type PoolOptions struct {
	MaxConns        int32         // default 4
	MaxConnIdleTime time.Duration // default 1m
	MaxConnLifetime time.Duration // default 30m
	ConnectTimeout  time.Duration // default 5s
}

// Pool defaults.
const (
	DefaultMaxConns        = 4
	DefaultMaxConnIdleTime = time.Minute
	DefaultMaxConnLifetime = 30 * time.Minute
	DefaultConnectTimeout  = 5 * time.Second
)

// Open creates a pool for url with the bounds of o, sets application_name
// and checks that the database answers.
func Open(ctx context.Context, url string, o PoolOptions) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, app.Errorf(app.EINVALID, "DATABASE_URL is not a valid postgres URL: %v", redact(err))
	}
	cfg.MaxConns = or(o.MaxConns, DefaultMaxConns)
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = or(o.MaxConnIdleTime, DefaultMaxConnIdleTime)
	cfg.MaxConnLifetime = or(o.MaxConnLifetime, DefaultMaxConnLifetime)
	cfg.HealthCheckPeriod = 30 * time.Second
	cfg.ConnConfig.ConnectTimeout = or(o.ConnectTimeout, DefaultConnectTimeout)
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "stagesub-app"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// redact drops the URL from a parse error (it may hold a password).
func redact(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) && pe.Unwrap() != nil {
		return pe.Unwrap().Error()
	}
	return "cannot parse"
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// SQLDB returns a database/sql handle on pool (for the schema package). It
// shares the pool's bounds; closing it does not close the pool.
func SQLDB(pool *pgxpool.Pool) *sql.DB { return stdlib.OpenDBFromPool(pool) }

// DB implements app.UserService, app.MusicianService, app.ProjectService,
// app.RequestService and app.DashboardService. It is safe for concurrent
// use.
type DB struct {
	pool *pgxpool.Pool
	// Now returns the current time; replaceable in tests.
	Now func() time.Time
}

var (
	_ app.UserService      = (*DB)(nil)
	_ app.MusicianService  = (*DB)(nil)
	_ app.ProjectService   = (*DB)(nil)
	_ app.RequestService   = (*DB)(nil)
	_ app.DashboardService = (*DB)(nil)
)

// New returns the services on pool.
func New(pool *pgxpool.Pool) *DB { return &DB{pool: pool, Now: time.Now} }

// Ping checks the database within ctx.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// withTx runs fn in a transaction, committing when it returns nil.
func (db *DB) withTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, fn)
}

// logActivity records an entry of the activity log in tx.
func logActivity(ctx context.Context, tx pgx.Tx, actor, action, subject string) error {
	var uid *int64
	if u := app.UserFromContext(ctx); u != nil {
		uid = &u.ID
		if actor == "" {
			actor = u.Email
		}
	}
	_, err := tx.Exec(ctx, "INSERT INTO activity_log (user_id, actor, action, subject) VALUES ($1, $2, $3, $4)",
		uid, actor, action, subject)
	if err != nil {
		return fmt.Errorf("postgres: activity log: %w", err)
	}
	return nil
}

func requireWriter(ctx context.Context) error {
	u := app.UserFromContext(ctx)
	if u == nil {
		return app.Errorf(app.EUNAUTHORIZED, "Please log in.")
	}
	if !u.CanWrite() {
		return app.Errorf(app.EFORBIDDEN, "Your role (%s) may not change data.", u.Role)
	}
	return nil
}

func requireUser(ctx context.Context) error {
	if app.UserFromContext(ctx) == nil {
		return app.Errorf(app.EUNAUTHORIZED, "Please log in.")
	}
	return nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// isUniqueViolation reports whether err is a unique_violation on constraint
// (any constraint when "").
func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (constraint == "" || pe.ConstraintName == constraint)
}

// DeleteExpiredSessions removes sessions past their expiry and returns how many.
func (db *DB) DeleteExpiredSessions(ctx context.Context) (int64, error) {
	tag, err := db.pool.Exec(ctx, "DELETE FROM sessions WHERE expires_at < now()")
	if err != nil {
		return 0, fmt.Errorf("postgres: delete expired sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}
