package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"stagesub.dev/app/schema"
	"stagesub.dev/app/schema/schematest"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry/consuldev"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// removeBuild deletes the binary built by MustBuild.
func removeBuild() {
	if buildBin != "" {
		os.RemoveAll(filepath.Dir(buildBin))
	}
}

// MustBuild builds stagesub-app once per test binary and returns its path.
func MustBuild(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stagesub-app-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "stagesub-app")
		out, err := exec.Command("go", "build", "-o", buildBin, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		tb.Fatalf("go build: %v", buildErr)
	}
	return buildBin
}

func TestBinaryConfigErrorExits2(t *testing.T) {
	bin := MustBuild(t)
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"ErrNoDatabaseURL", []string{"STAGESUB_TENANT=goteborg"}, "stagesub-app: DATABASE_URL is required\n"},
		{"ErrNoTenant", []string{"DATABASE_URL=postgres:///x"}, "stagesub-app: STAGESUB_TENANT is required\n"},
		{"ErrLogLevel", []string{"DATABASE_URL=postgres:///x", "STAGESUB_TENANT=goteborg", "STAGESUB_LOG_LEVEL=loud"}, "stagesub-app: STAGESUB_LOG_LEVEL \"loud\" must be debug, info, warn or error\n"},
		{"ErrRegister", []string{"DATABASE_URL=postgres:///x", "STAGESUB_TENANT=goteborg", "STAGESUB_REGISTER=maybe"}, "stagesub-app: STAGESUB_REGISTER \"maybe\" must be true or false\n"},
		{"ErrTrustedProxies", []string{"DATABASE_URL=postgres:///x", "STAGESUB_TENANT=goteborg", "STAGESUB_TRUSTED_PROXIES=router"}, "stagesub-app: STAGESUB_TRUSTED_PROXIES: \"router\" is not a CIDR like 10.0.0.0/8 or an IP address\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = tt.env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want code 2", err)
			}
			if got := stderr.String(); got != tt.want {
				t.Errorf("stderr = %q, want %q", got, tt.want)
			}
		})
	}
}

// logLine is the part of the app's JSON log lines the tests read.
type logLine struct {
	Msg       string `json:"msg"`
	Addr      string `json:"addr"`
	Instance  string `json:"instance"`
	StartupMS int64  `json:"startup_ms"`
}

// proc is a running stagesub-app process.
type proc struct {
	cmd   *exec.Cmd
	ready logLine
	log   *syncbuf.Buffer
	exit  chan error
}

// StartBinary runs the built binary with env and waits for its "ready" log line.
func StartBinary(tb testing.TB, env []string) *proc {
	tb.Helper()
	cmd := exec.Command(MustBuild(tb))
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &proc{cmd: cmd, log: &syncbuf.Buffer{}, exit: make(chan error, 1)}
	readyc := make(chan logLine, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.log.Write(append(sc.Bytes(), '\n'))
			var l logLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "ready" {
				readyc <- l
			}
		}
		p.exit <- cmd.Wait()
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		if tb.Failed() {
			tb.Logf("app log:\n%s", p.log)
		}
	})
	select {
	case p.ready = <-readyc:
	case err := <-p.exit:
		tb.Fatalf("app exited before ready: %v\n%s", err, p.log)
	case <-time.After(30 * time.Second):
		tb.Fatalf("app not ready within 30s\n%s", p.log)
	}
	return p
}

// TestBinarySIGTERM runs the real binary: it registers, serves, and on
// SIGTERM deregisters and exits 0.
func TestBinarySIGTERM(t *testing.T) {
	c := pgtest.Start(t)
	consul := consuldev.StartTest(t, consuldev.Config{})
	client := consul.Client(t)
	p := StartBinary(t, []string{"DATABASE_URL=" + schematest.NewDB(t, c, "goteborg"), "STAGESUB_TENANT=goteborg",
		"CONSUL_HTTP_ADDR=" + consul.Addr(), "STAGESUB_LISTEN=127.0.0.1:0"})
	t.Logf("start to registered: %d ms", p.ready.StartupMS)
	if healthStatus(t, client, p.ready.Instance) == "absent" {
		t.Fatalf("instance %q not registered", p.ready.Instance)
	}
	if code, _ := get(t, "http://"+p.ready.Addr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exit:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	if got := healthStatus(t, client, p.ready.Instance); got != "absent" {
		t.Errorf("after SIGTERM the instance is %s, want absent", got)
	}
}

// BenchmarkIdleRSS reports the resident memory of one idle app process in
// MB: after serving a few pages (RSS-MB, goal ≤ 20 MB) and again 2 s after a
// staff login, which runs argon2id with 7 MiB (RSS-after-login-MB).
func BenchmarkIdleRSS(b *testing.B) {
	c := pgtest.Start(b)
	dburl := schematest.NewDB(b, c, "goteborg")
	if _, err := schema.CreateStaffAdmin(context.Background(), schematest.MustOpen(b, dburl), "admin@example.org", "admin-password"); err != nil {
		b.Fatal(err)
	}
	p := StartBinary(b, []string{"DATABASE_URL=" + dburl, "STAGESUB_TENANT=goteborg", "STAGESUB_REGISTER=false"})
	base := "http://" + p.ready.Addr
	for _, path := range []string{"/healthz", "/login", "/metrics", "/healthz"} {
		get(b, base+path)
	}
	time.Sleep(2 * time.Second)
	idle := rssMB(b, p.cmd.Process.Pid)

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	res, err := hc.Get(base + "/login")
	if err != nil {
		b.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		b.Fatal("no csrf on /login")
	}
	res, err = hc.PostForm(base+"/login", url.Values{"csrf": {string(m[1])}, "email": {"admin@example.org"}, "password": {"admin-password"}})
	if err != nil {
		b.Fatal(err)
	}
	res.Body.Close()
	if res.Request.URL.Path != "/" || res.StatusCode != http.StatusOK {
		b.Fatalf("login ended at %s with %d", res.Request.URL, res.StatusCode)
	}
	time.Sleep(2 * time.Second)
	afterLogin := rssMB(b, p.cmd.Process.Pid)

	b.ResetTimer()
	for range b.N {
	}
	b.ReportMetric(idle, "RSS-MB")
	b.ReportMetric(afterLogin, "RSS-after-login-MB")
	b.ReportMetric(float64(p.ready.StartupMS), "startup-ms")
}

// rssMB reads VmRSS of pid in MB.
func rssMB(tb testing.TB, pid int) float64 {
	tb.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	tb.Fatal("no VmRSS in /proc status")
	return 0
}
