// Package metrics defines the router's Prometheus metrics. Label values are
// bounded by the registry: the tenant label holds a slug from the routing
// table or one of the route.Label* constants (every unknown host shares
// route.LabelUnknown), and the method label folds unusual methods to "OTHER".
package metrics

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"stagesub.dev/registry/consul"
)

// Upstream error reasons (label "reason").
const (
	ReasonRefused    = "refused"     // connection refused or no route to the instance
	ReasonTimeout    = "timeout"     // dial or response-header timeout
	ReasonReset      = "reset"       // connection closed or reset after it was established
	ReasonNoInstance = "no_instance" // no passing instance to try
	ReasonOther      = "other"
)

// Metrics holds the router's collectors. Create it with New; safe for
// concurrent use.
type Metrics struct {
	Requests       *prometheus.CounterVec   // tenant, code (1xx..5xx), method
	Duration       *prometheus.HistogramVec // tenant
	UpstreamErrors *prometheus.CounterVec   // tenant, reason
	Retries        *prometheus.CounterVec   // tenant
	Ejections      *prometheus.CounterVec   // tenant
	InFlight       *prometheus.GaugeVec     // tenant
	Routes         *prometheus.GaugeVec     // state
	Generation     prometheus.Gauge
	LogDropped     prometheus.Counter
	Registry       *prometheus.Registry
}

// New creates the collectors and registers them, with the Go and process
// collectors, on a new registry. snapshotAge reports the age of the registry
// snapshot being served (it grows while Consul is unreachable).
func New(snapshotAge func() time.Duration) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_router_requests_total", Help: "Requests answered, by tenant, status class and method.",
		}, []string{"tenant", "code", "method"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stagesub_router_request_duration_seconds", Help: "Time to answer a request (to the end of the response), by tenant.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"tenant"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_router_upstream_errors_total", Help: "Failed upstream attempts, by tenant and reason.",
		}, []string{"tenant", "reason"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_router_retries_total", Help: "Requests retried on another instance, by tenant.",
		}, []string{"tenant"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_router_ejections_total", Help: "Instances ejected by passive health checks, by tenant.",
		}, []string{"tenant"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stagesub_router_in_flight_requests", Help: "Requests being proxied, by tenant.",
		}, []string{"tenant"}),
		Routes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stagesub_router_routes", Help: "Tenant routes in the current table, by state.",
		}, []string{"state"}),
		Generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stagesub_router_registry_generation", Help: "Generation of the registry snapshot being served.",
		}),
		LogDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stagesub_router_access_log_dropped_total", Help: "Unknown-host access log lines dropped by rate limiting.",
		}),
		Registry: prometheus.NewRegistry(),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "stagesub_router_registry_snapshot_age_seconds", Help: "Seconds since the registry snapshot being served was refreshed.",
	}, func() float64 { return snapshotAge().Seconds() })
	m.Registry.MustRegister(m.Requests, m.Duration, m.UpstreamErrors, m.Retries, m.Ejections,
		m.InFlight, m.Routes, m.Generation, m.LogDropped, age,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RegisterWatcher registers, on m.Registry, the registry watcher's counters
// read from stats (typically consul.Watcher.Stats) at each scrape:
// stagesub_router_registry_malformed_records_total (tenant records that
// failed to decode; a record counts again only after it changes),
// stagesub_router_registry_errors_total (failed Consul queries),
// stagesub_router_registry_index_resets_total (blocking-query indexes that
// went backwards) and the gauge stagesub_router_registry_invalid_records
// (malformed records in the snapshot being served). Call it once; stats
// must be safe for concurrent use and its counters must only grow.
func (m *Metrics) RegisterWatcher(stats func() consul.Stats) error {
	counter := func(name, help string, v func(consul.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(stats())) })
	}
	cs := []prometheus.Collector{
		counter("stagesub_router_registry_malformed_records_total",
			"Malformed tenant records found in Consul KV (a record counts again only after it changes).",
			func(s consul.Stats) uint64 { return s.Malformed }),
		counter("stagesub_router_registry_errors_total", "Failed Consul queries of the registry watcher.",
			func(s consul.Stats) uint64 { return s.Errors }),
		counter("stagesub_router_registry_index_resets_total", "Consul blocking-query indexes that went backwards and were reset.",
			func(s consul.Stats) uint64 { return s.IndexResets }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "stagesub_router_registry_invalid_records", Help: "Malformed tenant records in the registry snapshot being served (not routed).",
		}, func() float64 { return float64(stats().InvalidRecords) }),
	}
	for _, c := range cs {
		if err := m.Registry.Register(c); err != nil {
			return fmt.Errorf("metrics: register watcher metrics: %w", err)
		}
	}
	return nil
}

// SetRoutes replaces the routes-by-state gauge with states.
func (m *Metrics) SetRoutes(states map[string]int) {
	m.Routes.Reset()
	for s, n := range states {
		m.Routes.WithLabelValues(s).Set(float64(n))
	}
}

// ForgetTenant deletes every series labelled with tenant, once the tenant
// left the routing table, so deleted tenants do not accumulate.
func (m *Metrics) ForgetTenant(tenant string) {
	l := prometheus.Labels{"tenant": tenant}
	m.Requests.DeletePartialMatch(l)
	m.Duration.DeletePartialMatch(l)
	m.UpstreamErrors.DeletePartialMatch(l)
	m.Retries.DeletePartialMatch(l)
	m.Ejections.DeletePartialMatch(l)
	m.InFlight.DeletePartialMatch(l)
}

// Method folds a request method into a bounded label value.
func Method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

var codes = [...]string{"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Code folds a status code into its class label, "1xx" to "5xx".
func Code(status int) string {
	c := status / 100
	if c < 1 || c > 5 {
		return "5xx"
	}
	return codes[c]
}
