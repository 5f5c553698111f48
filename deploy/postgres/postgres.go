// Package postgres provisions tenant roles and databases on one Postgres
// server through an admin role that has CREATEDB and CREATEROLE (a
// superuser works too). It implements deploy.DBServer.
//
// Passwords never reach the server in clear text: roles get a SCRAM-SHA-256
// verifier computed here, so they cannot leak into server logs.
package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"stagesub.dev/registry"
)

// Server is one Postgres server reached with an admin URL. Safe for
// concurrent use. Opening it does not connect; the first operation does.
type Server struct {
	name   string
	host   string // host name, IP or unix socket directory
	port   int
	params url.Values // sslmode & co carried into tenant URLs
	pool   *pgxpool.Pool

	meMu    sync.Mutex
	me      string // admin role, "" until known
	meSuper bool
}

// Open prepares server name from adminURL (URL or keyword/value form). It
// fails only on a malformed URL.
func Open(ctx context.Context, name, adminURL string) (*Server, error) {
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		return nil, fmt.Errorf("postgres server %q: admin URL: %w", name, err)
	}
	cfg.MaxConns = 4
	cfg.MinConns = 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres server %q: %w", name, err)
	}
	s := &Server{name: name, host: cfg.ConnConfig.Host, port: int(cfg.ConnConfig.Port), pool: pool, params: url.Values{}}
	if cfg.ConnConfig.TLSConfig == nil {
		s.params.Set("sslmode", "disable")
	}
	if u, err := url.Parse(adminURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		for _, k := range []string{"sslmode", "sslrootcert"} {
			if v := u.Query().Get(k); v != "" {
				s.params.Set(k, v)
			}
		}
	}
	return s, nil
}

// Close closes the admin connections.
func (s *Server) Close() { s.pool.Close() }

// Name returns the configured server name.
func (s *Server) Name() string { return s.name }

// Ping checks that the admin role can connect.
func (s *Server) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres server %q (%s): %w", s.name, s.Addr(), err)
	}
	return nil
}

// Addr returns "host:port" for messages.
func (s *Server) Addr() string { return s.host + ":" + strconv.Itoa(s.port) }

// Location returns where dbname lives on this server.
func (s *Server) Location(dbname string) registry.Database {
	return registry.Database{Server: s.name, Host: s.host, Port: s.port, Name: dbname}
}

