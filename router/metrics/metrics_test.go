package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"stagesub.dev/registry/consul"
	"stagesub.dev/router/metrics"
)

func TestLabels(t *testing.T) {
	for _, tt := range []struct {
		status int
		want   string
	}{{101, "1xx"}, {200, "2xx"}, {308, "3xx"}, {404, "4xx"}, {499, "4xx"}, {503, "5xx"}, {0, "5xx"}, {999, "5xx"}} {
		if got := metrics.Code(tt.status); got != tt.want {
			t.Errorf("Code(%d) got %q want %q", tt.status, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{{"GET", "GET"}, {"PROPFIND", "OTHER"}, {"get", "OTHER"}} {
		if got := metrics.Method(tt.in); got != tt.want {
			t.Errorf("Method(%q) got %q want %q", tt.in, got, tt.want)
		}
	}
}

func TestSetRoutesAndAge(t *testing.T) {
	m := metrics.New(func() time.Duration { return 1500 * time.Millisecond })
	m.SetRoutes(map[string]int{"active": 3, "suspended": 1})
	m.SetRoutes(map[string]int{"active": 2})
	if got, want := testutil.CollectAndCount(m.Routes), 1; got != want {
		t.Errorf("route series got %d want %d (stale states must go)", got, want)
	}
	if got, want := testutil.ToFloat64(m.Routes.WithLabelValues("active")), 2.0; got != want {
		t.Errorf("active got %v want %v", got, want)
	}
	n, err := testutil.GatherAndCount(m.Registry, "stagesub_router_registry_snapshot_age_seconds")
	if err != nil || n != 1 {
		t.Errorf("age metric: %d, %v", n, err)
	}
}

func TestForgetTenant(t *testing.T) {
	m := metrics.New(func() time.Duration { return 0 })
	m.Requests.WithLabelValues("goteborg", "2xx", "GET").Inc()
	m.Requests.WithLabelValues("malmo", "2xx", "GET").Inc()
	m.Duration.WithLabelValues("goteborg").Observe(1)
	m.ForgetTenant("goteborg")
	if got, want := testutil.CollectAndCount(m.Requests), 1; got != want {
		t.Errorf("request series got %d want %d", got, want)
	}
	if got, want := testutil.CollectAndCount(m.Duration), 0; got != want {
		t.Errorf("duration series got %d want %d", got, want)
	}
}

func TestRegisterWatcher(t *testing.T) {
	m := metrics.New(func() time.Duration { return 0 })
	st := consul.Stats{Malformed: 3, Errors: 7, IndexResets: 1, InvalidRecords: 2, Queries: 40}
	if err := m.RegisterWatcher(func() consul.Stats { return st }); err != nil {
		t.Fatal(err)
	}
	names := []string{
		"stagesub_router_registry_malformed_records_total",
		"stagesub_router_registry_errors_total",
		"stagesub_router_registry_index_resets_total",
		"stagesub_router_registry_invalid_records",
	}
	want := `
# HELP stagesub_router_registry_errors_total Failed Consul queries of the registry watcher.
# TYPE stagesub_router_registry_errors_total counter
stagesub_router_registry_errors_total 7
# HELP stagesub_router_registry_index_resets_total Consul blocking-query indexes that went backwards and were reset.
# TYPE stagesub_router_registry_index_resets_total counter
stagesub_router_registry_index_resets_total 1
# HELP stagesub_router_registry_invalid_records Malformed tenant records in the registry snapshot being served (not routed).
# TYPE stagesub_router_registry_invalid_records gauge
stagesub_router_registry_invalid_records 2
# HELP stagesub_router_registry_malformed_records_total Malformed tenant records found in Consul KV (a record counts again only after it changes).
# TYPE stagesub_router_registry_malformed_records_total counter
stagesub_router_registry_malformed_records_total 3
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	st = consul.Stats{Malformed: 4, Errors: 7, IndexResets: 1, InvalidRecords: 0}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(strings.NewReplacer(
		"malformed_records_total 3", "malformed_records_total 4", "invalid_records 2", "invalid_records 0").Replace(want)), names...); err != nil {
		t.Errorf("after a change, read at scrape time: %v", err)
	}
	if err := m.RegisterWatcher(func() consul.Stats { return st }); err == nil {
		t.Error("second RegisterWatcher: got nil error")
	}
}
