// Package consullock implements deploy.Locker with Consul session locks
// (api.Lock with LockTryOnce): a lock is held while its session lives, so a
// crashed holder's lock goes away with its session TTL.
package consullock

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
)

// Locker takes session locks on Consul KV keys.
type Locker struct {
	Client *api.Client
	// Wait is how long TryLock waits for a held lock; default 250ms.
	Wait time.Duration
	// SessionTTL bounds how long a crashed holder blocks others; default 15s.
	SessionTTL time.Duration
}

// TryLock takes the lock at key. A lock held by another session is a
// registry ECONFLICT error; a Consul failure is returned wrapped.
func (l Locker) TryLock(ctx context.Context, key string) (func(), error) {
	wait, ttl := l.Wait, l.SessionTTL
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	if ttl <= 0 {
		ttl = 15 * time.Second
	}
	lk, err := l.Client.LockOpts(&api.LockOptions{
		Key:          key,
		SessionName:  "stagesubctl " + key,
		SessionTTL:   ttl.String(),
		LockTryOnce:  true,
		LockWaitTime: wait,
	})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	lost, err := lk.Lock(ctx.Done())
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	if lost == nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, registry.Errorf(registry.ECONFLICT, "%s is held by another operation in progress; try again later", key)
	}
	return func() {
		_ = lk.Unlock()
		_ = lk.Destroy() // removes the key unless someone else holds it now
	}, nil
}
