package consul

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

func TestScratchDump(t *testing.T) {
	if os.Getenv("DUMP") == "" {
		t.Skip()
	}
	srv := consuldev.StartTest(t, consuldev.Config{})
	c := srv.Client(t)
	for i := range 2000 {
		slug := fmt.Sprintf("orchestra-%04d", i/2)
		err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: fmt.Sprintf("%s-%d", slug, i%2), Name: "stagesub-app", Tags: []string{"tenant-" + slug},
			Address: "127.0.0.1", Port: 40000 + i, Meta: map[string]string{"tenant": slug, "version": "bench"},
			Check: &api.AgentServiceCheck{HTTP: "http://127.0.0.1:1/healthz", Interval: time.Hour.String(), DeregisterCriticalServiceAfter: "1m"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	resp, err := http.Get("http://" + srv.Addr() + "/v1/health/service/stagesub-app")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(os.Getenv("DUMP"), b, 0o644)
	t.Logf("%d bytes", len(b))
}

func loadDump(b *testing.B) []byte {
	d, err := os.ReadFile("/tmp/decbench/health.json")
	if err != nil {
		b.Skip()
	}
	b.SetBytes(int64(len(d)))
	return d
}

func BenchmarkScratchStruct(b *testing.B) {
	d := loadDump(b)
	for b.Loop() {
		var out []healthEntry
		if err := json.NewDecoder(bytes.NewReader(d)).Decode(&out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScratchRaw(b *testing.B) {
	d := loadDump(b)
	for b.Loop() {
		var out json.RawMessage
		if err := json.NewDecoder(bytes.NewReader(d)).Decode(&out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScratchValid(b *testing.B) {
	d := loadDump(b)
	for b.Loop() {
		if !json.Valid(d) {
			b.Fatal("invalid")
		}
	}
}
