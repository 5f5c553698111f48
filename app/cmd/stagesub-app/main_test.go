package main_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	main "stagesub.dev/app/cmd/stagesub-app"
	"stagesub.dev/app/schema"
	"stagesub.dev/app/schema/schematest"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consuldev"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	removeBuild()
	os.Exit(code)
}

func TestLoad(t *testing.T) {
	const url = "postgres:///x?host=/tmp"
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantErr string
	}{
		{"OK", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg"}, ""},
		{"OKFlags", []string{"--migrate", "--listen", "127.0.0.1:8081", "--advertise", "10.0.0.5"}, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_BASE_DOMAIN=localhost", "STAGESUB_LOG_LEVEL=debug", "CONSUL_HTTP_ADDR=127.0.0.1:8500"}, ""},
		{"ErrNoDatabaseURL", nil, []string{"STAGESUB_TENANT=goteborg"}, "DATABASE_URL is required"},
		{"ErrBadDatabaseURL", nil, []string{"DATABASE_URL=mysql://x:y@z:abc/", "STAGESUB_TENANT=goteborg"}, "DATABASE_URL is not a valid postgres URL"},
		{"ErrNoTenant", nil, []string{"DATABASE_URL=" + url}, "STAGESUB_TENANT is required"},
		{"ErrBadTenant", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=Admin"}, "STAGESUB_TENANT"},
		{"ErrListen", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_LISTEN=8080"}, "STAGESUB_LISTEN"},
		{"ErrAdvertise", []string{"--advertise", "0.0.0.0"}, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg"}, "STAGESUB_ADVERTISE"},
		{"ErrLogLevel", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_LOG_LEVEL=loud"}, "STAGESUB_LOG_LEVEL"},
		{"ErrConsul", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "CONSUL_HTTP_ADDR=nowhere"}, "CONSUL_HTTP_ADDR"},
		{"ErrBaseDomain", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_BASE_DOMAIN=a b"}, "STAGESUB_BASE_DOMAIN"},
		{"ErrFlag", []string{"--bogus"}, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg"}, "bogus"},
		{"ErrMaxConns", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_DB_MAX_CONNS=0"}, "STAGESUB_DB_MAX_CONNS"},
		{"ErrRegister", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_REGISTER=maybe"}, "STAGESUB_REGISTER"},
		{"ErrTrustedProxies", nil, []string{"DATABASE_URL=" + url, "STAGESUB_TENANT=goteborg", "STAGESUB_TRUSTED_PROXIES=10.0.0.0/33"}, "STAGESUB_TRUSTED_PROXIES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := main.NewMain()
			err := m.Load(tt.args, tt.env)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if got, want := m.Config.MaxConns, int32(4); got != want {
					t.Errorf("MaxConns = %d, want %d", got, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// TestLoadRegistration: registration is on by default, at the official
// client's default agent address; only STAGESUB_REGISTER=false turns it off.
func TestLoadRegistration(t *testing.T) {
	base := []string{"DATABASE_URL=postgres:///x?host=/tmp", "STAGESUB_TENANT=goteborg"}
	tests := []struct {
		name         string
		env          []string
		wantRegister bool
		wantAddr     string
		wantTrusted  string
	}{
		{"Default", nil, true, "127.0.0.1:8500", "[]"},
		{"ConsulAddr", []string{"CONSUL_HTTP_ADDR=10.0.0.2:8500"}, true, "10.0.0.2:8500", "[]"},
		{"RegisterTrue", []string{"STAGESUB_REGISTER=true"}, true, "127.0.0.1:8500", "[]"},
		{"RegisterFalse", []string{"STAGESUB_REGISTER=false"}, false, "127.0.0.1:8500", "[]"},
		{"RegisterZero", []string{"STAGESUB_REGISTER=0", "CONSUL_HTTP_ADDR=nowhere"}, false, "nowhere", "[]"},
		{"TrustedProxies", []string{"STAGESUB_TRUSTED_PROXIES=10.0.0.0/8, 192.0.2.7"}, true, "127.0.0.1:8500", "[10.0.0.0/8 192.0.2.7/32]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := main.NewMain()
			if err := m.Load(nil, append(append([]string(nil), base...), tt.env...)); err != nil {
				t.Fatalf("Load: %v", err)
			}
			c := m.Config
			if got, want := c.Register, tt.wantRegister; got != want {
				t.Errorf("Register = %v, want %v", got, want)
			}
			if got, want := c.ConsulAddr, tt.wantAddr; got != want {
				t.Errorf("ConsulAddr = %q, want %q", got, want)
			}
			if got, want := fmt.Sprint(c.TrustedProxies), tt.wantTrusted; got != want {
				t.Errorf("TrustedProxies = %s, want %s", got, want)
			}
		})
	}
}

// TestRunRegistrationDisabled: with STAGESUB_REGISTER=false the app serves
// unregistered and says so at info level.
func TestRunRegistrationDisabled(t *testing.T) {
	c := pgtest.Start(t)
	r, err := StartMain(t, []string{"DATABASE_URL=" + schematest.NewDB(t, c, "goteborg"), "STAGESUB_TENANT=goteborg", "STAGESUB_REGISTER=false"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.InstanceID(); got != "" {
		t.Errorf("InstanceID = %q, want none", got)
	}
	if log := r.Log.String(); !strings.Contains(log, `"level":"INFO","msg":"consul registration disabled"`) {
		t.Errorf("log lacks consul registration disabled at info:\n%s", log)
	}
}

// TestRunRegistersAtDefaultAddress runs without CONSUL_HTTP_ADDR: the app
// registers with the agent at 127.0.0.1:8500 (here the stand-in), instead
// of silently serving unregistered.
func TestRunRegistersAtDefaultAddress(t *testing.T) {
	consul, err := consuldev.Start(consuldev.Config{HTTPAddr: main.DefaultConsulAddr})
	if err != nil {
		t.Skipf("cannot start the Consul stand-in on %s (port in use?): %v", main.DefaultConsulAddr, err)
	}
	t.Cleanup(func() { consul.Close() })
	c := pgtest.Start(t)
	r, err := StartMain(t, []string{"DATABASE_URL=" + schematest.NewDB(t, c, "goteborg"), "STAGESUB_TENANT=goteborg"})
	if err != nil {
		t.Fatal(err)
	}
	if got := healthStatus(t, consul.Client(t), r.InstanceID()); r.InstanceID() == "" || got == "absent" {
		t.Errorf("instance %q is %s in Consul at %s, want registered", r.InstanceID(), got, main.DefaultConsulAddr)
	}
}

// running is a Main running in a goroutine.
type running struct {
	*main.Main
	Log    *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, set before done closes
}

// Stop cancels Run (as SIGTERM does) and returns its error.
func (r *running) Stop(tb testing.TB) error {
	tb.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(30 * time.Second):
		tb.Fatal("Run did not return within 30s of cancel")
		return nil
	}
}

// StartMain loads env and args and runs a Main until the test ends. It
// returns once the app is ready, or Run's error when it failed to start.
func StartMain(tb testing.TB, env []string, args ...string) (*running, error) {
	tb.Helper()
	m := main.NewMain()
	if err := m.Load(args, env); err != nil {
		tb.Fatalf("Load: %v", err)
	}
	r := &running{Main: m, Log: &syncbuf.Buffer{}, done: make(chan struct{})}
	m.LogOutput = r.Log
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.err = m.Run(ctx)
		close(r.done)
	}()
	tb.Cleanup(func() {
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			tb.Errorf("Run did not return within 30s of cancel")
		}
		m.Close()
		if tb.Failed() {
			tb.Logf("app log:\n%s", r.Log)
		}
	})
	select {
	case <-m.Ready():
		return r, nil
	case <-r.done:
		return r, r.err
	case <-time.After(30 * time.Second):
		tb.Fatal("app not ready within 30s")
		return nil, nil
	}
}

// waitFor polls cond every 100ms for up to d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func healthStatus(tb testing.TB, c *api.Client, id string) string {
	tb.Helper()
	entries, _, err := c.Health().Service(registry.ServiceApp, "", false, nil)
	if err != nil {
		tb.Fatalf("consul health: %v", err)
	}
	for _, e := range entries {
		if e.Service.ID == id {
			return e.Checks.AggregatedStatus()
		}
	}
	return "absent"
}

func TestRunRegistersAndDeregisters(t *testing.T) {
	c := pgtest.Start(t)
	consul := consuldev.StartTest(t, consuldev.Config{})
	client := consul.Client(t)
	dburl := schematest.NewDB(t, c, "goteborg")

	r, err := StartMain(t, []string{"DATABASE_URL=" + dburl, "STAGESUB_TENANT=goteborg", "CONSUL_HTTP_ADDR=" + consul.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	id := r.InstanceID()
	svcs, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	svc := svcs[id]
	if svc == nil {
		t.Fatalf("instance %q not registered; services: %v", id, svcs)
	}
	if svc.Service != registry.ServiceApp || svc.Meta[registry.MetaTenant] != "goteborg" || svc.Meta[registry.MetaVersion] == "" {
		t.Errorf("service = %s meta %v, want %s with tenant and version", svc.Service, svc.Meta, registry.ServiceApp)
	}
	if !strings.HasSuffix(r.Addr(), ":"+strconv.Itoa(svc.Port)) || svc.Address != "127.0.0.1" {
		t.Errorf("registered %s:%d, listening on %s", svc.Address, svc.Port, r.Addr())
	}
	hasTag := false
	for _, tag := range svc.Tags {
		hasTag = hasTag || tag == registry.TenantTag("goteborg")
	}
	if !hasTag {
		t.Errorf("tags %v lack %s", svc.Tags, registry.TenantTag("goteborg"))
	}
	waitFor(t, 15*time.Second, "the Consul health check to pass", func() bool {
		return healthStatus(t, client, id) == api.HealthPassing
	})
	if code, body := get(t, "http://"+r.Addr()+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q", code, body)
	}

	if err := r.Stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := healthStatus(t, client, id); got != "absent" {
		t.Errorf("after shutdown the instance is %s, want absent (deregistered)", got)
	}
	if code, _ := get(t, "http://"+r.Addr()+"/healthz"); code != 0 {
		t.Errorf("server still answers after shutdown: %d", code)
	}
	log := r.Log.String()
	if i, j := strings.Index(log, `"msg":"shutting down"`), strings.Index(log, `"msg":"stopped"`); i < 0 || j < i {
		t.Errorf("log lacks shutting down / stopped in order:\n%s", log)
	}
}

func TestRunRefusesOtherTenant(t *testing.T) {
	c := pgtest.Start(t)
	consul := consuldev.StartTest(t, consuldev.Config{})
	dburl := schematest.NewDB(t, c, "malmo")
	_, err := StartMain(t, []string{"DATABASE_URL=" + dburl, "STAGESUB_TENANT=goteborg", "CONSUL_HTTP_ADDR=" + consul.Addr()})
	if err == nil || !strings.Contains(err.Error(), `belongs to tenant "malmo"`) {
		t.Fatalf("Run error = %v, want a refusal naming malmo", err)
	}
	svcs, err := consul.Client(t).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 0 {
		t.Errorf("services registered after a refusal: %v", svcs)
	}
}

func TestRunSchemaBehind(t *testing.T) {
	c := pgtest.Start(t)
	_, dburl := c.CreateDB(t, "") // never migrated
	env := []string{"DATABASE_URL=" + dburl, "STAGESUB_TENANT=goteborg", "STAGESUB_REGISTER=false"}

	_, err := StartMain(t, env)
	if err == nil || !strings.Contains(err.Error(), "stagesubctl migrate goteborg") || !strings.Contains(err.Error(), "--migrate") {
		t.Fatalf("Run error = %v, want a refusal telling to run stagesubctl migrate", err)
	}
	db := schematest.MustOpen(t, dburl)
	ctx := context.Background()
	if v, _ := schema.Current(ctx, db); v != 0 {
		t.Errorf("version after refusal = %d, want 0 (untouched)", v)
	}

	r, err := StartMain(t, env, "--migrate")
	if err != nil {
		t.Fatalf("with --migrate: %v", err)
	}
	if v, _ := schema.Current(ctx, db); v != schema.Latest() {
		t.Errorf("version = %d, want %d", v, schema.Latest())
	}
	if slug, _ := schema.BoundTenant(ctx, db); slug != "goteborg" {
		t.Errorf("bound tenant = %q, want goteborg", slug)
	}
	if code, _ := get(t, "http://"+r.Addr()+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
}

// TestHealthzDatabaseDown stops the database under a running, registered
// app: /healthz turns 503 and Consul marks the instance critical; the
// database comes back and both recover by themselves.
func TestHealthzDatabaseDown(t *testing.T) {
	c := pgtest.New(t) // private: this test stops the server
	consul := consuldev.StartTest(t, consuldev.Config{})
	client := consul.Client(t)
	dburl := schematest.NewDB(t, c, "goteborg")
	r, err := StartMain(t, []string{"DATABASE_URL=" + dburl, "STAGESUB_TENANT=goteborg", "CONSUL_HTTP_ADDR=" + consul.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	health := "http://" + r.Addr() + "/healthz"
	status := func() int { code, _ := get(t, health); return code }
	waitFor(t, 15*time.Second, "passing", func() bool { return healthStatus(t, client, r.InstanceID()) == api.HealthPassing })

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "/healthz 503", func() bool { return status() == http.StatusServiceUnavailable })
	waitFor(t, 15*time.Second, "Consul critical", func() bool { return healthStatus(t, client, r.InstanceID()) == api.HealthCritical })

	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "/healthz 200", func() bool { return status() == http.StatusOK })
	waitFor(t, 15*time.Second, "Consul passing again", func() bool { return healthStatus(t, client, r.InstanceID()) == api.HealthPassing })
}

func TestMetricsEndpoint(t *testing.T) {
	c := pgtest.Start(t)
	r, err := StartMain(t, []string{"DATABASE_URL=" + schematest.NewDB(t, c, "goteborg"), "STAGESUB_TENANT=goteborg", "STAGESUB_REGISTER=false"})
	if err != nil {
		t.Fatal(err)
	}
	get(t, "http://"+r.Addr()+"/login")
	code, body := get(t, "http://"+r.Addr()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`stagesub_http_requests_total{code="200",method="GET",route="GET /login",tenant="goteborg"} 1`,
		`stagesub_app_build_info{tenant="goteborg",version="dev"} 1`,
		`stagesub_db_pool_max_conns{tenant="goteborg"} 4`,
		`go_goroutines{tenant="goteborg"}`,
		`process_resident_memory_bytes{tenant="goteborg"}`,
		`go_build_info{`,
		`stagesub_http_request_duration_seconds_bucket{method="GET",route="GET /login",tenant="goteborg",le="0.005"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// BenchmarkStartup measures start to registered (connect, tenant and schema
// checks, listen, Consul registration) of an in-process app. Goal: < 300 ms.
func BenchmarkStartup(b *testing.B) {
	c := pgtest.Start(b)
	consul := consuldev.StartTest(b, consuldev.Config{})
	env := []string{"DATABASE_URL=" + schematest.NewDB(b, c, "goteborg"), "STAGESUB_TENANT=goteborg", "CONSUL_HTTP_ADDR=" + consul.Addr()}
	b.ResetTimer()
	for range b.N {
		m := main.NewMain()
		if err := m.Load(nil, env); err != nil {
			b.Fatal(err)
		}
		m.LogOutput = io.Discard
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		select {
		case <-m.Ready():
		case err := <-done:
			b.Fatal(err)
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestShutdownDeregistersThenDrains cancels Run (SIGTERM) while a request is
// in flight: the instance leaves Consul first, the request still completes,
// then Run returns.
func TestShutdownDeregistersThenDrains(t *testing.T) {
	c := pgtest.Start(t)
	consul := consuldev.StartTest(t, consuldev.Config{})
	client := consul.Client(t)
	r, err := StartMain(t, []string{"DATABASE_URL=" + schematest.NewDB(t, c, "goteborg"), "STAGESUB_TENANT=goteborg", "CONSUL_HTTP_ADDR=" + consul.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	body := "email=a%40example.org&password=whatever1&csrf=x"
	fmt.Fprintf(conn, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
		r.Addr(), len(body), body[:5])
	time.Sleep(200 * time.Millisecond) // the handler now waits for the rest of the body

	r.cancel()
	waitFor(t, 10*time.Second, "deregistration", func() bool { return healthStatus(t, client, r.InstanceID()) == "absent" })
	select {
	case <-r.done:
		t.Fatal("Run returned while a request was in flight")
	default:
	}
	if _, err := io.WriteString(conn, body[5:]); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusForbidden; got != want { // no CSRF cookie: refused, but answered
		t.Errorf("in-flight request status = %d, want %d", got, want)
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run: %v", r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after the request completed")
	}
}
