package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

// countedServer is an httptest server that counts the connections it
// accepted.
type countedServer struct {
	*httptest.Server
	conns atomic.Int64
}

func newCountedServer(t *testing.T, h http.Handler) *countedServer {
	t.Helper()
	s := &countedServer{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, cs http.ConnState) {
		if cs == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *countedServer) addr() string { return s.Listener.Addr().String() }

// send sends method to addr through u and returns the status and body.
func send(t *testing.T, u http.RoundTripper, method, addr string, body io.Reader, mod func(*http.Request)) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(req)
	}
	resp, err := u.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func newUpstream(t *testing.T, c proxy.UpstreamConfig) *proxy.Upstream {
	u := proxy.NewUpstream(c)
	t.Cleanup(u.CloseIdleConnections)
	return u
}

func TestUpstream_ReusesConnections(t *testing.T) {
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodHead:
			w.Header().Set("Content-Length", "5")
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case http.MethodPut:
			w.WriteHeader(http.StatusNotModified)
		default:
			_, _ = io.Copy(w, r.Body)
			_, _ = io.WriteString(w, "hello")
		}
	}))
	u := newUpstream(t, proxy.UpstreamConfig{})
	tests := []struct {
		method, body string
		chunked      bool
		wantStatus   int
		wantBody     string
	}{
		{"GET", "", false, 200, "hello"},
		{"HEAD", "", false, 200, ""},
		{"DELETE", "", false, 204, ""},
		{"PUT", "", false, 304, ""},
		{"POST", "abc", false, 200, "abchello"},
		{"POST", "chunked body", true, 200, "chunked bodyhello"},
		{"GET", "", false, 200, "hello"},
	}
	for _, tc := range tests {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: chunked
			}
		}
		resp, got, err := send(t, u, tc.method, srv.addr(), body, nil)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.method, tc.body, err)
		}
		if resp.StatusCode != tc.wantStatus || got != tc.wantBody {
			t.Errorf("%s %q: got %d %q, want %d %q", tc.method, tc.body, resp.StatusCode, got, tc.wantStatus, tc.wantBody)
		}
	}
	if got := srv.conns.Load(); got != 1 {
		t.Errorf("upstream connections: got %d, want 1 (every request on the pooled one)", got)
	}
	if got := u.IdleConns(); got != 1 {
		t.Errorf("idle connections: got %d, want 1", got)
	}

	// Concurrent requests use at most one connection each.
	var wg sync.WaitGroup
	const workers = 8
	for range workers {
		wg.Go(func() {
			for range 50 {
				if _, got, err := send(t, u, "GET", srv.addr(), nil, nil); err != nil || got != "hello" {
					t.Errorf("concurrent GET: %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := srv.conns.Load(); got < 1 || got > workers {
		t.Errorf("upstream connections after %d workers: got %d, want 1..%d", workers, got, workers)
	}
	u.CloseIdleConnections()
	if got := u.IdleConns(); got != 0 {
		t.Errorf("idle connections after CloseIdleConnections: got %d, want 0", got)
	}
	if _, _, err := send(t, u, "GET", srv.addr(), nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestUpstream_ChunkedRequestBody(t *testing.T) {
	type seen struct {
		te   []string
		cl   int64
		body string
	}
	got := make(chan seen, 1)
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.TransferEncoding, r.ContentLength, string(b)}
	}))
	u := newUpstream(t, proxy.UpstreamConfig{})
	pr, pw := io.Pipe()
	go func() {
		for i := range 3 {
			fmt.Fprintf(pw, "part%d;", i)
			time.Sleep(10 * time.Millisecond)
		}
		pw.Close()
	}()
	resp, _, err := send(t, u, "POST", srv.addr(), pr, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v", err)
	}
	s := <-got
	want := seen{[]string{"chunked"}, -1, "part0;part1;part2;"}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("upstream saw %+v, want %+v", s, want)
	}
	if _, _, err := send(t, u, "GET", srv.addr(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("connections: got %d, want 1 (reused after the chunked body)", n)
	}
}

// rawUpstream serves raw HTTP/1.1 on loopback: serve is called for every
// accepted connection with its index (0, 1, ...).
func rawUpstream(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) (addr string, conns *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns = &atomic.Int64{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			i := int(conns.Add(1)) - 1
			go func() {
				defer c.Close()
				serve(i, c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String(), conns
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestUpstream_StalePooledConnection(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		body      string
		header    string
		noGetBody bool // a streamed body, which cannot be sent again
		wantRetry bool // else the error is returned
	}{
		{"GET is retried", "GET", "", "", false, true},
		{"HEAD is retried", "HEAD", "", "", false, true},
		{"POST is not", "POST", "x", "", false, false},
		{"POST with Idempotency-Key is", "POST", "x", "Idempotency-Key", false, true},
		{"POST with Idempotency-Key without GetBody is not", "POST", "x", "Idempotency-Key", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The first connection answers once, then reads the next
			// request and closes without a response: the upstream closing
			// an idle keep-alive connection as the request arrives.
			addr, conns := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if i == 0 && n == 1 {
						return
					}
					_, _ = io.WriteString(c, okResponse)
				}
			})
			u := newUpstream(t, proxy.UpstreamConfig{})
			if _, _, err := send(t, u, "GET", addr, nil, nil); err != nil {
				t.Fatal(err)
			}
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			resp, _, err := send(t, u, tc.method, addr, body, func(r *http.Request) {
				if tc.header != "" {
					r.Header.Set(tc.header, "k1")
				}
				if tc.noGetBody {
					r.GetBody = nil
				}
			})
			if tc.wantRetry {
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("got %v, want 200 after a retry", err)
				}
				if n := conns.Load(); n != 2 {
					t.Errorf("connections: got %d, want 2", n)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %d, want an error (not retried)", resp.StatusCode)
			}
			if reason, dial := proxy.Classify(err); reason != "reset" || dial {
				t.Errorf("classify(%v) = %q, %v; want reset, false", err, reason, dial)
			}
		})
	}
}

func TestUpstream_ClosedIdleConnectionNotUsed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the liveness peek (MSG_PEEK) is Linux-only; elsewhere the stale-connection retry covers idempotent requests only")
	}
	// Every connection answers one request and closes: the pooled
	// connection is found closed before use, so even a POST succeeds.
	addr, conns := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, okResponse) // keep-alive announced, then closed
	})
	u := newUpstream(t, proxy.UpstreamConfig{})
	for i := range 3 {
		if _, _, err := send(t, u, "GET", addr, nil, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the FIN arrives
		// No body: the request would be written whole on a closed
		// connection, and a POST is not retried after that.
		resp, got, err := send(t, u, "POST", addr, nil, nil)
		if err != nil || resp.StatusCode != 200 || got != "ok" {
			t.Fatalf("%d: POST after close: %v", i, err)
		}
	}
	if n := conns.Load(); n != 6 {
		t.Errorf("connections: got %d, want 6", n)
	}
}

