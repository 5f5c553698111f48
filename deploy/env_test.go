package deploy_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/consullock"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	adminRole     = "stagesub_admin"
	adminPassword = "admin-pw-for-tests"
	statsPassword = "stats-pw-for-tests"
)

// testEnv is a provisioning setup on real parts: a Postgres cluster that
// checks passwords over TCP (scram-sha-256), a non-superuser admin role with
// CREATEDB and CREATEROLE, the Consul stand-in, and env files in a temp dir.
type testEnv struct {
	c       *pgtest.Cluster
	srv     *postgres.Server
	store   registry.TenantStore
	secrets secrets.Dir
	p       *deploy.Provisioner
}

var adminOnce sync.Once

func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	c := pgtest.Start(tb, pgtest.WithTCP())
	ctx := context.Background()
	var adminErr error
	adminOnce.Do(func() {
		adminErr = c.Exec(ctx, "postgres", "CREATE ROLE "+adminRole+" LOGIN CREATEDB CREATEROLE PASSWORD '"+adminPassword+"'")
	})
	if adminErr != nil {
		tb.Fatal(adminErr)
	}
	srv, err := postgres.Open(ctx, "default", c.TCPURL(adminRole, adminPassword, "postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	cs := consuldev.StartTest(tb, consuldev.Config{})
	client := cs.Client(tb)
	e := &testEnv{c: c, srv: srv, store: consul.NewStore(client), secrets: secrets.Dir{Path: tb.TempDir()}}
	e.p = &deploy.Provisioner{
		Store:         e.store,
		Locker:        consullock.Locker{Client: client},
		Secrets:       e.secrets,
		Servers:       map[string]deploy.DBServer{"default": srv},
		DefaultServer: "default",
		OpenDB:        postgres.OpenTenant,
		StatsPassword: statsPassword,
		ConsulAddr:    cs.Addr(),
	}
	return e
}

// dropTenant removes a tenant's database and role after a test.
func (e *testEnv) dropTenant(tb testing.TB, slug string) {
	tb.Cleanup(func() {
		if err := e.srv.DropTenant(context.Background(), slug); err != nil {
			tb.Logf("drop %s: %v", slug, err)
		}
	})
}

// tenantDB opens slug's database over TCP with the credentials from its env
// file, so the password is really checked.
func (e *testEnv) tenantDB(tb testing.TB, slug string) *sql.DB {
	tb.Helper()
	env, err := e.secrets.Read(slug)
	if err != nil {
		tb.Fatal(err)
	}
	db, err := postgres.OpenTenant(context.Background(), env[registry.EnvDatabaseURL])
	if err != nil {
		tb.Fatalf("connect as %s with its env file: %v", slug, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

var errInjected = errors.New("injected failure")

// faultyServer fails the named step once.
type faultyServer struct {
	deploy.DBServer
	failAt string
}

func (f *faultyServer) fail(step string) error {
	if f.failAt == step {
		return errInjected
	}
	return nil
}

func (f *faultyServer) EnsureStatsRole(ctx context.Context, pw string) error {
	if err := f.fail("stats"); err != nil {
		return err
	}
	return f.DBServer.EnsureStatsRole(ctx, pw)
}

func (f *faultyServer) EnsureRole(ctx context.Context, role, pw string) error {
	if err := f.fail("role"); err != nil {
		return err
	}
	return f.DBServer.EnsureRole(ctx, role, pw)
}

func (f *faultyServer) EnsureDatabase(ctx context.Context, db, owner string) error {
	if err := f.fail("database"); err != nil {
		return err
	}
	return f.DBServer.EnsureDatabase(ctx, db, owner)
}

func (f *faultyServer) LockDown(ctx context.Context, db, owner string) error {
	if err := f.fail("lockdown"); err != nil {
		return err
	}
	return f.DBServer.LockDown(ctx, db, owner)
}

// fakeTarget records starts; it fails when fail is set.
type fakeTarget struct {
	mu     sync.Mutex
	fail   bool
	starts []deploy.AppSpec
}

func (f *fakeTarget) Name() string { return "fake" }
func (f *fakeTarget) Start(ctx context.Context, s deploy.AppSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errInjected
	}
	f.starts = append(f.starts, s)
	return nil
}
func (f *fakeTarget) Stop(ctx context.Context, slug string) error { return nil }
func (f *fakeTarget) Status(ctx context.Context, slug string) (deploy.InstanceStatus, error) {
	return deploy.InstanceStatus{Tenant: slug, State: deploy.StateStopped}, nil
}
