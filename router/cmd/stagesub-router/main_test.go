package main_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
	main "stagesub.dev/router/cmd/stagesub-router"
)

const base = "stagesub.test"

// fleetKit drives the stand-in Consul like stagesubctl and the apps would.
type fleetKit struct {
	srv    *consuldev.Server
	client *api.Client
	store  *consul.Store
}

func startFleet(tb testing.TB) *fleetKit {
	tb.Helper()
	srv := consuldev.StartTest(tb, consuldev.Config{})
	c := srv.Client(tb)
	return &fleetKit{srv: srv, client: c, store: consul.NewStore(c)}
}

func (f *fleetKit) tenant(tb testing.TB, slug string, st registry.Status, domains ...string) {
	tb.Helper()
	t := &registry.Tenant{Version: registry.RecordVersion, Slug: slug, Name: "Orchestra " + slug, Status: st,
		Database: registry.Database{Host: "127.0.0.1", Port: 5432, Name: registry.DatabaseName(slug)}, Domains: domains}
	if err := f.store.CreateTenant(context.Background(), t); err != nil {
		tb.Fatal(err)
	}
}

func (f *fleetKit) setStatus(tb testing.TB, slug string, st registry.Status) {
	tb.Helper()
	if _, err := f.store.UpdateTenant(context.Background(), slug, func(t *registry.Tenant) error { t.Status = st; return nil }); err != nil {
		tb.Fatal(err)
	}
}

