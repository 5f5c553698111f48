package route_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router/route"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// fleet returns a hand-built snapshot with tenants in every state, custom
// domains (one of them claimed twice) and one misregistered instance.
func fleet() *registry.Snapshot {
	ten := func(slug string, st registry.Status, domains ...string) *registry.Tenant {
		return &registry.Tenant{Slug: slug, Name: slug, Status: st, Domains: domains}
	}
	inst := func(id, tenant string, port int, h registry.Health) registry.Instance {
		return registry.Instance{ID: id, Service: registry.ServiceApp, Tenant: tenant, Address: "127.0.0.1", Port: port, Health: h}
	}
	return &registry.Snapshot{
		Generation: 7,
		Tenants: map[string]*registry.Tenant{
			"goteborg": ten("goteborg", registry.StatusActive, "vikarier.gso.se", "shared.example"),
			"malmo":    ten("malmo", registry.StatusActive, "shared.example", "Malmo.Example."),
			"lund":     ten("lund", registry.StatusSuspended),
			"umea":     ten("umea", registry.StatusMaintenance),
			"kiruna":   ten("kiruna", registry.StatusActive),
			"visby":    ten("visby", registry.StatusProvisioning, "x.stagesub.test"),
		},
		Instances: map[string][]registry.Instance{
			"goteborg": {inst("g1", "goteborg", 9001, registry.HealthPassing), inst("g2", "goteborg", 9002, registry.HealthCritical)},
			"malmo":    {inst("m1", "malmo", 9003, registry.HealthPassing), inst("evil", "goteborg", 9004, registry.HealthPassing)},
			"ghost":    {inst("x1", "ghost", 9005, registry.HealthPassing)},
		},
		Admins: []registry.Instance{{ID: "a1", Service: registry.ServiceAdmin, Address: "127.0.0.1", Port: 9100, Health: registry.HealthPassing}},
	}
}

func mustBuild(tb testing.TB, s *registry.Snapshot, prev *route.Table) *route.Table {
	tb.Helper()
	t, err := route.Build(s, route.Options{Base: "StageSub.Test.", Prev: prev})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func TestBuild_Golden(t *testing.T) {
	got := mustBuild(t, fleet(), nil).String()
	path := filepath.Join("testdata", "table.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuild_ErrInvalidBase(t *testing.T) {
	for _, base := range []string{"", "a b", "[::1]", "x..y"} {
		if _, err := route.Build(nil, route.Options{Base: base}); err == nil {
			t.Errorf("base %q: got nil error", base)
		}
	}
}

func TestLookup(t *testing.T) {
	tab := mustBuild(t, fleet(), nil)
	for _, tt := range []struct {
		host   string
		kind   route.Kind
		tenant string
		custom bool
	}{
		{"goteborg.stagesub.test", route.KindTenant, "goteborg", false},
		{"GOTEBORG.StageSub.Test:8443", route.KindTenant, "goteborg", false},
		{"goteborg.stagesub.test.", route.KindTenant, "goteborg", false},
		{"goteborg.stagesub.test.:80", route.KindTenant, "goteborg", false},
		{"vikarier.gso.se", route.KindTenant, "goteborg", true},
		{"malmo.example", route.KindTenant, "malmo", true},
		{"shared.example", route.KindUnknown, "", false}, // claimed twice: nobody
		{"x.stagesub.test", route.KindUnknown, "", false},
		{"lund.stagesub.test", route.KindTenant, "lund", false},
		{"ghost.stagesub.test", route.KindUnknown, "", false},
		{"admin.stagesub.test", route.KindAdmin, "", false},
		{"stagesub.test", route.KindApex, "", false},
		{"www.stagesub.test:8080", route.KindApex, "", false},
		{"a.goteborg.stagesub.test", route.KindUnknown, "", false},
		{"goteborg.stagesub.test.evil", route.KindUnknown, "", false},
		{"[::1]:80", route.KindUnknown, "", false},
		{"127.0.0.1", route.KindUnknown, "", false},
		{"goteborg.stagesub.test:x", route.KindUnknown, "", false},
		{"", route.KindUnknown, "", false},
	} {
		r := tab.Lookup(tt.host)
		if got, want := r.Kind, tt.kind; got != want {
			t.Errorf("%q: kind got %v want %v", tt.host, got, want)
		}
		if got, want := r.Tenant, tt.tenant; got != want {
			t.Errorf("%q: tenant got %q want %q", tt.host, got, want)
		}
		if got, want := tab.IsCustomDomain(tt.host), tt.custom; got != want {
			t.Errorf("%q: custom got %v want %v", tt.host, got, want)
		}
	}
	if got, want := strings.Join(tab.Tenants(), ","), "goteborg,kiruna,lund,malmo,umea,visby"; got != want {
		t.Errorf("tenants got %s want %s", got, want)
	}
	// The instance registered for goteborg but listed under malmo is not routed.
	if got, want := len(tab.Lookup("malmo.stagesub.test").Backends), 1; got != want {
		t.Errorf("malmo backends got %d want %d", got, want)
	}
	if got, want := tab.States(), map[string]int{"active": 2, "no_instance": 1, "suspended": 1, "maintenance": 1, "provisioning": 1}; len(got) != len(want) {
		t.Errorf("states got %v want %v", got, want)
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("states got %v want %v", got, want)
			}
		}
	}
}

