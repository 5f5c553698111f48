package main_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	main "stagesub.dev/admin/cmd/stagesub-admin"
	"stagesub.dev/admin/internal/admintest"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	adminUser = "superadmin"
	adminPW   = "a long superadmin password"
)

// tenantSpec is one tenant of the end-to-end fleet.
type tenantSpec struct {
	slug   string
	status registry.Status
	data   admintest.Data
}

func createTenant(tb testing.TB, store *consul.Store, c *pgtest.Cluster, ts tenantSpec) {
	tb.Helper()
	name := admintest.CreateTenantDB(tb, c, ts.data)
	admintest.Settle(tb, c, name, admintest.Inserts(ts.data)) // baselines read later must include the fill
	err := store.CreateTenant(context.Background(), &registry.Tenant{
		Version: registry.RecordVersion, Slug: ts.slug, Name: "Orchestra " + ts.slug, Status: ts.status,
		Database: registry.Database{Host: "127.0.0.1", Port: c.Port(), Name: name}, SchemaVersion: 1,
		CreatedAt: time.Now(), UpdatedAt: time.Now(),
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// Admin is a running stagesub-admin for a test.
type Admin struct {
	*main.Main
	URL string
}

func MustRunAdmin(tb testing.TB, environ []string) *Admin {
	tb.Helper()
	adm, stop := startAdmin(tb, environ, io.Discard)
	tb.Cleanup(stop)
	return adm
}

// startAdmin runs an admin logging to stderr until stop is called.
func startAdmin(tb testing.TB, environ []string, stderr io.Writer) (adm *Admin, stop func()) {
	tb.Helper()
	m := main.NewMain(stderr)
	if err := m.Load(nil, environ); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Run: %v", err)
			}
		})
	}
	select {
	case <-m.Started:
	case err := <-done:
		cancel()
		tb.Fatalf("Run ended early: %v", err)
	case <-time.After(10 * time.Second):
		stop()
		tb.Fatal("admin did not start")
	}
	return &Admin{Main: m, URL: "http://" + m.Addr}, stop
}

// browser talks to the admin like a browser behind the router (https, so
// Secure cookies are sent back).
type browser struct {
	tb      testing.TB
	base    string
	cookies map[string]string
	client  *http.Client
}

func newBrowser(tb testing.TB, base string) *browser {
	return &browser{tb: tb, base: base, cookies: map[string]string{},
		client: &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values, mod func(*http.Request)) (*http.Response, string) {
	b.tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.tb.Fatal(err)
	}
	req.Host = "admin.stagesub.test"
	req.Header.Set("X-Forwarded-Proto", "https")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	if mod != nil {
		mod(req)
	}
	res, err := b.client.Do(req)
	if err != nil {
		b.tb.Fatal(err)
	}
	defer res.Body.Close()
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	out, _ := io.ReadAll(res.Body)
	return res, string(out)
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func (b *browser) login() string {
	b.tb.Helper()
	_, page := b.do("GET", "/login", nil, nil)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		b.tb.Fatalf("no CSRF token on login page")
	}
	res, _ := b.do("POST", "/login", url.Values{"csrf_token": {m[1]}, "user": {adminUser}, "password": {adminPW}}, nil)
	if res.StatusCode != http.StatusSeeOther {
		b.tb.Fatalf("login = %d", res.StatusCode)
	}
	res, page = b.do("GET", "/", nil, nil)
	if res.StatusCode != http.StatusOK {
		b.tb.Fatalf("dashboard = %d", res.StatusCode)
	}
	return csrfRE.FindStringSubmatch(page)[1]
}

type apiStats struct {
	Generation uint64 `json:"generation"`
	Totals     struct {
		Customers         int            `json:"customers"`
		CustomersByStatus map[string]int `json:"customers_by_status"`
		Musicians         int64          `json:"musicians"`
		Projects          int64          `json:"projects"`
		OpenRequests      int64          `json:"open_requests"`
		Unreachable       int            `json:"databases_unreachable"`
	} `json:"totals"`
	Tenants []struct {
		Slug             string `json:"slug"`
		Musicians        int64  `json:"musicians"`
		Reachable        bool   `json:"database_reachable"`
		TimedOut         bool   `json:"timed_out"`
		Error            string `json:"error"`
		InstancesPassing int    `json:"instances_passing"`
		InstancesTotal   int    `json:"instances_total"`
		PanelURL         string `json:"panel_url"`
		SchemaVersion    int64  `json:"schema_version"`
		DatabaseBytes    int64  `json:"database_bytes"`
	} `json:"tenants"`
}

