package proxy_test

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

// BenchmarkProxy measures a GET through the handler (access log on, to
// io.Discard) to a loopback upstream, over loopback keep-alive connections.
func BenchmarkProxy(b *testing.B) {
	b.Run("accesslog", func(b *testing.B) { benchProxy(b, slog.New(slog.NewJSONHandler(io.Discard, nil))) })
	b.Run("nolog", func(b *testing.B) { benchProxy(b, nil) })
}

func benchProxy(b *testing.B, accessLog *slog.Logger) {
	up := echoUpstream(b, "g1")
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.Listener.Addr().String())
	tr := newRouter(b, f.table(b, nil), func(c *proxy.Config) { c.AccessLog = accessLog })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", tr.srv.URL+"/", nil)
			req.Host = "goteborg.stagesub.test"
			resp, err := client.Do(req)
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
