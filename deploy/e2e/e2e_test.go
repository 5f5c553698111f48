package e2e_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/app/password"
	"stagesub.dev/deploy"
	"stagesub.dev/deploy/devstack"
	"stagesub.dev/deploy/local"
	"stagesub.dev/deploy/prometheus"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/internal/testbin"
)

// system is the running platform shared by the subtests of TestSystem.
type system struct {
	bins      string
	logs      string
	art       string
	ctlEnv    []string
	ctl       string
	consul    string // 127.0.0.1:PORT
	httpAddr  string
	httpsAddr string
	caFile    string
	ca        *x509.CertPool
	target    *local.Target
	secrets   secrets.Dir

	adminUser, adminPassword string
	staff                    map[string][2]string // slug → email, password
}

// tenants of the test; each gets an app instance.
var tenants = []devstack.Tenant{
	{Slug: "goteborg", Name: "Göteborgs Symfoniker"},
	{Slug: "malmo", Name: "Malmö SymfoniOrkester"},
}

// url returns the public HTTPS URL of path on host label (a slug or "admin").
func (s *system) url(label, path string) string {
	_, port, _ := strings.Cut(s.httpsAddr, ":")
	return "https://" + label + ".localhost:" + port + path
}

// TestSystem starts the whole platform once and runs every end-to-end check
// against it, in order: the later checks (a killed instance) disturb it.
func TestSystem(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-system test; skipped with -short")
	}
	prom := needbin.Path(t, "prometheus", "apt-get install prometheus")
	chromium := needbin.Path(t, "chromium", "apt-get install chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
	s := &system{art: artifactsDir(t)}
	s.logs = filepath.Join(s.art, "logs")
	_ = os.RemoveAll(s.logs)
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process logs are in %s", s.logs)
		}
	})
	start := time.Now()
	s.bins = testbin.Build(t, repoRoot(t))
	s.ctl = filepath.Join(s.bins, "stagesubctl")
	s.startPlatform(t)
	s.startRouter(t)
	t.Logf("platform up in %s", time.Since(start).Round(time.Millisecond))

	t.Run("Routing", s.testRouting)
	t.Run("Isolation", s.testIsolation)
	t.Run("Suspend", s.testSuspend)
	t.Run("AdminTotals", s.testAdminTotals)
	t.Run("Prometheus", func(t *testing.T) { s.testPrometheus(t, prom) })
	t.Run("Browser", func(t *testing.T) { s.testBrowser(t, chromium) })
	t.Run("KillRestart", s.testKillRestart)
}

