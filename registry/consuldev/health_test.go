package consuldev_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

// getBody GETs path with query q from s and returns the body; it fails tb
// unless the status is 200.
func getBody(tb testing.TB, s *consuldev.Server, path string, q url.Values) []byte {
	tb.Helper()
	resp, err := http.Get("http://" + s.Addr() + path + "?" + q.Encode())
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s?%s: %d %s", path, q.Encode(), resp.StatusCode, b)
	}
	return b
}

// TestHealthService_CachedEntriesMatchFreshEncoding proves that the answer
// of /v1/health/service, assembled from per-entry cached JSON, is byte for
// byte what encoding the current state afresh gives (the ?pretty answer,
// which bypasses the cache, compacted), after every kind of catalog change
// that alters an entry: service and check registration, check status,
// service tags (which rewrite the service's checks in place), node
// address and meta, node-level checks, deregistration and re-registration
// under the same ID; with and without ?passing, ?tag and ?filter.
func TestHealthService_CachedEntriesMatchFreshEncoding(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	agent := func(id string, port int, tags []string, status string) {
		t.Helper()
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: id, Name: "web", Port: port, Tags: tags, Meta: map[string]string{"tenant": id},
			Check: &api.AgentServiceCheck{CheckID: "check:" + id, TTL: "1h", Status: status},
		}); err != nil {
			t.Fatal(err)
		}
	}
	catalog := func(reg *api.CatalogRegistration) {
		t.Helper()
		if _, err := c.Catalog().Register(reg, nil); err != nil {
			t.Fatal(err)
		}
	}
	ext := func(addr string, meta map[string]string) *api.CatalogRegistration {
		return &api.CatalogRegistration{Node: "ext", Address: addr, NodeMeta: meta,
			Service: &api.AgentService{ID: "web-3", Service: "web", Port: 8003, Tags: []string{"v1"}}}
	}
	queries := []url.Values{
		{},
		{"passing": {""}},
		{"tag": {"v2"}},
		{"filter": {"Service.Port != 8002"}},
		{"passing": {"1"}, "filter": {`Node.Node == "ext"`}},
	}
	steps := []struct {
		name   string
		change func()
	}{
		{"agent services", func() {
			agent("web-1", 8001, []string{"v1"}, api.HealthPassing)
			agent("web-2", 8002, []string{"v1"}, api.HealthCritical)
		}},
		{"catalog node with a service", func() { catalog(ext("10.0.0.1", map[string]string{"rack": "a"})) }},
		{"node-level check", func() {
			catalog(&api.CatalogRegistration{Node: "ext", SkipNodeUpdate: true,
				Check: &api.AgentCheck{Node: "ext", CheckID: "node-ok", Name: "node", Status: api.HealthPassing}})
		}},
		{"service check on the catalog node", func() {
			catalog(&api.CatalogRegistration{Node: "ext", SkipNodeUpdate: true,
				Check: &api.AgentCheck{Node: "ext", CheckID: "web-3-ok", Name: "web-3", ServiceID: "web-3", Status: api.HealthPassing}})
		}},
		{"check status", func() {
			if err := c.Agent().UpdateTTL("check:web-2", "now fine", api.HealthPassing); err != nil {
				t.Fatal(err)
			}
		}},
		{"service tags", func() { agent("web-1", 8001, []string{"v2"}, api.HealthPassing) }},
		{"node address and meta", func() { catalog(ext("10.0.0.2", map[string]string{"rack": "b"})) }},
		{"node-level check critical", func() {
			catalog(&api.CatalogRegistration{Node: "ext", SkipNodeUpdate: true,
				Check: &api.AgentCheck{Node: "ext", CheckID: "node-ok", Name: "node", Status: api.HealthCritical}})
		}},
		{"deregister", func() {
			if err := c.Agent().ServiceDeregister("web-2"); err != nil {
				t.Fatal(err)
			}
		}},
		{"re-register under the same ID", func() { agent("web-2", 8012, []string{"v2"}, api.HealthPassing) }},
		{"node-level check removed", func() {
			if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "ext", CheckID: "node-ok"}, nil); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, st := range steps {
		st.change()
		for _, q := range queries {
			// Twice: the first read may fill the cache, the second reads it.
			for range 2 {
				raw := getBody(t, s, "/v1/health/service/web", q)
				pq := url.Values{"pretty": {""}}
				for k, v := range q {
					pq[k] = v
				}
				var fresh bytes.Buffer
				if err := json.Compact(&fresh, getBody(t, s, "/v1/health/service/web", pq)); err != nil {
					t.Fatal(err)
				}
				if got, want := string(bytes.TrimSpace(raw)), fresh.String(); got != want {
					t.Fatalf("after %s, ?%s:\n got %s\nwant %s", st.name, q.Encode(), got, want)
				}
			}
		}
	}
	// The official client decodes the assembled answer.
	entries, _, err := c.Health().Service("web", "", false, nil)
	if err != nil || len(entries) != 3 {
		t.Fatalf("health web: %d entries, %v; want 3", len(entries), err)
	}
}

// TestHealthService_BlockingAnswersWithCurrentState checks that a blocking
// health query sleeps through writes that do not touch its service and
// answers, once its service changes, with the state and index of that
// moment.
func TestHealthService_BlockingAnswersWithCurrentState(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "a", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	_, meta, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		entries []*api.ServiceEntry
		meta    *api.QueryMeta
		err     error
	}
	done := make(chan answer, 1)
	go func() {
		e, m, err := c.Health().Service("web", "", false, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
		done <- answer{e, m, err}
	}()
	time.Sleep(50 * time.Millisecond)
	for range 5 { // unrelated writes
		MustPut(t, c, "unrelated", "x"+time.Now().String())
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db", Name: "db", Port: 1}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case a := <-done:
		t.Fatalf("blocking query answered after unrelated writes: %d entries, index %d, %v", len(a.entries), a.meta.LastIndex, a.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "b", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	_, now, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.entries) != 2 || a.meta.LastIndex != now.LastIndex || a.meta.LastIndex <= meta.LastIndex {
		t.Fatalf("blocking answer: %d entries at index %d; want 2 at the current index %d (> %d)", len(a.entries), a.meta.LastIndex, now.LastIndex, meta.LastIndex)
	}
}
