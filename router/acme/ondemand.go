package acme

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"stagesub.dev/registry"
)

// Errors returned by the on-demand decision; certmagic fails the TLS
// handshake with them and they are counted by reason.
var (
	ErrBaseDomain    = errors.New("acme: name is under the base domain; only the wildcard and apex certificates serve it")
	ErrNotRegistered = errors.New("acme: name is not a registered custom domain")
	ErrRateLimited   = errors.New("acme: on-demand issuance rate limit reached")
)

// normalize strips a port from host and normalizes the rest like a custom
// domain (registry.NormalizeDomain: lowercase, no trailing dot).
func normalize(host string) string {
	host = strings.TrimSpace(host)
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") && strings.Count(host, ":") == 1 {
		host = host[:i]
	}
	return registry.NormalizeDomain(host)
}

// decide is certmagic's DecisionFunc for the on-demand Config: it allows a
// certificate only for a custom domain that Allowed reports (the router's
// in-memory table: no I/O during a handshake), never for the base domain or
// a name under it.
func (m *Manager) decide(_ context.Context, name string) error {
	name = normalize(name)
	var err error
	switch {
	case name == m.base || strings.HasSuffix(name, "."+m.base):
		err = ErrBaseDomain
	case m.allowed == nil || !m.allowed(name):
		err = ErrNotRegistered
	}
	if err != nil {
		m.metrics.refuse(err)
		return fmt.Errorf("%w: %q", err, name)
	}
	return nil
}

// limiter is a token bucket: at most limit events per window, refilled
// continuously. It is safe for concurrent use.
type limiter struct {
	mu     sync.Mutex
	limit  float64
	window time.Duration
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newLimiter(limit int, window time.Duration) *limiter {
	return &limiter{limit: float64(limit), window: window, tokens: float64(limit), now: time.Now}
}

// allow takes a token if one is left.
func (l *limiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() && l.window > 0 {
		l.tokens += l.limit * float64(now.Sub(l.last)) / float64(l.window)
		if l.tokens > l.limit {
			l.tokens = l.limit
		}
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
