package backup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5/stdlib"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/registry"
)

// RestoreRequest asks to restore the backup File of tenant Slug.
type RestoreRequest struct {
	Slug       string
	File       string         // encrypted dump; its manifest lies beside it
	Identities []age.Identity // ops' private key(s)
	// Into, when set, restores into a new tenant of that slug (record,
	// database, role and secret are created). Without it the backup is
	// restored into a fresh database of Slug and the record is switched to
	// it (or, when Slug has no record, the tenant is created again).
	Into string
	// Force allows switching a tenant whose current database exists.
	Force bool
	// DropOld drops the tenant's previous database after the switch.
	DropOld bool
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	Tenant      *registry.Tenant
	Created     bool   // a new tenant was created (--into, or no record)
	Database    string // the database restored into
	OldDatabase string // the previous database (switch only), kept unless DroppedOld
	DroppedOld  bool
	Restarted   bool // a running instance was restarted on the new database
	Manifest    *Manifest
	Elapsed     time.Duration
}

// ReadIdentities reads age identities (AGE-SECRET-KEY-1...) from a key file.
func ReadIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return ids, nil
}

// VerifyFile checks the size and sha256 of an encrypted dump against its
// manifest.
func VerifyFile(path string, m *Manifest) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != m.Size || got != m.SHA256 {
		return fmt.Errorf("%s is damaged: %d bytes with sha256 %s, manifest says %d bytes with sha256 %s", path, n, got, m.Size, m.SHA256)
	}
	return nil
}

// Restore restores a backup.
//
// Invariants: the backup is checked (manifest, sha256, identity) before
// anything is created; it is always restored into a database that did not
// exist before, as the tenant role; it is verified (schema version and the
// row count of every table equal the manifest) before anything points at
// it. A failure removes what the restore created and leaves the tenant as
// it was. A switch writes the env file first and then the record (one
// check-and-set write); the old database is kept until DropOld.
func (s *Service) Restore(ctx context.Context, req RestoreRequest) (*RestoreResult, error) {
	start := time.Now()
	if err := registry.ValidateSlug(req.Slug); err != nil {
		return nil, err
	}
	target := req.Slug
	if req.Into != "" {
		if err := registry.ValidateSlug(req.Into); err != nil {
			return nil, err
		}
		target = req.Into
	}
	m, err := ReadManifest(req.File)
	if err != nil {
		return nil, err
	}
	if m.Tenant != req.Slug {
		return nil, registry.Errorf(registry.EINVALID, "%s is a backup of tenant %s, not %s", req.File, m.Tenant, req.Slug)
	}
	if err := VerifyFile(req.File, m); err != nil {
		return nil, err
	}
	if err := checkIdentity(req.File, req.Identities); err != nil {
		return nil, err
	}

	rec, err := s.Store.FindTenant(ctx, target)
	switch {
	case err == nil && req.Into != "":
		return nil, registry.Errorf(registry.ECONFLICT, "tenant %s already exists; --into needs a new slug", target)
	case err == nil:
		return s.restoreSwitch(ctx, req, m, rec, start)
	case registry.ErrorCode(err) == registry.ENOTFOUND:
		return s.restoreCreate(ctx, req, m, target, start)
	default:
		return nil, fmt.Errorf("consul: read tenant %s: %w", target, err)
	}
}

