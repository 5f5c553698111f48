package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
