package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

// BenchmarkConvergence measures, with 1,000 tenants registered (records and
// one passing instance each), the time from registering a second instance
// of a tenant in Consul to the router's table routing to it: the blocking
// query, the health check's first probe, the snapshot and the table build.
// The clock starts when the registration call returns (Consul has the
// instance, critical until its first probe). Reports p50-ms and p99-ms (goal: p99 < 100 ms), and the router's own
// share: from the watcher assembling the snapshot to the table being seen.
func BenchmarkConvergence(b *testing.B) {
	f := startFleet(b)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	b.Cleanup(up.Close)
	host, p, _ := net.SplitHostPort(up.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	reg := func(slug, id string) func(context.Context) error {
		_, dereg, err := consul.Register(context.Background(), f.client, registry.Registration{
			Service: registry.ServiceApp, ID: id, Tenant: slug, Address: host, Port: port,
			CheckInterval: time.Minute, CheckTimeout: time.Second, DeregisterAfter: time.Hour,
		})
		if err != nil {
			b.Fatal(err)
		}
		return dereg
	}
	const tenants = 1000
	for i := range tenants {
		slug := fmt.Sprintf("orch%04d", i)
		f.tenant(b, slug, registry.StatusActive)
		reg(slug, slug+"-1")
	}
	m := startRouter(b, f, "STAGESUB_TLS_MODE=off", "STAGESUB_ACCESS_LOG=false")
	waitFor(b, 30*time.Second, "1,000 tenants routed", func() bool {
		return m.Tables().Load().States()["active"] == tenants
	})
	backends := func(host string) int { return len(m.Tables().Load().Lookup(host).Backends) }
	wait := func(host string, n int) {
		deadline := time.After(10 * time.Second)
		for {
			ch := m.Tables().Changed()
			if backends(host) == n {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				b.Fatalf("%s never had %d backends", host, n)
			}
		}
	}
	q := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	// The cost of one full answer of the app health query the watcher
	// re-runs after every change (context for the "instance" numbers).
	b.Run("health-query", func(b *testing.B) {
		var ds []time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			var out []json.RawMessage
			if _, err := f.client.Raw().Query("/v1/health/service/"+registry.ServiceApp, &out, nil); err != nil || len(out) != tenants {
				b.Fatalf("health query: %d entries, %v", len(out), err)
			}
			ds = append(ds, time.Since(start))
		}
		b.ReportMetric(q(ds, 0.5), "p50-ms")
	})
	b.Run("instance", func(b *testing.B) {
		var ds, pub []time.Duration
		for i := 0; i < b.N; i++ {
			slug := fmt.Sprintf("orch%04d", i%tenants)
			h := slug + ".stagesub.test"
			dereg := reg(slug, slug+"-2") // returns once Consul has the instance
			start := time.Now()
			wait(h, 2)
			ds = append(ds, time.Since(start))
			pub = append(pub, time.Since(m.Tables().Load().BuiltAt))
			b.StopTimer()
			if err := dereg(context.Background()); err != nil {
				b.Fatal(err)
			}
			wait(h, 1)
			b.StartTimer()
		}
		b.ReportMetric(q(ds, 0.5), "p50-ms")
		b.ReportMetric(q(ds, 0.99), "p99-ms")
		b.ReportMetric(q(pub, 0.99), "snapshot-to-table-p99-ms")
	})
	b.Run("status", func(b *testing.B) {
		var ds []time.Duration
		for i := 0; i < b.N; i++ {
			slug := fmt.Sprintf("orch%04d", i%tenants)
			h := slug + ".stagesub.test"
			for _, st := range []registry.Status{registry.StatusMaintenance, registry.StatusActive} {
				f.setStatus(b, slug, st) // returns once Consul has the record
				start := time.Now()
				for deadline := time.Now().Add(10 * time.Second); ; {
					ch := m.Tables().Changed()
					if m.Tables().Load().Lookup(h).Status == st {
						break
					}
					select {
					case <-ch:
					case <-time.After(time.Until(deadline)):
						b.Fatalf("%s never became %s", slug, st)
					}
				}
				ds = append(ds, time.Since(start))
			}
		}
		b.ReportMetric(q(ds, 0.5), "p50-ms")
		b.ReportMetric(q(ds, 0.99), "p99-ms")
	})
}

// BenchmarkThroughput measures GETs through the whole router (Main
// in-process, TLS off, access log on through its buffer to io.Discard) to an
// upstream process, over 64 keep-alive client connections, like
// scripts/bench-router. The client's goroutines carry the pprof label
// side=client, so a CPU profile shows the router alone with
// `go tool pprof -tagignore side=client`.
func BenchmarkThroughput(b *testing.B) {
	f := startFleet(b)
	up := startUpstream(b, "bench")
	f.tenant(b, "goteborg", registry.StatusActive)
	f.register(b, "goteborg", up.Addr)
	m := startRouter(b, f, "STAGESUB_TLS_MODE=off")
	c := client(b, m, false)
	waitFor(b, 10*time.Second, "goteborg routed", func() bool {
		return len(m.Tables().Load().Lookup("goteborg."+base).Backends) == 1
	})
	b.ReportAllocs()
	b.SetParallelism(32) // 64 connections on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", "client")))
		for pb.Next() {
			resp, err := c.Get("http://goteborg." + base + "/")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
