package consul_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

func MustStore(tb testing.TB) (*consul.Store, *api.Client) {
	tb.Helper()
	_, c := MustStart(tb)
	return consul.NewStore(c), c
}

func TestStore_CreateTenant(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		s, c := MustStore(t)
		in := NewTenant("goteborg")
		if err := s.CreateTenant(ctx, in); err != nil {
			t.Fatal(err)
		}
		if in.Version != registry.RecordVersion || in.CreatedAt.IsZero() || in.UpdatedAt.IsZero() {
			t.Errorf("fields not filled in: version=%d created=%v updated=%v", in.Version, in.CreatedAt, in.UpdatedAt)
		}
		p, _, err := c.KV().Get(registry.Key("goteborg"), nil)
		if err != nil || p == nil {
			t.Fatalf("raw get: %v, %v", p, err)
		}
		if got, want := in.ModifyIndex, p.ModifyIndex; got != want || got == 0 {
			t.Errorf("ModifyIndex = %d, want %d (non-zero)", got, want)
		}
		got, err := s.FindTenant(ctx, "goteborg")
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != in.Name || got.Status != in.Status || got.Database != in.Database ||
			!got.CreatedAt.Equal(in.CreatedAt) || got.ModifyIndex != in.ModifyIndex {
			t.Errorf("FindTenant = %+v, want %+v", got, in)
		}
	})
	t.Run("ErrConflict", func(t *testing.T) {
		s, _ := MustStore(t)
		if err := s.CreateTenant(ctx, NewTenant("malmo")); err != nil {
			t.Fatal(err)
		}
		dup := NewTenant("malmo")
		dup.Name = "Someone else"
		err := s.CreateTenant(ctx, dup)
		if got, want := registry.ErrorCode(err), registry.ECONFLICT; got != want {
			t.Fatalf("code = %q (%v), want %q", got, err, want)
		}
		stored, err := s.FindTenant(ctx, "malmo")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := stored.Name, "Orchestra malmo"; got != want {
			t.Errorf("duplicate create overwrote the record: name = %q, want %q", got, want)
		}
	})
	t.Run("ErrConflictConcurrent", func(t *testing.T) {
		s, _ := MustStore(t)
		const n = 10
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.CreateTenant(ctx, NewTenant("umea")) })
		}
		wg.Wait()
		var ok, conflicts int
		for _, err := range errs {
			switch registry.ErrorCode(err) {
			case "":
				ok++
			case registry.ECONFLICT:
				conflicts++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}
		if ok != 1 || conflicts != n-1 {
			t.Errorf("got %d created and %d conflicts, want 1 and %d", ok, conflicts, n-1)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		s, c := MustStore(t)
		noName := NewTenant("lulea")
		noName.Name = ""
		badStatus := NewTenant("lulea")
		badStatus.Status = "gone"
		tests := []struct {
			name string
			t    *registry.Tenant
		}{
			{"Nil", nil},
			{"BadSlug", NewTenant("Bad_Slug")},
			{"ReservedSlug", NewTenant("admin")},
			{"NoName", noName},
			{"BadStatus", badStatus},
		}
		for _, tt := range tests {
			err := s.CreateTenant(ctx, tt.t)
			if got, want := registry.ErrorCode(err), registry.EINVALID; got != want {
				t.Errorf("%s: code = %q (%v), want %q", tt.name, got, err, want)
			}
		}
		pairs, _, err := c.KV().List(registry.KeyPrefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pairs) != 0 {
			t.Errorf("invalid creates wrote %d keys", len(pairs))
		}
	})
}

func TestStore_FindTenant(t *testing.T) {
	ctx := context.Background()
	s, c := MustStore(t)
	if _, err := c.KV().Put(&api.KVPair{Key: registry.Key("broken"), Value: []byte("{not json")}, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, slug, code string
	}{
		{"ErrNotFound", "nowhere", registry.ENOTFOUND},
		{"ErrBadSlug", "../x", registry.EINVALID},
		{"ErrMalformed", "broken", registry.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.FindTenant(ctx, tt.slug)
			if got, want := registry.ErrorCode(err), tt.code; got != want {
				t.Errorf("code = %q (%v), want %q", got, err, want)
			}
		})
	}
}

