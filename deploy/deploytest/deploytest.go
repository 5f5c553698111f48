// Package deploytest is the test kit of the deploy module: a provisioning
// setup on real parts, shared by the tests of deploy, backup, teardown,
// importshared and stagesubctl.
//
// MustEnv gives a Postgres cluster that checks passwords over TCP
// (scram-sha-256) with a non-superuser CREATEDB CREATEROLE admin role, the
// Consul stand-in, and an empty secrets dir. The cluster is pgtest's shared
// one, so the test package's TestMain must call pgtest.Main:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		e := deploytest.MustEnv(t)
//		p := e.Provisioner()
//		...
//	}
package deploytest

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/consullock"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

// The admin role MustEnv creates in the shared cluster: it logs in over TCP
// with a password and may create databases and roles, but is no superuser,
// like stagesubctl's admin in production.
const (
	AdminRole     = "stagesub_admin"
	AdminPassword = "admin-pw-for-tests"
)

// ServerName is the name of the one database server in an Env's
// Provisioner (and its default).
const ServerName = "default"

// Env is a provisioning setup on real parts. Everything in it is stopped or
// removed when the test ends.
type Env struct {
	Cluster  *pgtest.Cluster
	AdminURL string           // AdminRole over TCP, database postgres
	Server   *postgres.Server // connected as AdminURL, named ServerName
	Consul   *consuldev.Server
	Client   *api.Client // a client of Consul
	Store    registry.TenantStore
	Secrets  secrets.Dir // an empty temporary directory
}

// adminOnce creates AdminRole once per test process: the cluster is shared
// by every test of the package.
var (
	adminOnce sync.Once
	adminErr  error
)

// MustEnv starts (or reuses) the package's Postgres cluster with TCP, makes
// sure AdminRole exists, connects to it as AdminRole, and starts a Consul
// stand-in and a secrets dir for tb. It skips tb when the Postgres binaries
// are missing (unless pgtest requires them) and fails it on any error.
func MustEnv(tb testing.TB) *Env {
	tb.Helper()
	c := pgtest.Start(tb, pgtest.WithTCP())
	ctx := context.Background()
	adminOnce.Do(func() {
		adminErr = c.Exec(ctx, "postgres", "CREATE ROLE "+AdminRole+" LOGIN CREATEDB CREATEROLE PASSWORD '"+AdminPassword+"'")
	})
	if adminErr != nil {
		tb.Fatal(adminErr)
	}
	adminURL := c.TCPURL(AdminRole, AdminPassword, "postgres")
	srv, err := postgres.Open(ctx, ServerName, adminURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	cs := consuldev.StartTest(tb, consuldev.Config{})
	client := cs.Client(tb)
	return &Env{
		Cluster:  c,
		AdminURL: adminURL,
		Server:   srv,
		Consul:   cs,
		Client:   client,
		Store:    consul.NewStore(client),
		Secrets:  secrets.Dir{Path: tb.TempDir()},
	}
}

// Locker returns a Consul lock on e's Consul.
func (e *Env) Locker() consullock.Locker { return consullock.Locker{Client: e.Client} }

// Provisioner returns a new Provisioner on e: its store, a Consul lock, its
// secrets dir and its one server. Callers set the other fields (e.g.
// StatsPassword) on the result.
func (e *Env) Provisioner() *deploy.Provisioner {
	return &deploy.Provisioner{
		Store:         e.Store,
		Locker:        e.Locker(),
		Secrets:       e.Secrets,
		Servers:       map[string]deploy.DBServer{ServerName: e.Server},
		DefaultServer: ServerName,
		OpenDB:        postgres.OpenTenant,
		ConsulAddr:    e.Consul.Addr(),
	}
}

// MustTenantDB opens slug's database over TCP with the DATABASE_URL of its
// env file in sec, so the tenant's password is really checked. The
// connection is closed when tb ends.
func MustTenantDB(tb testing.TB, sec secrets.Dir, slug string) *sql.DB {
	tb.Helper()
	env, err := sec.Read(slug)
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
