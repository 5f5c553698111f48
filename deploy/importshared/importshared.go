// Package importshared splits a legacy single database, where every
// tenant-owned row carries a tenant column (e.g. orchestra_id), into one
// isolated StageSub tenant database per tenant.
//
// For each mapped legacy id (in map order) it creates the tenant through the
// Provisioner (record, role, database, migrations, env file), then, in ONE
// transaction on the tenant database as the tenant's own role: streams each
// table's rows of that tenant with COPY (source → target, no temp files) in
// foreign-key order, sets every identity/serial sequence past the highest
// id, checks the row count of every table against the source (same source
// snapshot), and records a marker row in table stagesub_import.
//
// Invariants: a tenant's data is imported completely or not at all (one
// target transaction). A re-run skips tenants whose marker exists (their
// counts are checked again) and imports the others, so an import is
// resumable per tenant. A tenant that exists with data but no marker is
// never touched. Rows of legacy ids not in the map are reported, never
// imported. The source is only read (read-only transactions).
package importshared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// MarkerTable records finished imports in each tenant database.
const MarkerTable = "stagesub_import"

// Mapping maps a legacy tenant id to a new tenant.
type Mapping struct {
	LegacyID string
	Slug     string
	Name     string // display name; default the slug
}

// ParseMap parses "17=goteborg,23=malmo" (entries may also be repeated
// flags). Ids and slugs must be unique.
func ParseMap(specs []string) ([]Mapping, error) {
	var out []Mapping
	ids, slugs := map[string]bool{}, map[string]bool{}
	for _, spec := range specs {
		for _, part := range strings.Split(spec, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			id, slug, ok := strings.Cut(part, "=")
			id, slug = strings.TrimSpace(id), strings.TrimSpace(slug)
			if !ok || id == "" {
				return nil, registry.Errorf(registry.EINVALID, "map entry %q is not LEGACY_ID=slug", part)
			}
			if err := registry.ValidateSlug(slug); err != nil {
				return nil, err
			}
			if ids[id] || slugs[slug] {
				return nil, registry.Errorf(registry.EINVALID, "map entry %q: id or slug listed twice", part)
			}
			ids[id], slugs[slug] = true, true
			out = append(out, Mapping{LegacyID: id, Slug: slug, Name: slug})
		}
	}
	if len(out) == 0 {
		return nil, registry.Errorf(registry.EINVALID, "empty tenant map")
	}
	return out, nil
}

// Request describes one import run.
type Request struct {
	SourceURL    string // legacy database (a read-only role is enough)
	Schema       string // source schema, default "public"
	TenantColumn string
	Map          []Mapping
	DryRun       bool
	// OnTenant, when set, is called after each tenant.
	OnTenant func(TenantResult)
}

// Table is one source table with its columns and tenant rows.
type Table struct {
	Name    string
	Columns []string // copied columns (without the tenant column)
}

// TableCount is a table's rows of one tenant in source and target.
type TableCount struct {
	Table          string
	Source, Target int64
}

// Tenant states.
const (
	StateImported = "imported"
	StateDone     = "already imported" // marker found, counts checked again
	StatePlanned  = "planned"          // dry run
	StateFailed   = "failed"
)

// TenantResult is the outcome for one mapped tenant.
type TenantResult struct {
	Mapping
	State   string
	Counts  []TableCount
	Err     error
	Elapsed time.Duration
}

// Report is the outcome of a run.
type Report struct {
	Tables   []Table          // in copy (foreign-key) order
	Ignored  []string         // source tables without the tenant column
	Unmapped map[string]int64 // legacy id → rows not imported
	Tenants  []TenantResult
}

// Failed returns the number of failed tenants.
func (r *Report) Failed() int {
	n := 0
	for _, t := range r.Tenants {
		if t.Err != nil {
			n++
		}
	}
	return n
}

// Importer runs imports. Provisioner creates tenants and supplies the
// store and secrets.
type Importer struct {
	Provisioner *deploy.Provisioner
	Logger      *slog.Logger
}

