package main_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"stagesub.dev/registry"
)

// TestBinary_SIGTERM builds and runs the real stagesub-router binary: it
// prints where the internal CA is, serves, and on SIGTERM drains a request
// in flight, then exits 0.
func TestBinary_SIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "stagesub-router")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f := startFleet(t)
	f.tenant(t, "goteborg", registry.StatusActive)
	f.register(t, "goteborg", startUpstream(t, "g1").Addr)

	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	httpAddr, httpsAddr := free(), free()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "STAGESUB_BASE_DOMAIN="+base, "CONSUL_HTTP_ADDR="+f.srv.Addr(),
		"STAGESUB_ROUTER_HTTP_ADDR="+httpAddr, "STAGESUB_ROUTER_HTTPS_ADDR="+httpsAddr, "STAGESUB_ROUTER_ADMIN_ADDR="+free(),
		"STAGESUB_STATE_DIR="+filepath.Join(dir, "state"), "STAGESUB_ROUTER_DRAIN_TIMEOUT=5s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var sawCA bool
	for !sawCA {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("router exited before listening")
			}
			if want := "internal CA certificate: " + filepath.Join(dir, "state", "tls", "ca.pem"); strings.Contains(l, want) {
				sawCA = true
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no CA path printed")
		}
	}
	// A slow request (500 ms upstream) in flight over HTTPS when SIGTERM
	// arrives is completed; the CA file printed is the one that verifies.
	pem, err := os.ReadFile(filepath.Join(dir, "state", "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		},
	}}
	waitFor(t, 10*time.Second, "routed", func() bool {
		resp, err := client.Get("https://goteborg.stagesub.test/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	got := make(chan string, 1)
	go func() {
		resp, err := client.Get("https://goteborg.stagesub.test/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "g1 slow done" {
		t.Errorf("in-flight request across SIGTERM got %q", g)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("router did not exit after SIGTERM")
	}
	var stopped bool
	for l := range lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "stagesub-router stopped" {
			stopped = true
		}
	}
	if !stopped {
		t.Error(`no "stagesub-router stopped" log line`)
	}
}
