package route

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"stagesub.dev/registry"
)

// Table maps hosts to routes. It is immutable once Build returns it and safe
// for concurrent use without locks; a new Table replaces it as a whole.
type Table struct {
	// Generation is the registry snapshot generation the table was built from.
	Generation uint64
	// BuiltAt is when the registry snapshot was assembled.
	BuiltAt time.Time
	// Base is the normalized base domain.
	Base string
	// Problems lists registry entries the table ignored and why (a custom
	// domain claimed twice, an instance whose tenant Meta disagrees...).
	Problems []string

	hosts    map[string]*Route // normalized host → route
	custom   map[string]bool   // normalized custom domains that route to a tenant
	unknown  *Route
	backends map[string]*Backend // backendKey → backend, carried over by Build
	states   map[string]int
	tenants  []string // routed slugs, sorted
}

// Options configure Build.
type Options struct {
	// Base is the base domain, e.g. "stagesub.com" or "localhost".
	Base string
	// Prev is the table being replaced, or nil. Backends of instances that
	// are still registered with the same address keep their runtime state.
	Prev *Table
}

// Build turns a registry snapshot into a Table. It fails only on a bad base
// domain; registry entries that cannot be routed safely are left out and
// listed in Table.Problems. s may be nil (an empty fleet).
func Build(s *registry.Snapshot, o Options) (*Table, error) {
	base := CanonicalHost(o.Base)
	if base == "" || base[0] == '[' {
		return nil, fmt.Errorf("route: invalid base domain %q", o.Base)
	}
	t := &Table{
		Base:     base,
		hosts:    map[string]*Route{},
		custom:   map[string]bool{},
		unknown:  &Route{Kind: KindUnknown, Label: LabelUnknown},
		backends: map[string]*Backend{},
		states:   map[string]int{},
	}
	if s == nil {
		s = &registry.Snapshot{}
	}
	t.Generation, t.BuiltAt = s.Generation, s.BuiltAt

	apex := &Route{Kind: KindApex, Label: LabelApex, Status: registry.StatusActive}
	t.hosts[base] = apex
	t.hosts["www."+base] = apex
	admin := &Route{Kind: KindAdmin, Label: LabelAdmin, Status: registry.StatusActive}
	for _, in := range s.Admins {
		if in.Health != registry.HealthPassing {
			continue
		}
		if in.Service != "" && in.Service != registry.ServiceAdmin {
			t.problem("admin instance %s: service is %q", in.ID, in.Service)
			continue
		}
		admin.Backends = append(admin.Backends, t.backend(o.Prev, in, ""))
	}
	t.hosts["admin."+base] = admin

	slugs := make([]string, 0, len(s.Tenants))
	for slug := range s.Tenants {
		slugs = append(slugs, slug)
	}
	sort.Strings(slugs)
	routes := map[string]*Route{}
	for _, slug := range slugs {
		ten := s.Tenants[slug]
		if ten == nil || ten.Slug != slug || registry.ValidateSlug(slug) != nil {
			t.problem("tenant %q: invalid slug", slug)
			continue
		}
		r := &Route{Kind: KindTenant, Tenant: slug, Label: slug, Status: ten.Status}
		for _, in := range s.Instances[slug] {
			if in.Health != registry.HealthPassing {
				continue
			}
			if in.Tenant != slug || (in.Service != "" && in.Service != registry.ServiceApp) {
				t.problem("instance %s listed under tenant %s: its tenant is %q, service %q; not routed", in.ID, slug, in.Tenant, in.Service)
				continue
			}
			r.Backends = append(r.Backends, t.backend(o.Prev, in, slug))
		}
		routes[slug] = r
		t.tenants = append(t.tenants, slug)
		t.hosts[slug+"."+base] = r
		t.states[stateOf(r)]++
	}
	for slug := range s.Instances {
		if _, ok := routes[slug]; !ok {
			t.problem("instances registered for tenant %q which has no record; not routed", slug)
		}
	}

	// Custom domains: a domain claimed by two tenants goes to neither, and a
	// domain the base domain already routes (or one below it) is ignored.
	claims := map[string][]string{}
	for _, slug := range slugs {
		if routes[slug] == nil {
			continue
		}
		for _, d := range s.Tenants[slug].Domains {
			h := CanonicalHost(d)
			if h == "" || h[0] == '[' {
				t.problem("tenant %s: invalid custom domain %q", slug, d)
				continue
			}
			if h == base || strings.HasSuffix(h, "."+base) {
				t.problem("tenant %s: custom domain %q is under the base domain; ignored", slug, h)
				continue
			}
			if !slices.Contains(claims[h], slug) {
				claims[h] = append(claims[h], slug)
			}
		}
	}
	for h, owners := range claims {
		if len(owners) > 1 {
			t.problem("custom domain %q claimed by %s; routed to none", h, strings.Join(owners, ", "))
			continue
		}
		t.hosts[h] = routes[owners[0]]
		t.custom[h] = true
	}
	sort.Strings(t.Problems)
	return t, nil
}

func (t *Table) problem(format string, args ...any) {
	t.Problems = append(t.Problems, fmt.Sprintf(format, args...))
}

