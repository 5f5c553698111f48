package consul_test

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consuldev"
)

// MustStart starts a stand-in Consul for one test.
func MustStart(tb testing.TB) (*consuldev.Server, *api.Client) {
	tb.Helper()
	srv := consuldev.StartTest(tb, consuldev.Config{HTTPAddr: "127.0.0.1:0"})
	return srv, srv.Client(tb)
}

// NewClient returns an official client for addr with its own transport, whose
// idle connections are closed when the test ends.
func NewClient(tb testing.TB, addr string) *api.Client {
	tb.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	c, err := api.NewClient(&api.Config{Address: addr, HttpClient: &http.Client{Transport: tr}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return c
}

// NewTenant returns a valid, not yet stored record.
func NewTenant(slug string) *registry.Tenant {
	return &registry.Tenant{
		Slug:   slug,
		Name:   "Orchestra " + slug,
		Status: registry.StatusActive,
		Database: registry.Database{
			Host: "127.0.0.1", Port: 5432, Name: registry.DatabaseName(slug),
		},
	}
}

// MustHealthServer starts an HTTP server whose /healthz answers status.
func MustHealthServer(tb testing.TB, status int) (host string, port int) {
	tb.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	tb.Cleanup(hs.Close)
	a := hs.Listener.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

// WaitFor polls cond every 10ms for up to 15s and fails tb if it never holds.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger returns a JSON logger writing to b at debug level.
func testLogger(b *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// httptestServer serves h on loopback until the test ends and returns its address.
func httptestServer(tb testing.TB, h http.Handler) string {
	tb.Helper()
	s := httptest.NewServer(h)
	tb.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
