// Package backup makes and restores encrypted backups of tenant databases.
//
// A backup is Debian's `pg_dump -Fc` of one tenant database, streamed through
// age encryption (filippo.io/age) to the tenant's recipient (an age public
// key in the tenant record; the private key stays with ops), written to
// <dir>/<slug>-<UTC time>.dump.age, plus a manifest <slug>-<UTC time>.manifest.json
// (tenant, time, schema version, row count per table, size and sha256 of the
// encrypted file).
//
// Invariants:
//   - A backup is complete if and only if its manifest exists. The dump is
//     written to <file>.partial, fsynced and renamed; the manifest is written
//     the same way, last. A failed backup removes its partial files, so it
//     leaves nothing that looks complete.
//   - pg_dump connects as the tenant's own role (credentials from the secrets
//     sink): the least privilege that can read every object, since the tenant
//     role owns them all. The row counts in the manifest are read in the same
//     exported snapshot that pg_dump dumps, so they match the dump exactly.
//   - Nothing but ciphertext reaches the disk.
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// ManifestFormat is the format version written in every manifest.
const ManifestFormat = 1

// File name suffixes of a backup.
const (
	DumpSuffix     = ".dump.age"
	ManifestSuffix = ".manifest.json"
	PartialSuffix  = ".partial"
)

// timeLayout names backups; it sorts lexically in time order.
const timeLayout = "20060102T150405.000Z"

// Manifest describes one backup. It holds no secret: table names and row
// counts only.
type Manifest struct {
	Format        int              `json:"format"`
	Tenant        string           `json:"tenant"`
	Name          string           `json:"name"` // display name of the tenant
	Database      string           `json:"database"`
	CreatedAt     time.Time        `json:"created_at"`
	SchemaVersion int64            `json:"schema_version"`
	Recipient     string           `json:"recipient"`
	File          string           `json:"file"`   // base name of the encrypted dump
	Size          int64            `json:"size"`   // bytes of the encrypted dump
	SHA256        string           `json:"sha256"` // hex sha256 of the encrypted dump
	Rows          map[string]int64 `json:"rows"`   // "schema.table" → row count
	PgDump        string           `json:"pg_dump"`
	Elapsed       Duration         `json:"elapsed"`
}

// Duration is a time.Duration that encodes as a string ("1.5s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Server is what backup and restore need from a Postgres server
// (deploy/postgres.Server implements it).
type Server interface {
	deploy.DBServer
	Exec(ctx context.Context, sql string, args ...any) error
	ConnectAdmin(ctx context.Context, dbname string) (*pgx.Conn, error)
}

// Service makes and restores backups. Its fields are set once before use;
// it is safe for concurrent use afterwards.
type Service struct {
	Store   registry.TenantStore
	Secrets deploy.Secrets
	// Servers holds the Postgres servers by name ("" in a record means
	// DefaultServer).
	Servers       map[string]Server
	DefaultServer string
	// Tools runs pg_dump and pg_restore.
	Tools Tools
	// Locker guards restores that create a tenant (deploy.LockKey). May be nil.
	Locker deploy.Locker
	// Target restarts a running instance after a restore switched its
	// database. May be nil.
	Target deploy.Target
	// AppEnv is the extra env of a restarted instance (deploy.AppSpec.Env).
	AppEnv []string
	// StatsPassword, when set, becomes the stats role's password on a restore
	// that creates a tenant.
	StatsPassword string
	Logger        *slog.Logger
	Now           func() time.Time
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Server returns the named server ("" = DefaultServer).
func (s *Service) Server(name string) (Server, error) {
	if name == "" {
		name = s.DefaultServer
	}
	srv, ok := s.Servers[name]
	if !ok {
		return nil, registry.Errorf(registry.EINVALID, "unknown database server %q", name)
	}
	return srv, nil
}

// Options configures backups.
type Options struct {
	// Dir is where backups are written (created 0700 when missing).
	Dir string
	// Recipient overrides the tenant record's BackupRecipient.
	Recipient string
	// Keep, when > 0, deletes the tenant's oldest complete backups in Dir
	// beyond the newest Keep after a successful backup.
	Keep int
}

// Result is the outcome of one tenant's backup.
type Result struct {
	Slug     string
	Manifest *Manifest
	Path     string // encrypted dump
	Pruned   []string
	Err      error
	Elapsed  time.Duration
}

// ParseRecipient parses an age X25519 public key ("age1...").
func ParseRecipient(s string) (age.Recipient, error) {
	r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
	if err != nil {
		return nil, registry.Errorf(registry.EINVALID, "backup recipient %q is not an age public key (age1...): %v", s, err)
	}
	return r, nil
}

// tenantURL returns the DATABASE_URL of slug from the secrets sink.
func (s *Service) tenantURL(slug string) (string, error) {
	env, err := s.Secrets.Read(slug)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no credentials for tenant %s in %s", slug, s.Secrets.File(slug))
	}
	if err != nil {
		return "", err
	}
	u := env[registry.EnvDatabaseURL]
	if u == "" {
		return "", fmt.Errorf("%s has no %s", s.Secrets.File(slug), registry.EnvDatabaseURL)
	}
	return u, nil
}