func (b *browser) stats() apiStats {
	b.tb.Helper()
	res, body := b.do("GET", "/api/v1/stats", nil, func(r *http.Request) { r.SetBasicAuth(adminUser, adminPW) })
	if res.StatusCode != 200 {
		b.tb.Fatalf("api = %d: %s", res.StatusCode, body)
	}
	var s apiStats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		b.tb.Fatal(err)
	}
	return s
}

func waitFor(tb testing.TB, what string, d time.Duration, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEndToEnd runs the admin binary's Main against real PostgreSQL (two
// clusters) and the Consul stand-in: known data in six tenants, one
// database stopped, one blocked by a lock, app instances passing and
// failing.
func TestEndToEnd(t *testing.T) {
	pg := pgtest.Start(t, pgtest.WithTCP())
	other := pgtest.New(t, pgtest.WithTCP()) // stopped below: "database down"
	srv := consuldev.StartTest(t, consuldev.Config{})
	cl := srv.Client(t)
	store := consul.NewStore(cl)

	fleet := []tenantSpec{
		{"alpha", registry.StatusActive, admintest.Data{Musicians: 10, InactiveMusicians: 3, Projects: 2, OpenRequests: 4, ClosedRequests: 2, LastActivity: time.Now().Add(-time.Hour)}},
		{"bravo", registry.StatusActive, admintest.Data{Musicians: 20, Projects: 5, OpenRequests: 1}},
		{"charlie", registry.StatusSuspended, admintest.Data{Musicians: 30, Projects: 1, OpenRequests: 0}},
		{"delta", registry.StatusMaintenance, admintest.Data{Musicians: 1, Projects: 1, OpenRequests: 1}},
		{"echo", registry.StatusActive, admintest.Data{}},
		{"slow", registry.StatusActive, admintest.Data{Musicians: 1000, Projects: 1000, OpenRequests: 1000}},
	}
	for _, ts := range fleet {
		createTenant(t, store, pg, ts)
	}
	createTenant(t, store, other, tenantSpec{"down", registry.StatusActive, admintest.Data{Musicians: 500, Projects: 500}})
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}

	// App instances of alpha: one healthy, one failing its check.
	for _, code := range []int{200, 500} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }))
		t.Cleanup(app.Close)
		port, _ := strconv.Atoi(app.URL[strings.LastIndexByte(app.URL, ':')+1:])
		_, dereg, err := consul.Register(context.Background(), cl, registry.Registration{
			Service: registry.ServiceApp, Tenant: "alpha", Address: "127.0.0.1", Port: port,
			CheckInterval: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = dereg(context.Background()) })
	}

	// "slow": a lock the stats view needs, held until released.
	lock, err := pgx.Connect(context.Background(), pg.URL(dbName(t, store, "slow")))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(context.Background())
	tx, err := lock.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "LOCK TABLE musicians IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	hash, _ := bcrypt.GenerateFromPassword([]byte(adminPW), bcrypt.MinCost)
	const timeout = 700 * time.Millisecond
	adm := MustRunAdmin(t, []string{
		"CONSUL_HTTP_ADDR=" + srv.Addr(),
		"STAGESUB_LISTEN=127.0.0.1:0",
		"STAGESUB_BASE_DOMAIN=stagesub.test",
		"STAGESUB_PANEL_URL=https://{slug}.localhost:8443/",
		"STAGESUB_ADMIN_USER=" + adminUser,
		"STAGESUB_ADMIN_PASSWORD_HASH=" + string(hash),
		"STAGESUB_SESSION_KEY=" + hex.EncodeToString([]byte(strings.Repeat("s", 32))),
		"STAGESUB_STATS_PASSWORD=" + admintest.StatsPassword,
		"STAGESUB_STATS_DSN=postgres://127.0.0.1/?sslmode=disable",
		"STAGESUB_STATS_TIMEOUT=" + timeout.String(),
		"STAGESUB_STATS_INTERVAL=1h",
		"STAGESUB_METRICS_TOKEN=metrics-token",
	})
	b := newBrowser(t, adm.URL)

	waitFor(t, "first report", 20*time.Second, func() bool { return adm.Cache.Report().Generation >= 1 })
	rep := adm.Cache.Report()
	if rep.Duration > 4*timeout {
		t.Errorf("refresh took %s with a %s per-tenant timeout", rep.Duration, timeout)
	}

	t.Run("LoginRequired", func(t *testing.T) {
		anon := newBrowser(t, adm.URL)
		res, _ := anon.do("GET", "/", nil, nil)
		if got, want := res.StatusCode, http.StatusSeeOther; got != want {
			t.Errorf("dashboard without session = %d, want %d", got, want)
		}
		if got, want := res.Header.Get("Location"), "/login?next=%2F"; got != want {
			t.Errorf("location = %q, want %q", got, want)
		}
		res, _ = anon.do("GET", "/api/v1/stats", nil, func(r *http.Request) { r.SetBasicAuth(adminUser, "wrong") })
		if got, want := res.StatusCode, http.StatusUnauthorized; got != want {
			t.Errorf("api with a wrong password = %d, want %d", got, want)
		}
		if res, _ := anon.do("GET", "/healthz", nil, nil); res.StatusCode != 200 {
			t.Errorf("healthz = %d", res.StatusCode)
		}
	})

	t.Run("Totals", func(t *testing.T) {
		s := b.stats()
		if got, want := s.Totals.Customers, 7; got != want {
			t.Errorf("customers = %d, want %d", got, want)
		}
		for st, want := range map[string]int{"active": 5, "suspended": 1, "maintenance": 1} {
			if got := s.Totals.CustomersByStatus[st]; got != want {
				t.Errorf("%s customers = %d, want %d", st, got, want)
			}
		}
		// Reachable tenants only: alpha..echo.
		if got, want := s.Totals.Musicians, int64(10+20+30+1); got != want {
			t.Errorf("musicians = %d, want %d", got, want)
		}
		if got, want := s.Totals.Projects, int64(2+5+1+1); got != want {
			t.Errorf("projects = %d, want %d", got, want)
		}
		if got, want := s.Totals.OpenRequests, int64(4+1+0+1); got != want {
			t.Errorf("open requests = %d, want %d", got, want)
		}
		if got, want := s.Totals.Unreachable, 2; got != want {
			t.Errorf("unreachable = %d, want %d", got, want)
		}
		for _, row := range s.Tenants {
			switch row.Slug {
			case "down":
				if row.Reachable || row.TimedOut || row.Error == "" {
					t.Errorf("down = %+v, want unreachable with an error", row)
				}
			case "slow":
				if row.Reachable || !row.TimedOut {
					t.Errorf("slow = %+v, want timed out", row)
				}
			default:
				if !row.Reachable || row.SchemaVersion != 1 || row.DatabaseBytes == 0 {
					t.Errorf("%s = %+v, want reachable, schema 1, a size", row.Slug, row)
				}
			}
			if got, want := row.PanelURL, "https://"+row.Slug+".localhost:8443/"; got != want {
				t.Errorf("panel = %q, want %q", got, want)
			}
		}
	})

	t.Run("Instances", func(t *testing.T) {
		waitFor(t, "alpha 1/2 instances", 15*time.Second, func() bool {
			if _, err := adm.Cache.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, row := range b.stats().Tenants {
				if row.Slug == "alpha" {
					return row.InstancesPassing == 1 && row.InstancesTotal == 2
				}
			}
			return false
		})
	})

	t.Run("PageAnswersDuringRefresh", func(t *testing.T) {
		b.login()
		before := adm.Cache.Report().Generation
		refreshed := make(chan error, 1)
		go func() { _, err := adm.Cache.Refresh(context.Background()); refreshed <- err }()
		waitFor(t, "refresh in flight", 5*time.Second, adm.Cache.Refreshing)
		res, page := b.do("GET", "/", nil, nil)
		if res.StatusCode != 200 {
			t.Fatalf("dashboard = %d", res.StatusCode)
		}
		// The refresh still waits for the slow tenant: the page did not.
		if !adm.Cache.Refreshing() {
			t.Error("refresh finished before the page answered; the test proves nothing")
		}
		if !strings.Contains(page, "refreshing now") {
			t.Error("page does not say that a refresh runs")
		}
		if err := <-refreshed; err != nil {
			t.Fatal(err)
		}
		if got := adm.Cache.Report().Generation; got != before+1 {
			t.Errorf("generation = %d, want %d", got, before+1)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		res, _ := b.do("GET", "/metrics", nil, nil)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("metrics without token = %d, want 401", res.StatusCode)
		}
		res, body := b.do("GET", "/metrics", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer metrics-token") })
		if res.StatusCode != 200 {
			t.Fatalf("metrics = %d", res.StatusCode)
		}
		for _, want := range []string{
			`stagesub_admin_tenant_musicians{tenant="alpha"} 10`,
			`stagesub_admin_tenant_up{tenant="down"} 0`,
			`stagesub_admin_tenant_up{tenant="bravo"} 1`,
			`stagesub_admin_tenant_stats_failures_total{tenant="slow"}`,
			`stagesub_admin_fanout_duration_seconds_count`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})

	t.Run("Registered", func(t *testing.T) {
		waitFor(t, "stagesub-admin in the catalog", 10*time.Second, func() bool {
			svcs, _, err := cl.Catalog().Service(registry.ServiceAdmin, "", nil)
			return err == nil && len(svcs) == 1 && svcs[0].ServicePort == portOf(adm.URL)
		})
	})

	t.Run("Recovery", func(t *testing.T) {
		if err := tx.Rollback(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := adm.Cache.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		s := b.stats()
		if got, want := s.Totals.Unreachable, 0; got != want {
			t.Errorf("unreachable = %d, want %d", got, want)
		}
		if got, want := s.Totals.Musicians, int64(10+20+30+1+1000+500); got != want {
			t.Errorf("musicians = %d, want %d", got, want)
		}
		// No pool: after a refresh no stats connection stays open.
		for _, c := range []*pgtest.Cluster{pg, other} {
			waitFor(t, "no stagesub_stats backends", 5*time.Second, func() bool {
				return statsBackends(t, c) == 0
			})
		}
	})
}

func statsBackends(tb testing.TB, c *pgtest.Cluster) int {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", registry.StatsRole).Scan(&n)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func dbName(tb testing.TB, store *consul.Store, slug string) string {
	tb.Helper()
	tn, err := store.FindTenant(context.Background(), slug)
	if err != nil {
		tb.Fatal(err)
	}
	return tn.Database.Name
}

func portOf(u string) int {
	p, _ := strconv.Atoi(u[strings.LastIndexByte(u, ':')+1:])
	return p
}

// TestRestartWithStateFile: with systemd's STATE_DIRECTORY set, the admin
// saves its report there; after a restart it starts from the saved report
// and its first refresh queries only the tenant written while it was down.
func TestRestartWithStateFile(t *testing.T) {
	pg := pgtest.Start(t, pgtest.WithTCP())
	srv := consuldev.StartTest(t, consuldev.Config{})
	store := consul.NewStore(srv.Client(t))
	for _, ts := range []tenantSpec{
		{"alpha", registry.StatusActive, admintest.Data{Musicians: 10, Projects: 2}},
		{"bravo", registry.StatusActive, admintest.Data{Musicians: 20, Projects: 5}},
	} {
		createTenant(t, store, pg, ts)
	}
	stateDir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte(adminPW), bcrypt.MinCost)
	environ := []string{
		"CONSUL_HTTP_ADDR=" + srv.Addr(),
		"STAGESUB_REGISTER=0",
		"STAGESUB_ADMIN_USER=" + adminUser,
		"STAGESUB_ADMIN_PASSWORD_HASH=" + string(hash),
		"STAGESUB_STATS_PASSWORD=" + admintest.StatsPassword,
		"STAGESUB_STATS_DSN=postgres://127.0.0.1/?sslmode=disable",
		"STAGESUB_STATS_INTERVAL=1h",
		"STATE_DIRECTORY=" + stateDir,
	}
	adm, stop := startAdmin(t, environ, io.Discard)
	waitFor(t, "first report", 20*time.Second, func() bool { return adm.Cache.Report().Generation >= 1 })
	if got := adm.Cache.Report().Totals.Musicians; got != 30 {
		t.Fatalf("musicians = %d, want 30", got)
	}
	stop()
	if _, err := os.Stat(filepath.Join(stateDir, "stats.json")); err != nil {
		t.Fatalf("no state file after the first run: %v", err)
	}

	// While the admin is down, bravo gets a musician (statistics flushed).
	conn, err := pgx.Connect(context.Background(), pg.URL(dbName(t, store, "bravo")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(),
		"INSERT INTO musicians (name, instrument, active) VALUES ('new', 'horn', true); SELECT pg_stat_force_next_flush()")
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	var log syncbuf.Buffer
	adm, stop = startAdmin(t, environ, &log)
	defer stop()
	if !strings.Contains(log.String(), "loaded the saved stats report") {
		t.Errorf("second start did not load the state file:\n%s", log.String())
	}
	waitFor(t, "first refresh after the restart", 20*time.Second, func() bool { return adm.Cache.Report().Generation >= 2 })
	rep := adm.Cache.Report()
	for _, x := range []struct {
		what      string
		got, want int64
	}{
		{"generation", int64(rep.Generation), 2},
		{"queried", int64(rep.Queried), 1},
		{"unchanged", int64(rep.Unchanged), 1},
		{"musicians", rep.Totals.Musicians, 31},
	} {
		if x.got != x.want {
			t.Errorf("%s = %d, want %d", x.what, x.got, x.want)
		}
	}
	if row := rep.Tenant("alpha"); row == nil || !row.Unchanged {
		t.Errorf("alpha = %+v, want kept unchanged across the restart", row)
	}
}
