// Package route holds the router's routing table: an immutable *Table built
// from a *registry.Snapshot off the hot path, published through a Holder
// with an atomic pointer, and looked up per request without locks or
// allocations. Per-instance runtime state (in-flight requests, passive-health
// ejections) lives in typed atomics on Backend values that a new Table takes
// over from the previous one, so a routing change keeps that state.
package route

import (
	"sync/atomic"
	"time"

	"stagesub.dev/registry"
)

// Kind says what a host routes to.
type Kind uint8

const (
	// KindUnknown: no route; the router answers 404.
	KindUnknown Kind = iota
	// KindTenant: a tenant's app instances (by <slug>.<base> or a custom domain).
	KindTenant
	// KindAdmin: the stagesub-admin instances at admin.<base>.
	KindAdmin
	// KindApex: the base domain itself and www.<base>.
	KindApex
)

func (k Kind) String() string {
	switch k {
	case KindTenant:
		return "tenant"
	case KindAdmin:
		return "admin"
	case KindApex:
		return "apex"
	}
	return "unknown"
}

// Metric label values for the routes that are not tenants. They contain '_',
// which a slug never does, so they never collide with a tenant's label.
const (
	LabelUnknown = "_unknown"
	LabelAdmin   = "_admin"
	LabelApex    = "_apex"
)

// Route is where one host goes. A Route belongs to one Table and is never
// modified after the Table is built; it may be shared by several hosts (a
// tenant's subdomain and its custom domains share one Route).
type Route struct {
	Kind Kind
	// Tenant is the slug for KindTenant routes, "" otherwise.
	Tenant string
	// Label is the metric label value: the slug, or one of the Label* constants.
	Label string
	// Status is the tenant's status; StatusActive for admin and apex routes.
	Status registry.Status
	// Backends are the passing instances, sorted by ID. For a tenant, every
	// one of them was registered with Meta tenant == Tenant (invariant: no
	// response ever comes from another tenant's instance).
	Backends []*Backend
}

// Proxied reports whether requests on r go to backends at all (an active
// tenant or the admin), as opposed to a page.
func (r *Route) Proxied() bool {
	return (r.Kind == KindTenant && r.Status == registry.StatusActive) || r.Kind == KindAdmin
}

// Backend is one upstream instance and its runtime state. The identity fields
// are immutable; the counters are atomics safe for concurrent use. A Backend
// is carried over from one Table to the next while the instance stays
// registered with the same address, so its state survives routing changes.
type Backend struct {
	ID     string // Consul service ID
	Tenant string // slug, "" for admin instances
	Addr   string // "host:port" to dial

	inflight     atomic.Int64
	fails        atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds; 0 = never ejected
}

// InFlight returns the number of requests currently proxied to b.
func (b *Backend) InFlight() int64 { return b.inflight.Load() }

// Acquire counts a request in flight to b; call Release when it ends.
func (b *Backend) Acquire() { b.inflight.Add(1) }

// Release ends a request counted by Acquire.
func (b *Backend) Release() { b.inflight.Add(-1) }

// Ejected reports whether b is ejected at now (unix nanoseconds).
func (b *Backend) Ejected(now int64) bool { return b.ejectedUntil.Load() > now }

// Eject takes b out of rotation after a refused or timed-out connection, for
// base doubled per consecutive failure, at most max. It returns how long.
func (b *Backend) Eject(now time.Time, base, max time.Duration) time.Duration {
	n := b.fails.Add(1)
	d := base
	for i := int32(1); i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	b.ejectedUntil.Store(now.Add(d).UnixNano())
	return d
}

// Succeeded records a response from b and ends its failure streak.
func (b *Backend) Succeeded() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
}
