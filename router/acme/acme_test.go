package acme_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"stagesub.dev/registry/consuldev"
	"stagesub.dev/router/acme"
	"stagesub.dev/router/acme/acmetest"
)

const base = "stagesub.test"

// router is the part of stagesub-router that uses a CertSource: an HTTP
// listener wrapped by HTTPHandler and an HTTPS listener with TLSConfig.
type router struct {
	httpLn, tlsLn net.Listener
	challenges    sync.Map // paths of HTTP-01 requests seen
}

// listen binds the router's two listeners on free loopback ports (pebble
// must know them before it starts).
func listen(t *testing.T) *router {
	t.Helper()
	h, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); s.Close() })
	return &router{httpLn: h, tlsLn: s}
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// serve serves both listeners with m until the test ends.
func (r *router) serve(t *testing.T, m *acme.Manager) {
	t.Helper()
	app := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "app for "+req.Host)
	})
	plain := m.HTTPHandler(app)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/.well-known/acme-challenge/") {
			r.challenges.Store(req.Host+req.URL.Path, true)
		}
		plain.ServeHTTP(w, req)
	})}
	ts := &http.Server{Handler: app, TLSConfig: m.TLSConfig()}
	go hs.Serve(r.httpLn)
	go ts.ServeTLS(r.tlsLn, "", "")
	t.Cleanup(func() { hs.Close(); ts.Close() })
}

