package backup_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/registry"
)

// TestRoundTrip: backup → drop the database → restore gives equal content,
// a switched record and env file, and a database bound to the tenant.
func TestRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "roundtrip", 120)
	want := checksums(t, deploytest.MustTenantDB(t, e.secrets, "roundtrip"), false)

	res := e.svc.Backup(ctx, "roundtrip", backup.Options{Dir: e.dir})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	m := res.Manifest
	if got, want := m.SchemaVersion, schema.Latest(); got != want {
		t.Errorf("manifest schema version = %d, want %d", got, want)
	}
	if got, want := m.Rows["public.musicians"], int64(120); got != want {
		t.Errorf("manifest musicians = %d, want %d", got, want)
	}
	if fi, err := os.Stat(res.Path); err != nil || fi.Size() != m.Size || fi.Mode().Perm() != 0o600 {
		t.Errorf("dump %s: %v, size %d vs manifest %d", res.Path, err, fi.Size(), m.Size)
	}
	if err := backup.VerifyFile(res.Path, m); err != nil {
		t.Error(err)
	}
	names := listDir(t, e.dir)
	if got, want := len(names), 2; got != want {
		t.Errorf("backup dir = %v, want dump + manifest", names)
	}
	// The file is ciphertext: no plain-text e-mail address in it.
	raw, _ := os.ReadFile(res.Path)
	if strings.Contains(string(raw), "demo-1@example.org") || !strings.HasPrefix(string(raw), "age-encryption.org/v1") {
		t.Errorf("dump is not age ciphertext")
	}

	if err := e.srv.DropDatabase(ctx, "orchestra_roundtrip"); err != nil {
		t.Fatal(err)
	}
	rr, err := e.svc.Restore(ctx, backup.RestoreRequest{Slug: "roundtrip", File: res.Path, Identities: []age.Identity{e.id}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rr.Database, "orchestra_roundtrip_r") || rr.Tenant.Database.Name != rr.Database || rr.OldDatabase != "orchestra_roundtrip" {
		t.Errorf("restore result = %+v", rr)
	}
	rec, _ := e.store.FindTenant(ctx, "roundtrip")
	if got, want := rec.Database.Name, rr.Database; got != want {
		t.Errorf("record database = %q, want %q", got, want)
	}
	db := deploytest.MustTenantDB(t, e.secrets, "roundtrip") // env file rewritten to the new database
	var cur string
	db.QueryRowContext(ctx, "SELECT current_database()").Scan(&cur)
	if got, want := cur, rr.Database; got != want {
		t.Errorf("env file database = %q, want %q", got, want)
	}
	equalMaps(t, checksums(t, db, false), want)
	if slug, _ := schema.BoundTenant(ctx, db); slug != "roundtrip" {
		t.Errorf("bound tenant = %q", slug)
	}
	var owner string
	db.QueryRowContext(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'musicians'").Scan(&owner)
	if got, want := owner, "orchestra_roundtrip"; got != want {
		t.Errorf("owner = %q, want %q", got, want)
	}
	// Verify passes on the restored database and names a table whose row
	// count differs from the manifest.
	if err := backup.Verify(ctx, db, m); err != nil {
		t.Errorf("Verify of the restored database: %v", err)
	}
	off := *m
	off.Rows = maps.Clone(m.Rows)
	off.Rows["public.musicians"]++
	if err := backup.Verify(ctx, db, &off); err == nil || !strings.Contains(err.Error(), "public.musicians has 120 rows, manifest says 121") {
		t.Errorf("Verify with a wrong row count = %v", err)
	}
}

func TestRestoreWrongIdentity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "wrongkey", 10)
	res := e.svc.Backup(ctx, "wrongkey", backup.Options{Dir: e.dir})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	other, _ := age.GenerateX25519Identity()
	keyFile := filepath.Join(t.TempDir(), "ops.key")
	os.WriteFile(keyFile, []byte("# other key\n"+other.String()+"\n"), 0o600)
	ids, err := backup.ReadIdentities(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := e.srv.DatabasesOwnedBy(ctx, "orchestra_wrongkey")
	for _, into := range []string{"", "wrongkey-copy"} {
		_, err = e.svc.Restore(ctx, backup.RestoreRequest{Slug: "wrongkey", File: res.Path, Identities: ids, Force: true, Into: into})
		if err == nil || !strings.Contains(err.Error(), "identity does not match") {
			t.Fatalf("into %q: err = %v, want a clear identity mismatch", into, err)
		}
	}
	after, _ := e.srv.DatabasesOwnedBy(ctx, "orchestra_wrongkey")
	if strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("databases changed: %v → %v", before, after)
	}
	if _, err := e.store.FindTenant(ctx, "wrongkey-copy"); registry.ErrorCode(err) != registry.ENOTFOUND {
		t.Errorf("--into record after failed restore: %v", err)
	}
}

