package http

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of the password-attempt limit (staff login and the current
// password of a password change): per client one attempt every 10 s with a
// burst of 10, over all clients 1/s with a burst of 30. Each attempt costs an
// argon2id hash (7 MiB, 5 passes), so the global limit also bounds the CPU
// and memory an attacker can make the process spend.
const (
	DefaultLoginRate  = rate.Limit(0.1)
	DefaultLoginBurst = 10
	globalLoginRate   = rate.Limit(1)
	globalLoginBurst  = 30
	loginRetryAfter   = "60" // seconds, the Retry-After of a 429
)

// DefaultTrustedProxies returns loopback: a router on the same host.
func DefaultTrustedProxies() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// ParseTrustedProxies parses a comma-separated list of CIDRs (a bare
// address means that one host), as in STAGESUB_TRUSTED_PROXIES. Empty items
// are skipped; on success the result is never empty.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR like 10.0.0.0/8 or an IP address", item)
		}
		out = append(out, p.Masked())
	}
	if len(out) == 0 {
		return nil, errors.New("no CIDR given")
	}
	return out, nil
}

// limiter limits password attempts per client address and over all
// clients. A caller reserves an attempt before checking a password and
// refunds it when the password was right, so only wrong passwords are
// limited, yet concurrent guesses each hold an attempt while they are
// checked.
//
// Invariant: the clients map holds at most max entries; when full it is
// reset, which only ever grants attempts back.
type limiter struct {
	perClient rate.Limit
	burst     int
	global    *rate.Limiter
	max       int

	mu      sync.Mutex
	clients map[string]*rate.Limiter
}

func newLimiter(perClient rate.Limit, burst int) *limiter {
	return &limiter{perClient: perClient, burst: burst, global: rate.NewLimiter(globalLoginRate, globalLoginBurst),
		max: 10000, clients: map[string]*rate.Limiter{}}
}

func (l *limiter) clientLimiter(client string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	cl := l.clients[client]
	if cl == nil {
		if len(l.clients) >= l.max {
			l.clients = map[string]*rate.Limiter{}
		}
		cl = rate.NewLimiter(l.perClient, l.burst)
		l.clients[client] = cl
	}
	return cl
}

// reserve takes one attempt from client's and the global budget, or
// reports false (taking nothing) when either is spent. refund gives the
// attempt back.
func (l *limiter) reserve(client string, now time.Time) (refund func(), ok bool) {
	cr := l.clientLimiter(client).ReserveN(now, 1)
	if !cr.OK() || cr.DelayFrom(now) > 0 {
		cr.CancelAt(now)
		return nil, false
	}
	gr := l.global.ReserveN(now, 1)
	if !gr.OK() || gr.DelayFrom(now) > 0 {
		gr.CancelAt(now)
		cr.CancelAt(now)
		return nil, false
	}
	return func() { gr.CancelAt(now); cr.CancelAt(now) }, true
}

// clientIP returns the client's IP: the rightmost X-Forwarded-For entry
// when the peer is a trusted proxy (the router appends the address it saw),
// else the peer address. A client cannot choose its key by sending
// X-Forwarded-For itself unless it is a trusted proxy.
func clientIP(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return peer.String()
	}
	for _, p := range trusted {
		if !p.Contains(peer) {
			continue
		}
		last := xff[len(xff)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		if a, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
			return a.Unmap().String()
		}
		break
	}
	return peer.String()
}

// allowAttempt reserves a password attempt for r's client. When the client
// or everyone is over the limit it answers 429 with Retry-After (a page
// rendered by tooMany) and reports false.
func (s *Server) allowAttempt(w http.ResponseWriter, r *http.Request, what string, tooMany func()) (refund func(), ok bool) {
	client := clientIP(r, s.cfg.TrustedProxies)
	refund, ok = s.limit.reserve(client, time.Now())
	if !ok {
		s.log.Warn("password attempts rate limited", "what", what, "client", client, "request_id", r.Header.Get(HeaderRequestID))
		w.Header().Set("Retry-After", loginRetryAfter)
		tooMany()
		return nil, false
	}
	return refund, true
}
