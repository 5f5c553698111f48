package proxy_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router/metrics"
	"stagesub.dev/router/proxy"
	"stagesub.dev/router/route"
)

const base = "stagesub.test"

// fleet builds snapshots by hand.
type fleet struct{ s *registry.Snapshot }

func newFleet() *fleet {
	return &fleet{s: &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}}
}

func (f *fleet) tenant(slug string, st registry.Status, domains ...string) *fleet {
	f.s.Tenants[slug] = &registry.Tenant{Slug: slug, Name: slug, Status: st, Domains: domains}
	return f
}

// instance adds a passing instance of slug listening at the URL of srv.
func (f *fleet) instance(slug, id string, addr string) *fleet {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	f.s.Instances[slug] = append(f.s.Instances[slug], registry.Instance{ID: id, Service: registry.ServiceApp, Tenant: slug, Address: host, Port: p, Health: registry.HealthPassing})
	return f
}

// admin adds a passing admin instance listening at addr.
func (f *fleet) admin(id, addr string) *fleet {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	f.s.Admins = append(f.s.Admins, registry.Instance{ID: id, Service: registry.ServiceAdmin, Address: host, Port: p, Health: registry.HealthPassing})
	return f
}

func (f *fleet) table(tb testing.TB, prev *route.Table) *route.Table {
	tb.Helper()
	f.s.Generation++
	t, err := route.Build(f.s, route.Options{Base: base, Prev: prev})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// echoUpstream answers with its name and the request's routing headers.
func echoUpstream(tb testing.TB, name string) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Got-Tenant", r.Header.Get(proxy.HeaderTenant))
		w.Header().Set("X-Got-XFF", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Got-Request-Id", r.Header.Get(proxy.HeaderRequestID))
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Proto", r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("X-Got-Fwd-Host", r.Header.Get("X-Forwarded-Host"))
		var spoof []string
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-stagesub-") && k != "X-Stagesub-Tenant" {
				spoof = append(spoof, k)
			}
		}
		w.Header().Set("X-Got-Spoof", strings.Join(spoof, ","))
		_, _ = io.WriteString(w, name+":"+r.Method+":"+r.URL.RequestURI()+":"+string(body))
	}))
	tb.Cleanup(srv.Close)
	return srv
}

type testRouter struct {
	h       *proxy.Handler
	tables  *route.Holder
	metrics *metrics.Metrics
	srv     *httptest.Server
}

// newRouter serves a proxy.Handler for table on a loopback httptest server.
func newRouter(tb testing.TB, table *route.Table, mod func(*proxy.Config)) *testRouter {
	tb.Helper()
	tr := &testRouter{tables: route.NewHolder(table)}
	tr.metrics = metrics.New(func() time.Duration { return 0 })
	c := proxy.Config{
		Tables:         tr.tables,
		Metrics:        tr.metrics,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		NoInstanceWait: -1,
	}
	if mod != nil {
		mod(&c)
	}
	tr.h = proxy.New(c)
	tr.srv = httptest.NewServer(tr.h)
	tb.Cleanup(tr.srv.Close)
	return tr
}

// get sends method to the router with Host host.
func (tr *testRouter) do(tb testing.TB, method, host, path string, body io.Reader, hdr http.Header) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(method, tr.srv.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := tr.srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, string(b)
}

// proxyPath is one of the handler's two ways to proxy a plain request: the
// forward path (the default) or httputil.ReverseProxy, which a Config
// with its own Transport takes for every request. Tests of the proxying
// rules run on both, so the two cannot drift apart.
type proxyPath struct {
	name string
	mod  func(*proxy.Config)
}

var proxyPaths = []proxyPath{
	{"Forward", func(*proxy.Config) {}},
	{"ReverseProxy", func(c *proxy.Config) {
		c.Transport = transportOnly{proxy.NewUpstream(proxy.UpstreamConfig{})}
	}},
}

// with returns p's config change followed by mod (nil: none).
func (p proxyPath) with(mod func(*proxy.Config)) func(*proxy.Config) {
	return func(c *proxy.Config) {
		p.mod(c)
		if mod != nil {
			mod(c)
		}
	}
}

// transportOnly hides the Upstream's type, so the handler treats it as a
// custom transport (the ReverseProxy path).
type transportOnly struct{ http.RoundTripper }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