func TestUpstream_ConnectionClose(t *testing.T) {
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("close") {
			w.Header().Set("Connection", "close")
		}
		_, _ = io.WriteString(w, "ok")
	}))
	u := newUpstream(t, proxy.UpstreamConfig{})
	tests := []struct {
		name      string
		query     string
		reqClose  bool
		wantConns int64 // after this request and one more
	}{
		{"keep-alive", "", false, 1},
		{"response Connection: close", "?close", false, 2},
		{"request Connection: close", "", true, 3},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest("GET", "http://"+srv.addr()+"/"+tc.query, nil)
		req.Close = tc.reqClose
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if _, _, err := send(t, u, "GET", srv.addr(), nil, nil); err != nil {
			t.Fatal(err)
		}
		if got := srv.conns.Load(); got != tc.wantConns {
			t.Errorf("%s: connections got %d, want %d", tc.name, got, tc.wantConns)
		}
	}
}

func TestUpstream_ResponseTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
	}))
	defer close(release)
	u := newUpstream(t, proxy.UpstreamConfig{ResponseTimeout: 100 * time.Millisecond})
	req, _ := http.NewRequest("GET", "http://"+srv.addr()+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := u.RoundTrip(req)
		errc <- err
	}()
	var err error
	select {
	case err = <-errc:
	case <-time.After(3 * time.Second):
		t.Fatal("no timeout after 3s, want one after ~100ms")
	}
	if err == nil {
		t.Fatal("got a response, want a timeout")
	}
	if reason, dial := proxy.Classify(err); reason != "timeout" || dial {
		t.Errorf("classify(%v) = %q, %v; want timeout, false", err, reason, dial)
	}
	// A body streaming longer than the timeout is fine: it bounds the head.
	srv2 := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "late")
	}))
	if _, got, err := send(t, u, "GET", srv2.addr(), nil, nil); err != nil || got != "late" {
		t.Errorf("slow body: got %q, %v; want late", got, err)
	}
	// A request body taking longer than the timeout to send is fine too:
	// the timeout starts once the request is written.
	srv3 := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "a")
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(pw, "b")
		pw.Close()
	}()
	if _, got, err := send(t, u, "POST", srv3.addr(), pr, nil); err != nil || got != "ab" {
		t.Errorf("slow request body: got %q, %v; want ab", got, err)
	}
}

