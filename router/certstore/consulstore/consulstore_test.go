package consulstore_test

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"stagesub.dev/registry/consuldev"
	"stagesub.dev/router/certstore/consulstore"
)

func newStorage(t *testing.T) (*consulstore.Storage, *consuldev.Server) {
	t.Helper()
	srv := consuldev.StartTest(t, consuldev.Config{})
	return consulstore.New(srv.Client(t), consulstore.Options{Prefix: "test/certs", LockWaitTime: time.Second}), srv
}

func TestStorageContract(t *testing.T) {
	t.Parallel()
	s, _ := newStorage(t)
	ctx := context.Background()
	var _ certmagic.Storage = s

	before := time.Now()
	for _, k := range []string{
		"certificates/ca/a.test/a.test.crt",
		"certificates/ca/a.test/a.test.key",
		"certificates/ca/b.test/b.test.crt",
		"acme/ca/users/x@y/x.json",
		"top",
	} {
		if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("Load", func(t *testing.T) {
		got, err := s.Load(ctx, "certificates/ca/a.test/a.test.crt")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(got), "v:certificates/ca/a.test/a.test.crt"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("ErrNotExist", func(t *testing.T) {
		if _, err := s.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load missing: %v, want fs.ErrNotExist", err)
		}
		if _, err := s.Stat(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat missing: %v, want fs.ErrNotExist", err)
		}
		if _, err := s.List(ctx, "nope", false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("List missing: %v, want fs.ErrNotExist", err)
		}
		if s.Exists(ctx, "nope") || s.Exists(ctx, "certificates/c") {
			t.Error("Exists true for a missing key or a mere string prefix")
		}
		if err := s.Delete(ctx, "nope"); err != nil {
			t.Errorf("Delete missing: %v, want nil", err)
		}
	})
	t.Run("Exists", func(t *testing.T) {
		for _, k := range []string{"top", "certificates", "certificates/ca/a.test", "certificates/ca/a.test/a.test.key"} {
			if !s.Exists(ctx, k) {
				t.Errorf("Exists(%q) = false", k)
			}
		}
	})
	t.Run("Stat", func(t *testing.T) {
		fi, err := s.Stat(ctx, "certificates/ca/a.test/a.test.crt")
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsTerminal || fi.Size != int64(len("v:certificates/ca/a.test/a.test.crt")) || fi.Key != "certificates/ca/a.test/a.test.crt" {
			t.Errorf("Stat = %+v", fi)
		}
		if fi.Modified.Before(before.Add(-time.Second)) || fi.Modified.After(time.Now().Add(time.Second)) {
			t.Errorf("Modified = %v, want about %v", fi.Modified, before)
		}
		dir, err := s.Stat(ctx, "certificates/ca")
		if err != nil {
			t.Fatal(err)
		}
		if dir.IsTerminal {
			t.Errorf("Stat of a prefix is terminal: %+v", dir)
		}
	})
	t.Run("List", func(t *testing.T) {
		tests := []struct {
			dir       string
			recursive bool
			want      string
		}{
			{"certificates/ca", false, "certificates/ca/a.test,certificates/ca/b.test"},
			{"certificates/ca/", false, "certificates/ca/a.test,certificates/ca/b.test"},
			{"certificates/ca/a.test", false, "certificates/ca/a.test/a.test.crt,certificates/ca/a.test/a.test.key"},
			{"", false, "acme,certificates,top"},
			{"certificates", true, "certificates/ca,certificates/ca/a.test,certificates/ca/a.test/a.test.crt," +
				"certificates/ca/a.test/a.test.key,certificates/ca/b.test,certificates/ca/b.test/b.test.crt"},
		}
		for _, tt := range tests {
			keys, err := s.List(ctx, tt.dir, tt.recursive)
			if err != nil {
				t.Errorf("List(%q, %v): %v", tt.dir, tt.recursive, err)
				continue
			}
			slices.Sort(keys)
			if got := strings.Join(keys, ","); got != tt.want {
				t.Errorf("List(%q, %v) = %s, want %s", tt.dir, tt.recursive, got, tt.want)
			}
		}
	})
	t.Run("DeleteTree", func(t *testing.T) {
		if err := s.Delete(ctx, "certificates/ca/a.test"); err != nil {
			t.Fatal(err)
		}
		if s.Exists(ctx, "certificates/ca/a.test/a.test.crt") || s.Exists(ctx, "certificates/ca/a.test") {
			t.Error("subtree survived Delete of its prefix")
		}
		if !s.Exists(ctx, "certificates/ca/b.test/b.test.crt") {
			t.Error("Delete removed a sibling")
		}
	})
}

// TestLockExclusive checks that Lock excludes goroutines of one process and
// other processes (two Storages on one Consul) alike.
func TestLockExclusive(t *testing.T) {
	t.Parallel()
	s1, srv := newStorage(t)
	s2 := consulstore.New(srv.Client(t), consulstore.Options{Prefix: "test/certs", LockWaitTime: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var inside, maxInside, total atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		s := s1
		if i%2 == 1 {
			s = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Lock(ctx, "issue_cert_*.stagesub.test"); err != nil {
				t.Errorf("Lock: %v", err)
				return
			}
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(30 * time.Millisecond)
			inside.Add(-1)
			total.Add(1)
			if err := s.Unlock(context.WithoutCancel(ctx), "issue_cert_*.stagesub.test"); err != nil {
				t.Errorf("Unlock: %v", err)
			}
		}()
	}
	wg.Wait()
	if got, want := total.Load(), int32(6); got != want {
		t.Errorf("holders = %d, want %d", got, want)
	}
	if got, want := maxInside.Load(), int32(1); got != want {
		t.Errorf("at most %d holders at once, want %d", got, want)
	}
}

func TestLockContext(t *testing.T) {
	t.Parallel()
	s1, srv := newStorage(t)
	s2 := consulstore.New(srv.Client(t), consulstore.Options{Prefix: "test/certs", LockWaitTime: 500 * time.Millisecond})
	ctx := context.Background()
	if err := s1.Lock(ctx, "storage_clean"); err != nil {
		t.Fatal(err)
	}

	t.Run("ErrSameProcess", func(t *testing.T) {
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if err := s1.Lock(c, "storage_clean"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second Lock in one process = %v, want deadline exceeded", err)
		}
	})
	t.Run("ErrOtherProcess", func(t *testing.T) {
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := s2.Lock(c, "storage_clean"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock held elsewhere = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("cancelled Lock returned after %v", d)
		}
	})
	t.Run("ErrUnlockNotHeld", func(t *testing.T) {
		if err := s2.Unlock(ctx, "storage_clean"); err == nil {
			t.Error("Unlock of a lock this process does not hold succeeded")
		}
	})
	t.Run("OKAfterUnlock", func(t *testing.T) {
		if err := s1.Unlock(ctx, "storage_clean"); err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := s2.Lock(c, "storage_clean"); err != nil {
			t.Fatalf("Lock after Unlock: %v", err)
		}
		if err := s2.Unlock(ctx, "storage_clean"); err != nil {
			t.Fatal(err)
		}
	})
}
