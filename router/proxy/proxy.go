// Package proxy is the router's HTTP handler: it looks the request's host up
// in the current route.Table, answers pages for hosts that are not proxied
// (unknown, suspended, maintenance, provisioning, deleting, no instance),
// and otherwise proxies to one of the route's backends with load balancing,
// passive health checks and safe retries.
//
// Load-balancing policy: power of two choices on requests in flight (see
// route.Route.Pick). Passive health: an attempt that cannot connect (refused,
// unreachable) or times out (dial or response headers) ejects its backend
// for EjectBase, doubled per consecutive failure up to EjectMax; any response
// ends the streak. Retries, at most MaxAttempts attempts on distinct backends:
//   - an attempt that failed before reaching an upstream (dial error) is
//     retried for every method, provided the body can be sent again;
//   - an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) is also
//     retried after a connection error or timeout on an established
//     connection, provided the body can be sent again;
//   - a body can be sent again when there is none, or when it was buffered
//     (Content-Length at most RetryBodyLimit); a streamed body is only
//     re-sent when no byte of it was read, i.e. after a dial error.
//
// Never reached: when every attempt of a request failed before reaching an
// upstream (a dial error: refused, unreachable, dial timeout, possibly on an
// ejected instance tried as a last resort), the upstream never saw the
// request, so the route is treated like one without a passing instance (a
// registry that still lists a dead instance as passing is just late): the
// request waits for a table in which its route has an instance it has not
// tried, at most NoInstanceWait and at most once per request, is retried
// there within MaxAttempts, and otherwise gets the 503 no-instance page with
// Retry-After, counted as reason no_instance. Only a failure after the
// request may have reached an upstream gives 502 (or 504 on a timeout).
//
// Host rule: the request's authority is r.Host as net/http sets it: for an
// absolute-form request line ("GET http://a.example/ HTTP/1.1") the URI's
// authority wins and the Host header is ignored (RFC 9112 §3.2.2); for HTTP/2
// it is :authority. The request is routed by that one host only, and the
// upstream receives it as its Host; a request with two Host headers is
// refused by net/http with 400.
//
// Blocked paths: a request to a tenant or admin host whose path, percent-
// decoded and cleaned, is one of Config.BlockPaths (DefaultBlockPaths in the
// router: "/metrics") is never proxied, whatever the route's state; it gets
// the router's 404 page. Instances are scraped directly, never through the
// router, and their /metrics would expose internals (the admin's: every
// tenant's counts) to the Internet.
//
// Proxy paths: a plain request goes through forward (forward.go), which
// applies httputil.ReverseProxy's rules without its per-request clones;
// WebSocket and other upgrades and "Expect: 100-continue" go through an
// httputil.ReverseProxy, which owns hijacking and the 100-continue exchange.
// Both share the headers (setForwarded), the balancer loop (roundTrip) and
// the error pages (fail). A Config.Transport makes every request take the
// ReverseProxy path.
//
// Upstream client: by default requests go out through an Upstream, pooled
// keep-alive HTTP/1.1 connections written and read on the handler's own
// goroutine (no per-request goroutine hand-offs); WebSocket and other
// upgrades, and "Expect: 100-continue", go through an http.Transport. Its
// errors classify like http.Transport's (dial, timeout, reset), so the
// retry and ejection rules above are the same with either.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router/metrics"
	"stagesub.dev/router/route"
)

// Headers set by the router for upstreams.
const (
	HeaderTenant    = "X-StageSub-Tenant"
	HeaderRequestID = "X-Request-Id"
	headerPrefix    = "X-Stagesub-" // canonical form of the stripped prefix
)

