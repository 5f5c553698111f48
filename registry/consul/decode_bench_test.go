package consul

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consuldev"
)

// BenchmarkDecodeHealthAnswer measures the client side of one fleet change
// at 1,000 tenants (2,000 app instances, each with an HTTP check): decoding
// the /v1/health/service answer the way the official client does it, with
// encoding/json's Decoder.
//   - minimal: into []healthEntry, as the watcher does;
//   - raw: into a json.RawMessage, the floor for any decoder plugged in
//     through json.Unmarshaler, because the client's Decoder first scans the
//     whole value and then hands an Unmarshaler a second scan of it.
//
// Run: go test -run '^$' -bench BenchmarkDecodeHealthAnswer ./consul/
func BenchmarkDecodeHealthAnswer(b *testing.B) {
	body := healthAnswer(b, 1000)
	b.Run("minimal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var out []healthEntry
			if err := json.NewDecoder(bytes.NewReader(body)).Decode(&out); err != nil || len(out) != 2000 {
				b.Fatalf("%d entries, %v", len(out), err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var out json.RawMessage
			if err := json.NewDecoder(bytes.NewReader(body)).Decode(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// healthAnswer returns the body of /v1/health/service/stagesub-app from a
// stand-in holding n tenants of 2 passing instances each.
func healthAnswer(b *testing.B, n int) []byte {
	b.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	b.Cleanup(hs.Close)
	host, portStr, _ := strings.Cut(strings.TrimPrefix(hs.URL, "http://"), ":")
	port, _ := strconv.Atoi(portStr)
	srv := consuldev.StartTest(b, consuldev.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c := srv.Client(b)
	for i := range 2 * n {
		slug := fmt.Sprintf("orchestra-%04d", i/2)
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: fmt.Sprintf("%s-%d", slug, i%2), Name: registry.ServiceApp, Tags: []string{registry.TenantTag(slug)},
			Address: host, Port: port, Meta: map[string]string{registry.MetaTenant: slug, registry.MetaVersion: "bench"},
			Check: &api.AgentServiceCheck{HTTP: hs.URL + "/healthz", Interval: time.Hour.String(), DeregisterCriticalServiceAfter: "1m"},
		}); err != nil {
			b.Fatal(err)
		}
	}
	for {
		entries, _, err := c.Health().Service(registry.ServiceApp, "", true, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(entries) == 2*n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + srv.Addr() + "/v1/health/service/" + registry.ServiceApp)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return body
}
