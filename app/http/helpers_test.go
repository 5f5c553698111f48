package http_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"stagesub.dev/app"
	apphttp "stagesub.dev/app/http"
	"stagesub.dev/app/postgres"
	"stagesub.dev/app/schema"
	"stagesub.dev/app/schema/schematest"
	"stagesub.dev/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	tenant     = "goteborg"
	baseDomain = "stagesub.test"
	adminEmail = "admin@example.org"
	adminPass  = "admin-password"
	staffPass  = "staff-password"
)

// env is one app server on a fresh tenant database.
type env struct {
	t     testing.TB
	DB    *postgres.DB
	Srv   *httptest.Server
	Reg   *prometheus.Registry
	Admin *app.User
}

// MustEnv starts a server for tenant goteborg (base domain stagesub.test)
// on a fresh migrated database with an admin user; mods change the server
// configuration before it is built.
func MustEnv(tb testing.TB, mods ...func(*apphttp.Config)) *env {
	tb.Helper()
	c := pgtest.Start(tb)
	url := schematest.NewDB(tb, c, tenant)
	ctx := context.Background()
	if _, err := schema.CreateStaffAdmin(ctx, schematest.MustOpen(tb, url), adminEmail, adminPass); err != nil {
		tb.Fatal(err)
	}
	pool, err := postgres.Open(ctx, url, postgres.PoolOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	db := postgres.New(pool)
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"tenant": tenant}, reg)
	if err := wrapped.Register(postgres.NewPoolCollector(pool)); err != nil {
		tb.Fatal(err)
	}
	cfg := apphttp.Config{
		Tenant: tenant, BaseDomain: baseDomain,
		Users: db, Musicians: db, Projects: db, Requests: db, Dashboard: db,
		Ping: db.Ping, Registerer: wrapped, Gatherer: reg,
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	srv, err := apphttp.NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(hs.Close)
	admin, err := db.Authenticate(ctx, adminEmail, adminPass)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{t: tb, DB: db, Srv: hs, Reg: reg, Admin: admin}
}

// AdminCtx returns a context acting as the admin.
func (e *env) AdminCtx() context.Context { return app.WithUser(context.Background(), e.Admin) }

// MustUser creates a user with role and password staffPass.
func (e *env) MustUser(role, email string) *app.User {
	e.t.Helper()
	u, err := e.DB.CreateUser(e.AdminCtx(), app.UserInput{Email: email, Name: role, Password: staffPass, Role: role})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// MustToken returns a new API token of u.
func (e *env) MustToken(u *app.User) string {
	e.t.Helper()
	tok, err := e.DB.CreateAPIToken(app.WithUser(context.Background(), u), u, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// browser is an HTTP client with cookies that does not follow redirects.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func (e *env) Browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.t, base: e.Srv.URL, c: &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// resp is a read response.
type resp struct {
	Status int
	Header http.Header
	Body   string
}

func (b *browser) Do(req *http.Request) resp {
	b.t.Helper()
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: string(body)}
}

func (b *browser) Get(path string) resp {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.Do(req)
}

// Post posts form values (csrf included by the caller); header, when not
// nil, adds request headers.
func (b *browser) Post(path string, form url.Values, header ...string) resp {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.Do(req)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// CSRF returns the CSRF token of the form on page path.
func (b *browser) CSRF(path string) string {
	b.t.Helper()
	r := b.Get(path)
	m := csrfRe.FindStringSubmatch(r.Body)
	if m == nil {
		b.t.Fatalf("GET %s (%d): no csrf field in page", path, r.Status)
	}
	return m[1]
}

// Login logs in and fails the test unless it worked.
func (b *browser) Login(email, pw string) {
	b.t.Helper()
	tok := b.CSRF("/login")
	r := b.Post("/login", url.Values{"csrf": {tok}, "email": {email}, "password": {pw}})
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		b.t.Fatalf("login %s: status %d location %q, want 303 /", email, r.Status, r.Header.Get("Location"))
	}
}

// apiClient calls the JSON API with a bearer token.
type apiClient struct {
	t     testing.TB
	base  string
	token string
}

func (e *env) API(token string) *apiClient { return &apiClient{t: e.t, base: e.Srv.URL, token: token} }

// Call sends body (a string is sent as is, anything else as JSON) and
// decodes the JSON answer into out when out is not nil.
func (a *apiClient) Call(method, path string, body any, out any) resp {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = strings.NewReader(string(j))
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: string(raw)}
}

// apiError is the JSON of an API error.
type apiError struct {
	Error struct {
		Code    string            `json:"code"`
		Message string            `json:"message"`
		Fields  map[string]string `json:"fields"`
	} `json:"error"`
}

func itoa(id int64) string { return strconv.FormatInt(id, 10) }