// Backup writes one encrypted backup of slug's database to o.Dir.
func (s *Service) Backup(ctx context.Context, slug string, o Options) (res Result) {
	start := time.Now()
	res.Slug = slug
	defer func() { res.Elapsed = time.Since(start) }()
	m, path, err := s.backup(ctx, slug, o)
	if err != nil {
		res.Err = fmt.Errorf("backup of %s: %w", slug, err)
		return res
	}
	res.Manifest, res.Path = m, path
	if o.Keep > 0 {
		res.Pruned, err = Prune(o.Dir, slug, o.Keep)
		if err != nil {
			res.Err = fmt.Errorf("backup of %s succeeded, retention failed: %w", slug, err)
		}
	}
	s.logger().Info("backup written", "tenant", slug, "file", path, "bytes", m.Size, "elapsed", time.Since(start))
	return res
}

func (s *Service) backup(ctx context.Context, slug string, o Options) (*Manifest, string, error) {
	if err := registry.ValidateSlug(slug); err != nil {
		return nil, "", err
	}
	if o.Dir == "" {
		return nil, "", registry.Errorf(registry.EINVALID, "no backup directory given")
	}
	t, err := s.Store.FindTenant(ctx, slug)
	if err != nil {
		return nil, "", err
	}
	rcpt := o.Recipient
	if rcpt == "" {
		rcpt = t.BackupRecipient
	}
	if rcpt == "" {
		return nil, "", registry.Errorf(registry.EINVALID,
			"tenant %s has no backup recipient: set one with `stagesubctl tenant backup-key %s set age1...` or pass --recipient", slug, slug)
	}
	recipient, err := ParseRecipient(rcpt)
	if err != nil {
		return nil, "", err
	}
	dbURL, err := s.tenantURL(slug)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, "", err
	}
	start := time.Now()
	now := s.now()
	m := &Manifest{
		Format: ManifestFormat, Tenant: slug, Name: t.Name, Database: t.Database.Name,
		CreatedAt: now, Recipient: rcpt,
	}
	base := slug + "-" + now.Format(timeLayout)
	m.File = base + DumpSuffix
	path := filepath.Join(o.Dir, m.File)
	mpath := filepath.Join(o.Dir, base+ManifestSuffix)

	// A consistent view: count rows and read the schema version in a
	// snapshot exported to pg_dump.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, "", fmt.Errorf("connect as %s: %w", registry.RoleName(slug), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, "", fmt.Errorf("begin snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var snapshot string
	if err := tx.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
		return nil, "", fmt.Errorf("export snapshot: %w", err)
	}
	if m.Rows, err = CountRows(ctx, tx); err != nil {
		return nil, "", err
	}
	if m.SchemaVersion, err = schemaVersion(ctx, tx); err != nil {
		return nil, "", err
	}
	m.PgDump = s.Tools.Version(ctx, "pg_dump")

	f, err := os.OpenFile(path+PartialSuffix, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", err
	}
	complete := false
	defer func() {
		if !complete {
			f.Close()
			os.Remove(path + PartialSuffix)
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	enc, err := age.Encrypt(cw, recipient)
	if err != nil {
		return nil, "", fmt.Errorf("age: %w", err)
	}
	err = s.Tools.Dump(ctx, dbURL, snapshot, enc)
	if err != nil {
		return nil, "", err
	}
	if err := enc.Close(); err != nil {
		return nil, "", fmt.Errorf("age: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, "", err
	}
	if err := f.Close(); err != nil {
		return nil, "", err
	}
	m.Size, m.SHA256 = cw.n, hex.EncodeToString(h.Sum(nil))
	m.Elapsed = Duration(time.Since(start))
	if err := os.Rename(path+PartialSuffix, path); err != nil {
		return nil, "", err
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		os.Remove(path)
		return nil, "", err
	}
	if err := writeFileAtomic(mpath, append(mj, '\n')); err != nil {
		os.Remove(path)
		return nil, "", err
	}
	complete = true
	syncDir(o.Dir)
	return m, path, nil
}

// All backs up slugs with at most concurrency at once. onResult, when set,
// is called once per tenant as it finishes, one call at a time, with the
// count done so far. Results are sorted by slug; each tenant fails alone.
func (s *Service) All(ctx context.Context, slugs []string, o Options, concurrency int, onResult func(r Result, done, total int)) []Result {
	if concurrency <= 0 {
		concurrency = 4
	}
	var mu sync.Mutex
	var results []Result
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(concurrency, len(slugs)) {
		wg.Go(func() {
			for slug := range work {
				r := s.Backup(ctx, slug, o)
				mu.Lock()
				results = append(results, r)
				if onResult != nil {
					onResult(r, len(results), len(slugs))
				}
				mu.Unlock()
			}
		})
	}
	for _, slug := range slugs {
		work <- slug
	}
	close(work)
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].Slug < results[j].Slug })
	return results
}

