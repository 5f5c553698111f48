package consuldev_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

// MustPut writes key=value and fails tb on error.
func MustPut(tb testing.TB, c *api.Client, key, value string) {
	tb.Helper()
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
}

// MustGet reads key and fails tb on error; nil when missing.
func MustGet(tb testing.TB, c *api.Client, key string) (*api.KVPair, *api.QueryMeta) {
	tb.Helper()
	p, meta, err := c.KV().Get(key, nil)
	if err != nil {
		tb.Fatalf("get %s: %v", key, err)
	}
	return p, meta
}

// blockingGet runs a blocking KV get in the background; the result
// arrives on the returned channel together with the elapsed time.
type blockResult struct {
	pair    *api.KVPair
	meta    *api.QueryMeta
	err     error
	elapsed time.Duration
}

func blockingGet(c *api.Client, key string, index uint64, wait time.Duration) <-chan blockResult {
	ch := make(chan blockResult, 1)
	go func() {
		start := time.Now()
		p, meta, err := c.KV().Get(key, &api.QueryOptions{WaitIndex: index, WaitTime: wait})
		ch <- blockResult{p, meta, err, time.Since(start)}
	}()
	return ch
}

func TestKV_Indexes(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)

	// A missing key: 404 with a non-zero index and the leader headers.
	p, meta := MustGet(t, c, "missing")
	if p != nil || meta.LastIndex == 0 || !meta.KnownLeader {
		t.Fatalf("missing key: got pair %v index %d leader %v, want nil, >0, true", p, meta.LastIndex, meta.KnownLeader)
	}

	MustPut(t, c, "app/a", "1")
	p, meta = MustGet(t, c, "app/a")
	if got, want := meta.LastIndex, p.ModifyIndex; got != want {
		t.Fatalf("X-Consul-Index: got %d, want ModifyIndex %d", got, want)
	}
	first := p.ModifyIndex

	// Writing the same value again changes nothing.
	MustPut(t, c, "app/a", "1")
	p, _ = MustGet(t, c, "app/a")
	if got, want := p.ModifyIndex, first; got != want {
		t.Fatalf("idempotent put: ModifyIndex got %d, want %d", got, want)
	}

	// Every write gets a higher index; CreateIndex stays.
	MustPut(t, c, "app/a", "2")
	p, _ = MustGet(t, c, "app/a")
	if p.ModifyIndex <= first || p.CreateIndex != first {
		t.Fatalf("update: got create %d modify %d, want create %d and modify > %d", p.CreateIndex, p.ModifyIndex, first, first)
	}

	// Deleting a key under a prefix raises the prefix index (tombstone).
	MustPut(t, c, "app/b", "x")
	_, meta, err := c.KV().List("app/", nil)
	if err != nil {
		t.Fatal(err)
	}
	before := meta.LastIndex
	if _, err := c.KV().Delete("app/b", nil); err != nil {
		t.Fatal(err)
	}
	pairs, meta, err := c.KV().List("app/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 1 || meta.LastIndex <= before {
		t.Fatalf("after delete: got %d pairs index %d, want 1 pair and index > %d", len(pairs), meta.LastIndex, before)
	}

	// Keys with a separator.
	MustPut(t, c, "app/dir/x", "1")
	MustPut(t, c, "app/dir/y", "1")
	keys, _, err := c.KV().Keys("app/", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(keys), 2; got != want {
		t.Fatalf("keys: got %v, want [app/a app/dir/]", keys)
	}
	if got, want := keys[1], "app/dir/"; got != want {
		t.Fatalf("keys[1]: got %q, want %q", got, want)
	}
}

