package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

func TestPages(t *testing.T) {
	up := echoUpstream(t, "g1")
	f := newFleet().
		tenant("goteborg", registry.StatusActive, "vikarier.gso.se").instance("goteborg", "g1", up.Listener.Addr().String()).
		tenant("lund", registry.StatusSuspended).instance("lund", "l1", up.Listener.Addr().String()).
		tenant("umea", registry.StatusMaintenance).instance("umea", "u1", up.Listener.Addr().String()).
		tenant("visby", registry.StatusProvisioning).
		tenant("kalmar", registry.StatusDeleting).
		tenant("kiruna", registry.StatusActive)
	tr := newRouter(t, f.table(t, nil), nil)
	for _, tt := range []struct {
		host       string
		status     int
		retryAfter string
		contains   string
	}{
		{"goteborg.stagesub.test", 200, "", "g1:GET:/x"},
		{"Vikarier.GSO.se.:8080", 200, "", "g1:GET:/x"},
		{"nobody.stagesub.test", 404, "", "No orchestra here"},
		{"example.org", 404, "", "No orchestra here"},
		{"lund.stagesub.test", 403, "", "suspended"},
		{"umea.stagesub.test", 503, "60", "maintenance"},
		{"visby.stagesub.test", 503, "60", "being set up"},
		{"kalmar.stagesub.test", 410, "", "being closed"},
		{"kiruna.stagesub.test", 503, "5", "restarting"},
		{"admin.stagesub.test", 503, "5", "restarting"},
		{"stagesub.test", 200, "", "Substitute musicians"},
		{"www.stagesub.test", 200, "", "Substitute musicians"},
	} {
		resp, body := tr.do(t, "GET", tt.host, "/x", nil, nil)
		if got, want := resp.StatusCode, tt.status; got != want {
			t.Errorf("%s: status got %d want %d", tt.host, got, want)
		}
		if got, want := resp.Header.Get("Retry-After"), tt.retryAfter; got != want {
			t.Errorf("%s: Retry-After got %q want %q", tt.host, got, want)
		}
		if !strings.Contains(body, tt.contains) {
			t.Errorf("%s: body %q does not contain %q", tt.host, body, tt.contains)
		}
		if resp.Header.Get(proxy.HeaderRequestID) == "" {
			t.Errorf("%s: no X-Request-Id", tt.host)
		}
	}
	if got, want := testutil.ToFloat64(tr.metrics.Requests.WithLabelValues("_unknown", "4xx", "GET")), 2.0; got != want {
		t.Errorf("unknown requests metric got %v want %v", got, want)
	}
	if got, want := testutil.ToFloat64(tr.metrics.Requests.WithLabelValues("goteborg", "2xx", "GET")), 2.0; got != want {
		t.Errorf("goteborg requests metric got %v want %v", got, want)
	}
}

func TestApexRedirect(t *testing.T) {
	tr := newRouter(t, newFleet().table(t, nil), func(c *proxy.Config) { c.ApexRedirect = "https://www.stagesub.com/" })
	tr.srv.Client().CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ := tr.do(t, "GET", "stagesub.test", "/", nil, nil)
	if got, want := resp.StatusCode, http.StatusFound; got != want {
		t.Errorf("status got %d want %d", got, want)
	}
	if got, want := resp.Header.Get("Location"), "https://www.stagesub.com/"; got != want {
		t.Errorf("location got %q want %q", got, want)
	}
}

func TestHeaders(t *testing.T) {
	for _, p := range proxyPaths {
		t.Run(p.name, func(t *testing.T) { testHeaders(t, p) })
	}
}