func TestUpstream_DialError(t *testing.T) {
	u := newUpstream(t, proxy.UpstreamConfig{})
	_, _, err := send(t, u, "GET", deadAddr(t), nil, nil)
	if reason, dial := proxy.Classify(err); reason != "refused" || !dial {
		t.Errorf("classify(%v) = %q, %v; want refused, true", err, reason, dial)
	}
}

func TestUpstream_CancelClosesConnection(t *testing.T) {
	for _, during := range []string{"head", "body"} {
		t.Run(during, func(t *testing.T) {
			upstreamGone := make(chan struct{})
			srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if during == "body" {
					_, _ = io.WriteString(w, "data: 1\n\n")
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done(): // the server saw the connection close
					close(upstreamGone)
				case <-time.After(5 * time.Second):
				}
			}))
			u := newUpstream(t, proxy.UpstreamConfig{})
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+srv.addr()+"/", nil)
			var err error
			if during == "head" {
				time.AfterFunc(100*time.Millisecond, cancel)
				_, err = u.RoundTrip(req)
			} else {
				var resp *http.Response
				resp, err = u.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, rerr := resp.Body.Read(buf)
				if rerr != nil || string(buf[:n]) != "data: 1\n\n" {
					t.Fatalf("first event: %q, %v", buf[:n], rerr)
				}
				time.AfterFunc(100*time.Millisecond, cancel)
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
			select {
			case <-upstreamGone:
			case <-time.After(3 * time.Second):
				t.Fatal("the upstream connection was not closed")
			}
			if n := u.IdleConns(); n != 0 {
				t.Errorf("idle connections: got %d, want 0", n)
			}
		})
	}
}

func TestUpstream_StreamsAtOnce(t *testing.T) {
	next := make(chan struct{})
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-next
		}
	}))
	u := newUpstream(t, proxy.UpstreamConfig{})
	req, _ := http.NewRequest("GET", "http://"+srv.addr()+"/", nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if want := fmt.Sprintf("data: %d\n", i); err != nil || line != want {
			t.Fatalf("event %d: got %q, %v; want %q", i, line, err, want)
		}
		_, _ = br.ReadString('\n')
		next <- struct{}{}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the events: %q, %v", rest, err)
	}
}

func TestUpstream_IdleTimeout(t *testing.T) {
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	u := newUpstream(t, proxy.UpstreamConfig{IdleTimeout: 50 * time.Millisecond, MaxIdlePerHost: 2})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, _, err := send(t, u, "GET", srv.addr(), strings.NewReader("slow"), nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := u.IdleConns(); n > 2 {
		t.Errorf("idle connections: got %d, want at most MaxIdlePerHost 2", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for u.IdleConns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := u.IdleConns(); n != 0 {
		t.Errorf("idle connections after the idle timeout: got %d, want 0", n)
	}
	before := srv.conns.Load()
	if _, _, err := send(t, u, "GET", srv.addr(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != before+1 {
		t.Errorf("connections: got %d, want a new one (%d)", n, before+1)
	}
}

// TestProxy_UpstreamFeatures checks, through the handler with the default
// Upstream, what ReverseProxy relies on the transport for: trailers, 1xx
// informational responses, bodiless statuses, hop-by-hop removal, a
// replayable body on a reused connection.
func TestProxy_UpstreamFeatures(t *testing.T) {
	for _, p := range proxyPaths {
		t.Run(p.name, func(t *testing.T) { testProxyUpstreamFeatures(t, p) })
	}
}

func testProxyUpstreamFeatures(t *testing.T, p proxyPath) {
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "42")
		case "/early":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "final")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/hop":
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("X-Conn-Hdr", r.Header.Get("Connection")+"|"+r.Header.Get("X-Drop"))
			_, _ = io.WriteString(w, "hop")
		default:
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		}
	}))
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", srv.addr())
	tr := newRouter(t, f.table(t, nil), p.mod)
	host := "goteborg.stagesub.test"

	resp, body := tr.do(t, "GET", host, "/trailer", nil, nil)
	if body != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer: got %q, trailer %v; want body, X-Sum 42", body, resp.Trailer)
	}

	var early []int
	req, _ := http.NewRequest("GET", tr.srv.URL+"/early", nil)
	req.Host = host
	ctx := httptraceWith1xx(req.Context(), func(code int) { early = append(early, code) })
	resp, err := tr.srv.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if fmt.Sprint(early) != "[103]" || string(b) != "final" {
		t.Errorf("1xx: got %v %q, want [103] final", early, b)
	}

	resp, body = tr.do(t, "GET", host, "/nocontent", nil, nil)
	if resp.StatusCode != 204 || body != "" {
		t.Errorf("204: got %d %q", resp.StatusCode, body)
	}
	resp, body = tr.do(t, "HEAD", host, "/", nil, nil)
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: got %d %q", resp.StatusCode, body)
	}
	resp, body = tr.do(t, "GET", host, "/hop", nil, http.Header{"Connection": {"X-Drop"}, "X-Drop": {"1"}})
	if got := resp.Header.Get("X-Conn-Hdr"); body != "hop" || got != "|" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop: upstream saw %q, client got Keep-Alive %q", got, resp.Header.Get("Keep-Alive"))
	}
	for i := range 3 {
		_, body = tr.do(t, "POST", host, "/", bytes.NewReader([]byte("payload")), nil)
		if body != "payload" {
			t.Errorf("POST %d: got %q", i, body)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("upstream connections: got %d, want 1", n)
	}
}

