package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports the statistics of a pgx pool as
// stagesub_db_pool_* metrics.
type PoolCollector struct {
	pool *pgxpool.Pool

	acquired, idle, total, max, constructing *prometheus.Desc
	acquires, emptyAcquires, canceled        *prometheus.Desc
	acquireSeconds, newConns, idleDestroys   *prometheus.Desc
	lifetimeDestroys                         *prometheus.Desc
}

// NewPoolCollector returns a collector of pool's statistics.
func NewPoolCollector(pool *pgxpool.Pool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("stagesub_db_pool_"+name, help, nil, nil)
	}
	return &PoolCollector{
		pool:             pool,
		acquired:         d("acquired_conns", "Connections currently in use."),
		idle:             d("idle_conns", "Idle connections in the pool."),
		total:            d("total_conns", "All connections in the pool (acquired, idle, constructing)."),
		max:              d("max_conns", "Maximum size of the pool."),
		constructing:     d("constructing_conns", "Connections being established."),
		acquires:         d("acquires_total", "Successful acquires from the pool."),
		emptyAcquires:    d("empty_acquires_total", "Acquires that had to wait for a connection."),
		canceled:         d("canceled_acquires_total", "Acquires canceled by their context."),
		acquireSeconds:   d("acquire_seconds_total", "Total time spent acquiring connections."),
		newConns:         d("new_conns_total", "Connections opened."),
		idleDestroys:     d("idle_destroys_total", "Connections closed for idling too long."),
		lifetimeDestroys: d("lifetime_destroys_total", "Connections closed for reaching their maximum lifetime."),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.constructing, c.acquires,
		c.emptyAcquires, c.canceled, c.acquireSeconds, c.newConns, c.idleDestroys, c.lifetimeDestroys} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	n := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.acquired, float64(s.AcquiredConns()))
	g(c.idle, float64(s.IdleConns()))
	g(c.total, float64(s.TotalConns()))
	g(c.max, float64(s.MaxConns()))
	g(c.constructing, float64(s.ConstructingConns()))
	n(c.acquires, float64(s.AcquireCount()))
	n(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	n(c.canceled, float64(s.CanceledAcquireCount()))
	n(c.acquireSeconds, s.AcquireDuration().Seconds())
	n(c.newConns, float64(s.NewConnsCount()))
	n(c.idleDestroys, float64(s.MaxIdleDestroyCount()))
	n(c.lifetimeDestroys, float64(s.MaxLifetimeDestroyCount()))
}
