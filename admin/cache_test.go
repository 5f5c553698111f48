package admin_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stagesub.dev/admin"
	"stagesub.dev/registry"
)

func waitFor(tb testing.TB, what string, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheRefresh(t *testing.T) {
	src := NewSource()
	src.delay = 50 * time.Millisecond
	src.Set("orchestra_aa", admin.DBStats{Musicians: 3}, nil, false)
	var reports atomic.Int64
	c := admin.NewCache(admin.CacheOptions{
		Collector: &admin.Collector{Source: src},
		Snapshot:  func() *registry.Snapshot { return snapshot("aa", "bb") },
		OnReport:  func(*admin.Report) { reports.Add(1) },
	})
	if r := c.Report(); !r.Empty() || r.Generation != 0 {
		t.Fatalf("new cache report = %+v, want empty", r)
	}

	t.Run("ConcurrentCallersShareOneFanOut", func(t *testing.T) {
		var wg sync.WaitGroup
		gens := make([]uint64, 8)
		for i := range gens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := c.Refresh(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				gens[i] = r.Generation
			}()
		}
		wg.Wait()
		if got, want := src.calls.Load(), int64(2); got != want {
			t.Errorf("FetchStats calls = %d, want %d (one per tenant)", got, want)
		}
		for i, g := range gens {
			if g != 1 {
				t.Errorf("caller %d got generation %d, want 1", i, g)
			}
		}
		if got, want := c.Report().Tenant("aa").Musicians, int64(3); got != want {
			t.Errorf("musicians = %d, want %d", got, want)
		}
		if got, want := reports.Load(), int64(1); got != want {
			t.Errorf("OnReport calls = %d, want %d", got, want)
		}
	})
}

// TestCacheCancelWhenNobodyWaits: a refresh runs only while someone waits
// for it; when the last waiter leaves, the tenant reads are cancelled and
// nothing partial is published.
func TestCacheCancelWhenNobodyWaits(t *testing.T) {
	src := NewSource()
	src.started = make(chan string, 10)
	src.ended = make(chan string, 10)
	src.Set("orchestra_aa", admin.DBStats{}, nil, true) // blocks until cancelled
	c := admin.NewCache(admin.CacheOptions{
		Collector: &admin.Collector{Source: src, Timeout: time.Hour},
		Snapshot:  func() *registry.Snapshot { return snapshot("aa") },
	})
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err := c.Refresh(ctx1); errs <- err }()
	<-src.started
	go func() { _, err := c.Refresh(ctx2); errs <- err }()
	waitFor(t, "second waiter", func() bool { return c.Refreshing() })
	time.Sleep(20 * time.Millisecond) // let the second caller join

	cancel1()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("first waiter err = %v, want context.Canceled", err)
	}
	select {
	case <-src.ended:
		t.Fatal("read cancelled while a second caller still waits")
	case <-time.After(50 * time.Millisecond):
	}

	cancel2()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("second waiter err = %v, want context.Canceled", err)
	}
	select {
	case <-src.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("read not cancelled after every waiter left")
	}
	waitFor(t, "refresh to end", func() bool { return !c.Refreshing() })
	if !c.Report().Empty() {
		t.Errorf("a cancelled refresh published %+v", c.Report())
	}
}

// TestCacheStaleWhileRevalidate: Get answers at once with the report it
// has, starts a refresh when that report is stale, and the new report
// replaces it when ready.
func TestCacheStaleWhileRevalidate(t *testing.T) {
	src := NewSource()
	src.Set("orchestra_aa", admin.DBStats{Musicians: 1}, nil, false)
	var offset atomic.Int64 // fake clock skew
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	c := admin.NewCache(admin.CacheOptions{
		Collector: &admin.Collector{Source: src, Timeout: time.Hour},
		Snapshot:  func() *registry.Snapshot { return snapshot("aa") },
		Interval:  time.Hour,
		Now:       now,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "first report", func() bool { return c.Report().Generation == 1 })

	// Fresh: Get starts nothing.
	if got, want := c.Get().Generation, uint64(1); got != want {
		t.Fatalf("generation = %d, want %d", got, want)
	}
	time.Sleep(20 * time.Millisecond)
	if got, want := src.calls.Load(), int64(1); got != want {
		t.Fatalf("calls = %d, want %d: Get refreshed a fresh report", got, want)
	}

	// Stale, and the tenant is now slow: Get still answers at once with the
	// stale report while the refresh runs in the background.
	gate := src.Gate("orchestra_aa")
	src.Set("orchestra_aa", admin.DBStats{Musicians: 2}, nil, false)
	offset.Store(int64(2 * time.Hour))
	if r := c.Get(); r.Generation != 1 || r.Tenant("aa").Musicians != 1 {
		t.Fatalf("stale Get = gen %d, want the stale report (gen 1)", r.Generation)
	}
	waitFor(t, "background refresh", func() bool { return src.calls.Load() == 2 })
	if !c.Refreshing() {
		t.Error("no refresh in flight after a stale Get")
	}
	if r := c.Get(); r.Generation != 1 {
		t.Errorf("Get during refresh = gen %d, want 1 at once", r.Generation)
	}
	if got, want := src.calls.Load(), int64(2); got != want {
		t.Errorf("calls = %d, want %d: Get started a second refresh while one runs", got, want)
	}
	offset.Store(0)
	close(gate)
	waitFor(t, "new report", func() bool { return c.Report().Generation == 2 })
	if got, want := c.Get().Tenant("aa").Musicians, int64(2); got != want {
		t.Errorf("musicians = %d, want %d", got, want)
	}
}
