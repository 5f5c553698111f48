// Package postgres is the admin's StatsSource on PostgreSQL: it reads one
// tenant database as the read-only stats role (registry.StatsRole) with one
// short-lived connection per read and no pool, so a fleet of 1,000 tenants
// holds no idle connection, and at most as many connections are open as
// reads run at once.
package postgres

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/admin"
	"stagesub.dev/app/schema"
	"stagesub.dev/registry"
)

// Config configures a StatsSource.
type Config struct {
	// DSN is the base connection string (URL or key=value) for every tenant
	// database: sslmode, connect_timeout, default host/port and so on. The
	// record's host, port (when set) and dbname override it. "" means
	// "postgres:///?sslmode=prefer".
	DSN string
	// User is the role to log in as; "" means registry.StatsRole. A user
	// named in DSN is ignored.
	User string
	// Password of the role; "" keeps the DSN's (or PGPASSWORD/.pgpass).
	Password string
}

// StatsSource implements admin.StatsSource. It is safe for concurrent use.
type StatsSource struct {
	base *pgx.ConnConfig
	open atomic.Int64 // connections open now
	peak atomic.Int64 // most connections ever open at once
}

var _ admin.StatsSource = (*StatsSource)(nil)

// query reads the app's stats view and the database size in one round trip:
// the columns of schema.StatsQuery, then the size (see sizedRow).
const query = "SELECT q.*, pg_database_size(current_database()) FROM (" + schema.StatsQuery + ") q"

// sizedRow lets schema.ScanStats scan query: the trailing size column goes
// to size.
type sizedRow struct {
	pgx.Row
	size *int64
}

func (r sizedRow) Scan(dest ...any) error { return r.Row.Scan(append(dest, r.size)...) }

// New parses cfg.
func New(cfg Config) (*StatsSource, error) {
	dsn := cfg.DSN
	if dsn == "" {
		dsn = "postgres:///?sslmode=prefer"
	}
	base, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: stats DSN: %w", err)
	}
	// Never a tenant's role: the user is always the stats role.
	base.User = registry.StatsRole
	if cfg.User != "" {
		base.User = cfg.User
	}
	if cfg.Password != "" {
		base.Password = cfg.Password
	}
	// One round trip per query; nothing prepared on a connection we drop.
	base.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	base.RuntimeParams["application_name"] = "stagesub-admin"
	base.RuntimeParams["default_transaction_read_only"] = "on"
	return &StatsSource{base: base}, nil
}

// Open returns the number of connections open now.
func (s *StatsSource) Open() int64 { return s.open.Load() }

// Peak returns the most connections ever open at once.
func (s *StatsSource) Peak() int64 { return s.peak.Load() }

// closeAndWait ends the session and waits (at most d) until the server has
// closed the socket: the backend is gone, not just told to go, so a caller
// that bounds how many reads run at once also bounds the server's backends
// (a backend leaves pg_stat_activity before it closes its socket).
func closeAndWait(conn *pgx.Conn, d time.Duration) {
	hj, err := conn.PgConn().Hijack()
	if err != nil { // busy or already closed (e.g. after a cancelled query)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_ = conn.Close(ctx)
		return
	}
	nc := hj.Conn
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(d))
	if _, err := nc.Write([]byte{'X', 0, 0, 0, 4}); err != nil { // Terminate
		return
	}
	_, _ = io.Copy(io.Discard, nc) // until EOF: the server closed the socket
}

// FetchStats connects to db as the stats role, reads the stats view and the
// database size and disconnects. The server cancels the statement itself
// when ctx's deadline passes (statement_timeout), so a blocked tenant does
// not keep a backend busy after the admin gave up.
func (s *StatsSource) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	var size int64
	cc := s.base.Copy()
	if db.Host != "" {
		cc.Host = db.Host
		cc.Fallbacks = nil
	}
	if db.Port != 0 {
		cc.Port = uint16(db.Port)
		cc.Fallbacks = nil
	}
	cc.Database = db.Name
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		if ms < 1 {
			return admin.DBStats{}, context.DeadlineExceeded
		}
		cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(ms, 10)
		cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(ms, 10)
	}
	n := s.open.Add(1)
	defer s.open.Add(-1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return admin.DBStats{}, fmt.Errorf("postgres: connect %s: %w", db.Name, err)
	}
	defer closeAndWait(conn, time.Second)
	st, err := schema.ScanStats(sizedRow{conn.QueryRow(ctx, query), &size})
	if err != nil {
		return admin.DBStats{}, fmt.Errorf("postgres: %s: %w", db.Name, err)
	}
	return admin.DBStats{Musicians: st.Musicians, Projects: st.Projects, OpenRequests: st.OpenRequests,
		LastActivity: st.LastActivity, SchemaVersion: st.SchemaVersion, SizeBytes: size}, nil
}