func TestLookup_NoAllocs(t *testing.T) {
	tab := mustBuild(t, fleet(), nil)
	for _, h := range []string{"goteborg.stagesub.test", "GoteBorg.StageSub.TEST:443", "nope.example", "vikarier.gso.se."} {
		if got := testing.AllocsPerRun(100, func() { tab.Lookup(h); tab.IsCustomDomain(h) }); got != 0 {
			t.Errorf("%q: got %v allocs want 0", h, got)
		}
	}
}

func TestBuild_CarriesBackendState(t *testing.T) {
	s := fleet()
	t1 := mustBuild(t, s, nil)
	b1 := t1.Lookup("goteborg.stagesub.test").Backends[0]
	b1.Acquire()
	t2 := mustBuild(t, s, t1)
	b2 := t2.Lookup("goteborg.stagesub.test").Backends[0]
	if b1 != b2 || b2.InFlight() != 1 {
		t.Errorf("backend not carried over: %p %p inflight %d", b1, b2, b2.InFlight())
	}
	// A moved instance (new port) starts fresh.
	s.Instances["goteborg"][0].Port = 9999
	t3 := mustBuild(t, s, t2)
	if b3 := t3.Lookup("goteborg.stagesub.test").Backends[0]; b3 == b1 || b3.Addr != "127.0.0.1:9999" {
		t.Errorf("moved backend reused: %+v", b3)
	}
}

func TestPick(t *testing.T) {
	s := fleet()
	s.Instances["kiruna"] = []registry.Instance{
		{ID: "k1", Service: registry.ServiceApp, Tenant: "kiruna", Address: "127.0.0.1", Port: 1, Health: registry.HealthPassing},
		{ID: "k2", Service: registry.ServiceApp, Tenant: "kiruna", Address: "127.0.0.1", Port: 2, Health: registry.HealthPassing},
		{ID: "k3", Service: registry.ServiceApp, Tenant: "kiruna", Address: "127.0.0.1", Port: 3, Health: registry.HealthPassing},
	}
	r := mustBuild(t, s, nil).Lookup("kiruna.stagesub.test")
	k1, k2, k3 := r.Backends[0], r.Backends[1], r.Backends[2]
	now := time.Now()

	t.Run("LeastInFlight", func(t *testing.T) {
		k1.Acquire()
		k2.Acquire()
		defer k1.Release()
		defer k2.Release()
		counts := map[string]int{}
		for range 300 {
			counts[r.Pick(now.UnixNano(), nil).ID]++
		}
		// k3 (0 in flight) wins every pair it is in: 2/3 of the picks.
		if counts["k3"] < 150 {
			t.Errorf("counts %v: k3 should win most", counts)
		}
	})
	t.Run("SkipsTriedAndEjected", func(t *testing.T) {
		if got := r.Pick(now.UnixNano(), []*route.Backend{k1, k2}); got != k3 {
			t.Errorf("got %v want k3", got.ID)
		}
		if got, want := k2.Eject(now, time.Second, 8*time.Second), time.Second; got != want {
			t.Errorf("eject got %v want %v", got, want)
		}
		if got, want := k2.Eject(now, time.Second, 8*time.Second), 2*time.Second; got != want {
			t.Errorf("second eject got %v want %v", got, want)
		}
		for range 50 {
			if got := r.Pick(now.UnixNano(), []*route.Backend{k1}); got != k3 {
				t.Fatalf("got %v want k3", got.ID)
			}
		}
		// Only ejected ones left: the last resort is returned.
		if got := r.Pick(now.UnixNano(), []*route.Backend{k1, k3}); got != k2 {
			t.Errorf("last resort got %v want k2", got)
		}
		if got := r.Pick(now.Add(3*time.Second).UnixNano(), []*route.Backend{k1, k3}); got != k2 {
			t.Errorf("after ejection got %v want k2", got)
		}
		if got := r.Pick(now.UnixNano(), []*route.Backend{k1, k2, k3}); got != nil {
			t.Errorf("all tried got %v want nil", got.ID)
		}
		k2.Succeeded()
		if got, want := k2.Eject(now, time.Second, 8*time.Second), time.Second; got != want {
			t.Errorf("eject after success got %v want %v", got, want)
		}
	})
	if got := testing.AllocsPerRun(100, func() { r.Pick(now.UnixNano(), []*route.Backend{k1}) }); got != 0 {
		t.Errorf("Pick allocs got %v want 0", got)
	}
}

func TestHolder_Changed(t *testing.T) {
	h := route.NewHolder(mustBuild(t, nil, nil))
	ch := h.Changed()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.Store(mustBuild(t, fleet(), h.Load()))
	}()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed by Store")
	}
	wg.Wait()
	if got, want := h.Load().Generation, uint64(7); got != want {
		t.Errorf("generation got %d want %d", got, want)
	}
	if !h.IsCustomDomain("vikarier.gso.se") {
		t.Error("IsCustomDomain: got false")
	}
}

func TestNormalizeHost(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"A.B", "a.b"}, {"a.b:443", "a.b"}, {"a.b.", "a.b"}, {"a.b.:1", "a.b"},
		{"[::1]:8080", "[::1]"}, {"[::1]", "[::1]"}, {"a..b", ""}, {".a", ""}, {"a.b..", ""},
		{"a b", ""}, {"a.b:", ""}, {"a.b:123456", ""}, {"[::1", ""}, {"[zz]", ""},
		{"a_b.c", "a_b.c"}, {"é.com", ""},
	} {
		if got := route.CanonicalHost(tt.in); got != tt.want {
			t.Errorf("%q: got %q want %q", tt.in, got, tt.want)
		}
	}
}
