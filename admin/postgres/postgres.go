// Package postgres is the admin's StatsSource on PostgreSQL: it reads one
// tenant database as the read-only stats role (registry.StatsRole) with one
// short-lived connection per read and no pool, so a fleet of 1,000 tenants
// holds no idle connection, and at most as many connections are open as
// reads run at once.
package postgres

import (
	"context"
	"errors"
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

// StatsSource implements admin.StatsSource and admin.ActivitySource (the
// write counters of every database on a server, for change detection). It
// is safe for concurrent use.
type StatsSource struct {
	base *pgx.ConnConfig
	open atomic.Int64 // connections open now
	peak atomic.Int64 // most connections ever open at once
}

var (
	_ admin.StatsSource    = (*StatsSource)(nil)
	_ admin.ActivitySource = (*StatsSource)(nil)
)

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

// config returns the connection settings for db: the base DSN with the
// record's host, port (when set) and dbname, and, when ctx has a deadline,
// statement_timeout and lock_timeout set from it.
func (s *StatsSource) config(ctx context.Context, db registry.Database) (*pgx.ConnConfig, error) {
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
			return nil, context.DeadlineExceeded
		}
		cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(ms, 10)
		cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(ms, 10)
	}
	return cc, nil
}

// withConn connects to db as the stats role, runs f and disconnects,
// waiting until the backend has gone (closeAndWait). It counts the
// connection in Open and Peak.
func (s *StatsSource) withConn(ctx context.Context, db registry.Database, f func(*pgx.Conn) error) error {
	cc, err := s.config(ctx, db)
	if err != nil {
		return err
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
		return fmt.Errorf("postgres: connect %s: %w", db.Name, err)
	}
	defer closeAndWait(conn, time.Second)
	if err := f(conn); err != nil {
		return fmt.Errorf("postgres: %s: %w", db.Name, err)
	}
	return nil
}

// FetchStats connects to db as the stats role, reads the stats view and the
// database size and disconnects. The server cancels the statement itself
// when ctx's deadline passes (statement_timeout), so a blocked tenant does
// not keep a backend busy after the admin gave up.
func (s *StatsSource) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	var size int64
	var st schema.Stats
	err := s.withConn(ctx, db, func(conn *pgx.Conn) error {
		var err error
		st, err = schema.ScanStats(sizedRow{conn.QueryRow(ctx, query), &size})
		return err
	})
	if err != nil {
		return admin.DBStats{}, err
	}
	return admin.DBStats{Musicians: st.Musicians, Projects: st.Projects, OpenRequests: st.OpenRequests,
		LastActivity: st.LastActivity, SchemaVersion: st.SchemaVersion, SizeBytes: size}, nil
}

// ServerKey returns "host:port" of the server db is read from (the record's
// host and port, else the DSN's): tenants with the same key share one
// ReadActivity.
func (s *StatsSource) ServerKey(db registry.Database) string {
	host, port := s.base.Host, s.base.Port
	if db.Host != "" {
		host = db.Host
	}
	if db.Port != 0 {
		port = uint16(db.Port)
	}
	return host + ":" + strconv.Itoa(int(port))
}

// activityQuery reads the write counters of every database on the server
// from the cumulative statistics (pg_stat_database, readable by every role)
// and whether the current role may connect to it. The shared-objects row
// (datid 0) has no pg_database entry and is left out by the join.
// Then track_counts: when it is off the counters never move, and
// ReadActivity fails so that every tenant is queried. The last column is
// the statistics epoch (DBActivity.StatsEpoch): pg_stat_bgwriter.stats_reset
// changes whenever the server discards its statistics (after a crash).
const activityQuery = `SELECT s.datname, s.datid, s.tup_inserted, s.tup_updated, s.tup_deleted, s.stats_reset,
       d.datallowconn AND has_database_privilege(d.oid, 'CONNECT'), current_setting('track_counts')::bool,
       (SELECT stats_reset FROM pg_stat_bgwriter)
FROM pg_stat_database s JOIN pg_database d ON d.oid = s.datid`

// ReadActivity connects to db as the stats role and returns the write
// counters of every database on its server, by name. A fresh connection
// reads the counters as flushed now (stats_fetch_consistency caches them
// per transaction, and the query is its own transaction).
func (s *StatsSource) ReadActivity(ctx context.Context, db registry.Database) (map[string]admin.DBActivity, error) {
	out := map[string]admin.DBActivity{}
	err := s.withConn(ctx, db, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, activityQuery)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				name   string
				a      admin.DBActivity
				reset  *time.Time
				counts bool
				epoch  *time.Time
			)
			if err := rows.Scan(&name, &a.OID, &a.TupInserted, &a.TupUpdated, &a.TupDeleted, &reset, &a.Connectable, &counts, &epoch); err != nil {
				return fmt.Errorf("pg_stat_database: %w", err)
			}
			if !counts {
				return errors.New("pg_stat_database: track_counts is off, the write counters do not move")
			}
			if reset != nil {
				a.StatsReset = reset.UnixMicro()
			}
			if epoch != nil {
				a.StatsEpoch = epoch.UnixMicro()
			}
			out[name] = a
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("pg_stat_database: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
