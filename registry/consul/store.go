// Package consul adapts StageSub's registry to a Consul agent through the
// official github.com/hashicorp/consul/api client: the tenant store on KV
// (Store), instance registration with the local agent (Register) and the one
// fleet-wide watch that publishes immutable snapshots (Watcher).
package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
)

// maxCASAttempts bounds the read-modify-write loops of UpdateTenant and
// DeleteTenant. Each attempt loses only to a write that succeeded, so the
// bound is reached only under pathological contention.
const maxCASAttempts = 1000

// Store keeps tenant records in Consul KV at registry.Key(slug) as JSON.
// It implements registry.TenantStore and is safe for concurrent use.
type Store struct {
	kv  *api.KV
	now func() time.Time
}

var _ registry.TenantStore = (*Store)(nil)

// NewStore returns a Store on c. c must not be nil. The result is never nil.
func NewStore(c *api.Client) *Store {
	return &Store{kv: c.KV(), now: time.Now}
}

// CreateTenant stores t as a new record with a create-only check-and-set, so
// of two concurrent creates of one slug exactly one succeeds; the other gets
// ECONFLICT. It fills in t.Version (RecordVersion when 0), t.CreatedAt (when
// zero), t.UpdatedAt and t.ModifyIndex. An invalid t is EINVALID.
func (s *Store) CreateTenant(ctx context.Context, t *registry.Tenant) error {
	if t == nil {
		return registry.Errorf(registry.EINVALID, "tenant is nil")
	}
	c := t.Clone()
	if c.Version == 0 {
		c.Version = registry.RecordVersion
	}
	now := s.now().UTC()
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now
	}
	c.UpdatedAt = now
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("consul: encode tenant %s: %w", c.Slug, err)
	}
	key := registry.Key(c.Slug)
	ok, _, err := s.kv.CAS(&api.KVPair{Key: key, Value: b, ModifyIndex: 0}, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("consul: create tenant %s: %w", c.Slug, err)
	}
	if !ok {
		return registry.Errorf(registry.ECONFLICT, "tenant %s already exists", c.Slug)
	}
	c.ModifyIndex = s.writtenIndex(ctx, key, b)
	*t = *c
	return nil
}

// FindTenant returns the record of slug with its ModifyIndex. It is ENOTFOUND
// when there is no record and EINVALID when slug or the stored record is invalid.
func (s *Store) FindTenant(ctx context.Context, slug string) (*registry.Tenant, error) {
	if err := registry.ValidateSlug(slug); err != nil {
		return nil, err
	}
	p, _, err := s.kv.Get(registry.Key(slug), queryOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: get tenant %s: %w", slug, err)
	}
	if p == nil {
		return nil, registry.Errorf(registry.ENOTFOUND, "tenant %s not found", slug)
	}
	t, err := registry.DecodeTenant(slug, p.Value)
	if err != nil {
		return nil, err
	}
	t.ModifyIndex = p.ModifyIndex
	return t, nil
}

