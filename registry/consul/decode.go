package consul

import (
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
)

// decoder turns the KV pairs under registry.KeyPrefix into tenant records.
// It remembers the records it decoded by key and ModifyIndex, so a watcher
// that re-reads the whole prefix decodes only the records that changed.
// The zero value is ready to use; it is not safe for concurrent use.
type decoder struct {
	cache map[string]cachedRecord
}

type cachedRecord struct {
	index  uint64
	tenant *registry.Tenant // nil when the record is invalid
	reason string
}

// decode returns the valid records by slug and the invalid ones by key with
// the reason. Both maps are new and never nil. The *Tenant values may be
// shared with earlier results and must not be modified.
func (d *decoder) decode(pairs api.KVPairs) (map[string]*registry.Tenant, map[string]string) {
	tenants, invalid, _ := d.decodeFresh(pairs)
	return tenants, invalid
}

// decodeFresh is decode that also returns the keys of the invalid records
// that were decoded now rather than taken from the cache: the ones that are
// new or changed since the previous call.
func (d *decoder) decodeFresh(pairs api.KVPairs) (map[string]*registry.Tenant, map[string]string, []string) {
	var fresh []string
	tenants := make(map[string]*registry.Tenant, len(pairs))
	invalid := make(map[string]string)
	next := make(map[string]cachedRecord, len(pairs))
	for _, p := range pairs {
		if p == nil {
			continue
		}
		if p.Key == registry.KeyPrefix && len(p.Value) == 0 {
			continue // a folder marker, as the Consul UI creates it
		}
		r, ok := d.cache[p.Key]
		if !ok || r.index != p.ModifyIndex || p.ModifyIndex == 0 {
			r = decodePair(p)
			if r.tenant == nil {
				fresh = append(fresh, p.Key)
			}
		}
		next[p.Key] = r
		if r.tenant == nil {
			invalid[p.Key] = r.reason
			continue
		}
		tenants[r.tenant.Slug] = r.tenant
	}
	d.cache = next
	return tenants, invalid, fresh
}

func decodePair(p *api.KVPair) cachedRecord {
	r := cachedRecord{index: p.ModifyIndex}
	slug := slugOf(p.Key)
	if slug == "" {
		r.reason = "not a tenant key: expected " + registry.KeyPrefix + "<slug>"
		return r
	}
	t, err := registry.DecodeTenant(slug, p.Value)
	if err != nil {
		r.reason = strings.TrimPrefix(err.Error(), "registry: ")
		return r
	}
	t.ModifyIndex = p.ModifyIndex
	r.tenant = t
	return r
}

func sortTenants(ts []*registry.Tenant) {
	slices.SortFunc(ts, func(a, b *registry.Tenant) int { return strings.Compare(a.Slug, b.Slug) })
}