// Config configures a Handler. Zero durations and limits take the defaults
// noted on each field.
type Config struct {
	Tables  *route.Holder    // required
	Metrics *metrics.Metrics // required
	Logger  *slog.Logger     // errors; default slog.Default()
	// AccessLog receives one JSON line per request; nil disables it.
	AccessLog *slog.Logger
	// AccessLogWriter, when set, is used instead of AccessLog: the same JSON
	// lines (as slog.NewJSONHandler(AccessLogWriter, nil) would write them),
	// encoded by the handler and written with one Write each, at a fraction
	// of slog's cost. It must be safe for concurrent use (logbuf.Writer is).
	AccessLogWriter io.Writer
	// UnknownLogPerSecond bounds access log lines for unknown hosts; default 10.
	UnknownLogPerSecond int64
	// TrustedProxies are the peers whose X-Forwarded-* and X-Request-Id are kept.
	TrustedProxies []netip.Prefix
	// ApexRedirect, when set, is where the base domain and www redirect (302);
	// otherwise they get a small page.
	ApexRedirect string
	// BlockPaths are paths never proxied on any route: a request whose path,
	// percent-decoded and cleaned by CleanPath (so "//metrics", "/./metrics",
	// "/metrics/" and "/%6detrics" all count as "/metrics"), equals an entry
	// exactly gets the router's 404 page. Matching is case-sensitive, like
	// the upstreams' http.ServeMux; entries are cleaned by New and match
	// that exact path only, not the paths below it. Nil blocks nothing; the
	// router's main defaults to DefaultBlockPaths.
	BlockPaths []string

	NoInstanceWait       time.Duration // wait for an instance to appear; default 2s, <0 = none
	NoInstanceRetryAfter time.Duration // default 5s
	MaintenanceRetry     time.Duration // Retry-After for maintenance/provisioning; default 60s
	MaxAttempts          int           // attempts per request on distinct backends; default 3
	RetryBodyLimit       int64         // bodies up to this many bytes are buffered for replay; default 64 KiB, <0 = never
	MaxBodyBytes         int64         // request body limit; 0 = none
	DialTimeout          time.Duration // default 2s
	ResponseTimeout      time.Duration // upstream response header timeout; default 60s
	EjectBase            time.Duration // default 1s
	EjectMax             time.Duration // default 30s
	// Transport overrides the upstream transport (tests); every request
	// then goes through httputil.ReverseProxy. Default: an Upstream (pooled
	// keep-alive HTTP/1.1 on the handler's goroutine, see Upstream) built
	// from the timeouts above, with an http.Transport for protocol upgrades.
	Transport http.RoundTripper
}

// DefaultBlockPaths are the paths the router blocks unless configured
// otherwise: the instances' Prometheus endpoints.
var DefaultBlockPaths = []string{"/metrics"}

// CleanPath returns the form of a request path (already percent-decoded, as
// url.URL.Path is) that BlockPaths are matched against: rooted and cleaned
// by path.Clean. It does not allocate when p is already clean.
func CleanPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return path.Clean(p)
}

// Handler is the router's http.Handler. Create it with New; safe for
// concurrent use.
type Handler struct {
	c         Config
	rp        *httputil.ReverseProxy
	transport http.RoundTripper
	upstream  *Upstream // the default transport; nil with Config.Transport
	log       *slog.Logger

	alog       *accessLogger // nil unless Config.AccessLogWriter is set
	logSecond  atomic.Int64  // unix second of the unknown-host log window
	logInWin   atomic.Int64  // unknown-host lines in that window
	bufferPool bufferPool
}