// startPlatform starts everything but the router: Postgres, the Consul
// stand-in, the tenants (created with stagesubctl), their apps and the admin.
func (s *system) startPlatform(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()

	// PostgreSQL with TCP and scram passwords: tenant roles really
	// authenticate, as in production.
	pg := pgtest.New(t, pgtest.WithTCP())
	superPW := "super-" + randomHex(t, 8)
	if err := pg.Exec(ctx, "postgres", "ALTER ROLE postgres PASSWORD '"+superPW+"'"); err != nil {
		t.Fatal(err)
	}

	// Consul stand-in.
	s.consul = addr(testbin.FreePort(t))
	consulProc := startProc(t, s.logs, "consul", filepath.Join(s.bins, "stagesub-consul"),
		[]string{"agent", "-dev", "-client=127.0.0.1", "-http-port=" + strings.Split(s.consul, ":")[1],
			"-data-dir=" + filepath.Join(tmp, "consul")}, nil)
	cc, err := api.NewClient(&api.Config{Address: s.consul})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, 50*time.Millisecond, "consul leader", func() error {
		if consulProc.exited() {
			t.Fatalf("stagesub-consul exited:\n%s", consulProc.logTail())
		}
		l, err := cc.Status().Leader()
		if err == nil && l == "" {
			err = fmt.Errorf("no leader")
		}
		return err
	})

	// Tenants, created with stagesubctl.
	statsPW := randomHex(t, 12)
	s.secrets = secrets.Dir{Path: filepath.Join(tmp, "tenants")}
	s.httpAddr, s.httpsAddr = addr(testbin.FreePort(t)), addr(testbin.FreePort(t))
	s.ctlEnv = []string{
		"CONSUL_HTTP_ADDR=" + s.consul,
		"STAGESUB_PG_ADMIN_URL=" + pg.TCPURL("postgres", superPW, "postgres"),
		"STAGESUB_SECRETS_DIR=" + s.secrets.Path,
		"STAGESUB_STATS_PASSWORD=" + statsPW,
		"STAGESUB_BASE_DOMAIN=localhost",
		"STAGESUB_PUBLIC_URL=" + s.url("{slug}", "/"),
	}
	s.staff = map[string][2]string{}
	pwRE := regexp.MustCompile(`one-time password[^:]*: (\S+)`)
	for _, tn := range tenants {
		email := "admin@" + tn.Slug + ".example.org"
		out := run(t, 2*time.Minute, s.ctlEnv, s.ctl, "tenant", "create", tn.Slug, "--name", tn.Name, "--admin-email", email)
		m := pwRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("tenant create %s printed no one-time password:\n%s", tn.Slug, out)
		}
		s.staff[tn.Slug] = [2]string{email, m[1]}
	}
	list := run(t, time.Minute, s.ctlEnv, s.ctl, "tenant", "list")
	for _, tn := range tenants {
		if !strings.Contains(list, tn.Slug) {
			t.Fatalf("tenant list lacks %s:\n%s", tn.Slug, list)
		}
	}

	// One app instance per tenant, supervised by the dev stack's local
	// target. MinBackoff leaves a killed instance down long enough to see
	// the router's 503.
	s.target, err = local.New(local.Config{
		Binary: filepath.Join(s.bins, "stagesub-app"), LogDir: s.logs, BaseEnv: baseEnv(),
		MinBackoff: 4 * time.Second, MaxBackoff: 8 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.target.Close(ctx); err != nil {
			t.Errorf("stop apps: %v", err)
		}
	})
	for _, tn := range tenants {
		spec := deploy.AppSpec{Tenant: tn.Slug, EnvFile: s.secrets.File(tn.Slug), Env: []string{
			"CONSUL_HTTP_ADDR=" + s.consul, "STAGESUB_BASE_DOMAIN=localhost", "STAGESUB_LISTEN=127.0.0.1:0",
		}}
		if err := s.target.Start(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}

	// The admin.
	s.adminUser, s.adminPassword = "ops", "admin-"+randomHex(t, 8)
	hash, err := password.Hash(s.adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	startProc(t, s.logs, "admin", filepath.Join(s.bins, "stagesub-admin"), nil, []string{
		"CONSUL_HTTP_ADDR=" + s.consul, "STAGESUB_BASE_DOMAIN=localhost", "STAGESUB_LISTEN=127.0.0.1:0",
		"STAGESUB_ADMIN_USER=" + s.adminUser, "STAGESUB_ADMIN_PASSWORD_HASH=" + hash,
		"STAGESUB_STATS_PASSWORD=" + statsPW, "STAGESUB_STATS_INTERVAL=1s",
		"STAGESUB_PANEL_URL=" + s.url("{slug}", "/"),
	})

}

// startRouter starts the router, configured exactly as the dev stack
// configures it, and waits until every tenant and the admin answer.
func (s *system) startRouter(t *testing.T) {
	tmp := t.TempDir()
	tlsDir := filepath.Join(tmp, "ca")
	s.caFile = filepath.Join(tlsDir, devstack.RouterCAFile)
	router := startProc(t, s.logs, "router", filepath.Join(s.bins, "stagesub-router"), nil, devstack.RouterEnv(devstack.RouterConfig{
		ConsulAddr: s.consul, BaseDomain: "localhost", HTTPAddr: s.httpAddr, HTTPSAddr: s.httpsAddr,
		AdminAddr: addr(testbin.FreePort(t)), StateDir: filepath.Join(tmp, "router"), TLSDir: tlsDir,
	}))
	eventually(t, 30*time.Second, 100*time.Millisecond, "router CA file", func() error {
		if router.exited() {
			t.Fatalf("router exited:\n%s", router.logTail())
		}
		b, err := os.ReadFile(s.caFile)
		if err != nil {
			return err
		}
		s.ca = x509.NewCertPool()
		if !s.ca.AppendCertsFromPEM(b) {
			return fmt.Errorf("no PEM certificate in %s", s.caFile)
		}
		return nil
	})

	// Ready: every tenant and the admin answer through the router.
	c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
	for _, label := range []string{"goteborg", "malmo", "admin"} {
		u := s.url(label, "/login")
		eventually(t, 60*time.Second, 200*time.Millisecond, u, func() error {
			resp, err := c.Get(u)
			if err != nil {
				return err
			}
			b := body(resp)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
			}
			return nil
		})
	}
}

