package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

// TestProxyRules checks the rules of proxying a plain request, on both
// proxy paths, against an upstream that reports what it received.
func TestProxyRules(t *testing.T) {
	step := make(chan struct{})
	up := newCountedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/seen":
			var names []string
			for k := range r.Header {
				names = append(names, k)
			}
			slices.Sort(names)
			h.Set("X-Got-Names", strings.Join(names, " "))
			h.Set("X-Got-Query", r.URL.RawQuery)
			h.Set("X-Got-Te", strings.Join(r.Header.Values("Te"), ","))
			h["X-Got-Ua"] = []string{fmt.Sprint(r.Header["User-Agent"])}
			h.Set("X-Got-Xff", r.Header.Get("X-Forwarded-For"))
			h.Set("X-Request-Id", "upstream-id")
			h.Set("Connection", "X-Resp-Hop")
			h.Set("X-Resp-Hop", "1")
			h.Set("Proxy-Authenticate", "Basic")
		case "/early":
			h.Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			h.Set("X-Final", "1")
		case "/switch":
			h.Set("Connection", "Upgrade")
			h.Set("Upgrade", "websocket")
			w.WriteHeader(http.StatusSwitchingProtocols)
		case "/short", "/broken":
			if r.URL.Path == "/short" {
				h.Set("Content-Length", "100")
			} // else chunked
			_, _ = io.WriteString(w, "only ten b")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // closes the connection mid-body
		case "/late-trailer":
			w.(http.Flusher).Flush()                // chunked, with an empty body
			h.Set(http.TrailerPrefix+"X-Late", "7") // not announced
		case "/hold": // headers now, the body never
			h.Set("X-Held", "1")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/trailers":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %v", b, r.Trailer)
		case "/stream":
			_, _ = io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			<-step
			_, _ = io.WriteString(w, "second\n")
		}
	}))
	t.Cleanup(func() { close(step) }) // before the server's Close: frees a stuck /stream
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.addr())
	const host = "goteborg.stagesub.test"

	for _, p := range proxyPaths {
		t.Run(p.name, func(t *testing.T) {
			tr := newRouter(t, f.table(t, nil), p.mod)

			resp, _ := tr.do(t, "GET", host, "/seen?a=1;b=2&c=3", nil, http.Header{
				"Te":                  {"trailers, deflate"},
				"Connection":          {"X-Forwarded-For, X-Custom-Hop"},
				"X-Custom-Hop":        {"1"},
				"User-Agent":          {""}, // the test client sends none
				"Forwarded":           {"for=6.6.6.6"},
				"Proxy-Authorization": {"Basic c2VjcmV0"},
				"Proxy-Connection":    {"keep-alive"},
				"Keep-Alive":          {"timeout=5"},
				"X-Stagesub_tenant":   {"malmo"},
				"X-Forwarded_for":     {"6.6.6.6"},
				"X-Kept":              {"1"},
			})
			id := strings.Join(resp.Header.Values(proxy.HeaderRequestID), ",")
			for _, tt := range []struct{ name, got, want string }{
				{"header names the upstream got", resp.Header.Get("X-Got-Names"),
					"Accept-Encoding Te X-Forwarded-For X-Forwarded-Host X-Forwarded-Proto X-Kept X-Request-Id X-Stagesub-Tenant"},
				{"query without unparsable parameters", resp.Header.Get("X-Got-Query"), "c=3"},
				{"TE", resp.Header.Get("X-Got-Te"), "trailers"},
				{"no User-Agent added", resp.Header.Get("X-Got-Ua"), "[]"},
				{"X-Forwarded-For set despite Connection", resp.Header.Get("X-Got-Xff"), "127.0.0.1"},
				{"request id is the router's", fmt.Sprint(len(id), id == "upstream-id"), "32 false"},
				{"response header named in Connection", resp.Header.Get("X-Resp-Hop"), ""},
				{"hop-by-hop response header", resp.Header.Get("Proxy-Authenticate"), ""},
			} {
				if tt.got != tt.want {
					t.Errorf("%s: got %q want %q", tt.name, tt.got, tt.want)
				}
			}
			resp, _ = tr.do(t, "GET", host, "/seen", nil, http.Header{"User-Agent": {"orchestra-app/2"}})
			if got, want := resp.Header.Get("X-Got-Ua"), "[orchestra-app/2]"; got != want {
				t.Errorf("User-Agent: got %q want %q", got, want)
			}

			resp, _ = tr.do(t, "GET", host, "/early", nil, nil)
			if got := resp.Header.Get(proxy.HeaderRequestID); len(got) != 32 || resp.Header.Get("X-Final") != "1" || resp.Header.Get("Link") != "" {
				t.Errorf("final response after 103: X-Request-Id %q, X-Final %q, Link %q", got, resp.Header.Get("X-Final"), resp.Header.Get("Link"))
			}

			resp, _ = tr.do(t, "GET", host, "/switch", nil, nil)
			if got, want := resp.StatusCode, http.StatusBadGateway; got != want {
				t.Errorf("101 without an upgrade request: status got %d want %d", got, want)
			}

			for _, path := range []string{"/short", "/broken"} {
				req, _ := http.NewRequest("GET", tr.srv.URL+path, nil)
				req.Host = host
				if resp, err := tr.srv.Client().Do(req); err == nil {
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						t.Errorf("%s: the client read %q without an error", path, b)
					}
				}
			}

			resp, body := tr.do(t, "GET", host, "/late-trailer", nil, nil)
			if got := resp.Trailer.Get("X-Late"); body != "" || got != "7" {
				t.Errorf("unannounced trailer: got body %q, X-Late %q; want none, 7", body, got)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "GET", tr.srv.URL+"/hold", nil)
			req.Host = host
			if resp, err := tr.srv.Client().Do(req); err != nil {
				t.Errorf("a stream's headers were not passed on before its body: %v", err)
			} else if resp.Header.Get("X-Held") != "1" {
				t.Errorf("hold: headers %v", resp.Header)
			}
			cancel()

			c, err := net.Dial("tcp", tr.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "POST /trailers HTTP/1.1\r\nHost: "+host+"\r\nTransfer-Encoding: chunked\r\n"+
				"Trailer: X-Forwarded-For\r\n\r\n5\r\nhello\r\n0\r\n"+
				"X-Forwarded-For: 6.6.6.6\r\nX-Stagesub-Tenant: malmo\r\nX-Request-Id: spoofed\r\n\r\n")
			tresp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			tb, _ := io.ReadAll(tresp.Body)
			if got := string(tb); !strings.HasPrefix(got, "hello ") || strings.ContainsAny(got, "6") ||
				strings.Contains(got, "malmo") || strings.Contains(got, "spoofed") {
				t.Errorf("request trailers: the upstream got %q, want the body and no trailer value", got)
			}

			req, _ = http.NewRequest("GET", tr.srv.URL+"/stream", nil)
			req.Host = host
			resp, err = tr.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			line := make(chan string, 1)
			go func() { s, _ := br.ReadString('\n'); line <- s }()
			select {
			case got := <-line:
				if got != "first\n" {
					t.Errorf("stream: got %q want first", got)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("stream: the first write was not flushed through the router")
			}
			step <- struct{}{}
			if rest, _ := io.ReadAll(br); string(rest) != "second\n" {
				t.Errorf("stream: rest got %q", rest)
			}
		})
	}
}

