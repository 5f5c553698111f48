package route_test

import (
	"fmt"
	"testing"

	"stagesub.dev/registry"
)

// BenchmarkLookup measures a table lookup with 1,000 tenants; the goal is
// 0 allocs/op.
func BenchmarkLookup(b *testing.B) {
	s := &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}
	for i := range 1000 {
		slug := fmt.Sprintf("orch%d", i)
		s.Tenants[slug] = &registry.Tenant{Slug: slug, Name: slug, Status: registry.StatusActive, Domains: []string{slug + ".example"}}
		s.Instances[slug] = []registry.Instance{{ID: slug + "-1", Service: registry.ServiceApp, Tenant: slug, Address: "127.0.0.1", Port: 10000 + i, Health: registry.HealthPassing}}
	}
	tab := mustBuild(b, s, nil)
	for _, host := range []string{"orch500.stagesub.test", "Orch500.StageSub.Test:443", "orch500.example", "unknown.example"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if tab.Lookup(host) == nil {
						b.Fatal("nil route")
					}
				}
			})
		})
	}
}

// BenchmarkBuild measures building a table of 1,000 tenants from a snapshot.
func BenchmarkBuild(b *testing.B) {
	s := &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}
	for i := range 1000 {
		slug := fmt.Sprintf("orch%d", i)
		s.Tenants[slug] = &registry.Tenant{Slug: slug, Name: slug, Status: registry.StatusActive, Domains: []string{slug + ".example"}}
		s.Instances[slug] = []registry.Instance{{ID: slug + "-1", Service: registry.ServiceApp, Tenant: slug, Address: "127.0.0.1", Port: 10000 + i, Health: registry.HealthPassing}}
	}
	prev := mustBuild(b, s, nil)
	b.ReportAllocs()
	for b.Loop() {
		prev = mustBuild(b, s, prev)
	}
}
