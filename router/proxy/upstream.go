package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// UpstreamConfig configures an Upstream. Zero values take the defaults noted
// on each field.
type UpstreamConfig struct {
	DialTimeout     time.Duration // default 2s
	ResponseTimeout time.Duration // response headers, from the end of the request; default 60s
	IdleTimeout     time.Duration // a pooled connection idle this long is closed; default 90s
	MaxIdlePerHost  int           // idle connections kept per upstream address; default 512
	MaxIdle         int           // idle connections kept in all; default 4096
	// MaxResponseHeaderBytes bounds a response's header block (each 1xx
	// passed on resets it, as in http.Transport); default 10 MiB.
	MaxResponseHeaderBytes int64
	// Fallback carries the requests Upstream does not handle itself
	// (protocol upgrades, "Expect: 100-continue", non-http schemes);
	// default NewTransport(DialTimeout, ResponseTimeout).
	Fallback http.RoundTripper
}

// Upstream is the router's upstream client: an http.RoundTripper speaking
// HTTP/1.1 over pooled keep-alive TCP connections, one request at a time
// per connection, on the calling goroutine. Unlike http.Transport it starts
// no goroutine per connection or request (only one per request that has a
// body, which writes the body while the caller reads the response), so a
// proxied GET costs no goroutine hand-off. Requests and responses are
// written and parsed by net/http ((*http.Request).Write, http.ReadResponse).
//
// Invariants:
//   - a connection is in the idle pool only when no request is on it and
//     its last response was read to the end, with keep-alive allowed by both
//     sides ("Connection: close" either way closes it) and its request
//     written completely;
//   - a pooled connection is checked for a close (or stray bytes) from the
//     upstream before reuse, with one non-blocking peek; one that failed
//     anyway before any byte of the response was read is retried once on a
//     new connection, under http.Transport's rules: when nothing was
//     written and the body can be sent again (none, or Request.GetBody), or
//     when the request is replayable (GET, HEAD, OPTIONS, TRACE or an
//     Idempotency-Key header, with a body that can be sent again);
//   - errors keep their cause for classification: dial failures are
//     *net.OpError with Op "dial", the response header timeout is a
//     net.Error with Timeout() true, resets and closes wrap the system
//     error or io.EOF/io.ErrUnexpectedEOF;
//   - when the request's context ends, its connection is closed (never
//     pooled again) and a blocked read or write returns at once, with the
//     context's error.
//
// Upgrade requests ("Upgrade" header) and "Expect: 100-continue" go to
// UpstreamConfig.Fallback. Safe for concurrent use.
type Upstream struct {
	c        UpstreamConfig
	dialer   net.Dialer
	fallback http.RoundTripper

	mu      sync.Mutex
	idle    map[string][]*upConn // by address; oldest first, reused from the end
	nidle   int
	sweeper *time.Timer // armed while idle connections exist
}

// Upstream connection defaults, shared by Upstream and NewTransport.
const (
	defaultDialTimeout     = 2 * time.Second
	defaultResponseTimeout = 60 * time.Second
	defaultIdleTimeout     = 90 * time.Second
	defaultMaxIdlePerHost  = 512
	defaultMaxIdle         = 4096
	tcpKeepAlive           = 30 * time.Second
)

// orDefault sets *d to v when it is zero.
func orDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

// NewUpstream returns an Upstream for c.
func NewUpstream(c UpstreamConfig) *Upstream {
	orDefault(&c.DialTimeout, defaultDialTimeout)
	orDefault(&c.ResponseTimeout, defaultResponseTimeout)
	orDefault(&c.IdleTimeout, defaultIdleTimeout)
	if c.MaxIdlePerHost <= 0 {
		c.MaxIdlePerHost = defaultMaxIdlePerHost
	}
	if c.MaxIdle <= 0 {
		c.MaxIdle = defaultMaxIdle
	}
	if c.MaxResponseHeaderBytes <= 0 {
		c.MaxResponseHeaderBytes = 10 << 20
	}
	u := &Upstream{c: c, idle: map[string][]*upConn{}, fallback: c.Fallback}
	u.dialer = net.Dialer{Timeout: c.DialTimeout, KeepAlive: tcpKeepAlive}
	if u.fallback == nil {
		u.fallback = NewTransport(c.DialTimeout, c.ResponseTimeout)
	}
	return u
}

// CloseIdleConnections closes the pooled connections (and the fallback's);
// connections in use stay open and may be pooled later.
func (u *Upstream) CloseIdleConnections() {
	u.mu.Lock()
	var all []*upConn
	for addr, list := range u.idle {
		all = append(all, list...)
		delete(u.idle, addr)
	}
	u.nidle = 0
	u.mu.Unlock()
	for _, pc := range all {
		pc.close()
	}
	if t, ok := u.fallback.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// RoundTrip sends req to req.URL.Host and returns the response head; the
// body streams from the connection. It implements http.RoundTripper and,
// like it, closes req.Body.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || viaReverseProxy(req) {
		return u.fallback.RoundTrip(req)
	}
	var inf interim
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
		inf = traceInterim{trace}
	}
	return u.send(req, inf)
}