// New returns a Handler for c.
func New(c Config) *Handler {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	orDefault(&c.NoInstanceWait, 2*time.Second)
	orDefault(&c.NoInstanceRetryAfter, 5*time.Second)
	orDefault(&c.MaintenanceRetry, 60*time.Second)
	orDefault(&c.DialTimeout, defaultDialTimeout)
	orDefault(&c.ResponseTimeout, defaultResponseTimeout)
	orDefault(&c.EjectBase, time.Second)
	orDefault(&c.EjectMax, 30*time.Second)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.RetryBodyLimit == 0 {
		c.RetryBodyLimit = 64 << 10
	}
	if c.UnknownLogPerSecond == 0 {
		c.UnknownLogPerSecond = 10
	}
	blocked := make([]string, 0, len(c.BlockPaths))
	for _, p := range c.BlockPaths {
		blocked = append(blocked, CleanPath(p))
	}
	c.BlockPaths = blocked // a copy: the caller's slice may change
	h := &Handler{c: c, log: c.Logger, transport: c.Transport}
	if c.AccessLogWriter != nil {
		h.alog = &accessLogger{w: c.AccessLogWriter}
	}
	if h.transport == nil {
		h.upstream = NewUpstream(UpstreamConfig{DialTimeout: c.DialTimeout, ResponseTimeout: c.ResponseTimeout})
		h.transport = h.upstream
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:      h.rewrite,
		Transport:    balancer{h},
		ErrorHandler: h.proxyError,
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del(HeaderRequestID) // the client gets the router's id
			return nil
		},
		BufferPool: &h.bufferPool,
		ErrorLog:   log.New(slogWriter{c.Logger}, "", 0),
	}
	return h
}

// NewTransport returns a pooled keep-alive http.Transport for upstreams:
// HTTP/1.1, no environment proxy, no compression changes. The Upstream
// uses one for protocol upgrades.
func NewTransport(dialTimeout, responseTimeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}).DialContext,
		MaxIdleConns:          defaultMaxIdle,
		MaxIdleConnsPerHost:   defaultMaxIdlePerHost,
		IdleConnTimeout:       defaultIdleTimeout,
		ResponseHeaderTimeout: responseTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// CloseIdleConnections closes pooled upstream connections.
func (h *Handler) CloseIdleConnections() {
	if t, ok := h.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

type ctxKey struct{}

// reqState is the per-request state shared by ServeHTTP, the rewrite, the
// balancer and the error handler.
type reqState struct {
	route     *route.Route
	peer      netip.Addr
	peerStr   string // peer.String(), once needed; see peerString
	trusted   bool
	requestID string
	replay    []byte // buffered body, nil when not buffered
	triedBuf  [4]*route.Backend
	tried     []*route.Backend
	retries   int
	upstream  *route.Backend
	upgraded  bool
	failure   string // last upstream error reason
	// reached is set once an attempt may have reached an upstream (any
	// failure other than a dial error). Invariant: while it is false and
	// upstream is nil, no upstream has seen any byte of the request.
	reached bool
	// waited is set once the request has waited for an instance to appear
	// (NoInstanceWait); a request waits at most once.
	waited bool

	// The forward path's upstream request, and the client's response
	// writer, which 1xx responses go to (nil on the ReverseProxy path).
	out    http.Request
	outURL url.URL
	rw     *responseWriter
}

// replayBody returns a reader of the buffered request body (Request.GetBody).
func (st *reqState) replayBody() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(st.replay)), nil
}

// peerString returns st.peer.String(), computed once per request (for
// X-Forwarded-For and the access log).
func (st *reqState) peerString() string {
	if st.peerStr == "" {
		st.peerStr = st.peer.String()
	}
	return st.peerStr
}

