// Package grafana holds StageSub's Grafana dashboard (stagesub-dashboard.json:
// request rate, 5xx ratio and latency per tenant from the routers, app
// instances up per tenant, the admin's per-tenant stats, registry snapshot
// age and certificate time left), embedded for provisioning tools.
//
// Every panel queries metrics that StageSub processes export, with the
// `tenant` label that Prometheus takes from Consul Meta.tenant; the tests
// check each query with promtool.
package grafana

import _ "embed"

// Dashboard is the dashboard JSON, for Grafana's dashboard provisioning or
// its HTTP API (POST /api/dashboards/db with {"dashboard": ...}).
//
//go:embed stagesub-dashboard.json
var Dashboard []byte