// An interim receives the 1xx responses other than 101 of a request, before
// its final response (on the goroutine sending the request).
type interim interface {
	got1xx(code int, header textproto.MIMEHeader) error
}

// traceInterim passes 1xx responses to a client trace's Got1xxResponse.
type traceInterim struct{ t *httptrace.ClientTrace }

func (t traceInterim) got1xx(code int, header textproto.MIMEHeader) error {
	return t.t.Got1xxResponse(code, header)
}

// send is RoundTrip for a plain http request (no upgrade, no expected
// 100-continue: RoundTrip sends those to the fallback), with the 1xx
// responses passed to inf (nil: dropped).
func (u *Upstream) send(req *http.Request, inf interim) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeReqBody(req)
		return nil, err
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	fresh := false
	for {
		pc, err := u.conn(ctx, addr, fresh)
		if err != nil {
			closeReqBody(req)
			return nil, err
		}
		resp, err := pc.roundTrip(ctx, req, inf)
		if err == nil {
			return resp, nil
		}
		if fresh || !pc.reused || ctx.Err() != nil || !canRetryStale(req, err) {
			return nil, err
		}
		// A pooled connection the upstream had closed: once more on a new one.
		if hasBody(req) {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, fmt.Errorf("proxy: rewind request body: %w (after %w)", gerr, err)
			}
			r2 := *req
			r2.Body = body
			req = &r2
		}
		fresh = true
	}
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeReqBody(req *http.Request) {
	if hasBody(req) {
		_ = req.Body.Close()
	}
}

// staleError is a failure on a connection before any byte of the response
// was read.
type staleError struct {
	err            error
	nothingWritten bool // no byte of the request reached the connection
}

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