// ServeHTTP routes and answers one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &reqState{}
	st.tried = st.triedBuf[:0]
	st.peer = peerAddr(r.RemoteAddr)
	st.trusted = h.isTrusted(st.peer)
	st.requestID = requestID(r.Header.Get(HeaderRequestID), st.trusted)
	rw := &responseWriter{ResponseWriter: w, requestID: st.requestID}
	rw.setRequestID()

	tables := h.c.Tables
	changed := tables.Changed()
	rt := tables.Load().Lookup(r.Host)
	st.route = rt
	defer func() { h.finish(rw, r, st, start) }()

	switch rt.Kind {
	case route.KindUnknown:
		pageUnknown.write(rw, st.requestID)
		return
	case route.KindApex:
		if h.c.ApexRedirect != "" {
			http.Redirect(rw, r, h.c.ApexRedirect, http.StatusFound)
			return
		}
		pageApex.write(rw, st.requestID)
		return
	}
	if h.blocked(r.URL.Path) {
		pageNotFound.write(rw, st.requestID)
		return
	}
	if p, ok := h.statusPage(rt); ok {
		p.write(rw, st.requestID)
		return
	}
	if len(rt.Backends) == 0 && h.c.NoInstanceWait > 0 {
		st.waited = true
		rt = h.waitForBackends(r.Context(), r.Host, rt, changed, nil)
		st.route = rt
		if rt.Kind == route.KindUnknown { // removed while we waited
			pageUnknown.write(rw, st.requestID)
			return
		}
		if p, ok := h.statusPage(rt); ok {
			p.write(rw, st.requestID)
			return
		}
	}
	if len(rt.Backends) == 0 {
		h.noInstance(rw, st)
		return
	}

	if h.c.MaxBodyBytes > 0 && hasBody(r) {
		if r.ContentLength > h.c.MaxBodyBytes {
			pageTooLarge.write(rw, st.requestID)
			return
		}
		r.Body = http.MaxBytesReader(rw, r.Body, h.c.MaxBodyBytes)
	}
	if hasBody(r) && r.ContentLength > 0 && r.ContentLength <= h.c.RetryBodyLimit {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				pageTooLarge.write(rw, st.requestID)
				return
			}
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		st.replay = buf
	}

	g := h.c.Metrics.InFlight.WithLabelValues(rt.Label)
	g.Inc()
	defer g.Dec()
	if h.upstream != nil && !viaReverseProxy(r) {
		h.forward(rw, r, st)
		return
	}
	h.rp.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
}

// blocked reports whether the decoded request path p is one of BlockPaths
// once cleaned (see Config.BlockPaths).
func (h *Handler) blocked(p string) bool {
	if len(h.c.BlockPaths) == 0 {
		return false
	}
	return slices.Contains(h.c.BlockPaths, CleanPath(p))
}

// statusPage returns the page for a route that is not proxied.
func (h *Handler) statusPage(rt *route.Route) (page, bool) {
	if rt.Kind != route.KindTenant {
		return page{}, false
	}
	switch rt.Status {
	case registry.StatusActive:
		return page{}, false
	case registry.StatusSuspended:
		return pageSuspended, true
	case registry.StatusMaintenance:
		return pageMaintenance(h.c.MaintenanceRetry), true
	case registry.StatusDeleting:
		return pageDeleting, true
	}
	return pageProvisioning(h.c.MaintenanceRetry), true
}

// noInstance answers the 503 no-instance page with Retry-After and counts
// it as upstream error reason no_instance.
func (h *Handler) noInstance(w http.ResponseWriter, st *reqState) {
	st.failure = metrics.ReasonNoInstance
	h.c.Metrics.UpstreamErrors.WithLabelValues(st.route.Label, metrics.ReasonNoInstance).Inc()
	pageNoInstance(h.c.NoInstanceRetryAfter).write(w, st.requestID)
}

// waitForBackends waits up to NoInstanceWait for a table in which host's
// route has a backend not in tried (smoothing restarts) and returns the
// latest route. It returns early when the route is no longer proxied or ctx
// ends. changed must have been read before rt was looked up.
func (h *Handler) waitForBackends(ctx context.Context, host string, rt *route.Route, changed <-chan struct{}, tried []*route.Backend) *route.Route {
	timer := time.NewTimer(h.c.NoInstanceWait)
	defer timer.Stop()
	for !hasUntried(rt, tried) && rt.Proxied() {
		select {
		case <-changed:
		case <-timer.C:
			return rt
		case <-ctx.Done():
			return rt
		}
		changed = h.c.Tables.Changed()
		rt = h.c.Tables.Load().Lookup(host)
	}
	return rt
}

// hasUntried reports whether rt has a backend not in tried. Backends are
// compared by identity, which a new Table keeps for an instance still
// registered with the same address.
func hasUntried(rt *route.Route, tried []*route.Backend) bool {
	for _, b := range rt.Backends {
		if !slices.Contains(tried, b) {
			return true
		}
	}
	return false
}

