package consuldev_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

// waitFor polls cond every 20ms until it is true or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthy returns the IDs of passing instances of service.
func healthy(tb testing.TB, c *api.Client, service string) []string {
	tb.Helper()
	entries, _, err := c.Health().Service(service, "", true, nil)
	if err != nil {
		tb.Fatalf("health %s: %v", service, err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

func TestAgent_HTTPCheckFlipsAndDeregistersCritical(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	var hits atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer app.Close()

	s := consuldev.StartTest(t, consuldev.Config{ReapInterval: 50 * time.Millisecond})
	c := s.Client(t)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "app-1", Name: "stagesub-app", Tags: []string{"tenant-goteborg"},
		Meta: map[string]string{"tenant": "goteborg"}, Address: "127.0.0.1", Port: 1234,
		Check: &api.AgentServiceCheck{
			HTTP: app.URL + "/healthz", Interval: "100ms", Timeout: "1s",
			DeregisterCriticalServiceAfter: "600ms",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered checks start critical, then the runner makes it pass.
	waitFor(t, 5*time.Second, "instance to pass", func() bool { return len(healthy(t, c, "stagesub-app")) == 1 })
	entries, meta, err := c.Health().Service("stagesub-app", "tenant-goteborg", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("health by tag: got %d entries, err %v", len(entries), err)
	}
	if got, want := entries[0].Service.Meta["tenant"], "goteborg"; got != want {
		t.Fatalf("meta tenant: got %q, want %q", got, want)
	}
	checks := entries[0].Checks
	if got, want := len(checks), 2; got != want { // serfHealth + the HTTP check
		t.Fatalf("checks: got %d, want %d", got, want)
	}

	// A blocking health query wakes up when the check turns critical.
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		e, _, err := c.Health().Service("stagesub-app", "", true, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
		ch <- res{len(e), err}
	}()
	before := hits.Load()
	fail.Store(true)
	select {
	case r := <-ch:
		if r.err != nil || r.n != 0 {
			t.Fatalf("blocking health: got %d passing, err %v; want 0", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking health query did not wake when the check failed")
	}
	if hits.Load() <= before {
		t.Fatal("the check did not probe the app again")
	}
	chk, err := c.Agent().ChecksWithFilter(`CheckID == "service:app-1"`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := chk["service:app-1"].Status, api.HealthCritical; got != want {
		t.Fatalf("agent check status: got %q, want %q", got, want)
	}

	// Critical longer than DeregisterCriticalServiceAfter: gone from the catalog.
	waitFor(t, 5*time.Second, "critical service to be reaped", func() bool {
		svcs, _, err := c.Catalog().Service("stagesub-app", "", nil)
		return err == nil && len(svcs) == 0
	})
	svcs, err := c.Agent().Services()
	if err != nil || len(svcs) != 0 {
		t.Fatalf("agent services after reap: got %v, err %v; want none", svcs, err)
	}
}

func TestAgent_HTTPCheckRecovers(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer app.Close()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "web", Check: &api.AgentServiceCheck{HTTP: app.URL, Interval: "50ms"},
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := healthy(t, c, "web"); len(got) != 0 {
		t.Fatalf("failing app: got %v passing, want none", got)
	}
	fail.Store(false)
	waitFor(t, 5*time.Second, "web to pass", func() bool { return len(healthy(t, c, "web")) == 1 })
}

func TestAgent_TCPCheck(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "db", Check: &api.AgentServiceCheck{TCP: ln.Addr().String(), Interval: "50ms"},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "db to pass", func() bool { return len(healthy(t, c, "db")) == 1 })
	ln.Close()
	waitFor(t, 5*time.Second, "db to fail", func() bool { return len(healthy(t, c, "db")) == 0 })
}

func TestAgent_TTLCheck(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "worker", Check: &api.AgentServiceCheck{TTL: "300ms"},
	}); err != nil {
		t.Fatal(err)
	}
	if got := healthy(t, c, "worker"); len(got) != 0 {
		t.Fatalf("new TTL check: got %v passing, want none (starts critical)", got)
	}
	if err := c.Agent().UpdateTTL("service:worker", "all good", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	if got := healthy(t, c, "worker"); len(got) != 1 {
		t.Fatalf("after pass: got %v passing, want 1", got)
	}
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := checks["service:worker"].Output, "all good"; got != want {
		t.Fatalf("output: got %q, want %q", got, want)
	}
	// No update within the TTL: critical with the last output.
	waitFor(t, 3*time.Second, "TTL to expire", func() bool {
		checks, err := c.Agent().Checks()
		return err == nil && checks["service:worker"].Status == api.HealthCritical
	})
	checks, _ = c.Agent().Checks()
	if got, want := checks["service:worker"].Output, "TTL expired (last output before timeout follows): all good"; got != want {
		t.Fatalf("expired output: got %q, want %q", got, want)
	}
}

func TestAgent_RegisterValidation(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	tests := []struct {
		name string
		reg  *api.AgentServiceRegistration
	}{
		{"ErrNoName", &api.AgentServiceRegistration{}},
		{"ErrBadDuration", &api.AgentServiceRegistration{Name: "x", Check: &api.AgentServiceCheck{TTL: "nope"}}},
		{"ErrNoInterval", &api.AgentServiceRegistration{Name: "x", Check: &api.AgentServiceCheck{HTTP: "http://127.0.0.1:1/"}}},
		{"ErrBadStatus", &api.AgentServiceRegistration{Name: "x", Check: &api.AgentServiceCheck{TTL: "1s", Status: "fine"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Agent().ServiceRegister(tt.reg)
			if err == nil {
				t.Fatal("got nil error, want 400")
			}
			var se api.StatusError
			if ok := asStatus(err, &se); !ok || se.Code != 400 {
				t.Fatalf("got %v, want a 400 StatusError", err)
			}
		})
	}
}

func asStatus(err error, se *api.StatusError) bool {
	for err != nil {
		if s, ok := err.(api.StatusError); ok {
			*se = s
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestCatalog_ServicesAndIndexes(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	svcs, meta, err := c.Catalog().Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["consul"]; !ok || meta.LastIndex == 0 {
		t.Fatalf("catalog services: got %v index %d, want consul and index > 0", svcs, meta.LastIndex)
	}
	_, hmeta, err := c.Health().Service("api", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A KV write does not move the index of a service query.
	MustPut(t, c, "k", "v")
	_, hmeta2, _ := c.Health().Service("api", "", false, nil)
	if got, want := hmeta2.LastIndex, hmeta.LastIndex; got != want {
		t.Fatalf("service index after a KV write: got %d, want %d", got, want)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "api", Tags: []string{"v1"}}); err != nil {
		t.Fatal(err)
	}
	_, hmeta3, _ := c.Health().Service("api", "", false, nil)
	if hmeta3.LastIndex <= hmeta2.LastIndex {
		t.Fatalf("service index after register: got %d, want > %d", hmeta3.LastIndex, hmeta2.LastIndex)
	}
	svcs, _, _ = c.Catalog().Services(nil)
	if got := svcs["api"]; len(got) != 1 || got[0] != "v1" {
		t.Fatalf("catalog services api: got %v, want [v1]", got)
	}
	leader, err := c.Status().Leader()
	if err != nil || leader == "" {
		t.Fatalf("leader: got %q, %v", leader, err)
	}
	name, err := c.Agent().NodeName()
	if err != nil || name != "stagesub-dev" {
		t.Fatalf("node name: got %q, %v", name, err)
	}
}

func TestAgent_RegisterSnakeCase(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	body := `{"name":"raw","id":"raw-1","tags":["a"],"meta":{"some_key":"v"},
		"check":{"ttl":"1m","status":"passing","deregister_critical_service_after":"90s"}}`
	req, _ := http.NewRequest(http.MethodPut, "http://"+s.Addr()+"/v1/agent/service/register", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("register: status %d", resp.StatusCode)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	svc := svcs["raw-1"]
	if svc == nil || svc.Meta["some_key"] != "v" {
		t.Fatalf("service: got %+v, want raw-1 with meta some_key (user keys untouched)", svc)
	}
	checks, _ := c.Agent().Checks()
	chk := checks["service:raw-1"]
	if chk == nil || chk.Status != api.HealthPassing || chk.Type != "ttl" {
		t.Fatalf("check: got %+v, want a passing TTL check", chk)
	}
}

func TestAgent_CheckThresholds(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	var failedHits atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			failedHits.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer app.Close()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "flaky",
		Check: &api.AgentServiceCheck{HTTP: app.URL, Interval: "300ms",
			FailuresBeforeWarning: 2, FailuresBeforeCritical: 4},
	}); err != nil {
		t.Fatal(err)
	}
	status := func() string {
		checks, err := c.Agent().Checks()
		if err != nil || checks["service:flaky"] == nil {
			return ""
		}
		return checks["service:flaky"].Status
	}
	waitFor(t, 5*time.Second, "passing", func() bool { return status() == api.HealthPassing })
	fail.Store(true)
	waitFor(t, 5*time.Second, "first failed probe", func() bool { return failedHits.Load() >= 1 })
	if got, want := status(), api.HealthPassing; got != want {
		t.Fatalf("after 1 failure: got %q, want %q (FailuresBeforeWarning=2)", got, want)
	}
	waitFor(t, 5*time.Second, "warning", func() bool { return status() == api.HealthWarning })
	if n := failedHits.Load(); n < 2 {
		t.Fatalf("warning after %d failures, want >= 2", n)
	}
	waitFor(t, 5*time.Second, "critical", func() bool { return status() == api.HealthCritical })
	if n := failedHits.Load(); n < 4 {
		t.Fatalf("critical after %d failures, want >= 4", n)
	}
}