// handshake connects to the router's HTTPS port with SNI name and verifies
// the served chain against roots; it returns the leaf.
func handshake(r *router, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 30 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", r.tlsLn.Addr().String(), &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func newManager(t *testing.T, cfg acme.Config, opts acme.Options) *acme.Manager {
	t.Helper()
	if opts.Base == "" {
		opts.Base = base
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, err := acme.New(ctx, cfg, opts)
	if err != nil {
		t.Fatalf("acme.New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func counter(t *testing.T, m *acme.Manager, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, mt := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range mt.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	return 0
}

// TestWildcardApexRestartRenew: the wildcard and apex are obtained by
// DNS-01 through BIND (with propagation checks against it); tenant and
// admin names and the apex are served with chains that verify against
// pebble's root; a restart on the same storage orders nothing; a forced
// renewal orders a new certificate that is then served.
func TestWildcardApexRestartRenew(t *testing.T) {
	t.Parallel()
	r := listen(t)
	st := acmetest.Start(t, acmetest.StackConfig{Base: base, HTTPPort: port(r.httpLn), TLSPort: port(r.tlsLn)})
	cfg := st.Config(t)
	cfg.PropagationTimeout = 20 * time.Second // exercise the checks against named

	m := newManager(t, cfg, acme.Options{})
	if got, want := st.Pebble.Orders(), 2; got != want {
		t.Errorf("orders = %d, want %d (wildcard and apex)", got, want)
	}
	r.serve(t, m)
	roots := st.Pebble.Roots(t)
	leaves := make(map[string]*x509.Certificate)
	for _, name := range []string{"goteborg." + base, "admin." + base, base} {
		leaf, err := handshake(r, name, roots)
		if err != nil {
			t.Fatalf("handshake %s: %v", name, err)
		}
		leaves[name] = leaf
	}
	if got, want := leaves["goteborg."+base].DNSNames, []string{"*." + base}; !equal(got, want) {
		t.Errorf("goteborg served %v, want %v", got, want)
	}
	if got, want := leaves[base].DNSNames, []string{base}; !equal(got, want) {
		t.Errorf("apex served %v, want %v", got, want)
	}
	if got, want := counter(t, m, "stagesub_router_acme_certificates_total", "op", "obtain", "result", "success"), 2.0; got != want {
		t.Errorf("obtain successes = %v, want %v", got, want)
	}
	if exp := counter(t, m, "stagesub_router_acme_certificate_expiry_seconds", "name", "*."+base); exp < 24*3600 {
		t.Errorf("expiry seconds for *.%s = %v, want > 1 day", base, exp)
	}

	t.Run("RestartReusesStorage", func(t *testing.T) {
		m.Close()
		m2 := newManager(t, cfg, acme.Options{})
		if got, want := st.Pebble.Orders(), 2; got != want {
			t.Errorf("orders after restart = %d, want %d", got, want)
		}
		exp, ok := m2.Expiry("*." + base)
		if !ok || !exp.Equal(leaves["goteborg."+base].NotAfter) {
			t.Errorf("restarted manager has *.%s expiring %v (%v), want the stored one %v", base, exp, ok, leaves["goteborg."+base].NotAfter)
		}
		m = m2
	})

	t.Run("ForcedRenewal", func(t *testing.T) {
		r2 := listen(t)
		r2.serve(t, m)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := m.Renew(ctx, "*."+base); err != nil {
			t.Fatal(err)
		}
		if got, want := st.Pebble.Orders(), 3; got != want {
			t.Errorf("orders after renewal = %d, want %d", got, want)
		}
		leaf, err := handshake(r2, "malmo."+base, roots)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.Cmp(leaves["goteborg."+base].SerialNumber) == 0 {
			t.Error("the renewed certificate is not the one served")
		}
		if got, want := counter(t, m, "stagesub_router_acme_certificates_total", "op", "renew", "result", "success"), 1.0; got != want {
			t.Errorf("renew successes = %v, want %v", got, want)
		}
	})
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// TestOnDemand: a listed custom domain gets a certificate at its first
// handshake, through HTTP-01 on the router's HTTP handler or TLS-ALPN-01 on
// its TLS listener; an unlisted one, a name under the base domain (even if
// the table were to list it) and one past the rate limit are refused.
func TestOnDemand(t *testing.T) {
	t.Parallel()
	for _, challenge := range []string{acme.ChallengeHTTP01, acme.ChallengeTLSALPN01} {
		t.Run(challenge, func(t *testing.T) {
			t.Parallel()
			testOnDemand(t, challenge)
		})
	}
}

// testOnDemand uses names of its own (certmagic coordinates handshakes for
// one name process-wide, across Managers).
func testOnDemand(t *testing.T, challenge string) {
	tag := "http"
	if challenge == acme.ChallengeTLSALPN01 {
		tag = "alpn"
	}
	shop, shop2, evil, deep := "shop-"+tag+".customer.test", "shop2-"+tag+".customer.test", "evil-"+tag+".customer.test", "a.b-"+tag+"."+base
	r := listen(t)
	st := acmetest.Start(t, acmetest.StackConfig{
		Base:      base,
		Customers: []acmetest.Zone{{Name: "customer.test", Hosts: []string{"shop-" + tag, "shop2-" + tag, "evil-" + tag}}},
		HTTPPort:  port(r.httpLn), TLSPort: port(r.tlsLn),
	})
	cfg := st.Config(t)
	cfg.OnDemandLimit = 1
	cfg.OnDemandChallenges = []string{challenge}
	listed := map[string]bool{shop: true, shop2: true, deep: true}
	m := newManager(t, cfg, acme.Options{Allowed: func(h string) bool { return listed[h] }})
	r.serve(t, m)
	roots := st.Pebble.Roots(t)
	ordersBefore := st.Pebble.Orders()

	leaf, err := handshake(r, shop, roots)
	if err != nil {
		t.Fatalf("listed custom domain: %v", err)
	}
	if got, want := leaf.DNSNames, []string{shop}; !equal(got, want) {
		t.Errorf("served %v, want %v", got, want)
	}
	// Served from the cache now, whatever the case of the SNI.
	if _, err := handshake(r, strings.ToUpper(shop), roots); err != nil {
		t.Errorf("second handshake: %v", err)
	}
	httpRequests := 0
	r.challenges.Range(func(k, _ any) bool { httpRequests++; return true })
	if got, want := httpRequests > 0, challenge == acme.ChallengeHTTP01; got != want {
		t.Errorf("HTTP-01 requests at the router = %d, want some: %v", httpRequests, want)
	}

	for _, tt := range []struct{ name, host, reason string }{
		{"ErrUnlisted", evil, "not_registered"},
		{"ErrBaseDomain", deep, "base_domain"},
		{"ErrRateLimited", shop2, "rate_limited"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := handshake(r, tt.host, roots); err == nil {
				t.Fatalf("handshake for %s succeeded", tt.host)
			}
			if got := counter(t, m, "stagesub_router_acme_ondemand_refused_total", "reason", tt.reason); got < 1 {
				t.Errorf("refused{reason=%s} = %v, want >= 1", tt.reason, got)
			}
		})
	}
	if got, want := st.Pebble.Orders()-ordersBefore, 1; got != want {
		t.Errorf("on-demand orders = %d, want %d (only the listed domain within the limit)", got, want)
	}
}

// TestReplicasShareConsul: two replicas with storage in Consul start at
// once; between them they make exactly one order per name, and both serve
// the same wildcard certificate. An on-demand certificate ordered by one
// replica is validated through the other's HTTP handler (challenge tokens
// in Consul) and then loaded, not ordered again, by the other.
func TestReplicasShareConsul(t *testing.T) {
	t.Parallel()
	r1, r2 := listen(t), listen(t)
	st := acmetest.Start(t, acmetest.StackConfig{
		Base:      base,
		Customers: []acmetest.Zone{{Name: "customer.test", Hosts: []string{"shop-r"}}},
		HTTPPort:  port(r1.httpLn), TLSPort: port(r1.tlsLn),
	})
	srv := consuldev.StartTest(t, consuldev.Config{})
	cfg := st.Config(t)
	cfg.Storage = acme.StorageConsul
	cfg.ConsulPrefix = "stagesub/certmagic"
	cfg.OnDemandChallenges = []string{acme.ChallengeHTTP01}
	allowed := func(h string) bool { return h == "shop-r.customer.test" }

	var mu sync.Mutex
	obtaining := make(map[string]int)
	onEvent := func(event string, data map[string]any) {
		if event == "cert_obtaining" {
			mu.Lock()
			obtaining[data["identifier"].(string)]++
			mu.Unlock()
		}
	}
	managers := make([]*acme.Manager, 2)
	var wg sync.WaitGroup
	for i := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			m, err := acme.New(ctx, cfg, acme.Options{Base: base, Allowed: allowed, Consul: srv.Client(t), Logger: testLogger(t), OnEvent: onEvent})
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
				return
			}
			t.Cleanup(func() { m.Close() })
			managers[i] = m
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if got, want := st.Pebble.Orders(), 2; got != want {
		t.Errorf("orders = %d, want %d", got, want)
	}
	if got, want := obtaining["*."+base], 1; got != want {
		t.Errorf("wildcard orders across replicas = %d, want %d", got, want)
	}
	if got, want := obtaining[base], 1; got != want {
		t.Errorf("apex orders across replicas = %d, want %d", got, want)
	}
	var total float64
	for _, m := range managers {
		total += counter(t, m, "stagesub_router_acme_certificates_total", "op", "obtain", "result", "success")
	}
	if total != 2 {
		t.Errorf("obtain successes across replicas = %v, want 2", total)
	}

	r1.serve(t, managers[0])
	r2.serve(t, managers[1])
	roots := st.Pebble.Roots(t)
	l1, err := handshake(r1, "goteborg."+base, roots)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := handshake(r2, "goteborg."+base, roots)
	if err != nil {
		t.Fatal(err)
	}
	if l1.SerialNumber.Cmp(l2.SerialNumber) != 0 {
		t.Errorf("replicas serve different wildcard certificates: %v and %v", l1.SerialNumber, l2.SerialNumber)
	}

	t.Run("OnDemandAcrossReplicas", func(t *testing.T) {
		// Replica 2 orders; pebble validates on replica 1's HTTP port.
		s2, err := handshake(r2, "shop-r.customer.test", roots)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		r1.challenges.Range(func(k, _ any) bool { n++; return true })
		if n == 0 {
			t.Error("replica 1's HTTP handler saw no HTTP-01 challenge")
		}
		orders := st.Pebble.Orders()
		s1, err := handshake(r1, "shop-r.customer.test", roots)
		if err != nil {
			t.Fatal(err)
		}
		if s1.SerialNumber.Cmp(s2.SerialNumber) != 0 {
			t.Error("replica 1 serves another certificate than the one replica 2 obtained")
		}
		if got, want := st.Pebble.Orders(), orders; got != want {
			t.Errorf("orders = %d after replica 1's handshake, want %d (loaded from Consul)", got, want)
		}
	})
}

// TestWrongTSIG: a wrong TSIG secret makes New fail with an error that
// names the problem.
func TestWrongTSIG(t *testing.T) {
	t.Parallel()
	st := acmetest.Start(t, acmetest.StackConfig{Base: base})
	cfg := st.Config(t)
	cfg.RFC2136Secret = "c2VjcmV0IHRoYXQgbmFtZWQgZG9lcyBub3Qga25vdyE="
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := acme.New(ctx, cfg, acme.Options{Base: base, Logger: testLogger(t)})
	if err == nil {
		m.Close()
		t.Fatal("New succeeded with a wrong TSIG secret")
	}
	for _, want := range []string{"*." + base, "TSIG", "wrong secret"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("error: %v", err)
	if got, want := st.Pebble.Issued(), 0; got != want {
		t.Errorf("issued = %d, want %d", got, want)
	}
}

// TestExecProvider: the wildcard and apex obtained through the exec
// provider running a small nsupdate script.
func TestExecProvider(t *testing.T) {
	t.Parallel()
	r := listen(t)
	st := acmetest.Start(t, acmetest.StackConfig{Base: base, HTTPPort: port(r.httpLn), TLSPort: port(r.tlsLn)})
	script := acmetest.NsupdateScript(t, st.Named)
	cfg := st.Config(t)
	cfg.DNSProvider = acme.ProviderExec
	cfg.ExecCommand = script
	cfg.RFC2136Server, cfg.RFC2136KeyName, cfg.RFC2136Secret = "", "", ""

	m := newManager(t, cfg, acme.Options{})
	r.serve(t, m)
	if _, err := handshake(r, "goteborg."+base, st.Pebble.Roots(t)); err != nil {
		t.Fatal(err)
	}
	calls := acmetest.ScriptCalls(t, script)
	if got, want := strings.Count(calls, "present _acme-challenge."+base+". "), 2; got != want {
		t.Errorf("present calls = %d, want %d:\n%s", got, want, calls)
	}
	if got, want := strings.Count(calls, "cleanup _acme-challenge."+base+". "), 2; got != want {
		t.Errorf("cleanup calls = %d, want %d:\n%s", got, want, calls)
	}
	if got := st.Named.TXT(t, "_acme-challenge."+base); len(got) != 0 {
		t.Errorf("challenge records left behind: %q", got)
	}

	t.Run("ErrRenewalCounted", func(t *testing.T) {
		if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'dns api down' >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		err := m.Renew(ctx, base)
		if err == nil || !strings.Contains(err.Error(), "dns api down") {
			t.Fatalf("Renew with a failing hook = %v, want the hook's output in the error", err)
		}
		if got, want := counter(t, m, "stagesub_router_acme_certificates_total", "op", "renew", "result", "failure"), 1.0; got != want {
			t.Errorf("renew failures = %v, want %v", got, want)
		}
		if _, err := handshake(r, base, st.Pebble.Roots(t)); err != nil {
			t.Errorf("the old apex certificate is no longer served: %v", err)
		}
	})
}

func TestLoad(t *testing.T) {
	t.Parallel()
	good := []string{
		acme.EnvEmail + "=ops@stagesub.example",
		acme.EnvAgree + "=true",
		acme.EnvRFC2136Server + "=127.0.0.1:5353",
		acme.EnvRFC2136Key + "=acme-update",
		acme.EnvRFC2136Secret + "=c2VjcmV0",
	}
	t.Run("OKDefaults", func(t *testing.T) {
		c, err := acme.Load(good)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct{ got, want string }{
			{c.CA, "https://acme-v02.api.letsencrypt.org/directory"},
			{c.DNSProvider, acme.ProviderRFC2136},
			{c.Storage, acme.StorageFile},
			{c.PropagationTimeout.String(), "2m0s"},
			{strconv.Itoa(c.HTTPPort) + "/" + strconv.Itoa(c.TLSPort), "80/443"},
			{strconv.Itoa(c.OnDemandLimit) + "/" + c.OnDemandWindow.String(), "20/1h0m0s"},
		}
		for _, tt := range tests {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		}
	})
	t.Run("OKAll", func(t *testing.T) {
		c, err := acme.Load(append(good,
			acme.EnvStaging+"=true",
			acme.EnvDNSResolvers+"=127.0.0.1:5353, 10.0.0.1",
			acme.EnvDNSTimeout+"=off",
			acme.EnvStorage+"=consul",
			acme.EnvCARoots+"=/a.pem,/b.pem",
		))
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct{ got, want string }{
			{c.CA, "https://acme-staging-v02.api.letsencrypt.org/directory"},
			{strings.Join(c.Resolvers, " "), "127.0.0.1:5353 10.0.0.1"},
			{strings.Join(c.CARoots, " "), "/a.pem /b.pem"},
			{c.PropagationTimeout.String(), "-1ns"},
			{c.Storage, acme.StorageConsul},
		}
		for _, tt := range tests {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		}
	})
	for _, tt := range []struct {
		name     string
		env      []string
		contains string
	}{
		{"ErrNoEmail", []string{acme.EnvAgree + "=true", acme.EnvDNSProvider + "=exec", acme.EnvExecCommand + "=/bin/true"}, acme.EnvEmail},
		{"ErrNotAgreed", []string{acme.EnvEmail + "=a@b.c", acme.EnvDNSProvider + "=exec", acme.EnvExecCommand + "=/bin/true"}, acme.EnvAgree},
		{"ErrNoTSIG", []string{acme.EnvEmail + "=a@b.c", acme.EnvAgree + "=true"}, acme.EnvRFC2136Secret},
		{"ErrNoCommand", append(good, acme.EnvDNSProvider+"=exec"), acme.EnvExecCommand},
		{"ErrProvider", append(good, acme.EnvDNSProvider+"=route53"), "route53"},
		{"ErrStorage", append(good, acme.EnvStorage+"=s3"), "s3"},
		{"ErrDuration", append(good, acme.EnvDNSTimeout+"=soon"), acme.EnvDNSTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := acme.Load(tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("Load = %v, want an error mentioning %q", err, tt.contains)
			}
		})
	}
}

// The router's certificate-source seam.
var _ interface {
	TLSConfig() *tls.Config
	HTTPHandler(http.Handler) http.Handler
} = (*acme.Manager)(nil)