// TestRestoreLive: a live database needs --force; --drop-old drops it; --into
// makes an isolated copy bound to the new slug.
func TestRestoreLive(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "live", 30)
	want := checksums(t, deploytest.MustTenantDB(t, e.secrets, "live"), true)
	res := e.svc.Backup(ctx, "live", backup.Options{Dir: e.dir})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	req := backup.RestoreRequest{Slug: "live", File: res.Path, Identities: []age.Identity{e.id}}
	if _, err := e.svc.Restore(ctx, req); registry.ErrorCode(err) != registry.ECONFLICT || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over live: err = %v, want ECONFLICT naming --force", err)
	}
	// Changes after the backup disappear with the restore.
	if _, err := deploytest.MustTenantDB(t, e.secrets, "live").ExecContext(ctx, "DELETE FROM requests"); err != nil {
		t.Fatal(err)
	}
	req.Force, req.DropOld = true, true
	rr, err := e.svc.Restore(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rr.DroppedOld {
		t.Errorf("old database not dropped")
	}
	// A second restore within the same second gets its own database.
	rr2, err := e.svc.Restore(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if rr2.Database == rr.Database || rr2.OldDatabase != rr.Database {
		t.Errorf("second restore: %s (old %s), first %s", rr2.Database, rr2.OldDatabase, rr.Database)
	}
	rr = rr2
	if ok, _ := e.srv.DatabaseExists(ctx, "orchestra_live"); ok {
		t.Errorf("orchestra_live still exists after --drop-old")
	}
	equalMaps(t, checksums(t, deploytest.MustTenantDB(t, e.secrets, "live"), true), want)

	e.drop(t, "live-copy")
	req = backup.RestoreRequest{Slug: "live", File: res.Path, Identities: []age.Identity{e.id}, Into: "live-copy"}
	rc, err := e.svc.Restore(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rc.Created || rc.Tenant.Status != registry.StatusActive || rc.Tenant.Database.Name != "orchestra_live_copy" {
		t.Errorf("into result = %+v", rc.Tenant)
	}
	db := deploytest.MustTenantDB(t, e.secrets, "live-copy")
	equalMaps(t, checksums(t, db, true), want)
	if slug, _ := schema.BoundTenant(ctx, db); slug != "live-copy" {
		t.Errorf("copy bound to %q, want live-copy", slug)
	}
	// Isolation: the copy's role cannot reach the original.
	env, _ := e.secrets.Read("live-copy")
	u, _ := backup.WithDatabase(env[registry.EnvDatabaseURL], rr.Database)
	if db, err := postgres.OpenTenant(ctx, u); err == nil {
		db.Close()
		t.Errorf("live-copy's role can connect to %s", rr.Database)
	}
	if _, err := e.svc.Restore(ctx, req); registry.ErrorCode(err) != registry.ECONFLICT {
		t.Errorf("second --into: err = %v, want ECONFLICT", err)
	}
}

func TestBackupErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "norcpt", 5)
	e.store.UpdateTenant(ctx, "norcpt", func(t *registry.Tenant) error { t.BackupRecipient = ""; return nil })

	res := e.svc.Backup(ctx, "norcpt", backup.Options{Dir: e.dir})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "no backup recipient") {
		t.Errorf("no recipient: err = %v", res.Err)
	}
	res = e.svc.Backup(ctx, "norcpt", backup.Options{Dir: e.dir, Recipient: "age1notakey"})
	if registry.ErrorCode(res.Err) != registry.EINVALID {
		t.Errorf("bad recipient: err = %v", res.Err)
	}
	res = e.svc.Backup(ctx, "nosuch", backup.Options{Dir: e.dir, Recipient: e.id.Recipient().String()})
	if registry.ErrorCode(res.Err) != registry.ENOTFOUND {
		t.Errorf("unknown tenant: err = %v", res.Err)
	}

	// pg_dump failing half-way leaves no file at all.
	fake := t.TempDir()
	script := "#!/bin/sh\nhead -c 100000 /dev/urandom\necho 'pg_dump: error: connection lost' >&2\nexit 1\n"
	os.WriteFile(filepath.Join(fake, "pg_dump"), []byte(script), 0o755)
	svc := *e.svc
	svc.Tools = backup.Tools{BinDir: fake}
	res = svc.Backup(ctx, "norcpt", backup.Options{Dir: e.dir, Recipient: e.id.Recipient().String()})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "connection lost") {
		t.Errorf("failing pg_dump: err = %v", res.Err)
	}
	if names := listDir(t, e.dir); len(names) != 0 {
		t.Errorf("failed backups left files: %v", names)
	}
}