func TestKV_Blocking(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	MustPut(t, c, "watched", "v1")
	p, _ := MustGet(t, c, "watched")

	t.Run("WakesOnChange", func(t *testing.T) {
		ch := blockingGet(c, "watched", p.ModifyIndex, 10*time.Second)
		time.Sleep(100 * time.Millisecond)
		MustPut(t, c, "unrelated", "x") // wakes the query, but the key's index is unchanged
		select {
		case r := <-ch:
			t.Fatalf("returned on an unrelated write: %+v", r)
		case <-time.After(200 * time.Millisecond):
		}
		MustPut(t, c, "watched", "v2")
		select {
		case r := <-ch:
			if r.err != nil || string(r.pair.Value) != "v2" || r.meta.LastIndex <= p.ModifyIndex {
				t.Fatalf("got %+v, want v2 with a higher index", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocking query did not return after the key changed")
		}
	})

	t.Run("WakesOnDelete", func(t *testing.T) {
		p, _ := MustGet(t, c, "watched")
		ch := blockingGet(c, "watched", p.ModifyIndex, 10*time.Second)
		time.Sleep(100 * time.Millisecond)
		if _, err := c.KV().Delete("watched", nil); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-ch:
			if r.err != nil || r.pair != nil || r.meta.LastIndex <= p.ModifyIndex {
				t.Fatalf("got %+v, want a 404 with index > %d", r, p.ModifyIndex)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocking query did not return after the key was deleted")
		}
	})

	t.Run("MissingKeyIgnoresUnrelatedWrites", func(t *testing.T) {
		_, meta := MustGet(t, c, "not-yet")
		ch := blockingGet(c, "not-yet", meta.LastIndex, 10*time.Second)
		time.Sleep(100 * time.Millisecond)
		MustPut(t, c, "other1", "x")
		MustPut(t, c, "other2", "x")
		select {
		case r := <-ch:
			t.Fatalf("returned on unrelated writes: %+v", r)
		case <-time.After(300 * time.Millisecond):
		}
		MustPut(t, c, "not-yet", "here")
		select {
		case r := <-ch:
			if r.err != nil || r.pair == nil || string(r.pair.Value) != "here" {
				t.Fatalf("got %+v, want the new key", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocking query did not return after the key appeared")
		}
	})

	t.Run("TimeoutReturnsCurrent", func(t *testing.T) {
		MustPut(t, c, "quiet", "q")
		p, _ := MustGet(t, c, "quiet")
		wait := 300 * time.Millisecond
		r := <-blockingGet(c, "quiet", p.ModifyIndex, wait)
		if r.err != nil || r.pair == nil || r.meta.LastIndex != p.ModifyIndex {
			t.Fatalf("got %+v, want the unchanged entry", r)
		}
		if r.elapsed < wait || r.elapsed > 2*wait+time.Second {
			t.Fatalf("elapsed %v, want between %v and about 2×", r.elapsed, wait)
		}
	})

	t.Run("IndexAheadBlocks", func(t *testing.T) {
		p, _ := MustGet(t, c, "quiet")
		wait := 300 * time.Millisecond
		r := <-blockingGet(c, "quiet", p.ModifyIndex+1000, wait)
		if r.err != nil || r.elapsed < wait {
			t.Fatalf("got %+v after %v, want a full wait of %v", r.err, r.elapsed, wait)
		}
	})
}

func TestKV_CASAndLocks(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	kv := c.KV()

	ok, _, err := kv.CAS(&api.KVPair{Key: "cas", Value: []byte("a"), ModifyIndex: 0}, nil)
	if err != nil || !ok {
		t.Fatalf("cas=0 on a missing key: got %v %v, want true", ok, err)
	}
	ok, _, _ = kv.CAS(&api.KVPair{Key: "cas", Value: []byte("b"), ModifyIndex: 0}, nil)
	if ok {
		t.Fatal("cas=0 on an existing key: got true, want false")
	}
	p, _ := MustGet(t, c, "cas")
	ok, _, _ = kv.CAS(&api.KVPair{Key: "cas", Value: []byte("c"), ModifyIndex: p.ModifyIndex}, nil)
	if !ok {
		t.Fatal("cas with the current index: got false, want true")
	}
	ok, _, _ = kv.DeleteCAS(&api.KVPair{Key: "cas", ModifyIndex: p.ModifyIndex}, nil)
	if ok {
		t.Fatal("delete-cas with a stale index: got true, want false")
	}

	// Acquire/release with a session; full uint64 flags survive.
	id, _, err := c.Session().Create(&api.SessionEntry{LockDelay: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const flags = uint64(0x2ddccbc058a50c18)
	ok, _, err = kv.Acquire(&api.KVPair{Key: "lock", Value: []byte("me"), Flags: flags, Session: id}, nil)
	if err != nil || !ok {
		t.Fatalf("acquire: got %v %v", ok, err)
	}
	p, _ = MustGet(t, c, "lock")
	if p.Session != id || p.LockIndex != 1 || p.Flags != flags {
		t.Fatalf("after acquire: got session %q lock %d flags %x", p.Session, p.LockIndex, p.Flags)
	}
	other, _, _ := c.Session().Create(nil, nil)
	ok, _, _ = kv.Acquire(&api.KVPair{Key: "lock", Session: other}, nil)
	if ok {
		t.Fatal("acquire by another session: got true, want false")
	}
	// Destroying the holder releases the key and starts a lock-delay.
	if _, err := c.Session().Destroy(id, nil); err != nil {
		t.Fatal(err)
	}
	p, _ = MustGet(t, c, "lock")
	if p.Session != "" || p.LockIndex != 1 {
		t.Fatalf("after destroy: got session %q lock %d, want released, lock 1", p.Session, p.LockIndex)
	}
	ok, _, _ = kv.Acquire(&api.KVPair{Key: "lock", Session: other}, nil)
	if ok {
		t.Fatal("acquire during lock-delay: got true, want false")
	}
	time.Sleep(1100 * time.Millisecond)
	ok, _, _ = kv.Acquire(&api.KVPair{Key: "lock", Session: other}, nil)
	if !ok {
		t.Fatal("acquire after lock-delay: got false, want true")
	}
	p, _ = MustGet(t, c, "lock")
	if got, want := p.LockIndex, uint64(2); got != want {
		t.Fatalf("LockIndex: got %d, want %d", got, want)
	}
}

func TestKV_Txn(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	ok, resp, _, err := c.KV().Txn(api.KVTxnOps{
		{Verb: api.KVSet, Key: "t/a", Value: []byte("1")},
		{Verb: api.KVCheckNotExists, Key: "t/b"},
		{Verb: api.KVGet, Key: "t/a"},
	}, nil)
	if err != nil || !ok {
		t.Fatalf("txn: got %v %v", ok, err)
	}
	if got, want := len(resp.Results), 2; got != want {
		t.Fatalf("results: got %d, want %d", got, want)
	}
	if got, want := string(resp.Results[1].Value), "1"; got != want {
		t.Fatalf("get result: got %q, want %q", got, want)
	}
	// A failing op rolls back every op and all errors are reported.
	ok, resp, _, err = c.KV().Txn(api.KVTxnOps{
		{Verb: api.KVSet, Key: "t/c", Value: []byte("1")},
		{Verb: api.KVCAS, Key: "t/a", Index: 1},
		{Verb: api.KVGet, Key: "t/nope"},
	}, nil)
	if err != nil || ok {
		t.Fatalf("failing txn: got ok=%v err=%v, want ok=false", ok, err)
	}
	if got, want := len(resp.Errors), 2; got != want {
		t.Fatalf("errors: got %+v, want %d", resp.Errors, want)
	}
	if p, _ := MustGet(t, c, "t/c"); p != nil {
		t.Fatal("t/c was written by a failed transaction")
	}
}

func TestHTTP_Errors(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	base := "http://" + s.Addr()
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/kv/", 400},
		{"GET", "/v1/kv/x?wait=bogus&index=1", 400},
		{"GET", "/v1/kv/x?stale&consistent", 400},
		{"PUT", "/v1/kv/x?cas=1&acquire=abc", 400},
		{"PUT", "/v1/kv/x?acquire=", 500},
		{"POST", "/v1/kv/x", 405},
		{"GET", "/v1/nope", 404},
		{"GET", "/v1/kv/x?dc=elsewhere", 500},
		{"GET", "/v1/health/state/bogus", 400},
		{"PUT", "/v1/agent/service/deregister/none", 404},
		{"PUT", "/v1/agent/check/pass/none", 404},
		{"PUT", "/v1/session/renew/none", 404},
		{"GET", "/v1/status/leader", 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode; got != tt.want {
			t.Errorf("%s %s: got %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
	// The index header is never 0, even on an empty server.
	resp, err := http.Get(base + "/v1/catalog/services")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n, _ := strconv.Atoi(resp.Header.Get("X-Consul-Index")); n < 1 {
		t.Fatalf("X-Consul-Index: got %q, want >= 1", resp.Header.Get("X-Consul-Index"))
	}
}