// CountRows counts the rows of every table outside the system schemas, keyed
// "schema.table", as seen by q.
func CountRows(ctx context.Context, q Querier) (map[string]int64, error) {
	rows, err := q.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var names [][2]string
	for rows.Next() {
		var n [2]string
		if err := rows.Scan(&n[0], &n[1]); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	out := make(map[string]int64, len(names))
	for _, n := range names {
		var c int64
		if err := q.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{n[0], n[1]}.Sanitize()).Scan(&c); err != nil {
			return nil, fmt.Errorf("count %s.%s: %w", n[0], n[1], err)
		}
		out[n[0]+"."+n[1]] = c
	}
	return out, nil
}

// Querier is a pgx connection or transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func schemaVersion(ctx context.Context, q Querier) (int64, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('goose_db_version') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	if err := q.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied").Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// ReadManifest reads the manifest of an encrypted dump (path ends in
// DumpSuffix) or a manifest path.
func ReadManifest(path string) (*Manifest, error) {
	mp := ManifestPath(path)
	b, err := os.ReadFile(mp)
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w (a backup without its manifest is incomplete)", path, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", mp, err)
	}
	if m.Format != ManifestFormat || m.Tenant == "" || m.SHA256 == "" {
		return nil, fmt.Errorf("manifest %s: unknown format %d or missing fields", mp, m.Format)
	}
	return &m, nil
}

// ManifestPath returns the manifest path of a dump path.
func ManifestPath(path string) string {
	if strings.HasSuffix(path, ManifestSuffix) {
		return path
	}
	return strings.TrimSuffix(path, DumpSuffix) + ManifestSuffix
}

// List returns the complete backups of slug in dir (those with a manifest),
// oldest first.
func List(dir, slug string) ([]*Manifest, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+ManifestSuffix))
	if err != nil {
		return nil, err
	}
	var out []*Manifest
	for _, p := range paths {
		m, err := ReadManifest(p)
		if err != nil || m.Tenant != slug {
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Prune deletes slug's complete backups in dir beyond the newest keep and
// returns the deleted dump paths. The manifest goes first, so an
// interrupted prune never leaves a manifest without its dump.
func Prune(dir, slug string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	all, err := List(dir, slug)
	if err != nil {
		return nil, err
	}
	var pruned []string
	for i := 0; i+keep < len(all); i++ {
		p := filepath.Join(dir, all[i].File)
		if err := os.Remove(ManifestPath(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return pruned, err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return pruned, err
		}
		pruned = append(pruned, p)
	}
	return pruned, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeFileAtomic writes b to path via path.partial, fsync and rename.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + PartialSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
