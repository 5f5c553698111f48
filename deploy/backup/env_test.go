package backup_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"filippo.io/age"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testEnv is deploytest.Env (real Postgres over TCP with scram, a
// non-superuser CREATEDB CREATEROLE admin, the Consul stand-in, env files in a
// temp dir) plus Debian's pg_dump.
type testEnv struct {
	c       *pgtest.Cluster
	srv     *postgres.Server
	store   registry.TenantStore
	secrets secrets.Dir
	p       *deploy.Provisioner
	svc     *backup.Service
	dir     string
	id      *age.X25519Identity
}

// toolsDir returns the directory of pg_dump and pg_restore; it fails the
// test when they are missing and pgtest requires binaries.
func toolsDir(tb testing.TB) string {
	tb.Helper()
	var err error
	for _, name := range []string{"pg_dump", "pg_restore"} {
		if _, err = (backup.Tools{}).Path(name); err != nil {
			break
		}
	}
	if err == nil {
		p, _ := (backup.Tools{}).Path("pg_dump")
		p, _ = filepath.EvalSymlinks(p)
		return filepath.Dir(p)
	}
	if pgtest.Required() {
		tb.Fatalf("pg_dump/pg_restore: %v", err)
	}
	tb.Skipf("pg_dump/pg_restore: %v (set CI=true to fail instead)", err)
	return ""
}

func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	k := deploytest.MustEnv(tb)
	bin := toolsDir(tb)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		tb.Fatal(err)
	}
	e := &testEnv{c: k.Cluster, srv: k.Server, store: k.Store, secrets: k.Secrets, p: k.Provisioner(), dir: tb.TempDir(), id: id}
	e.svc = &backup.Service{
		Store: e.store, Secrets: e.secrets, Servers: map[string]backup.Server{deploytest.ServerName: e.srv},
		DefaultServer: deploytest.ServerName, Tools: backup.Tools{BinDir: bin}, Locker: k.Locker(),
	}
	return e
}

// tenant creates slug with seeded data and e.id's recipient, dropped at the end.
func (e *testEnv) tenant(tb testing.TB, slug string, musicians int) {
	tb.Helper()
	ctx := context.Background()
	e.drop(tb, slug)
	if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: slug, Name: "Orchestra " + slug, AdminEmail: "admin@" + slug + ".se"}); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		t.BackupRecipient = e.id.Recipient().String()
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	if err := schema.SeedDemo(ctx, deploytest.MustTenantDB(tb, e.secrets, slug), schema.SeedOptions{Musicians: musicians, Projects: 5, Requests: 3}); err != nil {
		tb.Fatal(err)
	}
}

// drop removes every database owned by slug's role, and the role, at the end.
func (e *testEnv) drop(tb testing.TB, slug string) {
	tb.Cleanup(func() {
		ctx := context.Background()
		dbs, _ := e.srv.DatabasesOwnedBy(ctx, registry.RoleName(slug))
		for _, d := range dbs {
			e.srv.DropDatabase(ctx, d)
		}
		e.srv.DropTenant(ctx, slug)
	})
}

// checksums returns an md5 of every app table's full content (tenant_meta
// excluded when skipMeta), for comparing databases.
func checksums(tb testing.TB, db *sql.DB, skipMeta bool) map[string]string {
	tb.Helper()
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
	if err != nil {
		tb.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var t string
		rows.Scan(&t)
		tables = append(tables, t)
	}
	rows.Close()
	sort.Strings(tables)
	out := map[string]string{}
	for _, t := range tables {
		if skipMeta && t == "tenant_meta" {
			continue
		}
		var sum sql.NullString
		var n int64
		q := `SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM "` + t + `" x`
		if err := db.QueryRowContext(ctx, q).Scan(&n, &sum); err != nil {
			tb.Fatal(err)
		}
		out[t] = sum.String
	}
	if len(out) < 5 {
		tb.Fatalf("only %d tables: %v", len(out), tables)
	}
	return out
}

func equalMaps(tb testing.TB, got, want map[string]string) {
	tb.Helper()
	for k, w := range want {
		if got[k] != w {
			tb.Errorf("table %s: checksum %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		tb.Errorf("tables: got %d, want %d", len(got), len(want))
	}
}

func listDir(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func hasSuffix(names []string, suffix string) int {
	n := 0
	for _, s := range names {
		if strings.HasSuffix(s, suffix) {
			n++
		}
	}
	return n
}
