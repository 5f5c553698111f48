package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"stagesub.dev/admin"
	"stagesub.dev/admin/http"
	"stagesub.dev/registry"
)

const (
	user = "root"
	pw   = "correct horse battery staple"
)

// Stats is a fake http.Stats.
type Stats struct {
	report    atomic.Pointer[admin.Report]
	refreshes atomic.Int64
}

func (s *Stats) Get() *admin.Report      { return s.report.Load() }
func (s *Stats) Refreshing() bool        { return false }
func (s *Stats) Interval() time.Duration { return 30 * time.Second }
func (s *Stats) Refresh(ctx context.Context) (*admin.Report, error) {
	s.refreshes.Add(1)
	return s.report.Load(), nil
}

func testReport(now time.Time) *admin.Report {
	last := now.Add(-time.Hour)
	rows := []admin.TenantStats{
		{Slug: "goteborg", Name: "Göteborgs Symfoniker", Status: registry.StatusActive, Musicians: 120, Projects: 8, OpenRequests: 5,
			Reachable: true, InstancesPassing: 2, InstancesTotal: 2, PanelURL: "https://goteborg.example.com/", LastActivity: &last, StatsAt: &now},
		{Slug: "malmo", Name: "Malmö SO", Status: registry.StatusActive, Musicians: 80, Projects: 3, OpenRequests: 1,
			Reachable: true, InstancesPassing: 1, InstancesTotal: 1, PanelURL: "https://malmo.example.com/", StatsAt: &now},
		{Slug: "umea", Name: "Norrlandsoperan <b>", Status: registry.StatusSuspended, Reachable: false, TimedOut: true,
			Error: "timed out after 2s", PanelURL: "https://umea.example.com/"},
	}
	return &admin.Report{Generation: 7, StartedAt: now.Add(-12 * time.Second), FinishedAt: now.Add(-11 * time.Second),
		Duration: 250 * time.Millisecond, Tenants: rows, Totals: admin.Sum(rows)}
}

type env struct {
	h     *http.Handler
	stats *Stats
	hash  string
}

func MustHandler(tb testing.TB, mod func(*http.Options)) *env {
	tb.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Stats{}
	s.report.Store(testReport(time.Now()))
	o := http.Options{Stats: s, User: user, PasswordHash: string(hash), SessionKey: []byte(strings.Repeat("k", 32)),
		Metrics: nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) { io.WriteString(w, "metrics\n") }),
		Logger:  slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&o)
	}
	h, err := http.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{h: h, stats: s, hash: string(hash)}
}

// client keeps cookies by name, like a browser on https would.
type client struct {
	tb      testing.TB
	h       nethttp.Handler
	cookies map[string]*nethttp.Cookie
	remote  string
}

var clientN atomic.Int64

// client returns a new browser with its own address (the login limit is
// per client).
func (e *env) client(tb testing.TB) *client {
	n := clientN.Add(1)
	return &client{tb: tb, h: e.h, cookies: map[string]*nethttp.Cookie{},
		remote: fmt.Sprintf("192.0.2.%d:1234", n%250+1)}
}

func (c *client) do(method, target string, form url.Values, mod func(*nethttp.Request)) *nethttp.Response {
	c.tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	r.RemoteAddr = c.remote
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, ck := range c.cookies {
		r.AddCookie(&nethttp.Cookie{Name: ck.Name, Value: ck.Value})
	}
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	c.h.ServeHTTP(w, r)
	res := w.Result()
	for _, ck := range res.Cookies() {
		if ck.MaxAge < 0 {
			delete(c.cookies, ck.Name)
		} else {
			c.cookies[ck.Name] = ck
		}
	}
	return res
}

func bodyOf(tb testing.TB, res *nethttp.Response) string {
	tb.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func csrfOf(tb testing.TB, page string) string {
	tb.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		tb.Fatalf("no CSRF token in page:\n%s", page)
	}
	return html.UnescapeString(m[1])
}