// TenantURL returns the DATABASE_URL of slug's role with password. A unix
// socket directory host goes into the query (?host=/dir).
func (s *Server) TenantURL(slug, password string) string {
	role := registry.RoleName(slug)
	q := url.Values{}
	for k, v := range s.params {
		q[k] = v
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password), Path: "/" + registry.DatabaseName(slug)}
	if strings.HasPrefix(s.host, "/") {
		q.Set("host", s.host)
		q.Set("port", strconv.Itoa(s.port))
	} else {
		u.Host = s.host + ":" + strconv.Itoa(s.port)
		if strings.Contains(s.host, ":") {
			u.Host = "[" + s.host + "]:" + strconv.Itoa(s.port)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func isCode(err error, codes ...string) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	for _, c := range codes {
		if pe.Code == c {
			return true
		}
	}
	return false
}

// whoami returns the admin role and whether it is a superuser.
func (s *Server) whoami(ctx context.Context) (string, bool, error) {
	s.meMu.Lock()
	defer s.meMu.Unlock()
	if s.me == "" {
		var me string
		var super bool
		err := s.pool.QueryRow(ctx, "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&me, &super)
		if err != nil {
			return "", false, fmt.Errorf("look up admin role: %w", err)
		}
		s.me, s.meSuper = me, super
	}
	return s.me, s.meSuper, nil
}

// EnsureRole creates role as a plain login role with password, or sets the
// password (and the plain attributes) when it exists. A non-superuser admin
// makes itself a member of role, which Postgres requires for creating a
// database owned by role.
func (s *Server) EnsureRole(ctx context.Context, role, password string) error {
	verifier, err := ScramVerifier(password)
	if err != nil {
		return err
	}
	pw := " LOGIN PASSWORD " + literal(verifier)
	_, err = s.pool.Exec(ctx, "CREATE ROLE "+ident(role)+" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"+pw)
	if isCode(err, "42710", "23505") { // duplicate_object, unique_violation on a race
		// Only superusers may even restate NOSUPERUSER; a role we created
		// has the plain attributes already.
		_, err = s.pool.Exec(ctx, "ALTER ROLE "+ident(role)+pw)
	}
	if err != nil {
		return fmt.Errorf("create role %s: %w", role, err)
	}
	me, super, err := s.whoami(ctx)
	if err != nil {
		return err
	}
	if !super {
		if _, err := s.pool.Exec(ctx, "GRANT "+ident(role)+" TO "+ident(me)); err != nil {
			return fmt.Errorf("grant %s to %s: %w", role, me, err)
		}
	}
	return nil
}

// EnsureStatsRole creates the read-only stats role (login, nothing granted)
// when missing and sets its password when password is not empty.
func (s *Server) EnsureStatsRole(ctx context.Context, password string) error {
	role := registry.StatsRole
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return fmt.Errorf("look up role %s: %w", role, err)
	}
	if !exists {
		_, err := s.pool.Exec(ctx, "CREATE ROLE "+ident(role)+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT")
		if err != nil && !isCode(err, "42710", "23505") {
			return fmt.Errorf("create role %s: %w", role, err)
		}
	}
	if password == "" {
		return nil
	}
	v, err := ScramVerifier(password)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, "ALTER ROLE "+ident(role)+" PASSWORD "+literal(v)); err != nil {
		return fmt.Errorf("set password of %s: %w", role, err)
	}
	return nil
}

// EnsureDatabase creates dbname owned by owner (UTF8, from template0)
// unless it exists. An existing database with another owner is an error:
// a tenant never adopts someone else's database.
func (s *Server) EnsureDatabase(ctx context.Context, dbname, owner string) error {
	for attempt := 0; attempt < 2; attempt++ {
		var got string
		err := s.pool.QueryRow(ctx, "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", dbname).Scan(&got)
		if err == nil {
			if got != owner {
				return fmt.Errorf("database %s exists and is owned by %s, not %s", dbname, got, owner)
			}
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("look up database %s: %w", dbname, err)
		}
		_, err = s.pool.Exec(ctx, "CREATE DATABASE "+ident(dbname)+" OWNER "+ident(owner)+" TEMPLATE template0 ENCODING 'UTF8'")
		if err == nil {
			return nil
		}
		if !isCode(err, "42P04", "23505") { // duplicate_database: lost a race, check the owner
			return fmt.Errorf("create database %s: %w", dbname, err)
		}
	}
	return fmt.Errorf("create database %s: raced twice", dbname)
}

// LockDown revokes all database privileges from PUBLIC and grants CONNECT
// (and TEMPORARY) to owner and CONNECT to the stats role.
func (s *Server) LockDown(ctx context.Context, dbname, owner string) error {
	db := ident(dbname)
	stmts := []string{
		"REVOKE ALL ON DATABASE " + db + " FROM PUBLIC",
		"GRANT CONNECT, TEMPORARY ON DATABASE " + db + " TO " + ident(owner),
		"GRANT CONNECT ON DATABASE " + db + " TO " + ident(registry.StatsRole),
	}
	for _, q := range stmts {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// DropTenant drops slug's database (terminating its sessions) and role.
// Missing ones are fine.
func (s *Server) DropTenant(ctx context.Context, slug string) error {
	db, role := registry.DatabaseName(slug), registry.RoleName(slug)
	if _, err := s.pool.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(db)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	if _, err := s.pool.Exec(ctx, "DROP ROLE IF EXISTS "+ident(role)); err != nil {
		return fmt.Errorf("drop role %s: %w", role, err)
	}
	return nil
}

// Exec runs sql as the admin role in the admin database (for ops commands).
func (s *Server) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := s.pool.Exec(ctx, sql, args...)
	return err
}

// ConnectAdmin opens a connection as the admin role to database dbname
// (for backup/restore and doctor). The caller closes it.
func (s *Server) ConnectAdmin(ctx context.Context, dbname string) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.Database = dbname
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres server %q: connect to %s: %w", s.name, dbname, err)
	}
	return c, nil
}

