package consul_test

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

// Recorder keeps every snapshot a watcher emits.
type Recorder struct {
	mu    sync.Mutex
	snaps []*registry.Snapshot
}

func (r *Recorder) Add(s *registry.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, s)
}

func (r *Recorder) All() []*registry.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*registry.Snapshot(nil), r.snaps...)
}

// MustRunWatcher runs a watcher on c until the test ends, waits for its first
// snapshot, and checks at cleanup that Run returned and left no goroutine.
func MustRunWatcher(tb testing.TB, c *api.Client, o consul.WatchOptions) *consul.Watcher {
	tb.Helper()
	w := consul.NewWatcher(c, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			tb.Errorf("Run did not return within 5s of cancel")
		}
	})
	select {
	case <-w.Ready():
	case <-time.After(15 * time.Second):
		tb.Fatal("watcher not ready after 15s")
	}
	return w
}

func TestWatcher_Propagation(t *testing.T) {
	ctx := context.Background()
	_, c := MustStart(t)
	s := consul.NewStore(c)
	for _, slug := range []string{"goteborg", "malmo"} {
		if err := s.CreateTenant(ctx, NewTenant(slug)); err != nil {
			t.Fatal(err)
		}
	}
	var rec Recorder
	w := MustRunWatcher(t, c, consul.WatchOptions{OnSnapshot: rec.Add, WaitTime: 2 * time.Second})
	first := w.Snapshot()
	if got, want := len(first.Tenants), 2; got != want {
		t.Fatalf("first snapshot has %d tenants, want %d", got, want)
	}
	if first.Instances == nil || first.Invalid == nil || len(first.Instances) != 0 {
		t.Errorf("first snapshot maps: instances=%v invalid=%v; want empty, non-nil", first.Instances, first.Invalid)
	}
	if got := w.Age(); got != 0 {
		t.Errorf("Age = %v while healthy, want 0", got)
	}

	// An app instance appears, then turns passing once its check runs.
	host, port := MustHealthServer(t, http.StatusOK)
	id, deregister, err := consul.Register(ctx, c, registry.Registration{
		Service: registry.ServiceApp, Tenant: "goteborg", Address: host, Port: port,
		Version: "v7", CheckInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "passing instance in snapshot", func() bool {
		return len(w.Snapshot().Passing("goteborg")) == 1
	})
	got := w.Snapshot().Instances["goteborg"][0]
	want := registry.Instance{ID: id, Service: registry.ServiceApp, Tenant: "goteborg", Node: got.Node,
		Address: host, Port: port, Version: "v7", Health: registry.HealthPassing}
	if got != want || got.Node == "" {
		t.Errorf("instance = %+v, want %+v with a node", got, want)
	}
	if n := len(first.Instances); n != 0 {
		t.Errorf("published snapshot was modified: first.Instances has %d entries", n)
	}

	// An admin instance and an unhealthy app instance.
	if _, _, err := consul.Register(ctx, c, registry.Registration{
		Service: registry.ServiceAdmin, ID: "admin-1", Address: host, Port: port, CheckInterval: time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	bhost, bport := MustHealthServer(t, http.StatusServiceUnavailable)
	if _, _, err := consul.Register(ctx, c, registry.Registration{
		Service: registry.ServiceApp, ID: "malmo-sick", Tenant: "malmo", Address: bhost, Port: bport, CheckInterval: time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "admin passing and malmo instance listed", func() bool {
		sn := w.Snapshot()
		return len(sn.PassingAdmins()) == 1 && len(sn.Instances["malmo"]) == 1
	})
	time.Sleep(1200 * time.Millisecond) // its check has run and failed
	sn := w.Snapshot()
	if got, want := sn.Instances["malmo"][0].Health, registry.HealthCritical; got != want {
		t.Errorf("malmo-sick health = %q, want %q", got, want)
	}
	if got := sn.Passing("malmo"); len(got) != 0 {
		t.Errorf("Passing(malmo) = %v, want none", got)
	}

	// Record changes.
	if _, err := s.UpdateTenant(ctx, "malmo", func(tn *registry.Tenant) error {
		tn.Status = registry.StatusSuspended
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "suspended status in snapshot", func() bool {
		tn := w.Snapshot().Tenants["malmo"]
		return tn != nil && tn.Status == registry.StatusSuspended
	})
	if err := s.DeleteTenant(ctx, "goteborg"); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "deleted tenant gone", func() bool { return w.Snapshot().Tenants["goteborg"] == nil })
	if err := deregister(ctx); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "deregistered instance gone", func() bool { return len(w.Snapshot().Instances["goteborg"]) == 0 })

	// Every emitted snapshot is complete and generations count up by one.
	all := rec.All()
	for i, sn := range all {
		if sn.Generation != uint64(i+1) {
			t.Errorf("snapshot %d has generation %d", i, sn.Generation)
		}
		if sn.Tenants == nil || sn.Instances == nil || sn.Invalid == nil {
			t.Errorf("snapshot %d has a nil map", sn.Generation)
		}
	}
	if st := w.Stats(); st.Generation != uint64(len(all)) || st.Errors != 0 || st.Tenants != 1 {
		t.Errorf("Stats = %+v; want generation %d, no errors, 1 tenant", st, len(all))
	}
}

func TestWatcher_MalformedRecord(t *testing.T) {
	ctx := context.Background()
	_, c := MustStart(t)
	s := consul.NewStore(c)
	if err := s.CreateTenant(ctx, NewTenant("goteborg")); err != nil {
		t.Fatal(err)
	}
	brokenKey := registry.Key("broken")
	if _, err := c.KV().Put(&api.KVPair{Key: brokenKey, Value: []byte(`{"slug":"broken", oops`)}, nil); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	w := MustRunWatcher(t, c, consul.WatchOptions{Logger: testLogger(&logs), WaitTime: 2 * time.Second})
	sn := w.Snapshot()
	if sn.Tenants["goteborg"] == nil || sn.Invalid[brokenKey] == "" || len(sn.Tenants) != 1 {
		t.Fatalf("snapshot tenants %v invalid %v; want goteborg valid and %s invalid", sn.Tenants, sn.Invalid, brokenKey)
	}
	if !strings.Contains(logs.String(), `"msg":"skipping malformed tenant record","key":"`+brokenKey+`"`) {
		t.Errorf("no error logged for %s; logs:\n%s", brokenKey, logs.String())
	}
	// Other changes still flow, and the same bad record is not counted again.
	if err := s.CreateTenant(ctx, NewTenant("malmo")); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "malmo in snapshot", func() bool { return w.Snapshot().Tenants["malmo"] != nil })
	if st := w.Stats(); st.Malformed != 1 || st.InvalidRecords != 1 || st.Tenants != 2 {
		t.Errorf("Stats = %+v, want Malformed 1, InvalidRecords 1, Tenants 2", st)
	}
	// Repairing the record makes it valid.
	if _, err := c.KV().Put(&api.KVPair{Key: brokenKey, Value: mustJSON(t, NewTenant("broken"))}, nil); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "repaired record valid", func() bool {
		sn := w.Snapshot()
		return sn.Tenants["broken"] != nil && len(sn.Invalid) == 0
	})
}

// TestWatcher_ConsulRestart stops the stand-in and starts it again on the
// same port and data dir. Meanwhile the watcher keeps its last snapshot,
// reports a growing Age, and emits nothing; afterwards it recovers.
func TestWatcher_ConsulRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := consuldev.Start(consuldev.Config{HTTPAddr: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	t.Cleanup(func() { srv.Close() })
	c := NewClient(t, addr)
	s := consul.NewStore(c)
	for _, slug := range []string{"goteborg", "malmo"} {
		if err := s.CreateTenant(ctx, NewTenant(slug)); err != nil {
			t.Fatal(err)
		}
	}
	var rec Recorder
	w := MustRunWatcher(t, c, consul.WatchOptions{
		OnSnapshot: rec.Add, WaitTime: 2 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	before := w.Snapshot()
	emitted := len(rec.All())

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "errors counted", func() bool { return w.Stats().Errors >= 3 })
	time.Sleep(300 * time.Millisecond)
	if got := w.Snapshot(); got != before {
		t.Errorf("snapshot replaced while Consul was down: generation %d → %d", before.Generation, got.Generation)
	}
	if got := len(rec.All()); got != emitted {
		t.Errorf("%d snapshots emitted while Consul was down", got-emitted)
	}
	if age := w.Age(); age < 300*time.Millisecond {
		t.Errorf("Age = %v while Consul is down, want ≥ 300ms", age)
	}

	srv2, err := consuldev.Start(consuldev.Config{HTTPAddr: addr, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Close() })
	if err := s.CreateTenant(ctx, NewTenant("umea")); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "recovered snapshot with the new tenant", func() bool {
		sn := w.Snapshot()
		return sn.Tenants["umea"] != nil && sn.Tenants["goteborg"] != nil && sn.Tenants["malmo"] != nil
	})
	WaitFor(t, "Age back to 0", func() bool { return w.Age() == 0 })
	for _, sn := range rec.All() {
		if len(sn.Tenants) < 2 {
			t.Errorf("snapshot %d has %d tenants: an error leaked into a snapshot", sn.Generation, len(sn.Tenants))
		}
	}
}

// TestWatcher_IndexReset puts a proxy in front of the stand-in and switches it
// to a second, fresh stand-in whose indexes are lower, as after a snapshot
// restore. The watcher must reset its indexes and show the new data.
func TestWatcher_IndexReset(t *testing.T) {
	ctx := context.Background()
	old, oldc := MustStart(t)
	fresh, freshc := MustStart(t)
	// Push the old server's indexes well above the fresh one's.
	olds := consul.NewStore(oldc)
	if err := olds.CreateTenant(ctx, NewTenant("goteborg")); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if _, err := olds.UpdateTenant(ctx, "goteborg", func(*registry.Tenant) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := consul.NewStore(freshc).CreateTenant(ctx, NewTenant("malmo")); err != nil {
		t.Fatal(err)
	}

	var target atomic.Pointer[url.URL]
	target.Store(&url.URL{Scheme: "http", Host: old.Addr()})
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target.Load()) }}
	ps := httptestServer(t, proxy)
	c := NewClient(t, ps)
	w := MustRunWatcher(t, c, consul.WatchOptions{WaitTime: 300 * time.Millisecond})
	if w.Snapshot().Tenants["goteborg"] == nil {
		t.Fatal("goteborg missing from first snapshot")
	}
	target.Store(&url.URL{Scheme: "http", Host: fresh.Addr()})
	WaitFor(t, "snapshot of the fresh server", func() bool {
		sn := w.Snapshot()
		return sn.Tenants["malmo"] != nil && sn.Tenants["goteborg"] == nil
	})
	if st := w.Stats(); st.IndexResets == 0 {
		t.Errorf("Stats = %+v, want IndexResets > 0", st)
	}
	// Blocking works again after the reset: a change shows up.
	if err := consul.NewStore(freshc).CreateTenant(ctx, NewTenant("umea")); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "umea after reset", func() bool { return w.Snapshot().Tenants["umea"] != nil })
}

