package teardown_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/deploy/teardown"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// target is a deploy target whose instance state the test sets.
type target struct {
	mu      sync.Mutex
	running bool
	log     []string
}

func (t *target) Name() string { return "test" }
func (t *target) Start(ctx context.Context, s deploy.AppSpec) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running = true
	t.log = append(t.log, "start")
	return nil
}
func (t *target) Stop(ctx context.Context, slug string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running = false
	t.log = append(t.log, "stop")
	return nil
}
func (t *target) Status(ctx context.Context, slug string) (deploy.InstanceStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := deploy.StateStopped
	if t.running {
		st = deploy.StateRunning
	}
	return deploy.InstanceStatus{Tenant: slug, State: st}, nil
}

type env struct {
	srv   *postgres.Server
	store registry.TenantStore
	sec   secrets.Dir
	p     *deploy.Provisioner
	d     *teardown.Deleter
	tg    *target
	id    *age.X25519Identity
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	k := deploytest.MustEnv(t)
	if _, err := (backup.Tools{}).Path("pg_dump"); err != nil {
		if pgtest.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	id, _ := age.GenerateX25519Identity()
	e := &env{srv: k.Server, store: k.Store, sec: k.Secrets, p: k.Provisioner(), tg: &target{}, id: id, dir: t.TempDir()}
	svc := &backup.Service{Store: e.store, Secrets: e.sec, Servers: map[string]backup.Server{deploytest.ServerName: e.srv}, DefaultServer: deploytest.ServerName}
	e.d = &teardown.Deleter{
		Store: e.store, Secrets: e.sec, Servers: map[string]teardown.Server{deploytest.ServerName: e.srv}, DefaultServer: deploytest.ServerName,
		Backup: svc, Locker: k.Locker(), Target: e.tg,
	}
	return e
}

// tenant creates slug, running, with an extra kept database from a restore.
func (e *env) tenant(t *testing.T, slug string, recipient bool) {
	t.Helper()
	ctx := context.Background()
	t.Cleanup(func() {
		dbs, _ := e.srv.DatabasesOwnedBy(context.Background(), registry.RoleName(slug))
		for _, d := range dbs {
			e.srv.DropDatabase(context.Background(), d)
		}
		e.srv.DropTenant(context.Background(), slug)
	})
	if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: slug, Name: "Del " + slug}); err != nil {
		t.Fatal(err)
	}
	if recipient {
		e.store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error { t.BackupRecipient = e.id.Recipient().String(); return nil })
	}
	if err := e.srv.EnsureDatabase(ctx, registry.DatabaseName(slug)+"_r1", registry.RoleName(slug)); err != nil {
		t.Fatal(err)
	}
	e.tg.running, e.tg.log = true, nil
}

// intact fails unless slug is exactly as before a delete.
func (e *env) intact(t *testing.T, slug string) {
	t.Helper()
	ctx := context.Background()
	rec, err := e.store.FindTenant(ctx, slug)
	if err != nil || rec.Status != registry.StatusActive {
		t.Errorf("record = %+v, %v; want active", rec, err)
	}
	if dbs, _ := e.srv.DatabasesOwnedBy(ctx, registry.RoleName(slug)); len(dbs) != 2 {
		t.Errorf("databases = %v, want 2", dbs)
	}
	if _, err := e.sec.Read(slug); err != nil {
		t.Errorf("env file: %v", err)
	}
	if !e.tg.running {
		t.Errorf("instance not running again (target log %v)", e.tg.log)
	}
	if names, _ := os.ReadDir(e.dir); len(names) != 0 {
		t.Errorf("backup dir not empty: %v", names)
	}
}

func TestDeleteBackupFails(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t.Run("no recipient", func(t *testing.T) {
		e.tenant(t, "del-norcpt", false)
		_, err := e.d.Delete(ctx, teardown.Request{Slug: "del-norcpt", Backup: backup.Options{Dir: e.dir}})
		if err == nil || !strings.Contains(err.Error(), "nothing deleted") {
			t.Fatalf("err = %v", err)
		}
		e.intact(t, "del-norcpt")
		if got, want := strings.Join(e.tg.log, ","), "stop,start"; got != want {
			t.Errorf("target log = %s, want %s", got, want)
		}
	})
	t.Run("pg_dump fails", func(t *testing.T) {
		e.tenant(t, "del-dumpfail", true)
		fake := t.TempDir()
		os.WriteFile(filepath.Join(fake, "pg_dump"), []byte("#!/bin/sh\nhead -c 5000 /dev/zero\nexit 3\n"), 0o755)
		d := *e.d
		svc := *d.Backup
		svc.Tools = backup.Tools{BinDir: fake}
		d.Backup = &svc
		if _, err := d.Delete(ctx, teardown.Request{Slug: "del-dumpfail", Backup: backup.Options{Dir: e.dir}}); err == nil {
			t.Fatal("delete succeeded with a failing pg_dump")
		}
		e.intact(t, "del-dumpfail")
	})
}

func TestDelete(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, waive := range []bool{false, true} {
		slug := "del-ok"
		if waive {
			slug = "del-waived"
		}
		t.Run(slug, func(t *testing.T) {
			e.tenant(t, slug, !waive)
			res, err := e.d.Delete(ctx, teardown.Request{Slug: slug, WaiveBackup: waive, Backup: backup.Options{Dir: e.dir}})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.Join(res.Databases, ","), registry.DatabaseName(slug)+","+registry.DatabaseName(slug)+"_r1"; got != want {
				t.Errorf("dropped %s, want %s", got, want)
			}
			if _, err := e.store.FindTenant(ctx, slug); registry.ErrorCode(err) != registry.ENOTFOUND {
				t.Errorf("record: %v", err)
			}
			if _, err := e.sec.Read(slug); err == nil {
				t.Errorf("env file still there")
			}
			if err := e.srv.Exec(ctx, "SET ROLE "+registry.RoleName(slug)); err == nil || !strings.Contains(err.Error(), "does not exist") {
				t.Errorf("role still exists: %v", err)
			}
			if e.tg.running || !res.StoppedInstance {
				t.Errorf("instance still running")
			}
			ms, _ := backup.List(e.dir, slug)
			if got, want := len(ms), map[bool]int{false: 1, true: 0}[waive]; got != want || (res.Backup == nil) != waive {
				t.Errorf("final backups = %d, want %d", got, want)
			}
		})
	}
}