// httptraceWith1xx returns ctx with a client trace reporting 1xx codes.
func httptraceWith1xx(ctx context.Context, got func(code int)) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { got(code); return nil },
	})
}

// TestUpstream_ClientTraceHooks: a request with a client trace gets its
// per-field hooks (the fast head writer has none, so it is not used then).
func TestUpstream_ClientTraceHooks(t *testing.T) {
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	u := newUpstream(t, proxy.UpstreamConfig{})
	var fields []string
	wrote := false
	_, _, err := send(t, u, "GET", srv.addr(), nil, func(r *http.Request) {
		r.Header.Set("User-Agent", "")
		*r = *r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			WroteHeaderField: func(k string, _ []string) { fields = append(fields, k) },
			WroteRequest:     func(httptrace.WroteRequestInfo) { wrote = true },
		}))
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fields, "Host") || !wrote {
		t.Errorf("trace hooks: fields %v, WroteRequest %v; want Host among the fields, and WroteRequest", fields, wrote)
	}
}

// TestProxy_ReplaysBufferedBody: a small body is buffered, so a POST with an
// Idempotency-Key that meets a pooled connection the upstream closes is sent
// again, whole, on a new connection.
func TestProxy_ReplaysBufferedBody(t *testing.T) {
	for _, p := range proxyPaths {
		t.Run(p.name, func(t *testing.T) {
			var got atomic.Value
			addr, conns := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					if i == 0 && n == 1 {
						return // closes instead of answering
					}
					got.Store(string(b))
					_, _ = io.WriteString(c, okResponse)
				}
			})
			f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", addr)
			tr := newRouter(t, f.table(t, nil), p.mod)
			const host = "goteborg.stagesub.test"
			if resp, _ := tr.do(t, "GET", host, "/", nil, nil); resp.StatusCode != 200 {
				t.Fatalf("warm-up: %d", resp.StatusCode)
			}
			resp, _ := tr.do(t, "POST", host, "/", strings.NewReader("payload"), http.Header{"Idempotency-Key": {"k1"}})
			if resp.StatusCode != 200 || got.Load() != "payload" {
				t.Errorf("got %d, upstream read %q; want 200 and the whole body sent again", resp.StatusCode, got.Load())
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("upstream connections: got %d, want 2", n)
			}
		})
	}
}

// TestUpstream_BodyClosedEarly: a response body closed before its end
// closes the connection; it is never pooled half read.
func TestUpstream_BodyClosedEarly(t *testing.T) {
	srv := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("x"), 64<<10))
	}))
	u := newUpstream(t, proxy.UpstreamConfig{})
	req, _ := http.NewRequest("GET", "http://"+srv.addr()+"/", nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := u.IdleConns(); n != 0 {
		t.Errorf("idle connections after an early close: got %d, want 0", n)
	}
	if _, body, err := send(t, u, "GET", srv.addr(), nil, nil); err != nil || len(body) != 64<<10 {
		t.Fatalf("next request: %v, %d bytes", err, len(body))
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("upstream connections: got %d, want 2", n)
	}
}

// TestUpstream_ResponseHeaderLimit: a response head over
// MaxResponseHeaderBytes is an error, not read to its end.
func TestUpstream_ResponseHeaderLimit(t *testing.T) {
	addr, _ := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("y", 1000)+"\r\nContent-Length: 2\r\n\r\nok")
	})
	u := newUpstream(t, proxy.UpstreamConfig{MaxResponseHeaderBytes: 100})
	_, _, err := send(t, u, "GET", addr, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "exceed") {
		t.Errorf("got %v, want the header limit's error", err)
	}
}