// TestWatcher_Stop: Run returns promptly on cancel although a blocking query
// is in flight, and no watcher goroutine remains.
func TestWatcher_Stop(t *testing.T) {
	_, c := MustStart(t)
	w := consul.NewWatcher(c, consul.WatchOptions{WaitTime: time.Minute})
	if got := w.Age(); got != 0 {
		t.Errorf("Age before Run = %v, want 0", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-w.Ready()
	time.Sleep(50 * time.Millisecond) // the blocking queries are in flight
	if err := w.Run(ctx); err == nil {
		t.Error("second Run returned nil, want an error")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	WaitFor(t, "no watcher goroutines", func() bool { return watcherGoroutines() == "" })
}

// watcherGoroutines returns the stacks of goroutines running this package's
// code other than the tests themselves.
func watcherGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "stagesub.dev/registry/consul.(*Watcher)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func TestNextIndex(t *testing.T) {
	tests := []struct {
		prev, got, next uint64
		changed, reset  bool
	}{
		{0, 0, 1, true, false},   // first query; never block on 0
		{0, 17, 17, true, false}, // first query
		{17, 17, 17, false, false},
		{17, 18, 18, true, false},
		{17, 5, 0, true, true}, // backwards: use the answer, start over
	}
	for _, tt := range tests {
		next, changed, reset := consul.NextIndex(tt.prev, tt.got)
		if next != tt.next || changed != tt.changed || reset != tt.reset {
			t.Errorf("NextIndex(%d, %d) = %d, %v, %v; want %d, %v, %v",
				tt.prev, tt.got, next, changed, reset, tt.next, tt.changed, tt.reset)
		}
	}
}

// TestWatcher_Health: an instance's health aggregates all its checks, node
// checks and maintenance included.
func TestWatcher_Health(t *testing.T) {
	ctx := context.Background()
	_, c := MustStart(t)
	tests := []struct {
		id     string
		status int
		maint  bool
		want   registry.Health
	}{
		{"a-ok", http.StatusOK, false, registry.HealthPassing},
		{"b-busy", http.StatusTooManyRequests, false, registry.HealthWarning},
		{"c-down", http.StatusInternalServerError, false, registry.HealthCritical},
		{"d-maint", http.StatusOK, true, registry.HealthCritical},
	}
	for _, tt := range tests {
		host, port := MustHealthServer(t, tt.status)
		if _, _, err := consul.Register(ctx, c, registry.Registration{
			Service: registry.ServiceApp, ID: tt.id, Tenant: "goteborg", Address: host, Port: port, CheckInterval: time.Second,
		}); err != nil {
			t.Fatal(err)
		}
		if tt.maint {
			if err := c.Agent().EnableServiceMaintenance(tt.id, "upgrade"); err != nil {
				t.Fatal(err)
			}
		}
	}
	w := MustRunWatcher(t, c, consul.WatchOptions{WaitTime: 2 * time.Second})
	WaitFor(t, "checks run", func() bool {
		is := w.Snapshot().Instances["goteborg"]
		return len(is) == len(tests) && is[0].Health == registry.HealthPassing && is[1].Health == registry.HealthWarning
	})
	is := w.Snapshot().Instances["goteborg"]
	for i, tt := range tests {
		if got, want := is[i].ID, tt.id; got != want {
			t.Fatalf("instance %d is %s, want %s (sorted by ID)", i, got, want)
		}
		if got, want := is[i].Health, tt.want; got != want {
			t.Errorf("%s: health = %q, want %q", tt.id, got, want)
		}
	}
	if got := w.Snapshot().Passing("goteborg"); len(got) != 1 || got[0].ID != "a-ok" {
		t.Errorf("Passing = %v, want only a-ok", got)
	}
}

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 5 * time.Second
	tests := []struct {
		n    int
		want time.Duration // the un-jittered pause; the result is in [want/2, want)
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{7, hi}, // 6.4s capped
		{1000, hi},
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 50 {
			got := consul.Backoff(lo, hi, tt.n)
			if got < tt.want/2 || got >= tt.want {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v)", tt.n, got, tt.want/2, tt.want)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Errorf("Backoff(%d) is not jittered: always %v", tt.n, seen)
		}
	}
}

// TestWatcher_SharesUnchangedTenantsAndSkipsNoOps checks that a change of
// one tenant's instances leaves the other tenants' Instances slices shared
// with the previous snapshot, and that a Consul change the snapshot does not
// reflect (a check's output) publishes no snapshot.
func TestWatcher_SharesUnchangedTenantsAndSkipsNoOps(t *testing.T) {
	_, c := MustStart(t)
	register := func(id, tenant string) {
		t.Helper()
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: id, Name: registry.ServiceApp, Meta: map[string]string{registry.MetaTenant: tenant},
			Check: &api.AgentServiceCheck{CheckID: "check:" + id, TTL: "1h", Status: api.HealthPassing},
		}); err != nil {
			t.Fatal(err)
		}
	}
	register("a-1", "a")
	register("b-1", "b")
	var rec Recorder
	w := MustRunWatcher(t, c, consul.WatchOptions{OnSnapshot: rec.Add, WaitTime: 2 * time.Second})
	WaitFor(t, "both tenants passing", func() bool {
		s := w.Snapshot()
		return len(s.Passing("a")) == 1 && len(s.Passing("b")) == 1
	})
	before := w.Snapshot()

	// Only the output of a's check changes: Consul's answer changes, the
	// snapshot would not.
	queries := w.Stats().Queries
	if err := c.Agent().UpdateTTL("check:a-1", "still fine", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "the watcher to read the new answer", func() bool { return w.Stats().Queries > queries })
	time.Sleep(200 * time.Millisecond)
	if got := w.Snapshot(); got != before {
		t.Fatalf("a check output change published generation %d after %d", got.Generation, before.Generation)
	}

	register("b-2", "b")
	WaitFor(t, "second instance of b", func() bool { return len(w.Snapshot().Instances["b"]) == 2 })
	after := w.Snapshot()
	if after.Generation != before.Generation+1 {
		t.Errorf("generation %d after %d: want exactly one new snapshot", after.Generation, before.Generation)
	}
	if &after.Instances["a"][0] != &before.Instances["a"][0] {
		t.Errorf("tenant a's instances were rebuilt although they did not change")
	}
	if got := after.Instances["a"]; len(got) != 1 || got[0].ID != "a-1" {
		t.Errorf("tenant a's instances = %+v, want a-1", got)
	}
	if &after.Instances["b"][0] == &before.Instances["b"][0] || len(before.Instances["b"]) != 1 {
		t.Errorf("tenant b's instances were shared with the snapshot before they changed")
	}
}
