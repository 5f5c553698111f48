// Package deploy is the provisioning domain of StageSub's ops tool
// stagesubctl: the deploy Target that runs a tenant's app instance, the
// secrets sink and Postgres server seams, and the Provisioner that creates
// tenants and migrates the fleet on top of them.
//
// Adapters live in subpackages: postgres (roles and databases on a server
// reached with an admin URL), secrets (env files), local and systemd
// (deploy targets), consullock (create locks in Consul). Wiring lives in
// cmd/stagesubctl only.
package deploy

import (
	"context"
	"database/sql"
	"time"

	"stagesub.dev/registry"
)

// State is the state of a tenant's app instance on a deploy target.
type State string

const (
	StateRunning  State = "running"
	StateStarting State = "starting" // starting, or waiting to restart after a crash
	StateStopped  State = "stopped"
	StateFailed   State = "failed" // gave up restarting
)

// AppSpec describes the app instance of one tenant.
type AppSpec struct {
	// Tenant is the slug.
	Tenant string
	// EnvFile is the tenant's env file (DATABASE_URL, STAGESUB_TENANT) as
	// written by the secrets sink. Targets read it at every (re)start.
	EnvFile string
	// Env holds extra "K=V" entries applied after the env file, e.g.
	// CONSUL_HTTP_ADDR, STAGESUB_BASE_DOMAIN, STAGESUB_LISTEN.
	Env []string
}

// InstanceStatus is what a target knows about a tenant's instance.
type InstanceStatus struct {
	Tenant   string
	State    State
	PID      int // 0 when not running or not known
	Restarts int // restarts after crashes since Start
	Since    time.Time
	Detail   string // e.g. the last exit status
}

// Target runs app instances of tenants. Implementations are safe for
// concurrent use.
type Target interface {
	// Name names the target: "local", "systemd".
	Name() string
	// Start starts the tenant's instance; nil when it already runs.
	Start(ctx context.Context, spec AppSpec) error
	// Stop stops the tenant's instance; nil when it does not run.
	Stop(ctx context.Context, slug string) error
	// Status reports the instance; StateStopped when the target knows none.
	Status(ctx context.Context, slug string) (InstanceStatus, error)
}

// Secrets stores each tenant's credentials as an env (KEY=value) set.
// The deploy target hands them to the tenant's app.
type Secrets interface {
	// Read returns the tenant's env; an error wrapping fs.ErrNotExist when
	// there is none.
	Read(slug string) (map[string]string, error)
	// Write replaces the tenant's env atomically, readable by its owner only.
	Write(slug string, env map[string]string) error
	// Remove deletes the tenant's env; nil when there is none.
	Remove(slug string) error
	// File is where the tenant's env lives (the env file given to targets).
	File(slug string) string
}

// DBServer is one Postgres server that hosts tenant databases, reached with
// an admin role that has CREATEDB and CREATEROLE (deploy/postgres.Server).
// Every method is idempotent.
type DBServer interface {
	// Name is the configured server name ("default" for the default one).
	Name() string
	// Location returns where database dbname lives, for the tenant record.
	Location(dbname string) registry.Database
	// TenantURL returns the DATABASE_URL of a tenant role on this server.
	TenantURL(slug, password string) string
	// EnsureStatsRole creates the shared read-only stats role if missing and,
	// when password is not empty, sets its password.
	EnsureStatsRole(ctx context.Context, password string) error
	// EnsureRole creates the login role, or sets its password when it exists.
	EnsureRole(ctx context.Context, role, password string) error
	// EnsureDatabase creates database dbname owned by owner unless it exists;
	// a database that exists with another owner is an error.
	EnsureDatabase(ctx context.Context, dbname, owner string) error
	// LockDown revokes every database privilege from PUBLIC and grants
	// CONNECT to owner and to the stats role.
	LockDown(ctx context.Context, dbname, owner string) error
	// LockDownProblems reports, without changing anything, how the
	// privileges on dbname differ from what LockDown grants (nil when
	// locked down); a missing database is an error.
	LockDownProblems(ctx context.Context, dbname, owner string) ([]string, error)
}

// Locker takes exclusive, best-effort locks across operators (Consul
// sessions in production).
type Locker interface {
	// TryLock takes the lock named key without waiting long. A lock held by
	// someone else is a registry ECONFLICT error. unlock releases it.
	TryLock(ctx context.Context, key string) (unlock func(), err error)
}

// OpenDBFunc opens a database/sql handle on a postgres URL and checks that it
// can connect (deploy/postgres.OpenTenant).
type OpenDBFunc func(ctx context.Context, url string) (*sql.DB, error)

// LockKey returns the Consul KV key of the create lock of slug.
func LockKey(slug string) string { return "stagesub/locks/create/" + slug }
