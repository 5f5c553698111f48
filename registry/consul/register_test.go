package consul_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

func TestRegister(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		_, c := MustStart(t)
		host, port := MustHealthServer(t, http.StatusOK)
		id, deregister, err := consul.Register(ctx, c, registry.Registration{
			Service:         registry.ServiceApp,
			ID:              "app-goteborg-1",
			Tenant:          "goteborg",
			Address:         host,
			Port:            port,
			Version:         "v1.2.3",
			Tags:            []string{"blue"},
			Meta:            map[string]string{"zone": "a"},
			CheckInterval:   time.Second,
			DeregisterAfter: 5 * time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := id, "app-goteborg-1"; got != want {
			t.Errorf("id = %q, want %q", got, want)
		}
		svcs, err := c.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		s := svcs[id]
		if s == nil {
			t.Fatalf("service %s not registered: %v", id, svcs)
		}
		if got, want := s.Service, registry.ServiceApp; got != want {
			t.Errorf("service = %q, want %q", got, want)
		}
		if s.Address != host || s.Port != port {
			t.Errorf("address = %s:%d, want %s:%d", s.Address, s.Port, host, port)
		}
		wantMeta := map[string]string{"tenant": "goteborg", "version": "v1.2.3", "zone": "a"}
		for k, v := range wantMeta {
			if got := s.Meta[k]; got != v {
				t.Errorf("Meta[%s] = %q, want %q", k, got, v)
			}
		}
		for _, tag := range []string{"blue", "tenant-goteborg"} {
			if !slices.Contains(s.Tags, tag) {
				t.Errorf("tags %v lack %q", s.Tags, tag)
			}
		}
		checks, err := c.Agent().Checks()
		if err != nil {
			t.Fatal(err)
		}
		var chk *api.AgentCheck
		for _, ch := range checks {
			if ch.ServiceID == id {
				chk = ch
			}
		}
		if chk == nil {
			t.Fatalf("no check for %s: %v", id, checks)
		}
		if got, want := chk.Type, "http"; got != want {
			t.Errorf("check type = %q, want %q", got, want)
		}
		def := chk.Definition
		if got, want := def.HTTP, "http://"+host+":"+strconv.Itoa(port)+"/healthz"; got != want {
			t.Errorf("check HTTP = %q, want %q", got, want)
		}
		if got, want := durationOf(def.IntervalDuration, def.Interval), time.Second; got != want {
			t.Errorf("check interval = %v, want %v", got, want)
		}
		if got, want := durationOf(def.TimeoutDuration, def.Timeout), consul.DefaultCheckTimeout; got != want {
			t.Errorf("check timeout = %v, want %v", got, want)
		}
		if got, want := durationOf(def.DeregisterCriticalServiceAfterDuration, def.DeregisterCriticalServiceAfter), 5*time.Minute; got != want {
			t.Errorf("deregister after = %v, want %v", got, want)
		}
		// The agent runs the HTTP check against the health server.
		WaitFor(t, "instance passing", func() bool {
			es, _, err := c.Health().Service(registry.ServiceApp, "", true, nil)
			return err == nil && len(es) == 1 && es[0].Service.ID == id
		})

		if err := deregister(ctx); err != nil {
			t.Fatal(err)
		}
		if err := deregister(ctx); err != nil {
			t.Errorf("second deregister: %v", err)
		}
		svcs, err = c.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := svcs[id]; ok {
			t.Errorf("service %s still registered after deregister", id)
		}
	})
	t.Run("CriticalWhenUnhealthy", func(t *testing.T) {
		_, c := MustStart(t)
		host, port := MustHealthServer(t, http.StatusInternalServerError)
		id, _, err := consul.Register(ctx, c, registry.Registration{
			Service: registry.ServiceAdmin, Address: host, Port: port, CheckInterval: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // at least one check has run
		es, _, err := c.Health().Service(registry.ServiceAdmin, "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 || es[0].Service.ID != id {
			t.Fatalf("entries = %v, want one with ID %s", es, id)
		}
		if got, want := es[0].Checks.AggregatedStatus(), api.HealthCritical; got != want {
			t.Errorf("health = %q, want %q", got, want)
		}
	})
	t.Run("DefaultsAndGeneratedID", func(t *testing.T) {
		_, c := MustStart(t)
		reg := registry.Registration{Service: registry.ServiceApp, Tenant: "malmo", Address: "127.0.0.1", Port: 9}
		id1, _, err := consul.Register(ctx, c, reg)
		if err != nil {
			t.Fatal(err)
		}
		id2, dereg2, err := consul.Register(ctx, c, reg)
		if err != nil {
			t.Fatal(err)
		}
		if id1 == id2 || !strings.HasPrefix(id1, "stagesub-app-malmo-") || !strings.HasPrefix(id2, "stagesub-app-malmo-") {
			t.Errorf("generated IDs %q, %q: want distinct, prefixed stagesub-app-malmo-", id1, id2)
		}
		checks, err := c.Agent().Checks()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, ch := range checks {
			if ch.ServiceID != id1 {
				continue
			}
			n++
			def := ch.Definition
			if got, want := def.HTTP, "http://127.0.0.1:9/healthz"; got != want {
				t.Errorf("HTTP = %q, want %q", got, want)
			}
			if got, want := durationOf(def.IntervalDuration, def.Interval), consul.DefaultCheckInterval; got != want {
				t.Errorf("interval = %v, want %v", got, want)
			}
			if got, want := durationOf(def.DeregisterCriticalServiceAfterDuration, def.DeregisterCriticalServiceAfter), consul.DefaultDeregisterAfter; got != want {
				t.Errorf("deregister after = %v, want %v", got, want)
			}
		}
		if n != 1 {
			t.Errorf("%d checks for %s, want 1", n, id1)
		}
		if err := dereg2(ctx); err != nil {
			t.Fatal(err)
		}
		svcs, err := c.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		if svcs[id1] == nil || svcs[id2] != nil {
			t.Errorf("after deregistering %s: services %v, want only %s", id2, keys(svcs), id1)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		_, c := MustStart(t)
		ok := registry.Registration{Service: registry.ServiceApp, Tenant: "goteborg", Address: "127.0.0.1", Port: 8080}
		tests := []struct {
			name   string
			modify func(*registry.Registration)
		}{
			{"ErrNoService", func(r *registry.Registration) { r.Service = "" }},
			{"ErrNoTenant", func(r *registry.Registration) { r.Tenant = "" }},
			{"ErrBadTenant", func(r *registry.Registration) { r.Tenant = "Göteborg" }},
			{"ErrTenantOnAdmin", func(r *registry.Registration) { r.Service = registry.ServiceAdmin }},
			{"ErrNoAddress", func(r *registry.Registration) { r.Address = "" }},
			{"ErrUnspecifiedAddress", func(r *registry.Registration) { r.Address = "0.0.0.0" }},
			{"ErrPortZero", func(r *registry.Registration) { r.Port = 0 }},
			{"ErrPortHigh", func(r *registry.Registration) { r.Port = 70000 }},
			{"ErrHealthPath", func(r *registry.Registration) { r.HealthPath = "healthz" }},
			{"ErrNegativeInterval", func(r *registry.Registration) { r.CheckInterval = -time.Second }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := ok
				tt.modify(&r)
				_, _, err := consul.Register(ctx, c, r)
				if got, want := registry.ErrorCode(err), registry.EINVALID; got != want {
					t.Errorf("code = %q (%v), want %q", got, err, want)
				}
			})
		}
		svcs, err := c.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		if len(svcs) != 0 {
			t.Errorf("invalid registrations registered %v", keys(svcs))
		}
	})
	t.Run("ErrConsulDown", func(t *testing.T) {
		srv, c := MustStart(t)
		srv.Close()
		_, _, err := consul.Register(ctx, c, registry.Registration{Service: registry.ServiceAdmin, Address: "127.0.0.1", Port: 9})
		if got, want := registry.ErrorCode(err), registry.EINTERNAL; got != want {
			t.Errorf("code = %q (%v), want %q", got, err, want)
		}
	})
}

func durationOf(d time.Duration, r api.ReadableDuration) time.Duration {
	if d != 0 {
		return d
	}
	return r.Duration()
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