// OpenTenant opens a database/sql handle on a tenant URL and pings it. It
// implements deploy.OpenDBFunc.
func OpenTenant(ctx context.Context, dbURL string) (*sql.DB, error) {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// ScramVerifier returns the SCRAM-SHA-256 verifier Postgres stores for
// password (RFC 7677, 4096 iterations, 16-byte random salt). password must
// be ASCII (SASLprep is the identity then), as NewPassword's are.
func ScramVerifier(password string) (string, error) {
	for i := 0; i < len(password); i++ {
		if password[i] < 0x20 || password[i] > 0x7e {
			return "", errors.New("postgres: password must be printable ASCII")
		}
	}
	const iter = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(serverKey)), nil
}

// DatabaseExists reports whether database dbname exists on the server.
func (s *Server) DatabaseExists(ctx context.Context, dbname string) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", dbname).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up database %s: %w", dbname, err)
	}
	return ok, nil
}

// DropDatabase drops dbname, terminating its sessions; a missing one is fine.
// The admin role must own it or be a member of its owner.
func (s *Server) DropDatabase(ctx context.Context, dbname string) error {
	if _, err := s.pool.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(dbname)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", dbname, err)
	}
	return nil
}

// DatabasesOwnedBy returns the databases owned by role, sorted.
func (s *Server) DatabasesOwnedBy(ctx context.Context, role string) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT datname::text FROM pg_database WHERE pg_get_userbyid(datdba) = $1 ORDER BY 1", role)
	if err != nil {
		return nil, fmt.Errorf("list databases of %s: %w", role, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases of %s: %w", role, err)
	}
	return names, nil
}

// DropRole drops role; a missing one is fine.
func (s *Server) DropRole(ctx context.Context, role string) error {
	if _, err := s.pool.Exec(ctx, "DROP ROLE IF EXISTS "+ident(role)); err != nil {
		return fmt.Errorf("drop role %s: %w", role, err)
	}
	return nil
}

// LockDownProblems reports how the privileges on database dbname differ from
// what LockDown grants: the stats role missing, PUBLIC holding any privilege,
// owner lacking an explicit CONNECT or TEMPORARY, the stats role lacking an
// explicit CONNECT. It changes nothing; nil means locked down. A database
// that does not exist is an error (repair never creates one).
func (s *Server) LockDownProblems(ctx context.Context, dbname, owner string) ([]string, error) {
	stats := registry.StatsRole
	var statsExists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", stats).Scan(&statsExists); err != nil {
		return nil, fmt.Errorf("look up role %s: %w", stats, err)
	}
	exists, err := s.DatabaseExists(ctx, dbname)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("database %s does not exist on server %q", dbname, s.name)
	}
	// A NULL datacl means the defaults: PUBLIC has CONNECT and TEMPORARY.
	rows, err := s.pool.Query(ctx, `
		SELECT coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type
		FROM pg_database d
		CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
		LEFT JOIN pg_roles r ON r.oid = a.grantee
		WHERE d.datname = $1
		ORDER BY 1, 2`, dbname)
	if err != nil {
		return nil, fmt.Errorf("read privileges on %s: %w", dbname, err)
	}
	granted := map[string][]string{} // grantee → privileges
	for rows.Next() {
		var grantee, priv string
		if err := rows.Scan(&grantee, &priv); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read privileges on %s: %w", dbname, err)
		}
		granted[grantee] = append(granted[grantee], priv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read privileges on %s: %w", dbname, err)
	}
	var problems []string
	if !statsExists {
		problems = append(problems, "role "+stats+" does not exist")
	}
	if p := granted["PUBLIC"]; len(p) > 0 {
		problems = append(problems, fmt.Sprintf("PUBLIC holds %s on database %s", strings.Join(p, ", "), dbname))
	}
	for _, want := range []struct{ role, priv string }{{owner, "CONNECT"}, {owner, "TEMPORARY"}, {stats, "CONNECT"}} {
		if want.role == stats && !statsExists {
			continue
		}
		if !slices.Contains(granted[want.role], want.priv) {
			problems = append(problems, fmt.Sprintf("%s lacks %s on database %s", want.role, want.priv, dbname))
		}
	}
	return problems, nil
}