// register registers addr as an app instance of slug with a fast health check.
func (f *fleetKit) register(tb testing.TB, slug, addr string) func() {
	tb.Helper()
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	_, dereg, err := consul.Register(context.Background(), f.client, registry.Registration{
		Service: registry.ServiceApp, Tenant: slug, Address: host, Port: port,
		CheckInterval: 200 * time.Millisecond, CheckTimeout: 500 * time.Millisecond, DeregisterAfter: time.Minute,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return func() {
		if err := dereg(context.Background()); err != nil {
			tb.Error(err)
		}
	}
}

// startRouter runs the router in-process against f on free loopback ports.
func startRouter(tb testing.TB, f *fleetKit, env ...string) *main.Main {
	tb.Helper()
	return startRouterOut(tb, f, io.Discard, env...)
}

// startRouterOut is startRouter with the access log going to stdout.
func startRouterOut(tb testing.TB, f *fleetKit, stdout io.Writer, env ...string) *main.Main {
	tb.Helper()
	m := main.NewMain()
	m.Stdout, m.Stderr = stdout, io.Discard
	if testing.Verbose() {
		m.Stderr = os.Stderr
	}
	environ := append([]string{
		"STAGESUB_BASE_DOMAIN=" + base,
		"CONSUL_HTTP_ADDR=" + f.srv.Addr(),
		"STAGESUB_ROUTER_HTTP_ADDR=127.0.0.1:0",
		"STAGESUB_ROUTER_HTTPS_ADDR=127.0.0.1:0",
		"STAGESUB_ROUTER_ADMIN_ADDR=127.0.0.1:0",
		"STAGESUB_TLS_DIR=" + tb.TempDir(),
		"STAGESUB_ROUTER_NO_INSTANCE_WAIT=1s",
		"STAGESUB_ROUTER_DRAIN_TIMEOUT=5s",
	}, env...)
	if err := m.Load(nil, environ); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Run(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		if err := m.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return m
}

// client returns an HTTP client that sends every request to the router's
// listeners (http:// to "http", https:// to "https") whatever the URL's host,
// trusting the internal CA. Redirects are not followed.
func client(tb testing.TB, m *main.Main, h2 bool) *http.Client {
	tb.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			to := m.Addr("http")
			if strings.HasSuffix(addr, ":443") {
				to = m.Addr("https")
			}
			return (&net.Dialer{}).DialContext(ctx, network, to)
		},
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 64,
	}
	if path := m.CAPath(); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(tb testing.TB, c *http.Client, url string) (*http.Response, string) {
	tb.Helper()
	resp, err := c.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(b)
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestRouting runs the router with the internal CA against the stand-in
// Consul and real upstream processes: many tenants and custom domains, the
// pages, HTTP→HTTPS, HTTP/2, convergence after a registration, metrics,
// its own registration, and routing on with Consul stopped.
func TestRouting(t *testing.T) {
	f := startFleet(t)
	ups := []*upstreamProc{startUpstream(t, "up0"), startUpstream(t, "up1"), startUpstream(t, "up2")}
	const n = 30
	for i := range n {
		slug := fmt.Sprintf("orch%02d", i)
		f.tenant(t, slug, registry.StatusActive, slug+".example")
		f.register(t, slug, ups[i%3].Addr)
	}
	f.tenant(t, "lund", registry.StatusSuspended)
	f.register(t, "lund", ups[0].Addr)
	f.tenant(t, "umea", registry.StatusMaintenance)
	f.tenant(t, "kiruna", registry.StatusActive)
	// Custom domains over HTTPS need a CA without name constraints.
	m := startRouter(t, f, "STAGESUB_INTERNAL_CA_UNCONSTRAINED=true")
	waitFor(t, 5*time.Second, "instances passing", func() bool {
		return len(m.Tables().Load().Lookup("orch29.stagesub.test").Backends) == 1
	})
	c := client(t, m, true)

	t.Run("ManyTenantsAndCustomDomains", func(t *testing.T) {
		for i := range n {
			slug := fmt.Sprintf("orch%02d", i)
			for _, url := range []string{"https://" + slug + ".stagesub.test/p", "https://" + strings.ToUpper(slug) + ".example/p"} {
				resp, body := get(t, c, url)
				want := fmt.Sprintf("up%d tenant=%s", i%3, slug)
				if resp.StatusCode != 200 || !strings.HasPrefix(body, want) {
					t.Errorf("%s: got %d %q want %q", url, resp.StatusCode, body, want)
				}
				if resp.ProtoMajor != 2 {
					t.Errorf("%s: proto %s, want HTTP/2", url, resp.Proto)
				}
			}
		}
	})
	t.Run("Pages", func(t *testing.T) {
		for _, tt := range []struct {
			url    string
			status int
			retry  string
		}{
			{"https://nobody.stagesub.test/", 404, ""},
			{"https://lund.stagesub.test/", 403, ""},
			{"https://umea.stagesub.test/", 503, "60"},
			{"https://kiruna.stagesub.test/", 503, "5"},
			{"http://orch01.stagesub.test/a?b=1", 308, ""},
			{"http://nobody.example/", 404, ""},
			{"https://orch01.stagesub.test/metrics", 404, ""}, // STAGESUB_ROUTER_BLOCK_PATHS default
			{"https://orch01.example/%6Detrics", 404, ""},
			{"https://orch01.stagesub.test/healthz", 200, ""},
		} {
			resp, _ := get(t, c, tt.url)
			if resp.StatusCode != tt.status || resp.Header.Get("Retry-After") != tt.retry {
				t.Errorf("%s: got %d Retry-After %q, want %d %q", tt.url, resp.StatusCode, resp.Header.Get("Retry-After"), tt.status, tt.retry)
			}
		}
		resp, _ := get(t, c, "http://orch01.stagesub.test/a?b=1")
		_, port, _ := net.SplitHostPort(m.Addr("https"))
		if got, want := resp.Header.Get("Location"), "https://orch01.stagesub.test:"+port+"/a?b=1"; got != want {
			t.Errorf("redirect got %q want %q", got, want)
		}
	})
	t.Run("StatusChange", func(t *testing.T) {
		f.setStatus(t, "orch05", registry.StatusSuspended)
		waitFor(t, 5*time.Second, "suspension routed", func() bool {
			resp, _ := get(t, c, "https://orch05.stagesub.test/")
			return resp.StatusCode == 403
		})
		f.setStatus(t, "orch05", registry.StatusActive)
		waitFor(t, 5*time.Second, "resume routed", func() bool {
			resp, _ := get(t, c, "https://orch05.stagesub.test/")
			return resp.StatusCode == 200
		})
	})
	t.Run("Convergence", func(t *testing.T) {
		// A request waiting for kiruna's first instance is answered once it is up.
		done := make(chan string, 1)
		go func() {
			resp, body := get(t, c, "https://kiruna.stagesub.test/")
			done <- fmt.Sprint(resp.StatusCode, " ", body)
		}()
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		f.register(t, "kiruna", ups[1].Addr)
		d := waitFor(t, 5*time.Second, "kiruna routed", func() bool {
			return len(m.Tables().Load().Lookup("kiruna.stagesub.test").Backends) == 1
		})
		t.Logf("register → routed in %v (includes the first health check)", d)
		if got := <-done; !strings.HasPrefix(got, "200 up1 tenant=kiruna") {
			t.Errorf("waiting request got %q, answered after %v", got, time.Since(start))
		}
	})
	t.Run("AdminListener", func(t *testing.T) {
		resp, body := get(t, http.DefaultClient, "http://"+m.Addr("admin")+"/healthz")
		if resp.StatusCode != 200 || !strings.Contains(body, `"status":"ok"`) {
			t.Errorf("healthz: %d %s", resp.StatusCode, body)
		}
		_, body = get(t, http.DefaultClient, "http://"+m.Addr("admin")+"/metrics")
		for _, want := range []string{
			`stagesub_router_requests_total{code="2xx",method="GET",tenant="orch01"}`,
			`stagesub_router_requests_total{code="4xx",method="GET",tenant="_unknown"}`,
			`stagesub_router_routes{state="suspended"} 1`,
			`stagesub_router_registry_generation`,
			`stagesub_router_registry_snapshot_age_seconds 0`,
			`stagesub_router_request_duration_seconds_bucket{tenant="orch01"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		waitFor(t, 5*time.Second, "router registered in consul", func() bool {
			es, _, err := f.client.Health().Service(registry.ServiceRouter, "", true, nil)
			return err == nil && len(es) == 1
		})
	})
	t.Run("ConsulStopped", func(t *testing.T) {
		if err := f.srv.Close(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			slug := fmt.Sprintf("orch%02d", i)
			resp, body := get(t, c, "https://"+slug+".stagesub.test/")
			if resp.StatusCode != 200 || !strings.Contains(body, "tenant="+slug) {
				t.Errorf("%s with consul down: %d %q", slug, resp.StatusCode, body)
			}
		}
		waitFor(t, 10*time.Second, "snapshot age reported", func() bool {
			_, body := get(t, http.DefaultClient, "http://"+m.Addr("admin")+"/metrics")
			return !strings.Contains(body, "stagesub_router_registry_snapshot_age_seconds 0\n")
		})
	})
}

// TestRegistryMetrics checks that the registry watcher's counters are on
// the admin listener's /metrics: a malformed tenant record is counted and
// listed as invalid while the valid tenants are still routed.
func TestRegistryMetrics(t *testing.T) {
	f := startFleet(t)
	f.tenant(t, "goteborg", registry.StatusActive)
	if _, err := f.client.KV().Put(&api.KVPair{Key: registry.Key("broken"), Value: []byte("{not json")}, nil); err != nil {
		t.Fatal(err)
	}
	m := startRouter(t, f, "STAGESUB_TLS_MODE=off")
	want := []string{
		"stagesub_router_registry_malformed_records_total 1\n",
		"stagesub_router_registry_invalid_records 1\n",
		"stagesub_router_registry_errors_total 0\n",
		"stagesub_router_registry_index_resets_total 0\n",
	}
	var body string
	waitFor(t, 5*time.Second, "registry metrics", func() bool {
		_, body = get(t, http.DefaultClient, "http://"+m.Addr("admin")+"/metrics")
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
	// The counters move when the watcher reads the records; the table that
	// holds them is published just after.
	waitFor(t, 5*time.Second, "valid tenant beside a malformed record routed to goteborg", func() bool {
		return m.Tables().Load().Lookup("goteborg.stagesub.test").Tenant == "goteborg"
	})
}

// TestKillUnderLoad kills one of a tenant's two instances (SIGKILL) while
// GET requests flow; no request may fail.
func TestKillUnderLoad(t *testing.T) {
	f := startFleet(t)
	a, b := startUpstream(t, "a"), startUpstream(t, "b")
	f.tenant(t, "goteborg", registry.StatusActive)
	f.register(t, "goteborg", a.Addr)
	f.register(t, "goteborg", b.Addr)
	m := startRouter(t, f, "STAGESUB_TLS_MODE=off")
	waitFor(t, 5*time.Second, "two instances", func() bool {
		return len(m.Tables().Load().Lookup("goteborg.stagesub.test").Backends) == 2
	})
	c := client(t, m, false)
	var (
		mu       sync.Mutex
		ok, fail int
		byUp     = map[string]int{}
		firstErr string
	)
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000 && time.Now().Before(stop); i++ {
				resp, err := c.Get("http://goteborg.stagesub.test/")
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				if err != nil || resp.StatusCode != 200 {
					fail++
					if firstErr == "" {
						firstErr = fmt.Sprint(err, resp, string(body))
					}
				} else {
					ok++
					byUp[resp.Header.Get("X-Upstream")]++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	a.Kill()
	wg.Wait()
	t.Logf("ok %d fail %d by upstream %v", ok, fail, byUp)
	if fail != 0 {
		t.Errorf("%d of %d requests failed; first: %s", fail, ok+fail, firstErr)
	}
	if byUp["a"] == 0 || byUp["b"] == 0 {
		t.Errorf("load not spread: %v", byUp)
	}
	_, body := get(t, http.DefaultClient, "http://"+m.Addr("admin")+"/metrics")
	if !strings.Contains(body, `stagesub_router_ejections_total{tenant="goteborg"}`) {
		t.Errorf("no ejection counted")
	}
}