func TestStore_FindTenants(t *testing.T) {
	ctx := context.Background()
	t.Run("Empty", func(t *testing.T) {
		s, _ := MustStore(t)
		ts, invalid, err := s.FindTenants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != 0 || invalid == nil || len(invalid) != 0 {
			t.Errorf("got %v, %v; want no tenants and an empty non-nil map", ts, invalid)
		}
	})
	t.Run("SortedWithInvalid", func(t *testing.T) {
		s, c := MustStore(t)
		for _, slug := range []string{"vasteras", "goteborg", "malmo"} {
			if err := s.CreateTenant(ctx, NewTenant(slug)); err != nil {
				t.Fatal(err)
			}
		}
		bad := map[string]string{
			registry.Key("broken"):    "{not json",
			registry.Key("mismatch"):  `{"slug":"other","name":"x","status":"active","database":{"dbname":"x"}}`,
			registry.Key("nested/x"):  `{}`,
			registry.Key("Uppercase"): `{"slug":"Uppercase","name":"x","status":"active","database":{"dbname":"x"}}`,
		}
		for k, v := range bad {
			if _, err := c.KV().Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		ts, invalid, err := s.FindTenants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var slugs []string
		for _, tn := range ts {
			slugs = append(slugs, tn.Slug)
			if tn.ModifyIndex == 0 {
				t.Errorf("%s: ModifyIndex is 0", tn.Slug)
			}
		}
		if got, want := fmt.Sprint(slugs), "[goteborg malmo vasteras]"; got != want {
			t.Errorf("slugs = %s, want %s", got, want)
		}
		for k := range bad {
			if invalid[k] == "" {
				t.Errorf("invalid[%q] missing; invalid = %v", k, invalid)
			}
		}
		if got, want := len(invalid), len(bad); got != want {
			t.Errorf("len(invalid) = %d, want %d: %v", got, want, invalid)
		}
	})
}

func TestStore_UpdateTenant(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		s, c := MustStore(t)
		in := NewTenant("goteborg")
		if err := s.CreateTenant(ctx, in); err != nil {
			t.Fatal(err)
		}
		out, err := s.UpdateTenant(ctx, "goteborg", func(tn *registry.Tenant) error {
			tn.Status = registry.StatusSuspended
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := out.Status, registry.StatusSuspended; got != want {
			t.Errorf("status = %q, want %q", got, want)
		}
		if !out.UpdatedAt.After(in.UpdatedAt) {
			t.Errorf("UpdatedAt %v not after %v", out.UpdatedAt, in.UpdatedAt)
		}
		if !out.CreatedAt.Equal(in.CreatedAt) {
			t.Errorf("CreatedAt changed: %v → %v", in.CreatedAt, out.CreatedAt)
		}
		p, _, err := c.KV().Get(registry.Key("goteborg"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := out.ModifyIndex, p.ModifyIndex; got != want || got <= in.ModifyIndex {
			t.Errorf("ModifyIndex = %d, want %d (> %d)", got, want, in.ModifyIndex)
		}
		again, err := s.FindTenant(ctx, "goteborg")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := again.Status, registry.StatusSuspended; got != want {
			t.Errorf("stored status = %q, want %q", got, want)
		}
	})
	t.Run("UnknownFieldsSurvive", func(t *testing.T) {
		s, c := MustStore(t)
		raw := `{"version":1,"slug":"malmo","name":"MSO","status":"active",` +
			`"database":{"host":"db1","port":5432,"dbname":"orchestra_malmo"},"schema_version":3,` +
			`"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z","billing_plan":{"tier":"gold"}}`
		if _, err := c.KV().Put(&api.KVPair{Key: registry.Key("malmo"), Value: []byte(raw)}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateTenant(ctx, "malmo", func(tn *registry.Tenant) error {
			tn.Status = registry.StatusMaintenance
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		p, _, err := c.KV().Get(registry.Key("malmo"), nil)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(p.Value, &m); err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprint(m["billing_plan"]), "map[tier:gold]"; got != want {
			t.Errorf("billing_plan = %s, want %s (record %s)", got, want, p.Value)
		}
		if got, want := m["status"], "maintenance"; got != want {
			t.Errorf("status = %v, want %v", got, want)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		s, _ := MustStore(t)
		if err := s.CreateTenant(ctx, NewTenant("umea")); err != nil {
			t.Fatal(err)
		}
		errFn := errors.New("fn refused")
		tests := []struct {
			name, slug string
			fn         func(*registry.Tenant) error
			code       string
		}{
			{"ErrNotFound", "nowhere", func(*registry.Tenant) error { return nil }, registry.ENOTFOUND},
			{"ErrSlugChange", "umea", func(tn *registry.Tenant) error { tn.Slug = "lulea"; return nil }, registry.EINVALID},
			{"ErrInvalidResult", "umea", func(tn *registry.Tenant) error { tn.Status = "gone"; return nil }, registry.EINVALID},
			{"ErrNilFn", "umea", nil, registry.EINVALID},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.UpdateTenant(ctx, tt.slug, tt.fn)
				if got, want := registry.ErrorCode(err), tt.code; got != want {
					t.Errorf("code = %q (%v), want %q", got, err, want)
				}
			})
		}
		t.Run("ErrFromFn", func(t *testing.T) {
			_, err := s.UpdateTenant(ctx, "umea", func(*registry.Tenant) error { return errFn })
			if !errors.Is(err, errFn) {
				t.Errorf("err = %v, want %v", err, errFn)
			}
		})
		got, err := s.FindTenant(ctx, "umea")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != registry.StatusActive || got.Slug != "umea" {
			t.Errorf("failed updates changed the record: %+v", got)
		}
	})
}

// TestStore_UpdateTenantConcurrent: 50 goroutines update one record at once;
// every update must be in the final record.
func TestStore_UpdateTenantConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := MustStore(t)
	if err := s.CreateTenant(ctx, NewTenant("goteborg")); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.UpdateTenant(ctx, "goteborg", func(tn *registry.Tenant) error {
				tn.SchemaVersion++
				tn.Domains = append(tn.Domains, fmt.Sprintf("w%d.example.com", i))
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	got, err := s.FindTenant(ctx, "goteborg")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := got.SchemaVersion, int64(n); got != want {
		t.Errorf("SchemaVersion = %d after %d increments: lost %d updates", got, want, want-got)
	}
	for i := range n {
		if d := fmt.Sprintf("w%d.example.com", i); !slices.Contains(got.Domains, d) {
			t.Errorf("update of writer %d lost (domain %s missing)", i, d)
		}
	}
}

func TestStore_DeleteTenant(t *testing.T) {
	ctx := context.Background()
	s, _ := MustStore(t)
	if err := s.CreateTenant(ctx, NewTenant("goteborg")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTenant(ctx, "goteborg"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FindTenant(ctx, "goteborg"); registry.ErrorCode(err) != registry.ENOTFOUND {
		t.Errorf("FindTenant after delete: %v, want ENOTFOUND", err)
	}
	tests := []struct {
		name, slug, code string
	}{
		{"ErrNotFound", "goteborg", registry.ENOTFOUND},
		{"ErrBadSlug", "a/b", registry.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.DeleteTenant(ctx, tt.slug)
			if got, want := registry.ErrorCode(err), tt.code; got != want {
				t.Errorf("code = %q (%v), want %q", got, err, want)
			}
		})
	}
	// The slug is free again.
	if err := s.CreateTenant(ctx, NewTenant("goteborg")); err != nil {
		t.Errorf("re-create after delete: %v", err)
	}
}