// canRetryStale applies http.Transport's rules for retrying a request that
// failed on a reused connection (see Upstream).
func canRetryStale(req *http.Request, err error) bool {
	var se *staleError
	if !errors.As(err, &se) {
		return false
	}
	rewindable := !hasBody(req) || req.GetBody != nil
	if se.nothingWritten {
		return rewindable
	}
	if !rewindable {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

// conn returns a live pooled connection to addr or, with none (or fresh),
// a new one.
func (u *Upstream) conn(ctx context.Context, addr string, fresh bool) (*upConn, error) {
	if !fresh {
		for {
			pc := u.pop(addr)
			if pc == nil {
				break
			}
			if pc.alive() {
				pc.reused = true
				return pc, nil
			}
			pc.close()
		}
	}
	c, err := u.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream %s: %w", addr, err)
	}
	pc := &upConn{u: u, addr: addr, conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	pc.peekFn = pc.peek
	pc.cancelFn = pc.close
	pc.br = bufio.NewReaderSize(pc, 4<<10)
	pc.bw = bufio.NewWriterSize(countWriter{pc}, 4<<10)
	return pc, nil
}

// pop takes the most recently pooled connection to addr, closing those idle
// longer than IdleTimeout.
func (u *Upstream) pop(addr string) *upConn {
	now := time.Now()
	u.mu.Lock()
	list := u.idle[addr]
	if len(list) == 0 {
		u.mu.Unlock()
		return nil
	}
	pc := list[len(list)-1]
	list[len(list)-1] = nil
	u.idle[addr] = list[:len(list)-1]
	u.nidle--
	u.mu.Unlock()
	if now.Sub(pc.idleAt) > u.c.IdleTimeout {
		// The newest one expired: so did the rest; the sweeper closes them.
		pc.close()
		return nil
	}
	return pc
}

// put pools pc, or closes it when the pool is full.
func (u *Upstream) put(pc *upConn) {
	pc.idleAt = time.Now()
	pc.reused = false
	u.mu.Lock()
	list := u.idle[pc.addr]
	if len(list) >= u.c.MaxIdlePerHost || u.nidle >= u.c.MaxIdle {
		u.mu.Unlock()
		pc.close()
		return
	}
	u.idle[pc.addr] = append(list, pc)
	u.nidle++
	if u.sweeper == nil {
		u.sweeper = time.AfterFunc(u.c.IdleTimeout, u.sweep)
	}
	u.mu.Unlock()
}

// sweep closes the connections idle longer than IdleTimeout and re-arms
// itself while idle connections remain.
func (u *Upstream) sweep() {
	cutoff := time.Now().Add(-u.c.IdleTimeout)
	var expired []*upConn
	u.mu.Lock()
	for addr, list := range u.idle {
		n := 0
		for n < len(list) && list[n].idleAt.Before(cutoff) {
			n++
		}
		if n == 0 {
			continue
		}
		expired = append(expired, list[:n]...)
		if n == len(list) {
			delete(u.idle, addr)
		} else {
			u.idle[addr] = append(list[:0], list[n:]...)
			clear(list[len(list)-n:])
		}
		u.nidle -= n
	}
	if u.nidle > 0 {
		u.sweeper.Reset(u.c.IdleTimeout / 4)
	} else {
		u.sweeper = nil
	}
	u.mu.Unlock()
	for _, pc := range expired {
		pc.close()
	}
}

// upConn is one upstream connection. Only the goroutine owning the request
// on it uses it, except cancel (the request's context ended) and the body
// writer of a request with a body.
type upConn struct {
	u      *Upstream
	addr   string
	conn   net.Conn
	raw    syscall.RawConn // nil when the connection has none (no peek)
	br     *bufio.Reader
	bw     *bufio.Writer
	reused bool      // taken from the pool for this request
	idleAt time.Time // when pooled

	nread, nwrite int64 // bytes through conn
	readLimit     int64 // bytes that may still be read; the header limit while reading a head

	closed atomic.Bool

	// writeDone carries the body writer's result (requests with a body);
	// reqBody is the body it reads.
	writeDone chan error
	reqBody   *bodyErrReader
	// deadlineMu orders the writer arming the header timeout after the
	// body with the reader clearing it once the head is read.
	deadlineMu sync.Mutex
	headRead   bool

	peekFn   func(fd uintptr) bool // pc.peek, bound once
	cancelFn func()                // pc.close, bound once: run when the request's context ends
	peekBuf  [1]byte
	peekN    int
	peekErr  error
}

// Read reads from the connection for br, within readLimit.
func (pc *upConn) Read(p []byte) (int, error) {
	if pc.readLimit <= 0 {
		return 0, fmt.Errorf("proxy: upstream %s: response headers exceed %d bytes", pc.addr, pc.u.c.MaxResponseHeaderBytes)
	}
	if int64(len(p)) > pc.readLimit {
		p = p[:pc.readLimit]
	}
	n, err := pc.conn.Read(p)
	pc.nread += int64(n)
	pc.readLimit -= int64(n)
	return n, err
}

// countWriter counts the bytes written to the connection.
type countWriter struct{ pc *upConn }

func (w countWriter) Write(p []byte) (int, error) {
	n, err := w.pc.conn.Write(p)
	atomic.AddInt64(&w.pc.nwrite, int64(n))
	return n, err
}

func (pc *upConn) close() {
	if pc.closed.CompareAndSwap(false, true) {
		_ = pc.conn.Close()
	}
}

// alive reports whether a pooled connection can take a request: the
// upstream has neither closed it nor sent anything since the last response.
func (pc *upConn) alive() bool {
	if pc.br.Buffered() > 0 || pc.closed.Load() {
		return false
	}
	if pc.raw == nil {
		return true
	}
	if err := pc.raw.Read(pc.peekFn); err != nil {
		return false
	}
	return peekAlive(pc.peekN, pc.peekErr)
}

// roundTrip writes req and reads the response head on pc, which is then
// owned by the response body until it is read to the end or closed.
func (pc *upConn) roundTrip(ctx context.Context, req *http.Request, inf interim) (*http.Response, error) {
	stop := context.AfterFunc(ctx, pc.cancelFn)
	timeout := pc.u.c.ResponseTimeout
	pc.nread, pc.nwrite, pc.headRead = 0, 0, false
	pc.readLimit = pc.u.c.MaxResponseHeaderBytes
	if hasBody(req) {
		done := make(chan error, 1)
		pc.writeDone = done
		body := &bodyErrReader{rc: req.Body}
		pc.reqBody = body
		r2 := *req
		r2.Body = body
		go func() {
			err := pc.write(&r2)
			if err != nil && body.err != nil {
				err = fmt.Errorf("proxy: read request body: %w", body.err)
			}
			pc.deadlineMu.Lock()
			switch {
			case pc.headRead:
				// The reader owns the connection; it is closed, not
				// pooled, unless err is nil (see release).
			case err == nil:
				_ = pc.conn.SetReadDeadline(time.Now().Add(timeout))
			default:
				pc.close() // unblocks the reader: there is no response to wait for
			}
			pc.deadlineMu.Unlock()
			done <- err
		}()
	} else {
		pc.writeDone = nil
		if err := pc.write(req); err != nil {
			stop()
			pc.close()
			return nil, pc.failure(ctx, "write request", err)
		}
		_ = pc.conn.SetReadDeadline(time.Now().Add(timeout))
	}

	resp, err := pc.readHead(req, inf)
	if err != nil {
		stop()
		pc.close()
		if done := pc.writeDone; done != nil {
			pc.writeDone = nil
			if werr := <-done; werr != nil {
				return nil, pc.failure(ctx, "write request", werr)
			}
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
			return nil, fmt.Errorf("proxy: upstream %s: timeout awaiting response headers: %w", pc.addr, err)
		}
		return nil, pc.failure(ctx, "read response", err)
	}
	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	b := &upBody{pc: pc, body: resp.Body, stop: stop, keep: keep, ctx: ctx}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// write sends req on pc: the head and, when there is one, the body.
func (pc *upConn) write(req *http.Request) error {
	// writeHead skips the client trace's per-field hooks: with a trace,
	// Request.Write.
	if httptrace.ContextClientTrace(req.Context()) != nil || !writeHead(pc.bw, req) {
		if err := req.Write(pc.bw); err != nil {
			return err
		}
	}
	return pc.bw.Flush()
}

// readHead reads the response head, passing 1xx responses other than 101
// to inf (nil: skipped), like http.Transport to a client trace's
// Got1xxResponse.
func (pc *upConn) readHead(req *http.Request, inf interim) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, err
		}
		if code := resp.StatusCode; code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
			if inf != nil {
				if err := inf.got1xx(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
				pc.readLimit = pc.u.c.MaxResponseHeaderBytes
			}
			continue
		}
		pc.readLimit = math.MaxInt64
		pc.deadlineMu.Lock()
		pc.headRead = true
		_ = pc.conn.SetReadDeadline(time.Time{})
		pc.deadlineMu.Unlock()
		return resp, nil
	}
}

