package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// envUpstream makes the test binary run as an upstream process (see TestMain).
const envUpstream = "STAGESUB_TEST_UPSTREAM"

func TestMain(m *testing.M) {
	if name := os.Getenv(envUpstream); name != "" {
		runUpstream(name)
		return
	}
	os.Exit(m.Run())
}

// runUpstream is a small app stand-in: it echoes who it is and the tenant
// header it got, serves /healthz, a WebSocket echo at /ws and an SSE stream
// at /events. It prints its address on stdout and exits when stdin closes.
func runUpstream(name string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 600; i++ {
			fmt.Fprintf(w, "data: %s %d\n\n", name, i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
		io.WriteString(w, name+" slow done")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		fmt.Fprintf(w, "%s tenant=%s host=%s path=%s", name, r.Header.Get("X-StageSub-Tenant"), r.Host, r.URL.Path)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	go func() { io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	_ = (&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(ln)
}

// upstreamProc is an upstream running as its own process.
type upstreamProc struct {
	cmd  *exec.Cmd
	Addr string
}

// startUpstream starts the test binary as upstream process name.
func startUpstream(tb testing.TB, name string) *upstreamProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envUpstream+"="+name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("upstream %s: %v", name, err)
	}
	return &upstreamProc{cmd: cmd, Addr: strings.TrimSpace(line)}
}

// Kill stops the process abruptly (SIGKILL).
func (u *upstreamProc) Kill() { _ = u.cmd.Process.Kill() }