func testHeaders(t *testing.T, p proxyPath) {
	up := echoUpstream(t, "g1")
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.Listener.Addr().String())
	spoofed := http.Header{
		"X-Stagesub-Tenant": {"malmo"},
		"X-Stagesub-Admin":  {"yes"},
		"X-Forwarded-For":   {"6.6.6.6"},
		"X-Forwarded-Proto": {"https"},
		"X-Forwarded-Host":  {"evil.example"},
		"X-Request-Id":      {"spoofed-id"},
		"Connection":        {"X-Custom-Hop"},
		"X-Custom-Hop":      {"1"},
	}

	t.Run("Untrusted", func(t *testing.T) {
		tr := newRouter(t, f.table(t, nil), p.mod) // trusts 10/8 only
		resp, _ := tr.do(t, "GET", "goteborg.stagesub.test", "/", nil, spoofed)
		for _, tt := range []struct{ hdr, want string }{
			{"X-Got-Tenant", "goteborg"},
			{"X-Got-XFF", "127.0.0.1"},
			{"X-Got-Proto", "http"},
			{"X-Got-Fwd-Host", "goteborg.stagesub.test"},
			{"X-Got-Spoof", ""},
			{"X-Got-Host", "goteborg.stagesub.test"},
		} {
			if got := resp.Header.Get(tt.hdr); got != tt.want {
				t.Errorf("%s got %q want %q", tt.hdr, got, tt.want)
			}
		}
		id := resp.Header.Get("X-Got-Request-Id")
		if id == "spoofed-id" || len(id) != 32 {
			t.Errorf("request id got %q, want a generated one", id)
		}
		if got := resp.Header.Get(proxy.HeaderRequestID); got != id {
			t.Errorf("client request id got %q want %q", got, id)
		}
	})
	t.Run("Trusted", func(t *testing.T) {
		tr := newRouter(t, f.table(t, nil), p.with(func(c *proxy.Config) { c.TrustedProxies = append(c.TrustedProxies, mustPrefix("127.0.0.0/8")) }))
		resp, _ := tr.do(t, "GET", "goteborg.stagesub.test", "/", nil, spoofed)
		for _, tt := range []struct{ hdr, want string }{
			{"X-Got-Tenant", "goteborg"}, // never trusted
			{"X-Got-XFF", "6.6.6.6, 127.0.0.1"},
			{"X-Got-Proto", "https"},
			{"X-Got-Fwd-Host", "evil.example"},
			{"X-Got-Request-Id", "spoofed-id"},
			{"X-Got-Spoof", ""},
		} {
			if got := resp.Header.Get(tt.hdr); got != tt.want {
				t.Errorf("%s got %q want %q", tt.hdr, got, tt.want)
			}
		}
	})
}

// TestAbsoluteURI sends raw request lines: the absolute URI's authority wins
// over a disagreeing Host header, the upstream sees that one host only, and
// two Host headers are refused.
func TestAbsoluteURI(t *testing.T) {
	for _, p := range proxyPaths {
		t.Run(p.name, func(t *testing.T) { testAbsoluteURI(t, p) })
	}
}

func testAbsoluteURI(t *testing.T, p proxyPath) {
	g := echoUpstream(t, "g1")
	m := echoUpstream(t, "m1")
	f := newFleet().
		tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", g.Listener.Addr().String()).
		tenant("malmo", registry.StatusActive).instance("malmo", "m1", m.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), p.mod)
	for _, tt := range []struct {
		name, raw  string
		status     int
		upstream   string
		upstreamIn string
	}{
		{"AbsoluteWins", "GET http://goteborg.stagesub.test/p?q=1 HTTP/1.1\r\nHost: malmo.stagesub.test\r\n\r\n", 200, "g1", "g1:GET:/p?q=1:"},
		{"AbsoluteUnknown", "GET http://evil.example/ HTTP/1.1\r\nHost: malmo.stagesub.test\r\n\r\n", 404, "", ""},
		{"AbsoluteNoHostHeader", "GET http://malmo.stagesub.test/ HTTP/1.1\r\nHost: \r\n\r\n", 200, "m1", "m1:GET:/:"},
		{"TwoHosts", "GET / HTTP/1.1\r\nHost: goteborg.stagesub.test\r\nHost: malmo.stagesub.test\r\n\r\n", 400, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tr.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, tt.raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if got, want := resp.StatusCode, tt.status; got != want {
				t.Fatalf("status got %d want %d (%s)", got, want, body)
			}
			if got, want := resp.Header.Get("X-Upstream"), tt.upstream; got != want {
				t.Errorf("upstream got %q want %q", got, want)
			}
			if tt.upstreamIn != "" {
				if got, want := string(body), tt.upstreamIn; got != want {
					t.Errorf("body got %q want %q", got, want)
				}
				wantHost := map[string]string{"g1": "goteborg.stagesub.test", "m1": "malmo.stagesub.test"}[tt.upstream]
				if got := resp.Header.Get("X-Got-Host"); got != wantHost {
					t.Errorf("upstream Host got %q want %q", got, wantHost)
				}
			}
		})
	}
}
