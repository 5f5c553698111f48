package prometheus_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"stagesub.dev/admin"
	"stagesub.dev/admin/prometheus"
)

func TestMetrics(t *testing.T) {
	now := time.Now()
	last := time.Unix(1700000000, 0)
	rows := []admin.TenantStats{
		{Slug: "aa", Musicians: 10, Projects: 2, OpenRequests: 3, DatabaseBytes: 4096, LastActivity: &last,
			Reachable: true, StatsAt: &now, InstancesPassing: 1, InstancesTotal: 2},
		{Slug: "bb", Reachable: false, Failures: 4}, // never read: no numbers
	}
	rep := &admin.Report{Generation: 1, FinishedAt: now, Duration: 1500 * time.Millisecond, Tenants: rows, Totals: admin.Sum(rows),
		Queried: 1, Unchanged: 1, ActivityFailures: 1}
	m := prometheus.New(func() *admin.Report { return rep })
	reg := prom.NewPedanticRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	m.Observe(rep)
	m.Observe(rep)
	m.ObserveStateSave(nil)
	m.ObserveStateSave(errors.New("read-only file system"))
	m.ObserveStateSave(nil)
	want := `
# HELP stagesub_admin_state_saves_total Saves of the published report to the state file (STAGESUB_ADMIN_STATE_FILE): result=ok or error.
# TYPE stagesub_admin_state_saves_total counter
stagesub_admin_state_saves_total{result="error"} 1
stagesub_admin_state_saves_total{result="ok"} 2
# HELP stagesub_admin_activity_failures_total Servers whose pg_stat_database could not be read in a refresh (every tenant on them was queried).
# TYPE stagesub_admin_activity_failures_total counter
stagesub_admin_activity_failures_total 2
# HELP stagesub_admin_last_refresh_tenants Tenants in the latest report by result: queried or unchanged.
# TYPE stagesub_admin_last_refresh_tenants gauge
stagesub_admin_last_refresh_tenants{result="queried"} 1
stagesub_admin_last_refresh_tenants{result="unchanged"} 1
# HELP stagesub_admin_refresh_tenants_total Tenants handled by stats refreshes: result=queried (database read) or unchanged (kept, write counters did not move).
# TYPE stagesub_admin_refresh_tenants_total counter
stagesub_admin_refresh_tenants_total{result="queried"} 2
stagesub_admin_refresh_tenants_total{result="unchanged"} 2
# HELP stagesub_admin_fanout_duration_seconds Duration of one full stats refresh over every tenant database.
# TYPE stagesub_admin_fanout_duration_seconds histogram
stagesub_admin_fanout_duration_seconds_bucket{le="0.05"} 0
stagesub_admin_fanout_duration_seconds_bucket{le="0.1"} 0
stagesub_admin_fanout_duration_seconds_bucket{le="0.25"} 0
stagesub_admin_fanout_duration_seconds_bucket{le="0.5"} 0
stagesub_admin_fanout_duration_seconds_bucket{le="1"} 0
stagesub_admin_fanout_duration_seconds_bucket{le="2"} 2
stagesub_admin_fanout_duration_seconds_bucket{le="4"} 2
stagesub_admin_fanout_duration_seconds_bucket{le="8"} 2
stagesub_admin_fanout_duration_seconds_bucket{le="16"} 2
stagesub_admin_fanout_duration_seconds_bucket{le="32"} 2
stagesub_admin_fanout_duration_seconds_bucket{le="+Inf"} 2
stagesub_admin_fanout_duration_seconds_sum 3
stagesub_admin_fanout_duration_seconds_count 2
# HELP stagesub_admin_tenant_database_size_bytes Size of the tenant's database (pg_database_size).
# TYPE stagesub_admin_tenant_database_size_bytes gauge
stagesub_admin_tenant_database_size_bytes{tenant="aa"} 4096
# HELP stagesub_admin_tenant_instances App instances of the tenant registered in Consul.
# TYPE stagesub_admin_tenant_instances gauge
stagesub_admin_tenant_instances{tenant="aa"} 2
stagesub_admin_tenant_instances{tenant="bb"} 0
# HELP stagesub_admin_tenant_instances_passing App instances of the tenant passing their Consul checks.
# TYPE stagesub_admin_tenant_instances_passing gauge
stagesub_admin_tenant_instances_passing{tenant="aa"} 1
stagesub_admin_tenant_instances_passing{tenant="bb"} 0
# HELP stagesub_admin_tenant_last_activity_timestamp_seconds Unix time of the tenant's last activity.
# TYPE stagesub_admin_tenant_last_activity_timestamp_seconds gauge
stagesub_admin_tenant_last_activity_timestamp_seconds{tenant="aa"} 1.7e+09
# HELP stagesub_admin_tenant_musicians Musicians in the tenant's database (last successful read).
# TYPE stagesub_admin_tenant_musicians gauge
stagesub_admin_tenant_musicians{tenant="aa"} 10
# HELP stagesub_admin_tenant_open_requests Open substitute requests in the tenant's database (last successful read).
# TYPE stagesub_admin_tenant_open_requests gauge
stagesub_admin_tenant_open_requests{tenant="aa"} 3
# HELP stagesub_admin_tenant_projects Projects in the tenant's database (last successful read).
# TYPE stagesub_admin_tenant_projects gauge
stagesub_admin_tenant_projects{tenant="aa"} 2
# HELP stagesub_admin_tenant_stats_failures_total Failed or timed-out stats reads of the tenant's database.
# TYPE stagesub_admin_tenant_stats_failures_total counter
stagesub_admin_tenant_stats_failures_total{tenant="aa"} 0
stagesub_admin_tenant_stats_failures_total{tenant="bb"} 4
# HELP stagesub_admin_tenant_up 1 if the tenant's database answered the last refresh, else 0.
# TYPE stagesub_admin_tenant_up gauge
stagesub_admin_tenant_up{tenant="aa"} 1
stagesub_admin_tenant_up{tenant="bb"} 0
# HELP stagesub_admin_tenants Tenant records in the cached report.
# TYPE stagesub_admin_tenants gauge
stagesub_admin_tenants 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"stagesub_admin_fanout_duration_seconds", "stagesub_admin_tenant_database_size_bytes",
		"stagesub_admin_activity_failures_total", "stagesub_admin_last_refresh_tenants", "stagesub_admin_refresh_tenants_total",
		"stagesub_admin_tenant_instances", "stagesub_admin_tenant_instances_passing",
		"stagesub_admin_tenant_last_activity_timestamp_seconds", "stagesub_admin_tenant_musicians",
		"stagesub_admin_tenant_open_requests", "stagesub_admin_tenant_projects",
		"stagesub_admin_tenant_stats_failures_total", "stagesub_admin_tenant_up", "stagesub_admin_tenants",
		"stagesub_admin_state_saves_total"); err != nil {
		t.Error(err)
	}
	// A tenant gone from the report is gone from the metrics.
	rep = &admin.Report{Generation: 2, FinishedAt: now, Tenants: rows[:1]}
	if got, want := testutil.CollectAndCount(m, "stagesub_admin_tenant_up"), 1; got != want {
		t.Errorf("tenant_up series = %d, want %d", got, want)
	}
}
