// Package registry holds StageSub's domain types for tenants and their running
// instances: the tenant record kept in Consul KV under KeyPrefix, the slug
// rules, the names derived from a slug, and the immutable fleet Snapshot that
// the router and the admin read.
//
// Adapters live in subpackages: consul (the store, instance registration and
// the fleet watch on a real Consul agent) and consuldev (an in-memory Consul
// HTTP API stand-in for development and tests). This package imports neither.
package registry

import "time"

// Consul names shared by every process. They are the contract between ops,
// router, app, admin and Prometheus (see docs/design.md).
const (
	// KeyPrefix is the Consul KV prefix of tenant records: KeyPrefix + slug.
	KeyPrefix = "stagesub/tenants/"
	// ServiceApp is the Consul service name of tenant app instances.
	ServiceApp = "stagesub-app"
	// ServiceAdmin is the Consul service name of the superadmin dashboard.
	ServiceAdmin = "stagesub-admin"
	// ServiceRouter is the Consul service name of edge routers.
	ServiceRouter = "stagesub-router"
	// MetaTenant is the service Meta key that holds an app instance's slug.
	MetaTenant = "tenant"
	// MetaVersion is the service Meta key that holds the binary's version.
	MetaVersion = "version"
	// TagTenantPrefix prefixes the slug in an app instance's tag: "tenant-goteborg".
	TagTenantPrefix = "tenant-"
	// StatsRole is the read-only Postgres role that the admin uses in every
	// tenant database. It may read the stats view and nothing else.
	StatsRole = "stagesub_stats"
)

// Environment variable names used by more than one binary.
const (
	EnvConsulAddr  = "CONSUL_HTTP_ADDR"
	EnvConsulToken = "CONSUL_HTTP_TOKEN"
	EnvBaseDomain  = "STAGESUB_BASE_DOMAIN"
	EnvDatabaseURL = "DATABASE_URL"
	EnvTenant      = "STAGESUB_TENANT"
)

// Key returns the Consul KV key of the tenant record for slug.
func Key(slug string) string { return KeyPrefix + slug }

// TenantTag returns the service tag that marks an app instance of slug.
func TenantTag(slug string) string { return TagTenantPrefix + slug }

// Registration describes one process instance to register in Consul: an app
// instance of a tenant (Service == ServiceApp, Tenant set), the admin or a
// router. The consul adapter turns it into an agent service registration with
// an HTTP check on HealthPath.
type Registration struct {
	Service string // ServiceApp, ServiceAdmin or ServiceRouter
	ID      string // unique instance ID; generated when empty
	Tenant  string // slug, required for ServiceApp, empty otherwise
	Address string // advertised host (IP or name), never empty
	Port    int    // advertised port, never 0
	Version string // build version, stored in Meta[MetaVersion]
	Tags    []string
	Meta    map[string]string

	HealthPath      string        // default "/healthz"
	CheckInterval   time.Duration // default 2s
	CheckTimeout    time.Duration // default 1s
	DeregisterAfter time.Duration // DeregisterCriticalServiceAfter, default 1m
}