// login logs c in and returns the dashboard's CSRF token.
func (c *client) login(tb testing.TB) string {
	tb.Helper()
	tok := csrfOf(tb, bodyOf(tb, c.do("GET", "/login", nil, nil)))
	res := c.do("POST", "/login", url.Values{"csrf_token": {tok}, "user": {user}, "password": {pw}, "next": {"/"}}, nil)
	if got, want := res.StatusCode, nethttp.StatusSeeOther; got != want {
		tb.Fatalf("login status = %d, want %d: %s", got, want, bodyOf(tb, res))
	}
	page := c.do("GET", "/", nil, nil)
	if page.StatusCode != 200 {
		tb.Fatalf("dashboard after login = %d", page.StatusCode)
	}
	return csrfOf(tb, bodyOf(tb, page))
}

func TestNoSession(t *testing.T) {
	e := MustHandler(t, nil)
	c := e.client(t)
	tests := []struct {
		method, target string
		status         int
		location       string
	}{
		{"GET", "/", nethttp.StatusSeeOther, "/login?next=%2F%3Fsort%3Dmusicians"},
		{"GET", "/api/v1/stats", nethttp.StatusUnauthorized, ""},
		{"POST", "/refresh", nethttp.StatusUnauthorized, ""},
		{"POST", "/logout", nethttp.StatusUnauthorized, ""},
		{"GET", "/healthz", nethttp.StatusOK, ""},
		{"GET", "/metrics", nethttp.StatusOK, ""},
		{"GET", "/favicon.ico", nethttp.StatusOK, ""},
		{"GET", "/nope", nethttp.StatusNotFound, ""},
	}
	for _, tt := range tests {
		target := tt.target
		if target == "/" {
			target = "/?sort=musicians"
		}
		res := c.do(tt.method, target, url.Values{}, nil)
		if got, want := res.StatusCode, tt.status; got != want {
			t.Errorf("%s %s = %d, want %d", tt.method, target, got, want)
		}
		if got, want := res.Header.Get("Location"), tt.location; got != want {
			t.Errorf("%s %s location = %q, want %q", tt.method, target, got, want)
		}
	}
	res := c.do("GET", "/api/v1/stats", nil, nil)
	if got := res.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("WWW-Authenticate = %q, want Basic", got)
	}
}

