package main

// An internal test package: package main cannot be imported by an external
// _test package.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "a.json")
	if err := os.WriteFile(cfgFile, []byte(`{"node_name":"n1","node_id":"11111111-2222-3333-4444-555555555555",
		"data_dir":"/tmp/x","ports":{"http":18500,"server":18300,"dns":-1},"bind_addr":"127.0.0.1",
		"node_meta":{"a":"b"},"connect":{"enabled":true},"acl":{"tokens":{}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                         string
		args                         []string
		wantAddr, wantNode, wantData string
		wantServerPort               int
	}{
		{"Dev", []string{"agent", "-dev", "-client=127.0.0.1", "-http-port=9999"}, "127.0.0.1:9999", "", "", 0},
		{"Defaults", []string{"agent", "-dev"}, "127.0.0.1:8500", "", "", 0},
		{"DataDir", []string{"agent", "-dev", "-data-dir", "/d"}, "127.0.0.1:8500", "", "/d", 0},
		{"ConfigFile", []string{"agent", "-config-file", cfgFile}, "127.0.0.1:18500", "n1", "/tmp/x", 18300},
		{"ConfigDir", []string{"agent", "-config-dir", dir}, "127.0.0.1:18500", "n1", "/tmp/x", 18300},
		{"FlagsOverrideFile", []string{"agent", "-config-file", cfgFile, "-http-port=1", "-node=n2"}, "127.0.0.1:1", "n2", "/tmp/x", 18300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
			if err := m.Load(tt.args, nil); err != nil {
				t.Fatal(err)
			}
			if got, want := m.Config.HTTPAddr, tt.wantAddr; got != want {
				t.Errorf("addr: got %q, want %q", got, want)
			}
			if got, want := m.Config.NodeName, tt.wantNode; got != want {
				t.Errorf("node: got %q, want %q", got, want)
			}
			if got, want := m.Config.DataDir, tt.wantData; got != want {
				t.Errorf("data dir: got %q, want %q", got, want)
			}
			if got, want := m.Config.ServerPort, tt.wantServerPort; got != want {
				t.Errorf("server port: got %d, want %d", got, want)
			}
		})
	}
	bad := [][]string{
		{},
		{"serve"},
		{"agent", "-no-such-flag"},
		{"agent", "-config-file", filepath.Join(dir, "missing.json")},
		{"agent", "extra"},
	}
	for _, args := range bad {
		if err := NewMain(&bytes.Buffer{}, &bytes.Buffer{}).Load(args, nil); err == nil {
			t.Errorf("Load(%q): got nil error", args)
		}
	}
}

func TestVersionJSON(t *testing.T) {
	var out bytes.Buffer
	err := NewMain(&out, &bytes.Buffer{}).Load([]string{"version", "-format=json"}, nil)
	if !errors.Is(err, errDone) {
		t.Fatalf("got %v, want errDone", err)
	}
	var v struct{ Version string }
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Version == "" {
		t.Fatalf("version output %q: %v", out.String(), err)
	}
}

func TestRunInProcess(t *testing.T) {
	m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
	if err := m.Load([]string{"agent", "-dev", "-http-port=" + strconv.Itoa(freePort(t))}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitReady(t, m.Config.HTTPAddr)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBinarySIGTERMKeepsState builds the real binary, writes through it,
// stops it with SIGTERM right away (before any periodic snapshot) and
// checks that a restart on the same port has the data.
func TestBinarySIGTERMKeepsState(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("go toolchain not found (needed to build stagesub-consul)")
		}
		t.Skip("go toolchain not found")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "stagesub-consul")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	port := strconv.Itoa(freePort(t))
	addr := "127.0.0.1:" + port

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "agent", "-dev", "-client=127.0.0.1", "-http-port="+port, "-data-dir="+data)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitReady(t, addr)
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no exit within 10s of SIGTERM")
		}
	}

	cmd := start()
	c := client(t, addr)
	if _, err := c.KV().Put(&api.KVPair{Key: "stagesub/tenants/malmo", Value: []byte("m")}, nil); err != nil {
		t.Fatal(err)
	}
	stop(cmd)

	cmd = start()
	p, _, err := client(t, addr).KV().Get("stagesub/tenants/malmo", nil)
	if err != nil || p == nil || string(p.Value) != "m" {
		t.Fatalf("after restart: got %+v, %v; want the key", p, err)
	}
	stop(cmd)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/v1/status/leader")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 10s", addr)
}

func client(t *testing.T, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Scheme = "http"
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