// testRouting: hosts map to the right tenant, unknown hosts get a 404 page,
// plain HTTP redirects to HTTPS, and the TLS certificate chains to the CA.
func (s *system) testRouting(t *testing.T) {
	c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
	for _, tn := range tenants {
		resp, err := c.Get(s.url(tn.Slug, "/login"))
		if err != nil {
			t.Fatal(err)
		}
		b := body(resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", tn.Slug, resp.StatusCode)
		}
		if got := resp.Header.Get("X-StageSub-Tenant"); got != "" && got != tn.Slug {
			t.Errorf("%s: answered by tenant %q", tn.Slug, got)
		}
		// The app names its tenant in the page header.
		if m := tenantRE.FindStringSubmatch(html.UnescapeString(b)); m == nil || (m[1] != tn.Slug && m[1] != tn.Name) {
			t.Errorf("%s: login page header names tenant %v", tn.Slug, m)
		}
		if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
			t.Errorf("%s: no verified TLS chain", tn.Slug)
		}
	}
	// curl verifies the certificate with the CA file and nothing else, the
	// way README tells developers to.
	t.Run("Curl", func(t *testing.T) {
		curl := needbin.Path(t, "curl", "apt-get install curl")
		_, port, _ := strings.Cut(s.httpsAddr, ":")
		for _, label := range []string{"goteborg", "malmo", "admin"} {
			host := label + ".localhost"
			out, errOut, err := tryRun(30*time.Second, nil, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}",
				"--cacert", s.caFile, "--resolve", host+":"+port+":127.0.0.1", s.url(label, "/login"))
			if err != nil || out != "200" {
				t.Errorf("curl --cacert %s %s: %v %s %s", s.caFile, s.url(label, "/login"), err, out, errOut)
			}
		}
	})
	t.Run("ErrUnknownHost", func(t *testing.T) {
		resp, err := c.Get(s.url("nosuchtenant", "/"))
		if err != nil {
			t.Fatal(err)
		}
		body(resp)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown host: status %d, want 404", resp.StatusCode)
		}
	})
	t.Run("HTTPRedirect", func(t *testing.T) {
		_, port, _ := strings.Cut(s.httpAddr, ":")
		resp, err := c.Get("http://goteborg.localhost:" + port + "/login")
		if err != nil {
			t.Fatal(err)
		}
		body(resp)
		loc := resp.Header.Get("Location")
		if resp.StatusCode < 300 || resp.StatusCode > 308 || !strings.HasPrefix(loc, "https://goteborg.localhost") {
			t.Errorf("plain HTTP: status %d Location %q, want a redirect to https", resp.StatusCode, loc)
		}
	})
}

// session is a logged-in staff user of one tenant, over the router.
type session struct {
	s    *system
	slug string
	c    *http.Client
}

var (
	csrfRE   = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	tenantRE = regexp.MustCompile(`class="tenant">([^<]*)<`)
)