// rewrite builds the upstream request on the ReverseProxy path: headers
// only; the balancer picks the backend. ReverseProxy has already removed
// hop-by-hop headers and the X-Forwarded-* and Forwarded headers from Out;
// rewrite removes the client's X-StageSub-* and the "_" spellings of both.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(ctxKey{}).(*reqState)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = "upstream.invalid" // replaced per attempt by the balancer
	out.Host = pr.In.Host
	for k := range out.Header {
		if isClientOnlyHeader(k) {
			delete(out.Header, k)
		}
	}
	h.setForwarded(out.Header, pr.In, st) // the body is set per attempt by roundTrip
}

// setCanonical is h.Set(key, v) for a key already in canonical form
// (textproto.CanonicalMIMEHeaderKey(key) == key), without canonicalizing it
// again per request.
func setCanonical(h http.Header, key, v string) { h[key] = []string{v} }

// errNoBackend is returned by the balancer when every backend was tried.
var errNoBackend = errors.New("proxy: no backend left to try")

// balancer is the ReverseProxy's transport: Handler.roundTrip.
type balancer struct{ h *Handler }

func (b balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	return b.h.roundTrip(req.Context().Value(ctxKey{}).(*reqState), req)
}

// roundTrip sends req, the upstream request of st's, picking a backend per
// attempt and retrying per the package rules.
func (h *Handler) roundTrip(st *reqState, req *http.Request) (*http.Response, error) {
	var body *countingBody
	if hasBody(req) && st.replay == nil {
		body = &countingBody{rc: req.Body}
	}
	var lastErr error = errNoBackend
	for attempt := 0; attempt < h.c.MaxAttempts; attempt++ {
		now := time.Now()
		be := st.route.Pick(now.UnixNano(), st.tried)
		if be == nil && attempt > 0 && !st.reached && !st.waited && h.c.NoInstanceWait > 0 {
			// Every instance failed before the request reached it: wait,
			// like for a route without instances, for one to appear.
			be = h.awaitInstance(req, st)
			now = time.Now()
		}
		if be == nil {
			break
		}
		if attempt > 0 {
			st.retries++
			h.c.Metrics.Retries.WithLabelValues(st.route.Label).Inc()
		}
		st.tried = append(st.tried, be)
		// The first attempt sends req itself (ReverseProxy's outgoing
		// request, ours to change); a retry sends a copy, since the
		// transport may still read the failed attempt's request.
		out := req
		if attempt > 0 {
			cp, u := *req, *req.URL
			cp.URL = &u
			out = &cp
		}
		out.URL.Host = be.Addr
		switch {
		case st.replay != nil:
			out.Body, _ = st.replayBody()
			out.GetBody = st.replayBody // the transport may send it again
		case body != nil:
			out.Body = body
		}
		be.Acquire()
		var resp *http.Response
		var err error
		if st.rw != nil { // the forward path: 1xx responses to st
			resp, err = h.upstream.send(out, st)
		} else {
			resp, err = h.transport.RoundTrip(out)
		}
		if err == nil {
			be.Succeeded()
			st.upstream = be
			if resp.StatusCode == http.StatusSwitchingProtocols {
				st.upgraded = true
				be.Release()
			} else {
				resp.Body = &releaseBody{ReadCloser: resp.Body, b: be}
			}
			return resp, nil
		}
		be.Release()
		lastErr = err
		if req.Context().Err() != nil {
			return nil, err // the client went away: not the upstream's fault
		}
		reason, dial := classify(err)
		st.failure = reason
		if !dial {
			st.reached = true
		}
		label := st.route.Label
		h.c.Metrics.UpstreamErrors.WithLabelValues(label, reason).Inc()
		if reason == metrics.ReasonRefused || reason == metrics.ReasonTimeout {
			d := be.Eject(now, h.c.EjectBase, h.c.EjectMax)
			h.c.Metrics.Ejections.WithLabelValues(label).Inc()
			h.log.Warn("upstream ejected", "tenant", label, "instance", be.ID, "addr", be.Addr, "reason", reason, "for", d, "err", err)
		}
		replayable := body == nil || (dial && body.n.Load() == 0)
		if !replayable || !(dial || idempotent(req.Method)) {
			break
		}
	}
	return nil, lastErr
}

