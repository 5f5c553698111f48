package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"stagesub.dev/registry"
	"stagesub.dev/router/certs"
)

// TestStreamsSurviveRoutingChanges keeps a WebSocket echo (over TLS) and an
// SSE stream open through the router while the tenant's instance is
// deregistered, the tenant suspended and another tenant added.
func TestStreamsSurviveRoutingChanges(t *testing.T) {
	f := startFleet(t)
	up := startUpstream(t, "g1")
	f.tenant(t, "goteborg", registry.StatusActive)
	dereg := f.register(t, "goteborg", up.Addr)
	m := startRouter(t, f)
	waitFor(t, 5*time.Second, "instance", func() bool {
		return len(m.Tables().Load().Lookup("goteborg.stagesub.test").Backends) == 1
	})

	pem, err := os.ReadFile(m.CAPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	raw, err := tls.Dial("tcp", m.Addr("https"), &tls.Config{RootCAs: pool, ServerName: "goteborg.stagesub.test", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := websocket.NewConfig("wss://goteborg.stagesub.test/ws", "https://goteborg.stagesub.test/")
	ws, err := websocket.NewClient(cfg, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echo := func(msg string) {
		t.Helper()
		_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("ws send %q: %v", msg, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("ws echo %q: got %q, %v", msg, got, err)
		}
	}

	c := client(t, m, false)
	resp, err := c.Get("https://goteborg.stagesub.test/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	next := func() string {
		t.Helper()
		ch := make(chan string, 1)
		go func() {
			for {
				line, err := events.ReadString('\n')
				if err != nil {
					ch <- "error: " + err.Error()
					return
				}
				if strings.HasPrefix(line, "data: ") {
					ch <- strings.TrimSpace(line)
					return
				}
			}
		}()
		select {
		case s := <-ch:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no SSE event within 5s")
			return ""
		}
	}
	if got := next(); got != "data: g1 0" {
		t.Fatalf("first event %q", got)
	}
	echo("before")

	f.tenant(t, "malmo", registry.StatusActive)
	dereg()
	waitFor(t, 5*time.Second, "instance gone from the table", func() bool {
		return len(m.Tables().Load().Lookup("goteborg.stagesub.test").Backends) == 0
	})
	echo("after deregistration")
	f.setStatus(t, "goteborg", registry.StatusSuspended)
	waitFor(t, 5*time.Second, "suspension", func() bool {
		return m.Tables().Load().Lookup("goteborg.stagesub.test").Status == registry.StatusSuspended
	})
	echo("after suspension")
	for range 3 {
		if got := next(); !strings.HasPrefix(got, "data: g1 ") {
			t.Fatalf("event after routing changes: %q", got)
		}
	}
	// New requests see the new table.
	if resp, _ := get(t, c, "https://goteborg.stagesub.test/"); resp.StatusCode != 403 {
		t.Errorf("new request got %d want 403", resp.StatusCode)
	}
}

// TestGracefulDrain closes the router (as SIGTERM does) with a request in
// flight: the request completes, new connections are refused.
func TestGracefulDrain(t *testing.T) {
	f := startFleet(t)
	up := startUpstream(t, "g1")
	f.tenant(t, "goteborg", registry.StatusActive)
	f.register(t, "goteborg", up.Addr)
	var access bytes.Buffer // written by the router's flusher; read after Close
	m := startRouterOut(t, f, &access, "STAGESUB_TLS_MODE=off")
	waitFor(t, 5*time.Second, "instance", func() bool {
		return len(m.Tables().Load().Lookup("goteborg.stagesub.test").Backends) == 1
	})
	c := client(t, m, false)
	done := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://goteborg.stagesub.test/slow")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	time.Sleep(150 * time.Millisecond)
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != "g1 slow done" {
		t.Errorf("in-flight request got %q", got)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Close returned after %v, before the in-flight request ended", d)
	}
	if _, err := net.DialTimeout("tcp", m.Addr("http"), time.Second); err == nil {
		t.Error("router still accepts connections after Close")
	}
	// Close flushed the buffered access log: the drained request is in it.
	if !strings.Contains(access.String(), `"path":"/slow","proto":"HTTP/1.1","status":200`) {
		t.Errorf("access log lacks the drained request:\n%s", access.String())
	}
}

// TestFilesTLSReload serves certificate files, replaces them and sends
// SIGHUP: new handshakes get the new certificate, an open connection stays.
func TestFilesTLSReload(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.LoadOrCreateCA(filepath.Join(dir, "ca"), certs.CAOptions{Base: base})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair := func(names ...string) {
		c, err := ca.Issue(names...)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, certFile, keyFile, c)
	}
	writePair("goteborg.stagesub.test")
	f := startFleet(t)
	f.tenant(t, "goteborg", registry.StatusActive)
	f.register(t, "goteborg", startUpstream(t, "g1").Addr)
	m := startRouter(t, f, "STAGESUB_TLS_MODE=files", "STAGESUB_TLS_CERT_FILE="+certFile, "STAGESUB_TLS_KEY_FILE="+keyFile)
	waitFor(t, 5*time.Second, "instance", func() bool {
		return len(m.Tables().Load().Lookup("goteborg.stagesub.test").Backends) == 1
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, m.Addr("https"))
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	leafCN := func(resp *http.Response) string { return resp.TLS.PeerCertificates[0].DNSNames[0] }
	resp, _ := get(t, c, "https://goteborg.stagesub.test/")
	if resp.StatusCode != 200 || leafCN(resp) != "goteborg.stagesub.test" {
		t.Fatalf("first: %d %s", resp.StatusCode, leafCN(resp))
	}

	writePair("goteborg.stagesub.test", "second.stagesub.test")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The open HTTP/2 connection keeps working with the old certificate.
	resp, _ = get(t, c, "https://goteborg.stagesub.test/")
	if resp.StatusCode != 200 || len(resp.TLS.PeerCertificates[0].DNSNames) != 1 {
		t.Errorf("open connection: %d %v", resp.StatusCode, resp.TLS.PeerCertificates[0].DNSNames)
	}
	// New connections get the new certificate.
	waitFor(t, 5*time.Second, "new certificate served", func() bool {
		conn, err := tls.Dial("tcp", m.Addr("https"), &tls.Config{RootCAs: pool, ServerName: "goteborg.stagesub.test"})
		if err != nil {
			return false
		}
		defer conn.Close()
		return len(conn.ConnectionState().PeerCertificates[0].DNSNames) == 2
	})
}
