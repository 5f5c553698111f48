package consuldev_test

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

// TestConsulSDPattern drives the stand-in with the calls Prometheus'
// discovery/consul makes (Debian's prometheus binary is built without
// consul_sd, so the real binary cannot be used here): agent/self for the
// datacenter, then stale blocking watches on catalog/services and
// health/service with tags, node-meta and a filter.
func TestConsulSDPattern(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{NodeMeta: map[string]string{"rack": "r1"}})
	c := s.Client(t)

	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := self["Config"]["Datacenter"], "dc1"; got != want {
		t.Fatalf("agent/self datacenter: got %v, want %q", got, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Filters select on the row type: ServiceNode for catalog/services,
	// CheckServiceNode for health/service.
	opts := func(idx uint64, filter string) *api.QueryOptions {
		return (&api.QueryOptions{WaitIndex: idx, WaitTime: 10 * time.Second, AllowStale: true,
			NodeMeta: map[string]string{"rack": "r1"}, Filter: filter}).WithContext(ctx)
	}
	const catalogFilter, healthFilter = `ServiceName != "consul"`, `Service.Meta.tenant == "goteborg"`
	_, meta, err := c.Catalog().Services(opts(0, catalogFilter))
	if err != nil {
		t.Fatal(err)
	}
	svcCh := make(chan map[string][]string, 1)
	go func() {
		svcs, _, err := c.Catalog().Services(opts(meta.LastIndex, catalogFilter))
		if err != nil {
			t.Error(err)
		}
		svcCh <- svcs
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "app-goteborg-1", Name: "stagesub-app", Address: "127.0.0.1", Port: 4001,
		Tags: []string{"tenant-goteborg", "v1"}, Meta: map[string]string{"tenant": "goteborg"},
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case svcs := <-svcCh:
		if _, ok := svcs["stagesub-app"]; !ok || len(svcs) != 1 {
			t.Fatalf("catalog services watch: got %v, want only stagesub-app (filter drops consul)", svcs)
		}
	case <-ctx.Done():
		t.Fatal("catalog services watch did not wake on register")
	}

	entries, hmeta, err := c.Health().ServiceMultipleTags("stagesub-app", []string{"tenant-goteborg", "V1"}, false, opts(0, healthFilter))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Checks.AggregatedStatus() != api.HealthPassing || entries[0].Node.Meta["rack"] != "r1" {
		t.Fatalf("health with tags: got %+v", entries)
	}
	hCh := make(chan []*api.ServiceEntry, 1)
	go func() {
		e, _, err := c.Health().ServiceMultipleTags("stagesub-app", []string{"tenant-goteborg"}, false, opts(hmeta.LastIndex, healthFilter))
		if err != nil {
			t.Error(err)
		}
		hCh <- e
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.Agent().ServiceDeregister("app-goteborg-1"); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-hCh:
		if len(e) != 0 {
			t.Fatalf("health watch after deregister: got %d entries, want 0", len(e))
		}
	case <-ctx.Done():
		t.Fatal("health watch did not wake on deregister")
	}
}
