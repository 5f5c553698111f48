package http_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"stagesub.dev/app"
)

// BenchmarkMusiciansList serves the first page (50 rows) of the musicians
// list of a tenant with 500 musicians, over loopback HTTP with parallel
// clients, as HTML for a logged-in staff member and as JSON for an API
// token. It reports requests per second.
func BenchmarkMusiciansList(b *testing.B) {
	e := MustEnv(b)
	ctx := e.AdminCtx()
	for i := 0; i < 500; i++ {
		if _, err := e.DB.CreateMusician(ctx, app.MusicianInput{Name: fmt.Sprintf("Musician %03d", i),
			Instrument: []string{"violin", "viola", "cello", "flute", "horn"}[i%5], Email: fmt.Sprintf("m%d@example.org", i)}); err != nil {
			b.Fatal(err)
		}
	}
	br := e.Browser()
	br.Login(adminEmail, adminPass)
	token := e.MustToken(e.Admin)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Jar: br.c.Jar, Timeout: 10 * time.Second}

	run := func(b *testing.B, path, auth string) {
		b.SetParallelism(4)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("GET", e.Srv.URL+path, nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				res, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					b.Errorf("status %d", res.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	}
	b.Run("HTML", func(b *testing.B) { run(b, "/musicians", "") })
	b.Run("API", func(b *testing.B) { run(b, "/api/v1/musicians?limit=50", "Bearer "+token) })
	b.Run("Search", func(b *testing.B) { run(b, "/musicians?q=cello", "") })
}
