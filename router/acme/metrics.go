package acme

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the Manager's Prometheus state. Certificate expiry is read
// from certmagic's cache at scrape time for every name seen cached.
type metrics struct {
	ops     *prometheus.CounterVec // op=obtain|renew, result=success|failure
	refused *prometheus.CounterVec // reason=base_domain|not_registered|rate_limited
	expiry  *prometheus.Desc

	mu    sync.Mutex
	names map[string]bool
}

func newMetrics() *metrics {
	return &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_router_acme_certificates_total",
			Help: "Certificate issuances (op=obtain) and renewals (op=renew) by this replica, by result.",
		}, []string{"op", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_router_acme_ondemand_refused_total",
			Help: "On-demand certificate requests refused, by reason.",
		}, []string{"reason"}),
		expiry: prometheus.NewDesc("stagesub_router_acme_certificate_expiry_seconds",
			"Seconds until the certificate served for a name expires (negative when expired).",
			[]string{"name"}, nil),
		names: make(map[string]bool),
	}
}

func (mt *metrics) op(renewal bool, err error) {
	op, result := "obtain", "success"
	if renewal {
		op = "renew"
	}
	if err != nil {
		result = "failure"
	}
	mt.ops.WithLabelValues(op, result).Inc()
}

func (mt *metrics) refuse(err error) {
	reason := "not_registered"
	switch {
	case errors.Is(err, ErrBaseDomain):
		reason = "base_domain"
	case errors.Is(err, ErrRateLimited):
		reason = "rate_limited"
	}
	mt.refused.WithLabelValues(reason).Inc()
}

func (mt *metrics) track(names []string) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	for _, n := range names {
		mt.names[n] = true
	}
}

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	m.metrics.ops.Describe(ch)
	m.metrics.refused.Describe(ch)
	ch <- m.metrics.expiry
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.metrics.ops.Collect(ch)
	m.metrics.refused.Collect(ch)
	m.metrics.mu.Lock()
	names := make([]string, 0, len(m.metrics.names))
	for n := range m.metrics.names {
		names = append(names, n)
	}
	m.metrics.mu.Unlock()
	now := time.Now()
	for _, name := range names {
		if notAfter, ok := m.expiry(name); ok {
			ch <- prometheus.MustNewConstMetric(m.metrics.expiry, prometheus.GaugeValue, notAfter.Sub(now).Seconds(), name)
		}
	}
}

// expiry returns the latest NotAfter of the cached certificates that list
// name exactly.
func (m *Manager) expiry(name string) (time.Time, bool) {
	var latest time.Time
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && slices.Contains(c.Names, name) && c.Leaf.NotAfter.After(latest) {
			latest = c.Leaf.NotAfter
		}
	}
	return latest, !latest.IsZero()
}

// Expiry returns when the certificate cached for name (exactly, e.g.
// "*.stagesub.example") expires, and whether there is one.
func (m *Manager) Expiry(name string) (time.Time, bool) { return m.expiry(name) }

var _ prometheus.Collector = (*Manager)(nil)