// checkIdentity decrypts the header of path with ids.
func checkIdentity(path string, ids []age.Identity) error {
	if len(ids) == 0 {
		return registry.Errorf(registry.EINVALID, "no identity given to decrypt %s", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := age.Decrypt(f, ids...); err != nil {
		return identityErr(path, err)
	}
	return nil
}

func identityErr(path string, err error) error {
	var nm *age.NoIdentityMatchError
	if errors.As(err, &nm) {
		return registry.Errorf(registry.EINVALID, "cannot decrypt %s: the identity does not match the backup's recipient (wrong key file?)", path)
	}
	return fmt.Errorf("decrypt %s: %w", path, err)
}

// restoreDB streams the decrypted dump into dbURL and verifies it. rebind,
// when set, rebinds the database to that slug.
func (s *Service) restoreDB(ctx context.Context, req RestoreRequest, m *Manifest, dbURL, rebind, name string) error {
	f, err := os.Open(req.File)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := age.Decrypt(bufio.NewReaderSize(f, 1<<16), req.Identities...)
	if err != nil {
		return identityErr(req.File, err)
	}
	if err := s.Tools.Restore(ctx, dbURL, r); err != nil {
		return err
	}
	db, err := postgres.OpenTenant(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to restored database: %w", err)
	}
	defer db.Close()
	if rebind != "" {
		if _, err := db.ExecContext(ctx, "UPDATE tenant_meta SET slug = $1, name = $2", rebind, name); err != nil {
			return fmt.Errorf("rebind to %s: %w", rebind, err)
		}
	}
	if err := schema.GrantStats(ctx, db, registry.StatsRole); err != nil {
		return err
	}
	return Verify(ctx, db, m)
}

// Verify checks that db has the manifest's schema version and row counts.
func Verify(ctx context.Context, db *sql.DB, m *Manifest) error {
	v, err := schema.Current(ctx, db)
	if err != nil {
		return err
	}
	if v != m.SchemaVersion {
		return fmt.Errorf("verify: schema version %d, manifest says %d", v, m.SchemaVersion)
	}
	// Count with the same code as the backup did: CountRows on the pgx
	// connection under db's (pgx stdlib) connection.
	c, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer c.Close()
	var got map[string]int64
	if err := c.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("not a pgx connection: %T", dc)
		}
		got, err = CountRows(ctx, sc.Conn())
		return err
	}); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(m.Rows)) {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, k+" missing")
		} else if g != m.Rows[k] {
			diffs = append(diffs, fmt.Sprintf("%s has %d rows, manifest says %d", k, g, m.Rows[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := m.Rows[k]; !ok {
			diffs = append(diffs, k+" not in the manifest")
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("verify: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// restoreSwitch restores into a fresh database of an existing tenant and
// switches the tenant to it.
func (s *Service) restoreSwitch(ctx context.Context, req RestoreRequest, m *Manifest, rec *registry.Tenant, start time.Time) (*RestoreResult, error) {
	slug := rec.Slug
	switch rec.Status {
	case registry.StatusProvisioning, registry.StatusDeleting:
		return nil, registry.Errorf(registry.ECONFLICT, "tenant %s is %s; finish or undo that first", slug, rec.Status)
	}
	srv, err := s.Server(rec.Database.Server)
	if err != nil {
		return nil, err
	}
	pg, ok := srv.(dbAdmin)
	if !ok {
		return nil, fmt.Errorf("server %s cannot check databases", srv.Name())
	}
	old := rec.Database.Name
	live, err := pg.DatabaseExists(ctx, old)
	if err != nil {
		return nil, err
	}
	if live && !req.Force {
		return nil, registry.Errorf(registry.ECONFLICT,
			"tenant %s's database %s exists: a restore never replaces a live database without --force (the old one is kept until --drop-old)", slug, old)
	}
	cur, err := s.tenantURL(slug)
	if err != nil {
		return nil, err
	}
	// orchestra_<slug>_r<unix seconds>: at most 10+40+2+11 < 63 bytes.
	// Restores within one second take the next free second.
	var newDB string
	for i := int64(0); ; i++ {
		if i == 100 {
			return nil, fmt.Errorf("no free database name for the restore of %s", slug)
		}
		newDB = registry.DatabaseName(slug) + "_r" + strconv.FormatInt(s.now().Unix()+i, 10)
		exists, err := pg.DatabaseExists(ctx, newDB)
		if err != nil {
			return nil, err
		}
		if !exists {
			break
		}
	}
	role := registry.RoleName(slug)
	if err := srv.EnsureDatabase(ctx, newDB, role); err != nil {
		return nil, err
	}
	ok = false
	defer func() {
		if !ok {
			if err := pg.DropDatabase(context.WithoutCancel(ctx), newDB); err != nil {
				s.logger().Error("restore: clean up", "database", newDB, "err", err)
			}
		}
	}()
	if err := srv.LockDown(ctx, newDB, role); err != nil {
		return nil, err
	}
	newURL, err := WithDatabase(cur, newDB)
	if err != nil {
		return nil, err
	}
	if err := s.restoreDB(ctx, req, m, newURL, "", ""); err != nil {
		return nil, fmt.Errorf("restore into %s: %w", newDB, err)
	}
	// Switch: env file, then the record (one CAS write).
	env, err := s.Secrets.Read(slug)
	if err != nil {
		return nil, err
	}
	env[registry.EnvDatabaseURL] = newURL
	if err := s.Secrets.Write(slug, env); err != nil {
		return nil, err
	}
	t, err := s.Store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		if t.Database.Name != old {
			return registry.Errorf(registry.ECONFLICT, "tenant %s's database changed to %s during the restore", slug, t.Database.Name)
		}
		t.Database.Name = newDB
		t.SchemaVersion = m.SchemaVersion
		t.UpdatedAt = s.now()
		return nil
	})
	if err != nil {
		env[registry.EnvDatabaseURL] = cur
		if werr := s.Secrets.Write(slug, env); werr != nil {
			s.logger().Error("restore: put back env file", "tenant", slug, "err", werr)
		}
		return nil, fmt.Errorf("switch record: %w", err)
	}
	ok = true
	res := &RestoreResult{Tenant: t, Database: newDB, OldDatabase: old, Manifest: m}
	res.Restarted, err = s.restart(ctx, slug)
	if err != nil {
		s.logger().Warn("restore: restart instance", "tenant", slug, "err", err)
	}
	if req.DropOld && live {
		if err := pg.DropDatabase(ctx, old); err != nil {
			return res, fmt.Errorf("restored and switched to %s, but dropping %s failed: %w", newDB, old, err)
		}
		res.DroppedOld = true
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// dbAdmin is the part of deploy/postgres.Server that restore and delete use
// beyond Server.
type dbAdmin interface {
	DatabaseExists(ctx context.Context, dbname string) (bool, error)
	DropDatabase(ctx context.Context, dbname string) error
	DropRole(ctx context.Context, role string) error
}

// restart restarts the tenant's instance when the target runs it.
func (s *Service) restart(ctx context.Context, slug string) (bool, error) {
	if s.Target == nil {
		return false, nil
	}
	st, err := s.Target.Status(ctx, slug)
	if err != nil {
		return false, err
	}
	if st.State != deploy.StateRunning && st.State != deploy.StateStarting {
		return false, nil
	}
	if err := s.Target.Stop(ctx, slug); err != nil {
		return false, err
	}
	if err := s.Target.Start(ctx, deploy.AppSpec{Tenant: slug, EnvFile: s.Secrets.File(slug), Env: s.AppEnv}); err != nil {
		return false, err
	}
	return true, nil
}

// restoreCreate creates tenant slug (record, secret, role, database) from
// the backup.
func (s *Service) restoreCreate(ctx context.Context, req RestoreRequest, m *Manifest, slug string, start time.Time) (*RestoreResult, error) {
	if s.Locker != nil {
		unlock, err := s.Locker.TryLock(ctx, deploy.LockKey(slug))
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	srv, err := s.Server("")
	if err != nil {
		return nil, err
	}
	pg, ok := srv.(dbAdmin)
	if !ok {
		return nil, fmt.Errorf("server %s cannot check databases", srv.Name())
	}
	dbname, role := registry.DatabaseName(slug), registry.RoleName(slug)
	if exists, err := pg.DatabaseExists(ctx, dbname); err != nil {
		return nil, err
	} else if exists {
		return nil, registry.Errorf(registry.ECONFLICT, "database %s exists but tenant %s has no record; drop it or restore --into another slug", dbname, slug)
	}
	now := s.now()
	name := m.Name
	if name == "" {
		name = slug
	}
	t := &registry.Tenant{
		Version: registry.RecordVersion, Slug: slug, Name: name, Status: registry.StatusProvisioning,
		Database: srv.Location(dbname), BackupRecipient: m.Recipient, CreatedAt: now, UpdatedAt: now,
	}
	if err := s.Store.CreateTenant(ctx, t); err != nil {
		return nil, err
	}
	ok = false
	defer func() {
		if ok {
			return
		}
		bg := context.WithoutCancel(ctx)
		for _, step := range []func() error{
			func() error { return pg.DropDatabase(bg, dbname) },
			func() error { return pg.DropRole(bg, role) },
			func() error { return s.Secrets.Remove(slug) },
			func() error { return s.Store.DeleteTenant(bg, slug) },
		} {
			if err := step(); err != nil {
				s.logger().Error("restore: clean up", "tenant", slug, "err", err)
			}
		}
	}()
	pw, err := deploy.NewPassword()
	if err != nil {
		return nil, err
	}
	dbURL := srv.TenantURL(slug, pw)
	if err := s.Secrets.Write(slug, map[string]string{registry.EnvDatabaseURL: dbURL, registry.EnvTenant: slug}); err != nil {
		return nil, err
	}
	if err := srv.EnsureStatsRole(ctx, s.StatsPassword); err != nil {
		return nil, err
	}
	if err := srv.EnsureRole(ctx, role, pw); err != nil {
		return nil, err
	}
	if err := srv.EnsureDatabase(ctx, dbname, role); err != nil {
		return nil, err
	}
	if err := srv.LockDown(ctx, dbname, role); err != nil {
		return nil, err
	}
	rebind := ""
	if slug != m.Tenant {
		rebind = slug
	}
	if err := s.restoreDB(ctx, req, m, dbURL, rebind, name); err != nil {
		return nil, fmt.Errorf("restore into %s: %w", dbname, err)
	}
	t, err = s.Store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		t.Status = registry.StatusActive
		t.SchemaVersion = m.SchemaVersion
		t.UpdatedAt = s.now()
		return nil
	})
	if err != nil {
		return nil, err
	}
	ok = true
	return &RestoreResult{Tenant: t, Created: true, Database: dbname, Manifest: m, Elapsed: time.Since(start)}, nil
}
