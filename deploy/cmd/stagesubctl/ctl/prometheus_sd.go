package ctl

import (
	"context"

	"stagesub.dev/deploy/prometheus"
)

// runPrometheusSD serves Prometheus HTTP service discovery from Consul, for
// Prometheus builds without consul_sd_configs (see deploy/prometheus).
func runPrometheusSD(ctx context.Context, m *Main, args []string) error {
	return prometheus.RunSD(ctx, args, m.Config.Environ, m.Stdout, m.Stderr)
}
