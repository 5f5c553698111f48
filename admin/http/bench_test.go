package http_test

import (
	"fmt"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"stagesub.dev/admin"
	"stagesub.dev/registry"
)

// fleetReport returns a report of n tenants, a few of them flagged.
func fleetReport(n int) *admin.Report {
	now := time.Now()
	rows := make([]admin.TenantStats, n)
	for i := range rows {
		last := now.Add(-time.Duration(i) * time.Minute)
		rows[i] = admin.TenantStats{
			Slug: fmt.Sprintf("orchestra-%04d", i), Name: fmt.Sprintf("Symphony Orchestra %d", i), Status: registry.StatusActive,
			PanelURL: fmt.Sprintf("https://orchestra-%04d.stagesub.com/", i), Musicians: int64(50 + i%200), Projects: int64(i % 30),
			OpenRequests: int64(i % 17), LastActivity: &last, SchemaVersion: 1, DatabaseBytes: int64(8<<20 + i*4096),
			InstancesPassing: 2, InstancesTotal: 2, Reachable: i%97 != 0, StatsAt: &now,
		}
		if !rows[i].Reachable {
			rows[i].Error = "connection refused"
		}
	}
	return &admin.Report{Generation: 1, StartedAt: now.Add(-time.Second), FinishedAt: now, Duration: time.Second,
		Tenants: rows, Totals: admin.Sum(rows)}
}

// BenchmarkDashboard measures the dashboard page and the JSON API over
// loopback HTTP from the cache with 1,000 tenants, and reports the p50 and
// p99 latency of single requests (the goal: p99 under 20 ms).
func BenchmarkDashboard(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"page", "/"},
		{"page_sorted_filtered", "/?sort=musicians&order=desc&q=orchestra-0"},
		{"api", "/api/v1/stats"},
	} {
		b.Run(bc.name+"/tenants=1000", func(b *testing.B) {
			e := MustHandler(b, nil)
			rep := fleetReport(1000)
			e.stats.report.Store(rep)
			e.h.Warm(rep) // as cmd/stagesub-admin does for every published report
			srv := httptest.NewServer(e.h)
			defer srv.Close()
			c := e.client(b)
			c.login(b)
			var cookies []string
			for _, ck := range c.cookies {
				cookies = append(cookies, ck.Name+"="+ck.Value)
			}
			req, _ := nethttp.NewRequest("GET", srv.URL+bc.path, nil)
			req.Header.Set("Cookie", strings.Join(cookies, "; "))
			client := srv.Client()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				lat = append(lat, time.Since(t0))
				if res.StatusCode != 200 {
					b.Fatalf("status %d", res.StatusCode)
				}
				b.SetBytes(n)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1e3, "p99_ms")
		})
	}
}
