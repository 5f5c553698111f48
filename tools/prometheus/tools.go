//go:build tools

// Package tools pins upstream Prometheus (github.com/prometheus/prometheus
// v0.316.0 = Prometheus 3.x, built with consul_sd_configs) so that
// scripts/build-prometheus can build prometheus and promtool from the Go
// module cache. This module is deliberately not part of go.work.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
