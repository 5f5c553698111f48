package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/websocket"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRetry_RefusedInstance(t *testing.T) {
	up := echoUpstream(t, "g2")
	f := newFleet().tenant("goteborg", registry.StatusActive).
		instance("goteborg", "g1", deadAddr(t)).
		instance("goteborg", "g2", up.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), nil)
	for i := range 20 {
		method := []string{"GET", "POST"}[i%2] // a dial error is retried for any method
		resp, body := tr.do(t, method, "goteborg.stagesub.test", "/", strings.NewReader("hello"), nil)
		if resp.StatusCode != 200 || body != "g2:"+method+":/:hello" {
			t.Fatalf("%d: got %d %q", i, resp.StatusCode, body)
		}
	}
	// g1 was ejected after its first refusal, so it was tried once or twice, not 20 times.
	if got := testutil.ToFloat64(tr.metrics.Ejections.WithLabelValues("goteborg")); got < 1 || got > 2 {
		t.Errorf("ejections got %v want 1..2", got)
	}
	if got := testutil.ToFloat64(tr.metrics.UpstreamErrors.WithLabelValues("goteborg", "refused")); got < 1 || got > 2 {
		t.Errorf("refused errors got %v want 1..2", got)
	}
}

// resetUpstream accepts connections, reads the request head and closes.
func resetUpstream(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = http.ReadRequest(bufio.NewReader(c))
				c.Close()
			}()
		}
	}()
	return l.Addr().String()
}

func TestRetry_ResetAfterSend(t *testing.T) {
	up := echoUpstream(t, "ok")
	bad := resetUpstream(t)
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "bad", bad)
	f2 := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "bad", bad).instance("goteborg", "ok", up.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), nil)

	t.Run("NonIdempotentNotRetried", func(t *testing.T) {
		// Only the bad instance: POST fails with 502, never replayed.
		resp, _ := tr.do(t, "POST", "goteborg.stagesub.test", "/", strings.NewReader("x"), nil)
		if got, want := resp.StatusCode, http.StatusBadGateway; got != want {
			t.Errorf("status got %d want %d", got, want)
		}
	})
	tr.tables.Store(f2.table(t, tr.tables.Load()))
	t.Run("IdempotentRetried", func(t *testing.T) {
		for i := range 10 {
			resp, body := tr.do(t, "GET", "goteborg.stagesub.test", "/", nil, nil)
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "ok:") {
				t.Fatalf("%d: got %d %q", i, resp.StatusCode, body)
			}
		}
	})
	t.Run("BufferedBodyRetried", func(t *testing.T) {
		for i := range 10 {
			resp, body := tr.do(t, "PUT", "goteborg.stagesub.test", "/", strings.NewReader("payload"), nil)
			if resp.StatusCode != 200 || body != "ok:PUT:/:payload" {
				t.Fatalf("%d: got %d %q", i, resp.StatusCode, body)
			}
		}
	})
	t.Run("StreamedPostNotReplayed", func(t *testing.T) {
		fails := 0
		for range 10 {
			// An unknown length (chunked) body is streamed, never buffered.
			pr, pw := io.Pipe()
			go func() { _, _ = io.WriteString(pw, "streamed"); pw.Close() }()
			resp, body := tr.do(t, "POST", "goteborg.stagesub.test", "/", pr, nil)
			switch {
			case resp.StatusCode == 200 && body == "ok:POST:/:streamed":
			case resp.StatusCode == http.StatusBadGateway:
				fails++
			default:
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
		}
		if fails == 0 {
			t.Errorf("no POST reached the resetting instance; want some 502s (no replay)")
		}
	})
	if got := testutil.ToFloat64(tr.metrics.Retries.WithLabelValues("goteborg")); got == 0 {
		t.Error("retries metric is 0")
	}
}

func TestTimeout_Ejects(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "slow", slow.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), func(c *proxy.Config) { c.ResponseTimeout = 100 * time.Millisecond })
	resp, _ := tr.do(t, "POST", "goteborg.stagesub.test", "/", nil, nil)
	if got, want := resp.StatusCode, http.StatusGatewayTimeout; got != want {
		t.Errorf("status got %d want %d", got, want)
	}
	if got := testutil.ToFloat64(tr.metrics.Ejections.WithLabelValues("goteborg")); got != 1 {
		t.Errorf("ejections got %v want 1", got)
	}
}