func TestLogin(t *testing.T) {
	e := MustHandler(t, nil)

	t.Run("OK", func(t *testing.T) {
		c := e.client(t)
		page := bodyOf(t, c.do("GET", "/login?next=/%3Fq%3Dmal", nil, nil))
		tok := csrfOf(t, page)
		res := c.do("POST", "/login", url.Values{"csrf_token": {tok}, "user": {user}, "password": {pw}, "next": {"/?q=mal"}}, nil)
		if got, want := res.StatusCode, nethttp.StatusSeeOther; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		if got, want := res.Header.Get("Location"), "/?q=mal"; got != want {
			t.Errorf("location = %q, want %q", got, want)
		}
		ck := c.cookies[http.SessionCookie]
		if ck == nil {
			t.Fatal("no session cookie")
		}
		if !ck.Secure || !ck.HttpOnly || ck.SameSite != nethttp.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" {
			t.Errorf("session cookie = %+v, want Secure, HttpOnly, SameSite=Strict, Path=/, host-only", ck)
		}
		res = c.do("GET", "/", nil, nil)
		body := bodyOf(t, res)
		if res.StatusCode != 200 {
			t.Fatalf("dashboard = %d", res.StatusCode)
		}
		for _, want := range []string{"Göteborgs Symfoniker", "malmo", "https://goteborg.example.com/", "timed out",
			"Norrlandsoperan &lt;b&gt;", "collected in 250 ms", "(11 s ago)", "<b>3</b>customers", "<b>200</b>musicians"} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard lacks %q", want)
			}
		}
		if got := res.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", got)
		}
	})

	t.Run("ErrWrongPassword", func(t *testing.T) {
		for _, creds := range [][2]string{{user, "wrong"}, {"nobody", pw}, {"", ""}} {
			c := e.client(t)
			tok := csrfOf(t, bodyOf(t, c.do("GET", "/login", nil, nil)))
			res := c.do("POST", "/login", url.Values{"csrf_token": {tok}, "user": {creds[0]}, "password": {creds[1]}}, nil)
			if got, want := res.StatusCode, nethttp.StatusUnauthorized; got != want {
				t.Errorf("%v: status = %d, want %d", creds, got, want)
			}
			if c.cookies[http.SessionCookie] != nil {
				t.Errorf("%v: got a session cookie", creds)
			}
			if res := c.do("GET", "/", nil, nil); res.StatusCode != nethttp.StatusSeeOther {
				t.Errorf("%v: dashboard = %d, want redirect", creds, res.StatusCode)
			}
		}
	})

	t.Run("ErrOpenRedirect", func(t *testing.T) {
		c := e.client(t)
		tok := csrfOf(t, bodyOf(t, c.do("GET", "/login", nil, nil)))
		res := c.do("POST", "/login", url.Values{"csrf_token": {tok}, "user": {user}, "password": {pw}, "next": {"//evil.example/"}}, nil)
		if got, want := res.Header.Get("Location"), "/"; got != want {
			t.Errorf("location = %q, want %q", got, want)
		}
	})

	t.Run("ErrTamperedSession", func(t *testing.T) {
		c := e.client(t)
		c.login(t)
		ck := c.cookies[http.SessionCookie]
		v := []byte(ck.Value)
		v[0] ^= 1
		ck.Value = string(v)
		if res := c.do("GET", "/", nil, nil); res.StatusCode != nethttp.StatusSeeOther {
			t.Errorf("tampered session: status %d, want redirect", res.StatusCode)
		}
	})

	t.Run("PasswordChangeEndsSessions", func(t *testing.T) {
		c := e.client(t)
		c.login(t)
		other, _ := bcrypt.GenerateFromPassword([]byte("another password!"), bcrypt.MinCost)
		e2 := MustHandler(t, func(o *http.Options) { o.PasswordHash = string(other) })
		c.h = e2.h
		if res := c.do("GET", "/", nil, nil); res.StatusCode != nethttp.StatusSeeOther {
			t.Errorf("old session after password change: status %d, want redirect", res.StatusCode)
		}
	})

	t.Run("Logout", func(t *testing.T) {
		c := e.client(t)
		tok := c.login(t)
		res := c.do("POST", "/logout", url.Values{"csrf_token": {tok}}, nil)
		if got, want := res.StatusCode, nethttp.StatusSeeOther; got != want {
			t.Fatalf("logout = %d, want %d", got, want)
		}
		if c.cookies[http.SessionCookie] != nil {
			t.Error("session cookie not cleared")
		}
	})

	t.Run("LogoutRevokesCapturedCookie", func(t *testing.T) {
		c := e.client(t)
		tok := c.login(t)
		captured := *c.cookies[http.SessionCookie]
		other := e.client(t) // a second session stays valid
		other.login(t)
		if res := c.do("POST", "/logout", url.Values{"csrf_token": {tok}}, nil); res.StatusCode != nethttp.StatusSeeOther {
			t.Fatalf("logout = %d", res.StatusCode)
		}
		c.cookies[http.SessionCookie] = &captured // replay the cookie taken before logout
		tests := []struct {
			name     string
			c        *client
			method   string
			target   string
			form     url.Values
			wantCode int
		}{
			{"DashboardWithCapturedCookie", c, "GET", "/", nil, nethttp.StatusSeeOther},
			{"APIWithCapturedCookie", c, "GET", "/api/v1/stats", nil, nethttp.StatusUnauthorized},
			{"RefreshWithCapturedCookie", c, "POST", "/refresh", url.Values{"csrf_token": {tok}}, nethttp.StatusUnauthorized},
			{"OtherSession", other, "GET", "/", nil, nethttp.StatusOK},
		}
		for _, tt := range tests {
			res := tt.c.do(tt.method, tt.target, tt.form, nil)
			if got, want := res.StatusCode, tt.wantCode; got != want {
				t.Errorf("%s: %s %s = %d, want %d", tt.name, tt.method, tt.target, got, want)
			}
		}
	})
}

