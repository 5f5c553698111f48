package main_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"stagesub.dev/registry"
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
