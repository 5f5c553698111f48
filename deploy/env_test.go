package deploy_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const statsPassword = "stats-pw-for-tests"

// testEnv is a provisioning setup on real parts (deploytest.Env): a Postgres
// cluster that checks passwords over TCP (scram-sha-256), a non-superuser
// admin role with CREATEDB and CREATEROLE, the Consul stand-in, and env files
// in a temp dir.
type testEnv struct {
	c       *pgtest.Cluster
	srv     *postgres.Server
	store   registry.TenantStore
	secrets secrets.Dir
	p       *deploy.Provisioner
}

func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	k := deploytest.MustEnv(tb)
	e := &testEnv{c: k.Cluster, srv: k.Server, store: k.Store, secrets: k.Secrets, p: k.Provisioner()}
	e.p.StatsPassword = statsPassword
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