func TestCSRF(t *testing.T) {
	e := MustHandler(t, nil)

	t.Run("ErrLoginWithoutToken", func(t *testing.T) {
		c := e.client(t)
		c.do("GET", "/login", nil, nil)
		res := c.do("POST", "/login", url.Values{"user": {user}, "password": {pw}}, nil)
		if got, want := res.StatusCode, nethttp.StatusForbidden; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if c.cookies[http.SessionCookie] != nil {
			t.Error("logged in without a CSRF token")
		}
	})

	t.Run("ErrLoginTokenOfAnotherBrowser", func(t *testing.T) {
		attacker := e.client(t)
		tok := csrfOf(t, bodyOf(t, attacker.do("GET", "/login", nil, nil)))
		victim := e.client(t)
		victim.do("GET", "/login", nil, nil)
		res := victim.do("POST", "/login", url.Values{"csrf_token": {tok}, "user": {user}, "password": {pw}}, nil)
		if got, want := res.StatusCode, nethttp.StatusForbidden; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	t.Run("ErrRefreshWithoutToken", func(t *testing.T) {
		c := e.client(t)
		tok := c.login(t)
		before := e.stats.refreshes.Load()
		for _, form := range []url.Values{{}, {"csrf_token": {"x" + tok}}} {
			res := c.do("POST", "/refresh", form, nil)
			if got, want := res.StatusCode, nethttp.StatusForbidden; got != want {
				t.Errorf("form %v: status = %d, want %d", form, got, want)
			}
		}
		// A token from another session does not work either.
		other := e.client(t)
		otherTok := other.login(t)
		if res := c.do("POST", "/refresh", url.Values{"csrf_token": {otherTok}}, nil); res.StatusCode != nethttp.StatusForbidden {
			t.Errorf("token of another session: status = %d, want 403", res.StatusCode)
		}
		if got := e.stats.refreshes.Load(); got != before {
			t.Errorf("refreshes = %d, want %d", got, before)
		}
		res := c.do("POST", "/refresh", url.Values{"csrf_token": {tok}}, nil)
		if got, want := res.StatusCode, nethttp.StatusSeeOther; got != want {
			t.Errorf("with token: status = %d, want %d", got, want)
		}
		if got, want := e.stats.refreshes.Load(), before+1; got != want {
			t.Errorf("refreshes = %d, want %d", got, want)
		}
	})
}

func TestLoginRateLimit(t *testing.T) {
	e := MustHandler(t, func(o *http.Options) { o.LoginRate = rate.Every(time.Hour); o.LoginBurst = 3 })
	c := e.client(t)
	tok := csrfOf(t, bodyOf(t, c.do("GET", "/login", nil, nil)))
	try := func(p string) int {
		return c.do("POST", "/login", url.Values{"csrf_token": {tok}, "user": {user}, "password": {p}}, nil).StatusCode
	}
	for i := 0; i < 3; i++ {
		if got, want := try("wrong"), nethttp.StatusUnauthorized; got != want {
			t.Fatalf("attempt %d = %d, want %d", i, got, want)
		}
	}
	if got, want := try(pw), nethttp.StatusTooManyRequests; got != want {
		t.Fatalf("attempt after the burst = %d, want %d (even with the right password)", got, want)
	}
	// Another client is not affected; behind the router the client is the
	// X-Forwarded-For address.
	c2 := e.client(t)
	c2.remote = "127.0.0.1:5555"
	tok2 := csrfOf(t, bodyOf(t, c2.do("GET", "/login", nil, nil)))
	res := c2.do("POST", "/login", url.Values{"csrf_token": {tok2}, "user": {user}, "password": {pw}}, func(r *nethttp.Request) {
		r.Header.Set("X-Forwarded-For", "198.51.100.7")
	})
	if got, want := res.StatusCode, nethttp.StatusSeeOther; got != want {
		t.Errorf("other client = %d, want %d", got, want)
	}
	// Basic auth guesses count against the same limit.
	res = c.do("GET", "/api/v1/stats", nil, func(r *nethttp.Request) { r.SetBasicAuth(user, "guess") })
	if got, want := res.StatusCode, nethttp.StatusTooManyRequests; got != want {
		t.Errorf("basic auth guess after the limit = %d, want %d", got, want)
	}
}

// TestBasicAuthRateLimit checks that HTTP Basic auth consults the limiter
// before the password: once a client has spent its attempts, even the right
// password gets 429, while right answers themselves spend nothing.
func TestBasicAuthRateLimit(t *testing.T) {
	e := MustHandler(t, func(o *http.Options) { o.LoginRate = rate.Every(time.Hour); o.LoginBurst = 3 })
	basic := func(p string) func(*nethttp.Request) {
		return func(r *nethttp.Request) { r.SetBasicAuth(user, p) }
	}

	t.Run("RightPasswordSpendsNothing", func(t *testing.T) {
		c := e.client(t)
		for i := range 10 {
			if got, want := c.do("GET", "/api/v1/stats", nil, basic(pw)).StatusCode, nethttp.StatusOK; got != want {
				t.Fatalf("call %d = %d, want %d", i, got, want)
			}
		}
	})

	t.Run("LimitedBeforeCheck", func(t *testing.T) {
		c := e.client(t)
		tests := []struct {
			password string
			want     int
		}{
			{"guess-1", nethttp.StatusUnauthorized},
			{"guess-2", nethttp.StatusUnauthorized},
			{"guess-3", nethttp.StatusUnauthorized},
			{"guess-4", nethttp.StatusTooManyRequests},
			{pw, nethttp.StatusTooManyRequests}, // the right password, too late
		}
		for i, tt := range tests {
			res := c.do("GET", "/api/v1/stats", nil, basic(tt.password))
			if got := res.StatusCode; got != tt.want {
				t.Errorf("attempt %d (%s) = %d, want %d", i, tt.password, got, tt.want)
			}
			if tt.want == nethttp.StatusTooManyRequests && res.Header.Get("Retry-After") == "" {
				t.Errorf("attempt %d: 429 without Retry-After", i)
			}
		}
	})
}

func TestAPIStats(t *testing.T) {
	e := MustHandler(t, nil)
	get := func(target string, mod func(*nethttp.Request)) (*nethttp.Response, map[string]any) {
		res := e.client(t).do("GET", target, nil, mod)
		var m map[string]any
		if res.StatusCode == 200 {
			if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
				t.Fatal(err)
			}
		}
		return res, m
	}
	basic := func(u, p string) func(*nethttp.Request) { return func(r *nethttp.Request) { r.SetBasicAuth(u, p) } }

	t.Run("BasicAuth", func(t *testing.T) {
		res, m := get("/api/v1/stats", basic(user, pw))
		if res.StatusCode != 200 {
			t.Fatalf("status = %d", res.StatusCode)
		}
		if got, want := res.Header.Get("Content-Type"), "application/json"; got != want {
			t.Errorf("content type = %q, want %q", got, want)
		}
		tot := m["totals"].(map[string]any)
		for k, want := range map[string]float64{"customers": 3, "musicians": 200, "projects": 11, "open_requests": 6, "databases_unreachable": 1} {
			if got := tot[k]; got != want {
				t.Errorf("totals.%s = %v, want %v", k, got, want)
			}
		}
		if got, want := tot["customers_by_status"].(map[string]any)["suspended"], 1.0; got != want {
			t.Errorf("suspended = %v, want %v", got, want)
		}
		if got, want := len(m["tenants"].([]any)), 3; got != want {
			t.Errorf("tenants = %d, want %d", got, want)
		}
		if m["generated_at"] == nil || m["age_seconds"].(float64) < 10 {
			t.Errorf("freshness missing: generated_at=%v age=%v", m["generated_at"], m["age_seconds"])
		}
		umea := m["tenants"].([]any)[2].(map[string]any)
		if umea["slug"] != "umea" || umea["database_reachable"] != false || umea["timed_out"] != true {
			t.Errorf("umea = %v, want flagged", umea)
		}
		// The verified credentials are remembered: the second call is cheap
		// and still right.
		if res, _ := get("/api/v1/stats", basic(user, pw)); res.StatusCode != 200 {
			t.Errorf("second call = %d", res.StatusCode)
		}
	})

	t.Run("ErrBasicAuth", func(t *testing.T) {
		for _, creds := range [][2]string{{user, "nope"}, {"other", pw}} {
			if res, _ := get("/api/v1/stats", basic(creds[0], creds[1])); res.StatusCode != nethttp.StatusUnauthorized {
				t.Errorf("%v: status = %d, want 401", creds, res.StatusCode)
			}
		}
	})

	t.Run("SortAndFilter", func(t *testing.T) {
		tests := []struct {
			query string
			want  string
		}{
			{"", "goteborg,malmo,umea"},
			{"?sort=musicians", "umea,malmo,goteborg"},
			{"?sort=musicians&order=desc", "goteborg,malmo,umea"},
			{"?sort=name", "goteborg,malmo,umea"},
			{"?q=MAL", "malmo"},
			{"?q=symfoniker", "goteborg"},
			{"?status=suspended", "umea"},
			{"?problems=1", "umea"},
			{"?sort=bogus", "goteborg,malmo,umea"},
		}
		for _, tt := range tests {
			_, m := get("/api/v1/stats"+tt.query, basic(user, pw))
			var slugs []string
			for _, r := range m["tenants"].([]any) {
				slugs = append(slugs, r.(map[string]any)["slug"].(string))
			}
			if got := strings.Join(slugs, ","); got != tt.want {
				t.Errorf("%q: got %s, want %s", tt.query, got, tt.want)
			}
			if got, want := m["totals"].(map[string]any)["customers"], 3.0; got != want {
				t.Errorf("%q: totals are of the whole fleet: customers = %v, want %v", tt.query, got, want)
			}
		}
	})

	t.Run("Restored", func(t *testing.T) {
		// A report loaded from the state file says so, in the API and on
		// the page, with its date: it is from before the restart.
		now := time.Now()
		rep := testReport(now)
		rep.FinishedAt = now.Add(-3 * time.Hour)
		rep.Restored = true
		e.stats.report.Store(rep)
		defer e.stats.report.Store(testReport(time.Now()))
		for _, tt := range []struct {
			restored bool
			wantPage string
		}{
			{true, "Data from " + rep.FinishedAt.UTC().Format("2006-01-02 15:04:05 UTC") + " (3 h ago), before restart"},
			{false, "Data from " + rep.FinishedAt.UTC().Format("15:04:05 UTC") + " (3 h ago)</span>"},
		} {
			rep.Restored = tt.restored
			_, m := get("/api/v1/stats", basic(user, pw))
			if got := m["restored"]; got != tt.restored {
				t.Errorf("restored=%v: api restored = %v", tt.restored, got)
			}
			c := e.client(t)
			c.login(t)
			page := bodyOf(t, c.do("GET", "/", nil, nil))
			if !strings.Contains(page, tt.wantPage) {
				t.Errorf("restored=%v: page lacks %q:\n%s", tt.restored, tt.wantPage, page)
			}
		}
	})

	t.Run("Empty", func(t *testing.T) {
		e.stats.report.Store(&admin.Report{Totals: admin.Sum(nil)})
		defer e.stats.report.Store(testReport(time.Now()))
		_, m := get("/api/v1/stats", basic(user, pw))
		if m["generated_at"] != nil || len(m["tenants"].([]any)) != 0 {
			t.Errorf("empty report = %v", m)
		}
	})
}

func TestMetricsToken(t *testing.T) {
	e := MustHandler(t, func(o *http.Options) { o.MetricsToken = "s3cret" })
	c := e.client(t)
	tests := []struct {
		auth   string
		status int
	}{
		{"", nethttp.StatusUnauthorized},
		{"Bearer wrong", nethttp.StatusUnauthorized},
		{"Basic s3cret", nethttp.StatusUnauthorized},
		{"Bearer s3cret", nethttp.StatusOK},
	}
	for _, tt := range tests {
		res := c.do("GET", "/metrics", nil, func(r *nethttp.Request) {
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
		})
		if got, want := res.StatusCode, tt.status; got != want {
			t.Errorf("%q: status = %d, want %d", tt.auth, got, want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*http.Options)
	}{
		{"ErrNoUser", func(o *http.Options) { o.User = "" }},
		{"ErrBadHash", func(o *http.Options) { o.PasswordHash = "plaintext" }},
		{"ErrShortKey", func(o *http.Options) { o.SessionKey = []byte("short") }},
		{"ErrNoStats", func(o *http.Options) { o.Stats = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := http.Options{Stats: &Stats{}, User: user, PasswordHash: "$2a$04$abcdefghijklmnopqrstuu5Cq9rsPDgPpHS1pDcTQmGqV0iDIc.Sm",
				SessionKey: []byte(strings.Repeat("k", 32))}
			tt.mod(&o)
			if _, err := http.New(o); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}
