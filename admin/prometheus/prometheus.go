// Package prometheus exposes the admin's fleet statistics as Prometheus
// metrics: per-tenant gauges read from the latest cached report at scrape
// time (so a deleted tenant's series disappear with its row), cumulative
// failures per tenant, and a histogram of fan-out durations.
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"stagesub.dev/admin"
)

// Metrics is a prometheus.Collector over a report source. Register it with
// Register; feed Observe every published report (admin.CacheOptions.OnReport).
// It is safe for concurrent use.
type Metrics struct {
	report func() *admin.Report
	now    func() time.Time
	fanout prometheus.Histogram
	// refreshed counts tenants per refresh outcome: "queried" (the
	// database was read) or "unchanged" (kept: write counters did not move).
	refreshed        *prometheus.CounterVec
	activityFailures prometheus.Counter
	// stateSaves counts saves of the report to the state file by result.
	stateSaves *prometheus.CounterVec

	musicians, projects, openRequests, up, lastActivity, dbSize *prometheus.Desc
	passing, instances, failures, age, tenants                  *prometheus.Desc
	lastRefresh                                                 *prometheus.Desc
}

var _ prometheus.Collector = (*Metrics)(nil)

// New returns Metrics reading the latest report from report (e.g.
// (*admin.Cache).Report), which must never return nil.
func New(report func() *admin.Report) *Metrics {
	tenant := []string{"tenant"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("stagesub_admin_"+name, help, labels, nil)
	}
	return &Metrics{
		report: report,
		now:    time.Now,
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stagesub_admin_fanout_duration_seconds",
			Help:    "Duration of one full stats refresh over every tenant database.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32},
		}),
		refreshed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_admin_refresh_tenants_total",
			Help: "Tenants handled by stats refreshes: result=queried (database read) or unchanged (kept, write counters did not move).",
		}, []string{"result"}),
		activityFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stagesub_admin_activity_failures_total",
			Help: "Servers whose pg_stat_database could not be read in a refresh (every tenant on them was queried).",
		}),
		stateSaves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stagesub_admin_state_saves_total",
			Help: "Saves of the published report to the state file (STAGESUB_ADMIN_STATE_FILE): result=ok or error.",
		}, []string{"result"}),
		lastRefresh:  d("last_refresh_tenants", "Tenants in the latest report by result: queried or unchanged.", []string{"result"}),
		musicians:    d("tenant_musicians", "Musicians in the tenant's database (last successful read).", tenant),
		projects:     d("tenant_projects", "Projects in the tenant's database (last successful read).", tenant),
		openRequests: d("tenant_open_requests", "Open substitute requests in the tenant's database (last successful read).", tenant),
		up:           d("tenant_up", "1 if the tenant's database answered the last refresh, else 0.", tenant),
		lastActivity: d("tenant_last_activity_timestamp_seconds", "Unix time of the tenant's last activity.", tenant),
		dbSize:       d("tenant_database_size_bytes", "Size of the tenant's database (pg_database_size).", tenant),
		passing:      d("tenant_instances_passing", "App instances of the tenant passing their Consul checks.", tenant),
		instances:    d("tenant_instances", "App instances of the tenant registered in Consul.", tenant),
		failures:     d("tenant_stats_failures_total", "Failed or timed-out stats reads of the tenant's database.", tenant),
		age:          d("report_age_seconds", "Age of the cached stats report (0 before the first).", nil),
		tenants:      d("tenants", "Tenant records in the cached report.", nil),
	}
}

// Register registers m, its histogram and its counters with reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.fanout, m.refreshed, m.activityFailures, m.stateSaves} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return reg.Register(m)
}

// Observe records a published report's fan-out duration and how many
// tenants it queried or kept unchanged.
func (m *Metrics) Observe(r *admin.Report) {
	m.fanout.Observe(r.Duration.Seconds())
	m.refreshed.WithLabelValues("queried").Add(float64(r.Queried))
	m.refreshed.WithLabelValues("unchanged").Add(float64(r.Unchanged))
	m.activityFailures.Add(float64(r.ActivityFailures))
}

// ObserveStateSave records the result of one save of the report to the
// state file (admin.CacheOptions.OnStateSave): a failed save is counted with
// result="error" and never fails the refresh.
func (m *Metrics) ObserveStateSave(err error) {
	if err != nil {
		m.stateSaves.WithLabelValues("error").Inc()
		return
	}
	m.stateSaves.WithLabelValues("ok").Inc()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.musicians, m.projects, m.openRequests, m.up, m.lastActivity,
		m.dbSize, m.passing, m.instances, m.failures, m.age, m.tenants, m.lastRefresh} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	r := m.report()
	g := prometheus.GaugeValue
	ch <- prometheus.MustNewConstMetric(m.age, g, r.Age(m.now()).Seconds())
	ch <- prometheus.MustNewConstMetric(m.tenants, g, float64(len(r.Tenants)))
	ch <- prometheus.MustNewConstMetric(m.lastRefresh, g, float64(r.Queried), "queried")
	ch <- prometheus.MustNewConstMetric(m.lastRefresh, g, float64(r.Unchanged), "unchanged")
	for i := range r.Tenants {
		t := &r.Tenants[i]
		up := 0.0
		if t.Reachable {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(m.up, g, up, t.Slug)
		ch <- prometheus.MustNewConstMetric(m.failures, prometheus.CounterValue, float64(t.Failures), t.Slug)
		ch <- prometheus.MustNewConstMetric(m.passing, g, float64(t.InstancesPassing), t.Slug)
		ch <- prometheus.MustNewConstMetric(m.instances, g, float64(t.InstancesTotal), t.Slug)
		if t.StatsAt == nil {
			continue // never read: no numbers to report
		}
		ch <- prometheus.MustNewConstMetric(m.musicians, g, float64(t.Musicians), t.Slug)
		ch <- prometheus.MustNewConstMetric(m.projects, g, float64(t.Projects), t.Slug)
		ch <- prometheus.MustNewConstMetric(m.openRequests, g, float64(t.OpenRequests), t.Slug)
		ch <- prometheus.MustNewConstMetric(m.dbSize, g, float64(t.DatabaseBytes), t.Slug)
		if t.LastActivity != nil {
			ch <- prometheus.MustNewConstMetric(m.lastActivity, g, float64(t.LastActivity.UnixMilli())/1e3, t.Slug)
		}
	}
}
