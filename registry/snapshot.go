package registry

import (
	"context"
	"time"
)

// Health is the aggregated Consul health of one instance.
type Health string

const (
	HealthPassing  Health = "passing"
	HealthWarning  Health = "warning"
	HealthCritical Health = "critical"
)

// Instance is one registered process instance as seen in Consul.
type Instance struct {
	ID      string // Consul service ID
	Service string // ServiceApp or ServiceAdmin
	Tenant  string // slug for app instances, "" otherwise
	Node    string
	Address string // host to dial (service address, else node address)
	Port    int
	Version string
	Health  Health
}

// Snapshot is an immutable view of the whole fleet at one moment: every valid
// tenant record and every instance of the app and admin services.
//
// A Snapshot is never modified after it is published; readers may share it
// across goroutines without locks. Its maps are never nil.
type Snapshot struct {
	// Generation increases by one with every snapshot a watcher emits.
	Generation uint64
	// BuiltAt is when the snapshot was assembled from Consul answers.
	BuiltAt time.Time
	// Tenants holds the valid tenant records by slug.
	Tenants map[string]*Tenant
	// Instances holds all app instances by tenant slug (any health),
	// sorted by ID.
	Instances map[string][]Instance
	// Admins holds all admin instances (any health), sorted by ID.
	Admins []Instance
	// Invalid holds the keys of records that failed to decode, with why.
	Invalid map[string]string
}

// Passing returns the passing app instances of slug, sorted by ID. It
// allocates; hot paths build their own tables.
func (s *Snapshot) Passing(slug string) []Instance {
	return passing(s.Instances[slug])
}

// PassingAdmins returns the passing admin instances.
func (s *Snapshot) PassingAdmins() []Instance { return passing(s.Admins) }

func passing(in []Instance) []Instance {
	var out []Instance
	for _, i := range in {
		if i.Health == HealthPassing {
			out = append(out, i)
		}
	}
	return out
}

// TenantStore reads and writes tenant records. Implementations are safe for
// concurrent use.
type TenantStore interface {
	// CreateTenant stores a new record; ECONFLICT if the slug exists.
	CreateTenant(ctx context.Context, t *Tenant) error
	// FindTenant returns the record of slug; ENOTFOUND if there is none.
	FindTenant(ctx context.Context, slug string) (*Tenant, error)
	// FindTenants returns every valid record sorted by slug. Records that
	// fail to decode are reported in invalid (key → reason), never hidden
	// and never an error.
	FindTenants(ctx context.Context) (tenants []*Tenant, invalid map[string]string, err error)
	// UpdateTenant applies fn to the current record and writes it back with
	// check-and-set, retrying on conflicts, so no concurrent update is lost.
	// fn may be called more than once; it must not have side effects.
	UpdateTenant(ctx context.Context, slug string, fn func(*Tenant) error) (*Tenant, error)
	// DeleteTenant removes the record; ENOTFOUND if there is none.
	DeleteTenant(ctx context.Context, slug string) error
}
