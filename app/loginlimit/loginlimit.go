// Package loginlimit limits password attempts per client and over all
// clients, and finds the client's IP behind trusted proxies (the routers).
// The tenant app (staff login, password change) and the admin (login form,
// HTTP Basic auth) both use it.
package loginlimit

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

// Defaults of the limit over all clients: 1 attempt/s with a burst of 30.
// Each attempt costs a password hash (argon2id: 7 MiB, 5 passes), so the
// global limit also bounds the CPU and memory an attacker can make the
// process spend.
const (
	DefaultGlobalRate  = rate.Limit(1)
	DefaultGlobalBurst = 30
)

// maxClients bounds the per-client map of a Limiter.
const maxClients = 10000

// Limiter limits password attempts per client key (an IP from ClientIP) and
// over all clients. It is safe for concurrent use.
//
// Invariant: the clients map holds at most maxClients entries; when full it
// is reset, which only ever grants attempts back, never blocks a legitimate
// client for longer.
type Limiter struct {
	perClient rate.Limit
	burst     int
	global    *rate.Limiter
	max       int

	mu      sync.Mutex
	clients map[string]*rate.Limiter
}

// New returns a Limiter allowing each client perClient attempts per second
// with burst burst, and all clients together global per second with burst
// globalBurst.
func New(perClient rate.Limit, burst int, global rate.Limit, globalBurst int) *Limiter {
	return &Limiter{perClient: perClient, burst: burst, global: rate.NewLimiter(global, globalBurst),
		max: maxClients, clients: map[string]*rate.Limiter{}}
}

// Allow takes one attempt from client's budget and, when that succeeds,
// one from the global budget; it reports whether both were available. The
// attempt is never given back.
func (l *Limiter) Allow(client string, now time.Time) bool {
	return l.clientLimiter(client).AllowN(now, 1) && l.global.AllowN(now, 1)
}

// Reserve takes one attempt from client's and the global budget before a
// password check, or reports false (taking nothing) when either is spent.
// Calling refund gives the attempt back: callers do so after a successful
// check, so only wrong passwords are limited (a script with the right
// password is never limited by its own requests), while concurrent wrong
// guesses each hold an attempt while they are checked (at most the burst
// run at once).
func (l *Limiter) Reserve(client string, now time.Time) (refund func(), ok bool) {
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

// clientLimiter returns client's rate limiter, creating it (and resetting
// the map when full) if needed.
func (l *Limiter) clientLimiter(client string) *rate.Limiter {
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

// ClientIP returns the client's IP: the rightmost X-Forwarded-For entry
// when the peer is in trusted (the router appends the address it saw),
// else the peer address. IPv4-mapped IPv6 addresses are unmapped, so one
// client has one key. A client cannot choose its key by sending
// X-Forwarded-For itself unless it is a trusted proxy. A RemoteAddr that is
// not an IP is returned as it is.
func ClientIP(r *http.Request, trusted []netip.Prefix) string {
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