// failure wraps a write or read error of a request that got no response:
// the context's error when it ended, otherwise err with the upstream's
// address, marked as a staleError when no byte of the response was read.
func (pc *upConn) failure(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	err = fmt.Errorf("proxy: upstream %s: %s: %w", pc.addr, op, err)
	if pc.nread == 0 {
		return &staleError{err: err, nothingWritten: atomic.LoadInt64(&pc.nwrite) == 0}
	}
	return err
}

// release pools pc once its request is written completely, or closes it
// if writing it failed. A body writer that has read the whole body is
// waited for (what is left is writing to the upstream, which read the
// request since it answered it); one still reading the body (the response
// came first) is waited for on a goroutine, so the caller never waits for
// a client's upload.
func (pc *upConn) release() {
	if pc.writeDone == nil {
		pc.u.put(pc)
		return
	}
	done, body := pc.writeDone, pc.reqBody
	pc.writeDone, pc.reqBody = nil, nil // a pooled connection keeps no request's body
	select {
	case err := <-done:
		pc.putIf(err)
	default:
		if body.eof.Load() {
			pc.putIf(<-done)
			return
		}
		go func() { pc.putIf(<-done) }()
	}
}

func (pc *upConn) putIf(writeErr error) {
	if writeErr == nil && !pc.closed.Load() {
		pc.u.put(pc)
		return
	}
	pc.close()
}

// bodyErrReader records the error of reading a request body, so that it is
// returned (e.g. *http.MaxBytesError) rather than net/http's unwrappable
// wrapper.
type bodyErrReader struct {
	rc  io.ReadCloser
	err error       // the writer's; read by it once Write returned
	eof atomic.Bool // the body was read to the end
}

func (b *bodyErrReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.eof.Store(true)
	case err != nil:
		b.err = err
	}
	return n, err
}

func (b *bodyErrReader) Close() error { return b.rc.Close() }

// upBody is a response body on an upstream connection. Read to the end
// with keep-alive allowed, it pools the connection; closed earlier or
// failed, it closes it (without draining: a stream may never end).
type upBody struct {
	pc   *upConn
	body io.ReadCloser
	stop func() bool // ends the context watch; false once cancel ran
	keep bool
	done bool // finished: read to the end (eof) or failed or closed
	eof  bool
	ctx  context.Context
}

var errBodyClosed = errors.New("proxy: read on closed response body")

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		if b.eof {
			return 0, io.EOF
		}
		return 0, errBodyClosed
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
		b.finish(true)
	case err != nil:
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr // the context ended, and closed the connection
		}
		b.finish(false)
	}
	return n, err
}

func (b *upBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish ends the response: the connection goes back to the pool when the
// body was read to the end (complete), both sides allow keep-alive, the
// request was written completely and the context did not end; otherwise it
// is closed.
func (b *upBody) finish(complete bool) {
	b.done = true
	stopped := b.stop()
	pc := b.pc
	if complete && b.keep && stopped && !pc.closed.Load() {
		pc.release()
		return
	}
	pc.close()
}
