package http_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"stagesub.dev/app"
	apphttp "stagesub.dev/app/http"
	"stagesub.dev/app/postgres"
	"stagesub.dev/app/schema/schematest"
	"stagesub.dev/internal/pgtest"
)

func TestTenantGuard(t *testing.T) {
	e := MustEnv(t)
	tests := []struct {
		name, host, header string
		want               int
	}{
		{"OwnHost", "goteborg.stagesub.test", "", http.StatusOK},
		{"OwnHostPortDotCase", "GOTEBORG.stagesub.test.:8443", "goteborg", http.StatusOK},
		{"IP", "127.0.0.1:8080", "", http.StatusOK},
		{"CustomDomain", "vikarier.gso.se", "goteborg", http.StatusOK},
		{"Localhost", "localhost:8080", "", http.StatusOK},
		{"ErrOtherHost", "malmo.stagesub.test", "", http.StatusMisdirectedRequest},
		{"ErrAdminHost", "admin.stagesub.test", "", http.StatusMisdirectedRequest},
		{"ErrOtherHeader", "goteborg.stagesub.test", "malmo", http.StatusMisdirectedRequest},
		{"ErrOtherHeaderIP", "127.0.0.1", "malmo", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.Srv.URL+"/login", nil)
			req.Host = tt.host
			if tt.header != "" {
				req.Header.Set(apphttp.HeaderTenant, tt.header)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if got := res.StatusCode; got != tt.want {
				t.Errorf("status = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestDevBaseDomain: under the dev stack's base domain localhost, Host
// goteborg.localhost:8443 is the tenant's own host.
func TestDevBaseDomain(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	pool, err := postgres.Open(ctx, schematest.NewDB(t, c, tenant), postgres.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := postgres.New(pool)
	srv, err := apphttp.NewServer(apphttp.Config{Tenant: tenant, BaseDomain: "localhost",
		Users: db, Musicians: db, Projects: db, Requests: db, Dashboard: db, Ping: db.Ping})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]int{"goteborg.localhost:8443": 200, "malmo.localhost:8443": 421, "localhost:8080": 200} {
		req, _ := http.NewRequest("GET", "/healthz", nil)
		req.Host = host
		w := &recorder{h: http.Header{}}
		srv.ServeHTTP(w, req)
		if w.code != want {
			t.Errorf("Host %s: status = %d, want %d", host, w.code, want)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(c int) { r.code = c }

var routeLabelRe = regexp.MustCompile(`route="([^"]*)"`)

func TestMetrics(t *testing.T) {
	e := MustEnv(t)
	b := e.Browser()
	b.Login(adminEmail, adminPass)
	m, err := e.DB.CreateMusician(e.AdminCtx(), app.MusicianInput{Name: "Anna", Instrument: "violin"})
	if err != nil {
		t.Fatal(err)
	}
	b.Get("/musicians/" + itoa(m.ID))
	b.Get("/musicians/999999")
	b.Get("/definitely/not/a/route")
	body := b.Get("/metrics").Body
	for _, want := range []string{
		`stagesub_http_requests_total{code="200",method="GET",route="GET /musicians/{id}",tenant="goteborg"} 1`,
		`stagesub_http_requests_total{code="404",method="GET",route="GET /musicians/{id}",tenant="goteborg"} 1`,
		`stagesub_http_requests_total{code="404",method="GET",route="unmatched",tenant="goteborg"} 1`,
		`stagesub_http_request_duration_seconds_bucket{method="GET",route="GET /musicians/{id}",tenant="goteborg",le="+Inf"} 2`,
		`stagesub_db_pool_max_conns{tenant="goteborg"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, m := range routeLabelRe.FindAllStringSubmatch(body, -1) {
		if strings.Contains(m[1], "999999") || strings.Contains(m[1], "definitely") {
			t.Errorf("route label holds a raw path: %q", m[1])
		}
	}
}

func TestHealthz(t *testing.T) {
	e := MustEnv(t)
	res, err := http.Get(e.Srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusOK; got != want {
		t.Errorf("status = %d, want %d", got, want)
	}
}