func (im *Importer) logger() *slog.Logger {
	if im.Logger != nil {
		return im.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Run imports (or, with DryRun, plans) every mapped tenant. A tenant's
// failure is in its result; the error is for the run as a whole (source
// unreachable, bad column).
func (im *Importer) Run(ctx context.Context, req Request) (*Report, error) {
	if req.Schema == "" {
		req.Schema = "public"
	}
	if req.TenantColumn == "" {
		return nil, registry.Errorf(registry.EINVALID, "no tenant column given")
	}
	src, err := pgx.Connect(ctx, req.SourceURL)
	if err != nil {
		return nil, fmt.Errorf("source database: %w", err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	rep := &Report{Unmapped: map[string]int64{}}
	if rep.Tables, rep.Ignored, err = discover(ctx, src, req.Schema, req.TenantColumn); err != nil {
		return nil, err
	}
	if len(rep.Tables) == 0 {
		return nil, registry.Errorf(registry.EINVALID, "no table in schema %s of the source has column %q", req.Schema, req.TenantColumn)
	}
	mapped := map[string]bool{}
	for _, m := range req.Map {
		mapped[m.LegacyID] = true
	}
	for _, t := range rep.Tables {
		rows, err := src.Query(ctx, fmt.Sprintf("SELECT %s::text, count(*) FROM %s GROUP BY 1",
			ident(req.TenantColumn), qualified(req.Schema, t.Name)))
		if err != nil {
			return nil, fmt.Errorf("source: count %s: %w", t.Name, err)
		}
		for rows.Next() {
			var id *string
			var n int64
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return nil, err
			}
			key := "NULL"
			if id != nil {
				key = *id
			}
			if !mapped[key] {
				rep.Unmapped[key] += n
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("source: count %s: %w", t.Name, err)
		}
	}
	for _, m := range req.Map {
		start := time.Now()
		r := im.tenant(ctx, req, rep.Tables, m)
		r.Elapsed = time.Since(start)
		if r.Err != nil {
			r.State = StateFailed
			im.logger().Error("import failed", "tenant", m.Slug, "legacy_id", m.LegacyID, "err", r.Err)
		}
		rep.Tenants = append(rep.Tenants, r)
		if req.OnTenant != nil {
			req.OnTenant(r)
		}
	}
	return rep, nil
}

// discover lists the source tables that have the tenant column, in
// foreign-key order, and those that do not.
func discover(ctx context.Context, src *pgx.Conn, schema, col string) ([]Table, []string, error) {
	rows, err := src.Query(ctx, `
		SELECT c.relname::text, a.attname::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
		ORDER BY c.relname, a.attnum`, schema)
	if err != nil {
		return nil, nil, fmt.Errorf("source: list tables: %w", err)
	}
	cols := map[string][]string{}
	has := map[string]bool{}
	var names []string
	for rows.Next() {
		var t, a string
		if err := rows.Scan(&t, &a); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if _, ok := cols[t]; !ok {
			names = append(names, t)
			cols[t] = nil
		}
		if a == col {
			has[t] = true
			continue
		}
		cols[t] = append(cols[t], a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("source: list tables: %w", err)
	}
	var ignored []string
	set := map[string]bool{}
	for _, n := range names {
		if has[n] {
			set[n] = true
		} else {
			ignored = append(ignored, n)
		}
	}
	deps, err := foreignKeys(ctx, src, schema)
	if err != nil {
		return nil, nil, err
	}
	order, err := TopoSort(set, deps)
	if err != nil {
		return nil, nil, err
	}
	var out []Table
	for _, n := range order {
		out = append(out, Table{Name: n, Columns: cols[n]})
	}
	return out, ignored, nil
}

// foreignKeys returns table → tables it references, in schema.
func foreignKeys(ctx context.Context, q *pgx.Conn, schema string) (map[string][]string, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname::text, r.relname::text
		FROM pg_constraint k
		JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_class r ON r.oid = k.confrelid
		WHERE k.contype = 'f' AND n.nspname = $1`, schema)
	if err != nil {
		return nil, fmt.Errorf("list foreign keys: %w", err)
	}
	defer rows.Close()
	deps := map[string][]string{}
	for rows.Next() {
		var from, to string
		if err := rows.Scan(&from, &to); err != nil {
			return nil, err
		}
		deps[from] = append(deps[from], to)
	}
	return deps, rows.Err()
}

// TopoSort orders the tables in set so that every table comes after the
// tables it references (self references ignored; references outside set
// ignored). Ties are broken by name. A cycle is an error.
func TopoSort(set map[string]bool, deps map[string][]string) ([]string, error) {
	indeg := map[string]int{}
	users := map[string][]string{}
	for t := range set {
		indeg[t] += 0
		seen := map[string]bool{}
		for _, d := range deps[t] {
			if d == t || !set[d] || seen[d] {
				continue
			}
			seen[d] = true
			indeg[t]++
			users[d] = append(users[d], t)
		}
	}
	var ready, out []string
	for t, n := range indeg {
		if n == 0 {
			ready = append(ready, t)
		}
	}
	for len(ready) > 0 {
		sort.Strings(ready)
		t := ready[0]
		ready = ready[1:]
		out = append(out, t)
		for _, u := range users[t] {
			if indeg[u]--; indeg[u] == 0 {
				ready = append(ready, u)
			}
		}
	}
	if len(out) != len(set) {
		var cyc []string
		for t, n := range indeg {
			if n > 0 {
				cyc = append(cyc, t)
			}
		}
		sort.Strings(cyc)
		return nil, fmt.Errorf("foreign keys form a cycle among %s", strings.Join(cyc, ", "))
	}
	return out, nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func qualified(schema, table string) string { return pgx.Identifier{schema, table}.Sanitize() }

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func columnList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = ident(c)
	}
	return strings.Join(q, ", ")
}

// tenant imports one mapped tenant.
func (im *Importer) tenant(ctx context.Context, req Request, tables []Table, m Mapping) TenantResult {
	r := TenantResult{Mapping: m}
	src, err := pgx.Connect(ctx, req.SourceURL)
	if err != nil {
		r.Err = fmt.Errorf("source database: %w", err)
		return r
	}
	defer src.Close(context.WithoutCancel(ctx))
	stx, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		r.Err = fmt.Errorf("source: %w", err)
		return r
	}
	defer stx.Rollback(context.WithoutCancel(ctx))
	where := func(t Table) string {
		return fmt.Sprintf("FROM %s WHERE %s = %s", qualified(req.Schema, t.Name), ident(req.TenantColumn), literal(m.LegacyID))
	}
	srcCount := map[string]int64{}
	for _, t := range tables {
		var n int64
		if err := stx.QueryRow(ctx, "SELECT count(*) "+where(t)).Scan(&n); err != nil {
			r.Err = fmt.Errorf("source: count %s: %w", t.Name, err)
			return r
		}
		srcCount[t.Name] = n
		r.Counts = append(r.Counts, TableCount{Table: t.Name, Source: n, Target: -1})
	}
	if req.DryRun {
		r.State = StatePlanned
		return r
	}

	p := im.Provisioner
	rec, err := p.Store.FindTenant(ctx, m.Slug)
	switch {
	case err == nil && rec.Status == registry.StatusProvisioning:
	case err == nil && rec.Status != registry.StatusActive:
		r.Err = registry.Errorf(registry.ECONFLICT, "tenant %s exists with status %s", m.Slug, rec.Status)
		return r
	case err != nil && registry.ErrorCode(err) != registry.ENOTFOUND:
		r.Err = err
		return r
	}
	if err != nil || rec.Status == registry.StatusProvisioning {
		if _, err := p.Create(ctx, deploy.CreateRequest{Slug: m.Slug, Name: m.Name}); err != nil {
			r.Err = fmt.Errorf("create tenant: %w", err)
			return r
		}
	}
	env, err := p.Secrets.Read(m.Slug)
	if err != nil {
		r.Err = err
		return r
	}
	dst, err := pgx.Connect(ctx, env[registry.EnvDatabaseURL])
	if err != nil {
		r.Err = fmt.Errorf("connect as %s: %w", registry.RoleName(m.Slug), err)
		return r
	}
	defer dst.Close(context.WithoutCancel(ctx))

	done, err := marked(ctx, dst, m.LegacyID)
	if err != nil {
		r.Err = err
		return r
	}
	if done {
		// Counts are filled in for the report; they may differ now since
		// the tenant may have been used after its import.
		r.State = StateDone
		_ = verify(ctx, dst, tables, srcCount, r.Counts)
		return r
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		r.Err = err
		return r
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	targetCols, err := columns(ctx, tx)
	if err != nil {
		r.Err = err
		return r
	}
	for _, t := range tables {
		tc, ok := targetCols[t.Name]
		if !ok {
			r.Err = fmt.Errorf("table %s is not in the StageSub schema", t.Name)
			return r
		}
		var n int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+ident(t.Name)).Scan(&n); err != nil {
			r.Err = err
			return r
		}
		if n > 0 {
			r.Err = registry.Errorf(registry.ECONFLICT, "tenant %s has %d rows in %s but no import marker: not importing over existing data", m.Slug, n, t.Name)
			return r
		}
		for _, c := range t.Columns {
			if !tc[c] {
				r.Err = fmt.Errorf("column %s.%s of the source is not in the StageSub schema", t.Name, c)
				return r
			}
		}
	}
	for _, t := range tables {
		if srcCount[t.Name] == 0 {
			continue
		}
		cols := columnList(t.Columns)
		if err := copyTable(ctx, stx.Conn(), tx.Conn(),
			fmt.Sprintf("COPY (SELECT %s %s) TO STDOUT", cols, where(t)),
			fmt.Sprintf("COPY %s (%s) FROM STDIN", ident(t.Name), cols)); err != nil {
			r.Err = fmt.Errorf("copy %s: %w", t.Name, err)
			return r
		}
	}
	if err := fixSequences(ctx, tx); err != nil {
		r.Err = err
		return r
	}
	if err := verify(ctx, tx, tables, srcCount, r.Counts); err != nil {
		r.Err = err
		return r
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MarkerTable+` (
		legacy_id text PRIMARY KEY, tenant_column text NOT NULL, imported_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		r.Err = err
		return r
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+MarkerTable+" (legacy_id, tenant_column) VALUES ($1, $2)", m.LegacyID, req.TenantColumn); err != nil {
		r.Err = err
		return r
	}
	if err := tx.Commit(ctx); err != nil {
		r.Err = err
		return r
	}
	r.State = StateImported
	return r
}

// copyTable streams COPY TO on src into COPY FROM on dst.
func copyTable(ctx context.Context, src, dst *pgx.Conn, out, in string) error {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := src.PgConn().CopyTo(ctx, pw, out)
		pw.CloseWithError(err)
		errc <- err
	}()
	_, err := dst.PgConn().CopyFrom(ctx, pr, in)
	pr.CloseWithError(errors.New("copy aborted"))
	srcErr := <-errc
	if err != nil {
		return err
	}
	return srcErr
}

func marked(ctx context.Context, db *pgx.Conn, legacyID string) (bool, error) {
	var exists bool
	if err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", MarkerTable).Scan(&exists); err != nil || !exists {
		return false, err
	}
	var n int
	err := db.QueryRow(ctx, "SELECT count(*) FROM "+MarkerTable+" WHERE legacy_id = $1", legacyID).Scan(&n)
	return n > 0, err
}

// columns returns table → insertable column set of the public schema.
func columns(ctx context.Context, tx pgx.Tx) (map[string]map[string]bool, error) {
	rows, err := tx.Query(ctx, `
		SELECT c.relname::text, a.attname::text FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')`)
	if err != nil {
		return nil, fmt.Errorf("target columns: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]bool{}
	for rows.Next() {
		var t, a string
		if err := rows.Scan(&t, &a); err != nil {
			return nil, err
		}
		if out[t] == nil {
			out[t] = map[string]bool{}
		}
		out[t][a] = true
	}
	return out, rows.Err()
}

// fixSequences moves every identity/serial sequence of the public schema
// past its column's highest value.
func fixSequences(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `
		SELECT c.relname::text, a.attname::text, pg_get_serial_sequence(quote_ident(c.relname), a.attname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = 'public' AND c.relkind = 'r'
		  AND pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("list sequences: %w", err)
	}
	type seq struct{ table, col, seq string }
	var seqs []seq
	for rows.Next() {
		var s seq
		if err := rows.Scan(&s.table, &s.col, &s.seq); err != nil {
			rows.Close()
			return err
		}
		seqs = append(seqs, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, s := range seqs {
		q := fmt.Sprintf("SELECT setval($1, coalesce(max(%s), 0) + 1, false) FROM %s", ident(s.col), ident(s.table))
		if _, err := tx.Exec(ctx, q, s.seq); err != nil {
			return fmt.Errorf("fix sequence of %s.%s: %w", s.table, s.col, err)
		}
	}
	return nil
}

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// verify fills counts' Target and fails on any difference from the source.
func verify(ctx context.Context, q rowQuerier, tables []Table, src map[string]int64, counts []TableCount) error {
	var diffs []string
	for i, t := range tables {
		var n int64
		if err := q.QueryRow(ctx, "SELECT count(*) FROM "+ident(t.Name)).Scan(&n); err != nil {
			return fmt.Errorf("verify %s: %w", t.Name, err)
		}
		counts[i].Target = n
		if n != src[t.Name] {
			diffs = append(diffs, fmt.Sprintf("%s has %d rows, source %d", t.Name, n, src[t.Name]))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("verify: %s", strings.Join(diffs, "; "))
	}
	return nil
}
