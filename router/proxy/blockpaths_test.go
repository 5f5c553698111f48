package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

// rawGet sends one raw HTTP/1.1 request line and headers to the router and
// returns the response and its body, so paths reach it unnormalized. method
// is the request's method, for reading the response.
func rawDo(tb testing.TB, tr *testRouter, method, raw string) (*http.Response, string) {
	tb.Helper()
	c, err := net.Dial("tcp", tr.srv.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestBlockPaths checks that /metrics, however spelled, is answered by the
// router with its 404 page and never proxied, on tenant hosts, custom
// domains and the admin host, while other paths (/healthz included) are.
func TestBlockPaths(t *testing.T) {
	g := echoUpstream(t, "g1")
	a := echoUpstream(t, "a1")
	f := newFleet().
		tenant("goteborg", registry.StatusActive, "vikarier.gso.se").instance("goteborg", "g1", g.Listener.Addr().String()).
		tenant("lund", registry.StatusSuspended).instance("lund", "l1", g.Listener.Addr().String()).
		admin("a1", a.Listener.Addr().String())
	const gb, admin = "goteborg.stagesub.test", "admin.stagesub.test"
	req := func(method, target, host string) string {
		return method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\n\r\n"
	}
	for _, tt := range []struct {
		name     string
		block    []string // Config.BlockPaths
		raw      string
		status   int
		upstream string // X-Upstream: "" = answered by the router
	}{
		{"Metrics", proxy.DefaultBlockPaths, req("GET", "/metrics", gb), 404, ""},
		{"MetricsQuery", proxy.DefaultBlockPaths, req("GET", "/metrics?name[]=x", gb), 404, ""},
		{"DoubleSlash", proxy.DefaultBlockPaths, req("GET", "//metrics", gb), 404, ""},
		{"DotSegment", proxy.DefaultBlockPaths, req("GET", "/./metrics", gb), 404, ""},
		{"DotDot", proxy.DefaultBlockPaths, req("GET", "/x/../metrics", gb), 404, ""},
		{"TrailingSlash", proxy.DefaultBlockPaths, req("GET", "/metrics/", gb), 404, ""},
		{"PercentEncoded", proxy.DefaultBlockPaths, req("GET", "/%6detrics", gb), 404, ""},
		{"EncodedSlash", proxy.DefaultBlockPaths, req("GET", "/%2Fmetrics", gb), 404, ""},
		{"AbsoluteForm", proxy.DefaultBlockPaths, req("GET", "http://"+gb+"/metrics", "x.example"), 404, ""},
		{"Head", proxy.DefaultBlockPaths, req("HEAD", "/metrics", gb), 404, ""},
		{"Post", proxy.DefaultBlockPaths, req("POST", "/metrics", gb), 404, ""},
		{"CustomDomain", proxy.DefaultBlockPaths, req("GET", "/metrics", "Vikarier.GSO.se"), 404, ""},
		{"AdminHost", proxy.DefaultBlockPaths, req("GET", "/metrics", admin), 404, ""},
		{"SuspendedTenant", proxy.DefaultBlockPaths, req("GET", "/metrics", "lund.stagesub.test"), 404, ""},
		{"Healthz", proxy.DefaultBlockPaths, req("GET", "/healthz", gb), 200, "g1"},
		{"AdminHealthz", proxy.DefaultBlockPaths, req("GET", "/healthz", admin), 200, "a1"},
		{"CaseDiffers", proxy.DefaultBlockPaths, req("GET", "/Metrics", gb), 200, "g1"},
		{"Below", proxy.DefaultBlockPaths, req("GET", "/metrics/x", gb), 200, "g1"},
		{"Longer", proxy.DefaultBlockPaths, req("GET", "/metricsx", gb), 200, "g1"},
		{"Disabled", nil, req("GET", "/metrics", gb), 200, "g1"},
		{"Configured", []string{"/debug/vars/"}, req("GET", "/debug//vars", gb), 404, ""},
		{"ConfiguredOnly", []string{"/debug/vars"}, req("GET", "/metrics", gb), 200, "g1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := newRouter(t, f.table(t, nil), func(c *proxy.Config) { c.BlockPaths = tt.block })
			method, _, _ := strings.Cut(tt.raw, " ")
			resp, body := rawDo(t, tr, method, tt.raw)
			if got, want := resp.StatusCode, tt.status; got != want {
				t.Errorf("status got %d want %d (%s)", got, want, body)
			}
			if got, want := resp.Header.Get("X-Upstream"), tt.upstream; got != want {
				t.Errorf("upstream got %q want %q", got, want)
			}
			if tt.upstream == "" && method != http.MethodHead && !strings.Contains(body, "Not found") {
				t.Errorf("body %q is not the router's 404 page", body)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/metrics", "/metrics"},
		{"//metrics", "/metrics"},
		{"/./metrics/", "/metrics"},
		{"/a/../metrics", "/metrics"},
		{"/../metrics", "/metrics"},
		{"metrics", "/metrics"},
		{"", "/"},
		{"/", "/"},
	} {
		if got := proxy.CleanPath(tt.in); got != tt.want {
			t.Errorf("CleanPath(%q) got %q want %q", tt.in, got, tt.want)
		}
	}
	if got := testing.AllocsPerRun(100, func() { proxy.CleanPath("/api/v1/projects") }); got != 0 {
		t.Errorf("CleanPath of a clean path: %v allocations, want 0", got)
	}
}