func TestRetentionAndDamage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "keep", 5)
	e.tenant(t, "keep-other", 5)
	if r := e.svc.Backup(ctx, "keep-other", backup.Options{Dir: e.dir}); r.Err != nil {
		t.Fatal(r.Err)
	}
	var last backup.Result
	for range 3 {
		last = e.svc.Backup(ctx, "keep", backup.Options{Dir: e.dir, Keep: 2})
		if last.Err != nil {
			t.Fatal(last.Err)
		}
	}
	if got, want := len(last.Pruned), 1; got != want {
		t.Errorf("pruned = %v, want %d", last.Pruned, want)
	}
	ms, _ := backup.List(e.dir, "keep")
	if got, want := len(ms), 2; got != want {
		t.Errorf("kept %d backups, want %d", got, want)
	}
	if os, _ := backup.List(e.dir, "keep-other"); len(os) != 1 {
		t.Errorf("other tenant's backups touched: %d", len(os))
	}
	names := listDir(t, e.dir)
	if got, want := hasSuffix(names, backup.DumpSuffix), 3; got != want {
		t.Errorf("dumps = %d, want %d: %v", got, want, names)
	}

	// A damaged file is refused before anything happens.
	f, _ := os.OpenFile(last.Path, os.O_WRONLY, 0)
	f.WriteAt([]byte("XX"), 500)
	f.Close()
	_, err := e.svc.Restore(ctx, backup.RestoreRequest{Slug: "keep", File: last.Path, Identities: []age.Identity{e.id}, Force: true})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged file: err = %v", err)
	}
	// A backup of another tenant is refused.
	_, err = e.svc.Restore(ctx, backup.RestoreRequest{Slug: "keep-other", File: last.Path, Identities: []age.Identity{e.id}})
	if registry.ErrorCode(err) != registry.EINVALID {
		t.Errorf("wrong tenant: err = %v", err)
	}
}

func TestAll(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	slugs := []string{"all-a", "all-b", "all-c", "all-d"}
	for _, s := range slugs {
		e.tenant(t, s, 5)
	}
	e.store.UpdateTenant(ctx, "all-c", func(t *registry.Tenant) error { t.BackupRecipient = ""; return nil })
	var progress []int
	results := e.svc.All(ctx, slugs, backup.Options{Dir: e.dir}, 2, func(r backup.Result, done, total int) {
		progress = append(progress, done)
	})
	if got, want := len(results), 4; got != want {
		t.Fatalf("results = %d, want %d", got, want)
	}
	for _, r := range results {
		if got, want := r.Err != nil, r.Slug == "all-c"; got != want {
			t.Errorf("%s: err = %v", r.Slug, r.Err)
		}
	}
	if got, want := len(progress), 4; got != want || progress[3] != 4 {
		t.Errorf("progress = %v", progress)
	}
	if got, want := hasSuffix(listDir(t, e.dir), backup.ManifestSuffix), 3; got != want {
		t.Errorf("manifests = %d, want %d", got, want)
	}
}
