package consuldev_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

func TestPersist_RestartSamePort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s1, err := consuldev.Start(consuldev.Config{HTTPAddr: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := s1.Addr()
	c := s1.Client(t)
	MustPut(t, c, "stagesub/tenants/goteborg", `{"slug":"goteborg"}`)
	if _, err := c.KV().Put(&api.KVPair{Key: "flags", Value: []byte("f"), Flags: 1 << 63}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "app-1", Name: "stagesub-app", Tags: []string{"tenant-goteborg"},
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}
	sid, _, err := c.Session().Create(&api.SessionEntry{Name: "keep"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, meta := MustGet(t, c, "stagesub/tenants/goteborg")
	lastIndex := meta.LastIndex
	if err := s1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "consuldev-state.json")); err != nil {
		t.Fatalf("snapshot file: %v", err)
	}

	// Same port, same data dir.
	s2 := consuldev.StartTest(t, consuldev.Config{HTTPAddr: addr, DataDir: dir})
	if got, want := s2.Addr(), addr; got != want {
		t.Fatalf("addr: got %s, want %s", got, want)
	}
	c = s2.Client(t)
	p2, _ := MustGet(t, c, "stagesub/tenants/goteborg")
	if p2 == nil || string(p2.Value) != string(p.Value) || p2.ModifyIndex != p.ModifyIndex {
		t.Fatalf("tenant key after restart: got %+v, want %+v", p2, p)
	}
	f, _ := MustGet(t, c, "flags")
	if f == nil || f.Flags != 1<<63 {
		t.Fatalf("flags after restart: got %+v", f)
	}
	if got := healthy(t, c, "stagesub-app"); len(got) != 1 {
		t.Fatalf("passing instances after restart: got %v, want [app-1]", got)
	}
	svcs, err := c.Agent().Services()
	if err != nil || svcs["app-1"] == nil {
		t.Fatalf("agent services after restart: got %v, %v", svcs, err)
	}
	se, _, err := c.Session().Info(sid, nil)
	if err != nil || se == nil || se.Name != "keep" {
		t.Fatalf("session after restart: got %+v, %v", se, err)
	}
	// The index never goes backwards: a new write is above everything before.
	MustPut(t, c, "after", "x")
	a, _ := MustGet(t, c, "after")
	if a.ModifyIndex <= lastIndex {
		t.Fatalf("index after restart: got %d, want > %d", a.ModifyIndex, lastIndex)
	}
	// The restored TTL check still runs: it can be updated.
	if err := c.Agent().FailTTL("service:app-1", "down"); err != nil {
		t.Fatal(err)
	}
	if got := healthy(t, c, "stagesub-app"); len(got) != 0 {
		t.Fatalf("after fail: got %v passing, want none", got)
	}
}

func TestPersist_PeriodicSnapshot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := consuldev.StartTest(t, consuldev.Config{DataDir: dir, SnapshotInterval: 50 * time.Millisecond})
	c := s.Client(t)
	MustPut(t, c, "k", "v")
	path := filepath.Join(dir, "consuldev-state.json")
	waitFor(t, 3*time.Second, "snapshot with the key", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && len(b) > 0 && strings.Contains(string(b), `"k"`)
	})
	// No temp files are left behind.
	matches, _ := filepath.Glob(filepath.Join(dir, "*.tmp*"))
	if len(matches) != 0 {
		t.Fatalf("leftover temp files: %v", matches)
	}
}

func TestPersist_CorruptSnapshotIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "consuldev-state.json"), []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := consuldev.Start(consuldev.Config{DataDir: dir})
	if err == nil {
		s.Close()
		t.Fatal("start with a corrupt snapshot: got nil error")
	}
}