// FindTenants returns every valid record sorted by slug. Keys under
// registry.KeyPrefix that do not hold a valid record are reported in invalid
// (full key → reason); invalid is never nil.
func (s *Store) FindTenants(ctx context.Context) ([]*registry.Tenant, map[string]string, error) {
	pairs, _, err := s.kv.List(registry.KeyPrefix, queryOpts(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("consul: list tenants: %w", err)
	}
	var d decoder
	tenants, invalid := d.decode(pairs)
	out := make([]*registry.Tenant, 0, len(tenants))
	for _, t := range tenants {
		out = append(out, t)
	}
	sortTenants(out)
	return out, invalid, nil
}

// UpdateTenant reads the record of slug, applies fn to a copy and writes it
// back with check-and-set on the ModifyIndex it read. On a conflict it reads
// again and re-applies fn, so no concurrent update is lost. fn may run more
// than once and must have no side effects; an error from fn is returned as is.
// fn must not change the slug. The result carries the new UpdatedAt and
// ModifyIndex. ENOTFOUND when there is no record.
func (s *Store) UpdateTenant(ctx context.Context, slug string, fn func(*registry.Tenant) error) (*registry.Tenant, error) {
	if fn == nil {
		return nil, registry.Errorf(registry.EINVALID, "update of tenant %s: fn is nil", slug)
	}
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		cur, err := s.FindTenant(ctx, slug)
		if err != nil {
			return nil, err
		}
		next := cur.Clone()
		if err := fn(next); err != nil {
			return nil, err
		}
		if next.Slug != slug {
			return nil, registry.Errorf(registry.EINVALID, "update of tenant %s must not change the slug to %q", slug, next.Slug)
		}
		if next.Version == 0 {
			next.Version = registry.RecordVersion
		}
		next.UpdatedAt = s.now().UTC()
		if err := next.Validate(); err != nil {
			return nil, err
		}
		b, err := json.Marshal(next)
		if err != nil {
			return nil, fmt.Errorf("consul: encode tenant %s: %w", slug, err)
		}
		key := registry.Key(slug)
		ok, _, err := s.kv.CAS(&api.KVPair{Key: key, Value: b, ModifyIndex: cur.ModifyIndex}, writeOpts(ctx))
		if err != nil {
			return nil, fmt.Errorf("consul: update tenant %s: %w", slug, err)
		}
		if ok {
			next.ModifyIndex = s.writtenIndex(ctx, key, b)
			return next, nil
		}
		if err := sleepCtx(ctx, casBackoff(attempt)); err != nil {
			return nil, fmt.Errorf("consul: update tenant %s: %w", slug, err)
		}
	}
	return nil, registry.Errorf(registry.ECONFLICT, "update of tenant %s lost %d check-and-set races; try again", slug, maxCASAttempts)
}

// DeleteTenant removes the record of slug; ENOTFOUND when there is none. It
// deletes with check-and-set on the index it read, so a record that changed
// in between is read again first.
func (s *Store) DeleteTenant(ctx context.Context, slug string) error {
	if err := registry.ValidateSlug(slug); err != nil {
		return err
	}
	key := registry.Key(slug)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		p, _, err := s.kv.Get(key, queryOpts(ctx))
		if err != nil {
			return fmt.Errorf("consul: get tenant %s: %w", slug, err)
		}
		if p == nil {
			return registry.Errorf(registry.ENOTFOUND, "tenant %s not found", slug)
		}
		ok, _, err := s.kv.DeleteCAS(&api.KVPair{Key: key, ModifyIndex: p.ModifyIndex}, writeOpts(ctx))
		if err != nil {
			return fmt.Errorf("consul: delete tenant %s: %w", slug, err)
		}
		if ok {
			return nil
		}
		if err := sleepCtx(ctx, casBackoff(attempt)); err != nil {
			return fmt.Errorf("consul: delete tenant %s: %w", slug, err)
		}
	}
	return registry.Errorf(registry.ECONFLICT, "delete of tenant %s lost %d check-and-set races; try again", slug, maxCASAttempts)
}

// writtenIndex returns the ModifyIndex of the value b just written at key.
// Consul's KV write answers carry no index, so it reads the key back; when the
// key already holds something else (a later write), or the read fails, it
// returns 0, which callers treat as "unknown".
func (s *Store) writtenIndex(ctx context.Context, key string, b []byte) uint64 {
	p, _, err := s.kv.Get(key, queryOpts(ctx))
	if err != nil || p == nil || !bytes.Equal(p.Value, b) {
		return 0
	}
	return p.ModifyIndex
}

// casBackoff is the pause after the attempt-th lost check-and-set race: a
// random duration below min(attempt+1, 10) ms, so that competing writers
// spread out instead of colliding again.
func casBackoff(attempt int) time.Duration {
	n := min(attempt+1, 10)
	return rand.N(time.Duration(n) * time.Millisecond)
}

// sleepCtx waits for d or until ctx is done, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func queryOpts(ctx context.Context) *api.QueryOptions {
	return (&api.QueryOptions{}).WithContext(ctx)
}

func writeOpts(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{}).WithContext(ctx)
}

// slugOf returns the slug part of a tenant key, or "" when key is not
// directly under registry.KeyPrefix.
func slugOf(key string) string {
	s, ok := strings.CutPrefix(key, registry.KeyPrefix)
	if !ok || strings.Contains(s, "/") {
		return ""
	}
	return s
}
