package consuldev_test

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

func TestSession_TTLInvalidation(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{SessionTTLMin: 100 * time.Millisecond})
	c := s.Client(t)
	id, _, err := c.Session().Create(&api.SessionEntry{TTL: "200ms", Behavior: api.SessionBehaviorDelete, LockDelay: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, _, err := c.KV().Acquire(&api.KVPair{Key: "eph", Value: []byte("x"), Session: id}, nil)
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	// Renewing keeps it alive past 2×TTL.
	for range 4 {
		time.Sleep(150 * time.Millisecond)
		se, _, err := c.Session().Renew(id, nil)
		if err != nil || se == nil {
			t.Fatalf("renew: got %v, %v", se, err)
		}
	}
	// Without renewals it is destroyed after 2×TTL and, with behavior
	// delete, its key goes too.
	waitFor(t, 3*time.Second, "session to expire", func() bool {
		se, _, err := c.Session().Info(id, nil)
		return err == nil && se == nil
	})
	if p, _ := MustGet(t, c, "eph"); p != nil {
		t.Fatalf("key of an expired delete-session: got %v, want deleted", p)
	}
	se, _, err := c.Session().Renew(id, nil)
	if err != nil || se != nil {
		t.Fatalf("renew after expiry: got %v, %v; want nil, nil", se, err)
	}
}

func TestSession_Validation(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	tests := []struct {
		name string
		se   *api.SessionEntry
	}{
		{"ErrTTLTooShort", &api.SessionEntry{TTL: "1s"}},
		{"ErrBehavior", &api.SessionEntry{Behavior: "explode"}},
		{"ErrUnknownNode", &api.SessionEntry{Node: "nowhere"}},
		{"ErrUnknownCheck", &api.SessionEntry{NodeChecks: []string{"nope"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := c.Session().Create(tt.se, nil); err == nil {
				t.Fatal("got nil error, want a rejection")
			}
		})
	}
	// A session bound to a check is invalidated when the check goes critical.
	if err := c.Agent().CheckRegister(&api.AgentCheckRegistration{Name: "guard", AgentServiceCheck: api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	id, _, err := c.Session().Create(&api.SessionEntry{NodeChecks: []string{"serfHealth", "guard"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().FailTTL("guard", "broken"); err != nil {
		t.Fatal(err)
	}
	se, _, err := c.Session().Info(id, nil)
	if err != nil || se != nil {
		t.Fatalf("session after its check failed: got %v, %v; want gone", se, err)
	}
}

func TestLock_Contention(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	a, b := s.Client(t), s.Client(t)

	la, err := a.LockOpts(&api.LockOptions{Key: "locks/cert", SessionTTL: "10s", LockDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lostA, err := la.Lock(nil)
	if err != nil || lostA == nil {
		t.Fatalf("lock a: %v", err)
	}
	lb, err := b.LockOpts(&api.LockOptions{Key: "locks/cert", SessionTTL: "10s", LockTryOnce: true, LockWaitTime: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	lostB, err := lb.Lock(nil)
	if err != nil || lostB != nil {
		t.Fatalf("lock b while a holds it: got %v, %v; want nil, nil", lostB, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("LockTryOnce returned after %v, want >= 300ms", d)
	}

	// b waits; when a unlocks, b gets it.
	lb2, _ := b.LockOpts(&api.LockOptions{Key: "locks/cert", SessionTTL: "10s"})
	type lockRes struct {
		lost <-chan struct{}
		err  error
	}
	got := make(chan lockRes, 1)
	go func() {
		ch, err := lb2.Lock(nil)
		got <- lockRes{ch, err}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := la.Unlock(); err != nil {
		t.Fatal(err)
	}
	var lost <-chan struct{}
	select {
	case r := <-got:
		if r.err != nil || r.lost == nil {
			t.Fatalf("lock b after unlock: got %v, %v", r.lost, r.err)
		}
		lost = r.lost
	case <-time.After(10 * time.Second):
		t.Fatal("b did not get the lock after a released it")
	}
	select {
	case <-lostA: // closed by a's monitor once it sees the release
	case <-time.After(5 * time.Second):
		t.Fatal("a's leader channel is still open after Unlock")
	}

	// Deleting the key makes the holder lose the lock.
	if _, err := a.KV().Delete("locks/cert", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("b's leader channel stayed open after the key was deleted")
	}
}

func TestSemaphore(t *testing.T) {
	t.Parallel()
	s := consuldev.StartTest(t, consuldev.Config{})
	c := s.Client(t)
	var held []*api.Semaphore
	for i := range 2 {
		sem, err := c.SemaphoreOpts(&api.SemaphoreOptions{Prefix: "sem/", Limit: 2, SemaphoreTryOnce: true, SemaphoreWaitTime: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sem.Acquire(nil)
		if err != nil || ch == nil {
			t.Fatalf("acquire %d: got %v, %v", i, ch, err)
		}
		held = append(held, sem)
	}
	third, _ := c.SemaphoreOpts(&api.SemaphoreOptions{Prefix: "sem/", Limit: 2, SemaphoreTryOnce: true, SemaphoreWaitTime: 200 * time.Millisecond})
	ch, err := third.Acquire(nil)
	if err != nil || ch != nil {
		t.Fatalf("third acquire over the limit: got %v, %v; want nil, nil", ch, err)
	}
	if err := held[0].Release(); err != nil {
		t.Fatal(err)
	}
	ch, err = third.Acquire(nil)
	if err != nil || ch == nil {
		t.Fatalf("acquire after a release: got %v, %v", ch, err)
	}
}
