package main_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"stagesub.dev/registry"
	main "stagesub.dev/router/cmd/stagesub-router"
)

// TestLimits: a slowloris client is cut off by the read-header timeout and
// an oversized header block gets 431.
func TestLimits(t *testing.T) {
	f := startFleet(t)
	f.tenant(t, "goteborg", registry.StatusActive)
	m := startRouter(t, f, "STAGESUB_TLS_MODE=off", "STAGESUB_ROUTER_READ_HEADER_TIMEOUT=300ms", "STAGESUB_ROUTER_MAX_HEADER_BYTES=4096")

	t.Run("Slowloris", func(t *testing.T) {
		c, err := net.Dial("tcp", m.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: goteborg.stagesub.test\r\nX-A: 1\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c) // the server closes the connection
		if err != nil {
			t.Fatalf("connection not closed by the server: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("closed after %v", d)
		}
	})
	t.Run("HeaderTooLarge", func(t *testing.T) {
		c, err := net.Dial("tcp", m.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: goteborg.stagesub.test\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.StatusCode, http.StatusRequestHeaderFieldsTooLarge; got != want {
			t.Errorf("status got %d want %d", got, want)
		}
	})
}

// TestRun_ErrAddrInUse: Run fails cleanly when a listener cannot bind, and
// frees the ports it had already bound.
func TestRun_ErrAddrInUse(t *testing.T) {
	f := startFleet(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := free.Addr().String()
	free.Close()
	m := main.NewMain()
	m.Stdout, m.Stderr = io.Discard, io.Discard
	if err := m.Load(nil, []string{"STAGESUB_BASE_DOMAIN=" + base, "CONSUL_HTTP_ADDR=" + f.srv.Addr(), "STAGESUB_TLS_MODE=off",
		"STAGESUB_ROUTER_HTTP_ADDR=" + httpAddr, "STAGESUB_ROUTER_ADMIN_ADDR=" + busy.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen admin") {
		t.Fatalf("Run got %v, want a listen admin error", err)
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Errorf("HTTP port still bound after the failed Run: %v", err)
	} else {
		ln.Close()
	}
}

// TestH2C: with TLS off the plain listener also speaks HTTP/2 with prior
// knowledge (h2c), and routes by :authority.
func TestH2C(t *testing.T) {
	f := startFleet(t)
	f.tenant(t, "goteborg", registry.StatusActive)
	f.register(t, "goteborg", startUpstream(t, "g1").Addr)
	m := startRouter(t, f, "STAGESUB_TLS_MODE=off")
	waitFor(t, 5*time.Second, "instance", func() bool {
		return len(m.Tables().Load().Lookup("goteborg.stagesub.test").Backends) == 1
	})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+m.Addr("http")+"/h2c", nil)
	req.Host = "goteborg.stagesub.test"
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || !strings.HasPrefix(string(body), "g1 tenant=goteborg") {
		t.Errorf("got %s %d %q", resp.Proto, resp.StatusCode, body)
	}
}