// awaitInstance waits (once per request, at most NoInstanceWait) for a table
// in which the request's host still routes to the same tenant (or the admin)
// and has a backend the request has not tried; it switches st.route to that
// route and returns its pick, or returns nil. The route must stay the same
// tenant: the upstream request already carries X-StageSub-Tenant.
func (h *Handler) awaitInstance(req *http.Request, st *reqState) *route.Backend {
	st.waited = true
	changed := h.c.Tables.Changed()
	rt := h.c.Tables.Load().Lookup(req.Host)
	rt = h.waitForBackends(req.Context(), req.Host, rt, changed, st.tried)
	if rt.Kind != st.route.Kind || rt.Tenant != st.route.Tenant || !rt.Proxied() || req.Context().Err() != nil {
		return nil
	}
	be := rt.Pick(time.Now().UnixNano(), st.tried)
	if be != nil {
		st.route = rt
	}
	return be
}

// classify names an upstream error and reports whether it happened before a
// connection to the upstream existed (so nothing of the request was sent).
func classify(err error) (reason string, dial bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		dial = true
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return metrics.ReasonRefused, dial
	case errors.As(err, &ne) && ne.Timeout():
		return metrics.ReasonTimeout, dial
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return metrics.ReasonReset, dial
	}
	return metrics.ReasonOther, dial
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// proxyError is the ReverseProxy's error handler: Handler.fail.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	h.fail(w, r, r.Context().Value(ctxKey{}).(*reqState), err)
}

// fail answers when no attempt produced a response.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	if r.Context().Err() != nil {
		if rw, ok := w.(*responseWriter); ok && rw.status == 0 {
			rw.status = 499 // client closed request; nothing is sent
		}
		return
	}
	if rw, ok := w.(*responseWriter); ok && rw.status != 0 {
		h.log.Warn("upstream failed after response started", "tenant", st.route.Label, "err", err)
		return
	}
	if st.upstream == nil && !st.reached {
		// No upstream ever saw the request: as if there were no instance.
		h.noInstance(w, st)
		h.log.Warn("no instance reachable", "tenant", st.route.Label, "attempts", len(st.tried), "err", err)
		return
	}
	switch {
	case st.failure == metrics.ReasonTimeout:
		pageGatewayTime.write(w, st.requestID)
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			pageTooLarge.write(w, st.requestID)
			return
		}
		pageBadGateway.write(w, st.requestID)
	}
	h.log.Warn("upstream failed", "tenant", st.route.Label, "attempts", len(st.tried), "err", err)
}

// finish records metrics and the access log line of a request.
func (h *Handler) finish(rw *responseWriter, r *http.Request, st *reqState, start time.Time) {
	d := time.Since(start)
	status := rw.status
	if status == 0 {
		if st.upgraded {
			status = http.StatusSwitchingProtocols
		} else {
			status = http.StatusOK
		}
	}
	label := st.route.Label
	h.c.Metrics.Requests.WithLabelValues(label, metrics.Code(status), metrics.Method(r.Method)).Inc()
	h.c.Metrics.Duration.WithLabelValues(label).Observe(d.Seconds())
	al := h.c.AccessLog
	if al == nil && h.alog == nil {
		return
	}
	if st.route.Kind == route.KindUnknown && !h.allowUnknownLog(start) {
		h.c.Metrics.LogDropped.Inc()
		return
	}
	upstream := ""
	if st.upstream != nil {
		upstream = st.upstream.Addr
	}
	if h.alog != nil {
		h.alog.log(&accessEntry{
			time: start.Add(d), requestID: st.requestID, tenant: label, host: r.Host,
			method: r.Method, path: r.URL.Path, proto: r.Proto, status: status, bytes: rw.bytes,
			duration: d, upstream: upstream, retries: st.retries, peer: st.peerString(),
		})
		return
	}
	al.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("request_id", st.requestID),
		slog.String("tenant", label),
		slog.String("host", r.Host),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes", rw.bytes),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("upstream", upstream),
		slog.Int("retries", st.retries),
		slog.String("peer", st.peerString()),
	)
}

