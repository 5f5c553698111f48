package consullock_test

import (
	"context"
	"testing"
	"time"

	"stagesub.dev/deploy/consullock"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consuldev"
)

func TestTryLock(t *testing.T) {
	srv := consuldev.StartTest(t, consuldev.Config{})
	l := consullock.Locker{Client: srv.Client(t), Wait: 50 * time.Millisecond}
	ctx := context.Background()
	unlock, err := l.TryLock(ctx, "stagesub/locks/create/goteborg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TryLock(ctx, "stagesub/locks/create/goteborg"); registry.ErrorCode(err) != registry.ECONFLICT {
		t.Fatalf("second TryLock: %v, want ECONFLICT", err)
	}
	other, err := l.TryLock(ctx, "stagesub/locks/create/malmo")
	if err != nil {
		t.Fatalf("another key: %v", err)
	}
	other()
	unlock()
	again, err := l.TryLock(ctx, "stagesub/locks/create/goteborg")
	if err != nil {
		t.Fatalf("TryLock after unlock: %v", err)
	}
	again()
	if p, _, err := srv.Client(t).KV().Get("stagesub/locks/create/goteborg", nil); err != nil || p != nil {
		t.Errorf("lock key left behind: %+v, %v", p, err)
	}
}