// earlyAnswerUpstream answers /early with 202 as soon as it has the request
// head, then reads the upload to its end; other requests are echoed.
func earlyAnswerUpstream(t *testing.T) (addr string, conns *atomic.Int64) {
	return rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/early" {
				_, _ = io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
				_, _ = io.Copy(io.Discard, req.Body)
				continue
			}
			b, _ := io.ReadAll(req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		}
	})
}

// TestForward_EarlyAnswerToUpload: an upstream's answer to a streamed upload
// before its end reaches the client, and the requests after it still work
// (the connection is not pooled with a request half written). net/http's
// server reads what is left of the upload before it sends the answer, so
// the client's upload ends first here; TestUpstream_EarlyAnswerToUpload
// shows the upstream client itself does not wait for it.
func TestForward_EarlyAnswerToUpload(t *testing.T) {
	addr, _ := earlyAnswerUpstream(t)
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", addr)
	tr := newRouter(t, f.table(t, nil), nil)
	const host = "goteborg.stagesub.test"

	// A streamed upload (no Content-Length, so not buffered for replay).
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "part one ")
		time.Sleep(50 * time.Millisecond)
		_ = pw.Close()
	}()
	resp, _ := tr.do(t, "POST", host, "/early", pr, nil)
	if got, want := resp.StatusCode, http.StatusAccepted; got != want {
		t.Errorf("early answer: status got %d want %d", got, want)
	}
	for i := range 3 {
		_, body := tr.do(t, "POST", host, "/", strings.NewReader("payload"), nil)
		if body != "payload" {
			t.Errorf("POST %d after the early answer: got %q", i, body)
		}
	}
}

// TestUpstream_EarlyAnswerToUpload: the upstream client returns an answer
// that comes before the end of a streamed upload at once, keeps sending the
// upload, and pools the connection once the upload is sent.
func TestUpstream_EarlyAnswerToUpload(t *testing.T) {
	addr, conns := earlyAnswerUpstream(t)
	u := newUpstream(t, proxy.UpstreamConfig{})
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = io.WriteString(pw, "part one ") }()
	req, _ := http.NewRequest("POST", "http://"+addr+"/early", pr)
	answered := make(chan error, 1)
	go func() {
		resp, err := u.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the early answer was not returned while the upload was still open")
	}
	_, _ = io.WriteString(pw, "part two")
	_ = pw.Close()
	deadline := time.Now().Add(2 * time.Second)
	for u.IdleConns() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, body, err := send(t, u, "POST", addr, strings.NewReader("payload"), nil); err != nil || body != "payload" {
		t.Fatalf("next request: %v %q", err, body)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream connections: got %d, want 1 (pooled once the upload was sent)", n)
	}
}