func (s *system) login(t *testing.T, slug string) *session {
	t.Helper()
	ss := &session{s: s, slug: slug, c: routerClient(t, s.httpAddr, s.httpsAddr, s.ca)}
	creds := s.staff[slug]
	resp := ss.postForm(t, "/login", url.Values{"email": {creds[0]}, "password": {creds[1]}, "next": {"/"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login to %s: status %d", slug, resp.StatusCode)
	}
	return ss
}

// postForm GETs path for a CSRF token, then POSTs form to path (the form's
// action) with it. It returns the (closed) response.
func (ss *session) postForm(t *testing.T, path string, form url.Values) *http.Response {
	t.Helper()
	getPath := path
	if path == "/musicians" {
		getPath = "/musicians/new"
	}
	resp, err := ss.c.Get(ss.s.url(ss.slug, getPath))
	if err != nil {
		t.Fatal(err)
	}
	b := body(resp)
	m := csrfRE.FindStringSubmatch(b)
	if m == nil {
		t.Fatalf("GET %s on %s: status %d, no csrf field", getPath, ss.slug, resp.StatusCode)
	}
	form.Set("csrf", html.UnescapeString(m[1]))
	req, _ := http.NewRequest(http.MethodPost, ss.s.url(ss.slug, path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.TrimSuffix(ss.s.url(ss.slug, ""), "/"))
	resp, err = ss.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body(resp)
	return resp
}

func (ss *session) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := ss.c.Get(ss.s.url(ss.slug, path))
	if err != nil {
		t.Fatal(err)
	}
	b := body(resp)
	return resp.StatusCode, html.UnescapeString(b)
}

// created counts the musicians each tenant got in the test.
var created = map[string]int{}

func (ss *session) createMusician(t *testing.T, name string) {
	t.Helper()
	resp := ss.postForm(t, "/musicians", url.Values{"name": {name}, "instrument": {"viola"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create musician %q on %s: status %d", name, ss.slug, resp.StatusCode)
	}
	created[ss.slug]++
}

// testIsolation: a musician created through tenant A is visible through A
// and not through B.
func (s *system) testIsolation(t *testing.T) {
	a, b := s.login(t, "goteborg"), s.login(t, "malmo")
	nameA := "Isolde Göteborgsdotter " + randomHex(t, 3)
	nameB := "Bo Malmqvist " + randomHex(t, 3)
	a.createMusician(t, nameA)
	a.createMusician(t, "Second Göteborg Musician "+randomHex(t, 3))
	b.createMusician(t, nameB)

	code, pageA := a.get(t, "/musicians")
	if code != http.StatusOK || !strings.Contains(pageA, nameA) {
		t.Fatalf("goteborg /musicians (status %d) does not list %q", code, nameA)
	}
	if strings.Contains(pageA, nameB) {
		t.Errorf("goteborg lists malmo's musician %q", nameB)
	}
	code, pageB := b.get(t, "/musicians")
	if code != http.StatusOK || !strings.Contains(pageB, nameB) {
		t.Fatalf("malmo /musicians (status %d) does not list %q", code, nameB)
	}
	if strings.Contains(pageB, nameA) {
		t.Errorf("malmo lists goteborg's musician %q", nameA)
	}
	t.Run("ErrSessionOtherTenant", func(t *testing.T) {
		// goteborg's session cookie is scoped to its host; sent to malmo on
		// purpose it must not log in.
		var cookie *http.Cookie
		u, _ := url.Parse(s.url("goteborg", "/"))
		for _, c := range a.c.Jar.Cookies(u) {
			cookie = c
		}
		if cookie == nil {
			t.Fatal("no goteborg cookie")
		}
		c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
		req, _ := http.NewRequest(http.MethodGet, s.url("malmo", "/musicians"), nil)
		for _, ck := range a.c.Jar.Cookies(u) {
			req.AddCookie(ck)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page := html.UnescapeString(body(resp))
		if resp.StatusCode == http.StatusOK && strings.Contains(page, nameB) {
			t.Errorf("goteborg's session opened malmo's musician list")
		}
	})
}

// testSuspend: a suspended tenant gets the router's page, never its app;
// resuming brings the app back.
func (s *system) testSuspend(t *testing.T) {
	c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
	run(t, time.Minute, s.ctlEnv, s.ctl, "tenant", "suspend", "malmo")
	var page string
	eventually(t, 20*time.Second, 100*time.Millisecond, "suspended page", func() error {
		resp, err := c.Get(s.url("malmo", "/login"))
		if err != nil {
			return err
		}
		page = body(resp)
		if resp.StatusCode == http.StatusOK && strings.Contains(page, `name="password"`) {
			return fmt.Errorf("still served by the app")
		}
		if !strings.Contains(strings.ToLower(page), "suspended") {
			return fmt.Errorf("status %d, page does not say suspended: %.200s", resp.StatusCode, page)
		}
		return nil
	})
	// The other tenant is untouched.
	resp, err := c.Get(s.url("goteborg", "/login"))
	if err != nil {
		t.Fatal(err)
	}
	body(resp)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("goteborg while malmo is suspended: status %d", resp.StatusCode)
	}
	run(t, time.Minute, s.ctlEnv, s.ctl, "tenant", "resume", "malmo")
	eventually(t, 20*time.Second, 100*time.Millisecond, "resumed", func() error {
		resp, err := c.Get(s.url("malmo", "/login"))
		if err != nil {
			return err
		}
		b := body(resp)
		if resp.StatusCode != http.StatusOK || !strings.Contains(b, `name="password"`) {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// adminReport is the part of the admin's /api/v1/stats answer we check.
type adminReport struct {
	Generation uint64 `json:"generation"`
	Totals     struct {
		Customers int   `json:"customers"`
		Musicians int64 `json:"musicians"`
	} `json:"totals"`
	Tenants []struct {
		Slug             string `json:"slug"`
		Musicians        int64  `json:"musicians"`
		InstancesPassing int    `json:"instances_passing"`
		Reachable        bool   `json:"database_reachable"`
	} `json:"tenants"`
}

// testAdminTotals: the admin's fan-out totals equal what the test created.
func (s *system) testAdminTotals(t *testing.T) {
	c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
	want := int64(0)
	for _, n := range created {
		want += int64(n)
	}
	if want == 0 {
		t.Fatal("no musicians were created (Isolation failed?)")
	}
	var rep adminReport
	eventually(t, 30*time.Second, 250*time.Millisecond, "admin totals", func() error {
		req, _ := http.NewRequest(http.MethodGet, s.url("admin", "/api/v1/stats"), nil)
		req.SetBasicAuth(s.adminUser, s.adminPassword)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		b := body(resp)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
		}
		rep = adminReport{}
		if err := json.Unmarshal([]byte(b), &rep); err != nil {
			return err
		}
		if rep.Totals.Customers != len(tenants) || rep.Totals.Musicians != want {
			return fmt.Errorf("totals customers=%d musicians=%d, want %d and %d", rep.Totals.Customers, rep.Totals.Musicians, len(tenants), want)
		}
		for _, ts := range rep.Tenants {
			if !ts.Reachable || ts.Musicians != int64(created[ts.Slug]) {
				return fmt.Errorf("tenant %s: reachable=%v musicians=%d, want %d", ts.Slug, ts.Reachable, ts.Musicians, created[ts.Slug])
			}
		}
		return nil
	})
	t.Run("ErrWrongPassword", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.url("admin", "/api/v1/stats"), nil)
		req.SetBasicAuth(s.adminUser, "wrong")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body(resp)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", resp.StatusCode)
		}
	})
}

// testPrometheus: Debian's prometheus, started with the project's config
// (HTTP SD variant, addresses templated), finds every instance through the
// Consul stand-in and scrapes them.
func (s *system) testPrometheus(t *testing.T, bin string) {
	cc, err := api.NewClient(&api.Config{Address: s.consul})
	if err != nil {
		t.Fatal(err)
	}
	sd := httptest.NewServer(prometheus.SDHandler(cc, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(sd.Close)

	dir := t.TempDir()
	cfg, err := prometheus.Render(prometheus.Options{
		Discovery: prometheus.DiscoveryHTTP, ConsulAddr: s.consul, SDURL: sd.URL + "/v1/sd",
		ScrapeInterval: time.Second, RefreshInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"prometheus.yml": cfg, "alerts.yml": prometheus.Rules()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(s.art, "prometheus.yml"), cfg, 0o644)
	web := addr(testbin.FreePort(t))
	p := startProc(t, s.logs, "prometheus", bin, []string{
		"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + web,
		"--log.level=warn",
	}, nil)

	query := func(q string) (int, error) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, err
		}
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
			Error string `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			resp.Body.Close()
			return 0, err
		}
		resp.Body.Close()
		if r.Status != "success" {
			return 0, fmt.Errorf("query %s: %s", q, r.Error)
		}
		return len(r.Data.Result), nil
	}
	// Make sure every tenant has served requests since start.
	c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
	for _, tn := range tenants {
		if resp, err := c.Get(s.url(tn.Slug, "/login")); err == nil {
			body(resp)
		}
	}
	for _, q := range []string{
		`up{job="stagesub-app",tenant="goteborg"} == 1`,
		`up{job="stagesub-app",tenant="malmo"} == 1`,
		`sum by (tenant) (stagesub_http_requests_total{job="stagesub-app",tenant="goteborg"}) > 0`,
		`up{job="stagesub-admin"} == 1`,
		`up{job="stagesub-router"} == 1`,
		`sum by (tenant) (stagesub_router_requests_total{job="stagesub-router",tenant="goteborg"}) > 0`,
	} {
		eventually(t, 60*time.Second, 500*time.Millisecond, "prometheus: "+q, func() error {
			if p.exited() {
				t.Fatalf("prometheus exited:\n%s", p.logTail())
			}
			n, err := query(q)
			if err == nil && n == 0 {
				err = fmt.Errorf("empty result")
			}
			return err
		})
	}
	// No app series without a tenant label.
	if n, err := query(`up{job="stagesub-app",tenant=""}`); err != nil || n != 0 {
		t.Errorf("app targets without tenant label: %d (%v)", n, err)
	}
}

// testKillRestart: SIGKILL a tenant's only instance: the router answers 503
// with Retry-After, the supervisor restarts it, and it is served again.
func (s *system) testKillRestart(t *testing.T) {
	ctx := context.Background()
	st, err := s.target.Status(ctx, "goteborg")
	if err != nil || st.State != deploy.StateRunning || st.PID == 0 {
		t.Fatalf("goteborg status %+v (%v)", st, err)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c := routerClient(t, s.httpAddr, s.httpsAddr, s.ca)
	eventually(t, 15*time.Second, 50*time.Millisecond, "503 after kill", func() error {
		resp, err := c.Get(s.url("goteborg", "/login"))
		if err != nil {
			return err
		}
		body(resp)
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		return nil
	})
	// Malmo is not affected.
	resp, err := c.Get(s.url("malmo", "/login"))
	if err != nil {
		t.Fatal(err)
	}
	body(resp)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("malmo while goteborg is down: status %d", resp.StatusCode)
	}
	eventually(t, 60*time.Second, 200*time.Millisecond, "served after restart", func() error {
		resp, err := c.Get(s.url("goteborg", "/login"))
		if err != nil {
			return err
		}
		body(resp)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	st2, err := s.target.Status(ctx, "goteborg")
	if err != nil {
		t.Fatal(err)
	}
	if st2.PID == st.PID || st2.Restarts < 1 {
		t.Errorf("after restart: pid %d (was %d), restarts %d", st2.PID, st.PID, st2.Restarts)
	}
	// Its data survived: the musicians are still there.
	ss := s.login(t, "goteborg")
	if code, page := ss.get(t, "/musicians"); code != http.StatusOK || !strings.Contains(page, "Isolde Göteborgsdotter") {
		t.Errorf("after restart /musicians: status %d, musician missing", code)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
