package deploy_test

import (
	"context"
	"testing"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// TestRepairRefuses: repair never finishes a provisioning tenant, never
// touches a database bound to another tenant, and needs a record.
func TestRepairRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.dropTenant(t, "rep-prov")
	e.dropTenant(t, "rep-other")
	good := e.p.Servers["default"]
	e.p.Servers["default"] = &faultyServer{DBServer: good, failAt: "lockdown"}
	if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: "rep-prov", Name: "Prov"}); err == nil {
		t.Fatal("create with injected failure succeeded")
	}
	e.p.Servers["default"] = good
	if _, err := e.p.Create(ctx, deploy.CreateRequest{Slug: "rep-other", Name: "Other"}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Exec(ctx, "orchestra_rep_other", "UPDATE tenant_meta SET slug = 'someone-else'"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, slug, want string
	}{
		{"provisioning", "rep-prov", registry.ECONFLICT},
		{"bound to another tenant", "rep-other", registry.EINVALID},
		{"no record", "rep-none", registry.ENOTFOUND},
		{"bad slug", "Bad_Slug", registry.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.p.Repair(ctx, deploy.RepairRequest{Slug: tt.slug})
			if got := registry.ErrorCode(err); got != tt.want {
				t.Errorf("code = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
	got, err := e.store.FindTenant(ctx, "rep-prov")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != registry.StatusProvisioning {
		t.Errorf("rep-prov status = %s, want provisioning (repair must not finish it)", got.Status)
	}
}

func TestCheckCustomDomain(t *testing.T) {
	tests := []struct {
		domain, base string
		wantErr      bool
	}{
		{"vikarier.gso.se", "stagesub.com", false},
		{"stagesub.com.evil.se", "stagesub.com", false},
		{"notstagesub.com", "stagesub.com", false},
		{"stagesub.com", "stagesub.com", true},
		{"Shop.StageSub.com.", "stagesub.com", true},
		{"a.b.stagesub.com", "stagesub.com", true},
		{"goteborg.localhost", "localhost", true},
		{"vikarier.gso.se", "", false},
	}
	for _, tt := range tests {
		err := deploy.CheckCustomDomain(tt.domain, tt.base)
		if got := err != nil; got != tt.wantErr {
			t.Errorf("CheckCustomDomain(%q, %q) = %v, want error %v", tt.domain, tt.base, err, tt.wantErr)
		}
		if err != nil && registry.ErrorCode(err) != registry.EINVALID {
			t.Errorf("CheckCustomDomain(%q, %q): code %q, want EINVALID", tt.domain, tt.base, registry.ErrorCode(err))
		}
	}
}