// backend returns the Backend for in, taking over prev's state for the same
// instance at the same address.
func (t *Table) backend(prev *Table, in registry.Instance, tenant string) *Backend {
	addr := joinHostPort(in.Address, in.Port)
	key := tenant + "|" + in.ID + "|" + addr
	if b := t.backends[key]; b != nil {
		return b
	}
	var b *Backend
	if prev != nil {
		b = prev.backends[key]
	}
	if b == nil {
		b = &Backend{ID: in.ID, Tenant: tenant, Addr: addr}
	}
	t.backends[key] = b
	return b
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// stateOf names a tenant route's state for the routes-by-state metric.
func stateOf(r *Route) string {
	if r.Status == registry.StatusActive && len(r.Backends) == 0 {
		return "no_instance"
	}
	return string(r.Status)
}

// Lookup returns the route of host, a request's Host (any case, optional
// port and trailing dot). It never returns nil: hosts without a route get the
// table's KindUnknown route. Lookup takes no lock and does not allocate.
func (t *Table) Lookup(host string) *Route {
	var buf [MaxHostLen]byte
	b, s, ok := NormalizeHost(host, &buf)
	if !ok {
		return t.unknown
	}
	var r *Route
	if b != nil {
		r = t.hosts[string(b)] // no allocation: the compiler converts in place
	} else {
		r = t.hosts[s]
	}
	if r == nil {
		return t.unknown
	}
	return r
}

// IsCustomDomain reports whether host (as a TLS SNI or Host) is a registered
// custom domain of a tenant in this table: the on-demand certificate
// decision. It takes no lock and does not allocate.
func (t *Table) IsCustomDomain(host string) bool {
	var buf [MaxHostLen]byte
	b, s, ok := NormalizeHost(host, &buf)
	if !ok {
		return false
	}
	if b != nil {
		return t.custom[string(b)]
	}
	return t.custom[s]
}

// States returns the number of tenant routes by state: a tenant status, or
// "no_instance" for an active tenant without passing instances. The caller
// must not modify the map.
func (t *Table) States() map[string]int { return t.states }

// Tenants returns the slugs of the tenants in the table, sorted. The caller
// must not modify the slice.
func (t *Table) Tenants() []string { return t.tenants }

// Hosts returns the number of hosts in the table.
func (t *Table) Hosts() int { return len(t.hosts) }

// String prints the table, one host a line, sorted: the golden text format.
func (t *Table) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "base %s generation %d\n", t.Base, t.Generation)
	hosts := make([]string, 0, len(t.hosts))
	for h := range t.hosts {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		r := t.hosts[h]
		fmt.Fprintf(&sb, "%s %s", h, r.Kind)
		if r.Kind == KindTenant {
			fmt.Fprintf(&sb, " %s %s", r.Tenant, r.Status)
		}
		if t.custom[h] {
			sb.WriteString(" custom")
		}
		for _, b := range r.Backends {
			fmt.Fprintf(&sb, " %s@%s", b.ID, b.Addr)
		}
		sb.WriteByte('\n')
	}
	for _, p := range t.Problems {
		fmt.Fprintf(&sb, "problem: %s\n", p)
	}
	return sb.String()
}

// Pick chooses a backend of r for one attempt by "power of two choices":
// two random eligible backends, the one with fewer requests in flight wins.
// Eligible means not in tried and not ejected at now (unix nanoseconds).
// When every untried backend is ejected, the one whose ejection ends first is
// returned (a last resort beats a certain 503); nil when all were tried.
// Pick does not allocate.
func (r *Route) Pick(now int64, tried []*Backend) *Backend {
	eligible := 0
	var soonest *Backend
	for _, b := range r.Backends {
		if slices.Contains(tried, b) {
			continue
		}
		if b.Ejected(now) {
			if soonest == nil || b.ejectedUntil.Load() < soonest.ejectedUntil.Load() {
				soonest = b
			}
			continue
		}
		eligible++
	}
	switch eligible {
	case 0:
		return soonest
	case 1:
		return r.nth(now, tried, 0)
	}
	i := rand.IntN(eligible)
	j := rand.IntN(eligible - 1)
	if j >= i {
		j++
	}
	a, b := r.nth(now, tried, i), r.nth(now, tried, j)
	if b.InFlight() < a.InFlight() {
		return b
	}
	return a
}

// nth returns the n-th eligible backend (0-based) in the order of r.Backends.
func (r *Route) nth(now int64, tried []*Backend, n int) *Backend {
	for _, b := range r.Backends {
		if slices.Contains(tried, b) || b.Ejected(now) {
			continue
		}
		if n == 0 {
			return b
		}
		n--
	}
	return nil
}

// Holder publishes the current Table. Load is a single atomic read. The zero
// Holder is not usable; create it with NewHolder.
type Holder struct {
	table   atomic.Pointer[Table]
	changed atomic.Pointer[chan struct{}]
	mu      sync.Mutex // serializes Store
}

// ErrNilTable is returned by NewHolder for a nil table.
var ErrNilTable = errors.New("route: nil table")

// NewHolder returns a Holder publishing t, which must not be nil.
func NewHolder(t *Table) *Holder {
	if t == nil {
		panic(ErrNilTable)
	}
	h := &Holder{}
	h.table.Store(t)
	ch := make(chan struct{})
	h.changed.Store(&ch)
	return h
}

// Load returns the current table; never nil.
func (h *Holder) Load() *Table { return h.table.Load() }

// Store publishes t (not nil) and wakes everyone waiting on Changed.
func (h *Holder) Store(t *Table) {
	if t == nil {
		panic(ErrNilTable)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.table.Store(t)
	next := make(chan struct{})
	old := h.changed.Swap(&next)
	close(*old)
}

// Changed returns a channel closed by the next Store. Read it before Load to
// wait for a table newer than the one loaded.
func (h *Holder) Changed() <-chan struct{} { return *h.changed.Load() }

// IsCustomDomain reports whether host is a custom domain in the current
// table (see Table.IsCustomDomain); the hook for on-demand TLS decisions.
func (h *Holder) IsCustomDomain(host string) bool { return h.Load().IsCustomDomain(host) }