func TestNoInstance_WaitsForOne(t *testing.T) {
	up := echoUpstream(t, "g1")
	f := newFleet().tenant("goteborg", registry.StatusActive)
	tr := newRouter(t, f.table(t, nil), func(c *proxy.Config) { c.NoInstanceWait = 3 * time.Second })
	go func() {
		time.Sleep(200 * time.Millisecond)
		tr.tables.Store(f.table(t, tr.tables.Load())) // unrelated change: keep waiting
		time.Sleep(100 * time.Millisecond)
		f.instance("goteborg", "g1", up.Listener.Addr().String())
		tr.tables.Store(f.table(t, tr.tables.Load()))
	}()
	start := time.Now()
	resp, body := tr.do(t, "GET", "goteborg.stagesub.test", "/", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "g1:") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v, want about 300ms", d)
	}

	t.Run("GivesUp", func(t *testing.T) {
		tr := newRouter(t, newFleet().tenant("kiruna", registry.StatusActive).table(t, nil), func(c *proxy.Config) { c.NoInstanceWait = 150 * time.Millisecond })
		start := time.Now()
		resp, _ := tr.do(t, "GET", "kiruna.stagesub.test", "/", nil, nil)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
			t.Errorf("got %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("answered after %v, before the wait", d)
		}
	})
}

func TestMaxBodyBytes(t *testing.T) {
	up := echoUpstream(t, "g1")
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), func(c *proxy.Config) { c.MaxBodyBytes = 10 })
	resp, _ := tr.do(t, "POST", "goteborg.stagesub.test", "/", strings.NewReader(strings.Repeat("x", 11)), nil)
	if got, want := resp.StatusCode, http.StatusRequestEntityTooLarge; got != want {
		t.Errorf("status got %d want %d", got, want)
	}
	resp, _ = tr.do(t, "POST", "goteborg.stagesub.test", "/", strings.NewReader("0123456789"), nil)
	if got, want := resp.StatusCode, 200; got != want {
		t.Errorf("status got %d want %d", got, want)
	}
	// A streamed (chunked) body is only found too large while it is sent.
	for _, p := range proxyPaths {
		tr := newRouter(t, f.table(t, nil), p.with(func(c *proxy.Config) { c.MaxBodyBytes = 10 }))
		resp, _ := tr.do(t, "POST", "goteborg.stagesub.test", "/", io.MultiReader(strings.NewReader(strings.Repeat("x", 100))), nil)
		if got, want := resp.StatusCode, http.StatusRequestEntityTooLarge; got != want {
			t.Errorf("%s: chunked body over the limit: status got %d want %d", p.name, got, want)
		}
	}
}

// TestWebSocketAndSSE_SurviveRoutingChange opens a WebSocket echo and an SSE
// stream through the router, then removes the instance from the table (and
// later the tenant): both keep working on their open connections.
func TestWebSocketAndSSE_SurviveRoutingChange(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	tick := make(chan string)
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case s, ok := <-tick:
				if !ok {
					return
				}
				fmt.Fprintf(w, "data: %s\n\n", s)
				w.(http.Flusher).Flush()
			}
		}
	})
	up := httptest.NewServer(mux)
	t.Cleanup(up.Close)
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), nil)
	addr := tr.srv.Listener.Addr().String()

	cfg, err := websocket.NewConfig("ws://goteborg.stagesub.test/ws", "http://goteborg.stagesub.test/")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echo := func(msg string) {
		t.Helper()
		_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Errorf("echo got %q want %q", got, msg)
		}
	}

	req, _ := http.NewRequest("GET", tr.srv.URL+"/events", nil)
	req.Host = "goteborg.stagesub.test"
	resp, err := tr.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	event := func(s string) {
		t.Helper()
		done := make(chan string, 1)
		go func() {
			line, _ := events.ReadString('\n')
			_, _ = events.ReadString('\n')
			done <- line
		}()
		tick <- s
		select {
		case got := <-done:
			if want := "data: " + s + "\n"; got != want {
				t.Errorf("event got %q want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %q not flushed through the router", s)
		}
	}

	echo("one")
	event("one")
	// Routing change: the instance leaves the table, then the tenant goes.
	tr.tables.Store(newFleet().tenant("goteborg", registry.StatusActive).table(t, tr.tables.Load()))
	echo("two")
	event("two")
	tr.tables.Store(newFleet().table(t, tr.tables.Load()))
	echo("three")
	event("three")
	// New requests follow the new table.
	if resp, _ := tr.do(t, "GET", "goteborg.stagesub.test", "/", nil, nil); resp.StatusCode != 404 {
		t.Errorf("new request after removal got %d want 404", resp.StatusCode)
	}
}

func TestHTTP2(t *testing.T) {
	up := echoUpstream(t, "g1")
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.Listener.Addr().String())
	tr := newRouter(t, f.table(t, nil), nil)
	srv := httptest.NewUnstartedServer(tr.h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", srv.URL+fmt.Sprintf("/h2/%d", i), nil)
			req.Host = "goteborg.stagesub.test"
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.ProtoMajor != 2 || string(body) != fmt.Sprintf("g1:GET:/h2/%d:", i) || resp.Header.Get("X-Got-Proto") != "https" {
				t.Errorf("got %s %q proto %q", resp.Proto, body, resp.Header.Get("X-Got-Proto"))
			}
		}()
	}
	wg.Wait()
	// :authority decides the route in HTTP/2, like Host in HTTP/1.1.
	h2 := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Host = "unknown.stagesub.test"
	resp, err := h2.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("h2 unknown host got %d want 404", resp.StatusCode)
	}
}