// allowUnknownLog rate-limits unknown-host access log lines per second.
func (h *Handler) allowUnknownLog(now time.Time) bool {
	sec := now.Unix()
	if old := h.logSecond.Load(); old != sec && h.logSecond.CompareAndSwap(old, sec) {
		h.logInWin.Store(0)
	}
	return h.logInWin.Add(1) <= h.c.UnknownLogPerSecond
}

func (h *Handler) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range h.c.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// requestID keeps a trusted peer's well-formed X-Request-Id (at most 128
// printable ASCII characters without spaces) and otherwise makes a new one.
func requestID(got string, trusted bool) string {
	if trusted && got != "" && len(got) <= 128 {
		ok := true
		for i := 0; i < len(got); i++ {
			if got[i] <= ' ' || got[i] > '~' {
				ok = false
				break
			}
		}
		if ok {
			return got
		}
	}
	return newRequestID()
}

// Request IDs are 32 hex digits: 16 random per process, then a 64-bit
// counter. Unique within a process and, with overwhelming probability,
// across processes and restarts, without reading crypto/rand per request.
var (
	reqIDPrefix  [16]byte
	reqIDCounter atomic.Uint64
)

func init() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	hex.Encode(reqIDPrefix[:], b[:])
}

func newRequestID() string {
	var b [32]byte
	copy(b[:16], reqIDPrefix[:])
	n := reqIDCounter.Add(1)
	const digits = "0123456789abcdef"
	for i := 31; i >= 16; i-- {
		b[i] = digits[n&0xF]
		n >>= 4
	}
	return string(b[:])
}

// RedirectToHTTPS returns the handler of the plain-HTTP listener when TLS is
// on: hosts with a route are redirected (308) to https on httpsPort ("" or
// "443" = default port); unknown hosts get the 404 page.
func (h *Handler) RedirectToHTTPS(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := h.c.Tables.Load().Lookup(r.Host)
		if rt.Kind == route.KindUnknown {
			h.ServeHTTP(w, r) // the 404 page, counted and logged
			return
		}
		host := route.CanonicalHost(r.Host)
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// responseWriter records the status and bytes of a response and makes sure
// the final response carries the request's X-Request-Id (a 1xx response
// passed on clears the header map). It unwraps for http.ResponseController
// (Flush, Hijack for WebSockets).
type responseWriter struct {
	http.ResponseWriter
	requestID string
	status    int
	bytes     int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.setRequestID()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.setRequestID()
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// setRequestID sets X-Request-Id on the response unless it is set.
func (w *responseWriter) setRequestID() {
	if h := w.Header(); h[HeaderRequestID] == nil {
		setCanonical(h, HeaderRequestID, w.requestID)
	}
}

func (w *responseWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts bytes read from a streamed request body and ignores
// Close, so the body survives a failed attempt; net/http closes the original.
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

// releaseBody ends the backend's in-flight count when the response body is
// closed (once).
type releaseBody struct {
	io.ReadCloser
	b    *route.Backend
	once sync.Once
}

func (r *releaseBody) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.b.Release)
	return err
}

type bufferPool struct{ p sync.Pool }

// get returns a pooled 32 KiB buffer; put takes it back. Keeping the
// pointer spares an allocation per response (Put's &b).
func (p *bufferPool) get() *[]byte {
	if b, ok := p.p.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 32<<10)
	return &b
}

func (p *bufferPool) put(b *[]byte) { p.p.Put(b) }

// Get and Put are httputil.BufferPool's, for the ReverseProxy path.
func (p *bufferPool) Get() []byte  { return *p.get() }
func (p *bufferPool) Put(b []byte) { p.put(&b) }

// slogWriter adapts ReverseProxy's log.Logger output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)), "component", "reverseproxy")
	return len(p), nil
}
