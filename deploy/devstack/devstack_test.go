package devstack_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"stagesub.dev/deploy/devstack"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/internal/testbin"
)

// running is one dev stack started by devstack.Run in the test process.
type running struct {
	cancel context.CancelFunc
	done   chan error
	out    *syncbuf.Buffer
}

func start(t *testing.T, args []string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), out: &syncbuf.Buffer{}}
	go func() { r.done <- devstack.Run(ctx, args, os.Environ(), r.out, r.out) }()
	return r
}

// stop cancels the stack (as Ctrl-C does) and checks that it stops cleanly.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run after stop: %v\n%s", err, r.out.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the stack did not stop within 90s:\n%s", r.out.String())
	}
	if !strings.Contains(r.out.String(), "dev stack stopped") {
		t.Errorf("no stop message:\n%s", r.out.String())
	}
}

// waitReady waits for the ready file and returns the parsed env file.
func (r *running) waitReady(t *testing.T, dir string) map[string]string {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		select {
		case err := <-r.done:
			t.Fatalf("the stack exited while starting: %v\n%s", err, r.out.String())
		case <-deadline:
			t.Fatalf("not ready after 3 minutes:\n%s", r.out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(l, "export "), "=")
		if ok && !strings.HasPrefix(l, "#") {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

// setup skips a short run, needs PostgreSQL, and returns the binaries and a
// fresh directory for the stack's state. Not t.TempDir: as root, Postgres
// runs as "postgres" and must reach it.
func setup(t *testing.T) (bins, dir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	testbin.NeedPostgres(t)
	bins = testbin.Build(t, filepath.Join("..", ".."))
	dir, err := os.MkdirTemp("", "devstack")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bins, dir
}

// TestRunStopRerun starts the whole dev stack on free ports, checks the env
// file, stagesubctl against it and the router over TLS, stops it the way
// Ctrl-C does, and starts it again: the tenants and their data survive and
// the demo data is not seeded twice.
func TestRunStopRerun(t *testing.T) {
	bins, dir := setup(t)
	httpsPort := testbin.FreePort(t)
	args := []string{"--dir", filepath.Join(dir, "state"), "--bin", bins,
		"--http", "127.0.0.1:" + strconv.Itoa(testbin.FreePort(t)), "--https", "127.0.0.1:" + strconv.Itoa(httpsPort),
		"--consul-port", strconv.Itoa(testbin.FreePort(t)), "--router-admin", "127.0.0.1:" + strconv.Itoa(testbin.FreePort(t))}

	r := start(t, args)
	env := r.waitReady(t, filepath.Join(dir, "state"))
	for _, k := range []string{"CONSUL_HTTP_ADDR", "STAGESUB_PG_ADMIN_URL", "STAGESUB_SECRETS_DIR", "STAGESUB_BASE_DOMAIN",
		"STAGESUB_CA_FILE", "STAGESUB_ADMIN_USER", "STAGESUB_ADMIN_PASSWORD", "STAGESUB_ROUTER_URL"} {
		if env[k] == "" {
			t.Errorf("env file lacks %s", k)
		}
	}
	out := r.out.String()
	for _, want := range []string{"https://goteborg.localhost:" + strconv.Itoa(httpsPort) + "/", "https://admin.localhost:",
		env["STAGESUB_CA_FILE"], env["STAGESUB_ADMIN_PASSWORD"]} {
		if !strings.Contains(out, want) {
			t.Errorf("summary does not show %q:\n%s", want, out)
		}
	}

	// `. .stagesub/env && stagesubctl tenant list` works.
	var ctlEnv []string
	for k, v := range env {
		ctlEnv = append(ctlEnv, k+"="+v)
	}
	cmd := exec.Command(filepath.Join(bins, "stagesubctl"), "tenant", "list")
	cmd.Env = append(ctlEnv, "PATH="+os.Getenv("PATH"))
	list, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stagesubctl tenant list: %v\n%s", err, list)
	}
	for _, tn := range devstack.DemoTenants {
		if !strings.Contains(string(list), tn.Slug) {
			t.Errorf("tenant list lacks %s:\n%s", tn.Slug, list)
		}
	}

	// The router serves every tenant over TLS with the dev CA.
	ca, err := os.ReadFile(env["STAGESUB_CA_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(httpsPort))
		},
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	for _, h := range []string{"goteborg", "malmo", "stockholm", "admin"} {
		resp, err := client.Get(fmt.Sprintf("https://%s.localhost:%d/login", h, httpsPort))
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s/login: status %d", h, resp.StatusCode)
		}
	}

	// `stagesubctl doctor --all` with the env file checks every tenant
	// through the router and its certificate, and finds nothing wrong.
	cmd = exec.Command(filepath.Join(bins, "stagesubctl"), "doctor", "--all")
	cmd.Env = append(ctlEnv, "PATH="+os.Getenv("PATH"))
	doc, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("stagesubctl doctor --all: %v\n%s", err, doc)
	}
	for _, want := range []string{"✓ router", "✓ certificate"} {
		if got := strings.Count(string(doc), want); got != len(devstack.DemoTenants) {
			t.Errorf("doctor printed %q %d times, want %d:\n%s", want, got, len(devstack.DemoTenants), doc)
		}
	}

	// Data written now must survive a restart.
	tenantEnv, err := os.ReadFile(filepath.Join(env["STAGESUB_SECRETS_DIR"], "goteborg.env"))
	if err != nil {
		t.Fatal(err)
	}
	var dbURL string
	for _, l := range strings.Split(string(tenantEnv), "\n") {
		if v, ok := strings.CutPrefix(l, "DATABASE_URL="); ok {
			dbURL = strings.Trim(v, `"'`)
		}
	}
	count := func() (all, marker int) {
		t.Helper()
		db, err := sql.Open("pgx", dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow("SELECT count(*), count(*) FILTER (WHERE name = 'Marker Musician') FROM musicians").Scan(&all, &marker); err != nil {
			t.Fatal(err)
		}
		return all, marker
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO musicians (name, instrument) VALUES ('Marker Musician', 'harp')"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, _ := count()
	if before < 2 {
		t.Fatalf("%d musicians after seeding", before)
	}
	r.stop(t)
	if _, err := os.Stat(filepath.Join(dir, "state", "dev.pid")); err == nil {
		t.Error("pid file left after stop")
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(httpsPort))
	if err != nil {
		t.Errorf("HTTPS port still in use after stop: %v", err)
	} else {
		l.Close()
	}

	r = start(t, args)
	r.waitReady(t, filepath.Join(dir, "state"))
	after, marker := count()
	if after != before || marker != 1 {
		t.Errorf("after re-run: %d musicians (was %d), marker %d: data lost or seeded twice", after, before, marker)
	}
	if !strings.Contains(r.out.String(), "tenant exists; keeping its data") {
		t.Errorf("re-run did not keep the tenants:\n%s", r.out.String())
	}
	r.stop(t)
}

// TestDetachStop runs `stagesubctl dev --detach` (a test build of the dev
// command, testdata/devctl) as a separate process: it must return once the
// stack is ready and leave it running; `dev stop` must then stop it.
func TestDetachStop(t *testing.T) {
	bins, dir := setup(t)
	// bin/: the servers from bins, stagesubctl = devctl (which execs
	// stagesubctl-real, the real one, for everything but dev).
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"stagesub-router", "stagesub-app", "stagesub-admin", "stagesub-consul", "stagesubctl"} {
		link := b
		if b == "stagesubctl" {
			link = "stagesubctl-real"
		}
		if err := os.Symlink(filepath.Join(bins, b), filepath.Join(bin, link)); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "stagesubctl"), "./testdata/devctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build devctl: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	httpsPort := testbin.FreePort(t)
	ctl := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "stagesubctl"), append([]string{"dev"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Whatever happens, do not leave a stack behind.
	t.Cleanup(func() { _, _ = ctl(90*time.Second, "stop", "--dir", state) })

	out, err := ctl(4*time.Minute, "--detach", "--dir", state, "--bin", bin,
		"--http", "127.0.0.1:"+strconv.Itoa(testbin.FreePort(t)), "--https", "127.0.0.1:"+strconv.Itoa(httpsPort),
		"--consul-port", strconv.Itoa(testbin.FreePort(t)), "--router-admin", "127.0.0.1:"+strconv.Itoa(testbin.FreePort(t)))
	if err != nil {
		t.Fatalf("dev --detach: %v\n%s\nlog:\n%s", err, out, testbin.Tail(filepath.Join(state, "logs", "dev.log"), 3000))
	}
	if !strings.Contains(out, "StageSub dev stack is ready") || !strings.Contains(out, "scripts/dev stop") {
		t.Errorf("dev --detach output:\n%s", out)
	}
	pidB, err := os.ReadFile(filepath.Join(state, "dev.pid"))
	if err != nil {
		t.Fatalf("no pid file after --detach: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidB)))
	if err != nil || pid <= 0 { // kill(0, 0) would test the whole process group
		t.Fatalf("pid file holds %q", pidB)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("detached stack (pid %d) not running: %v", pid, err)
	}
	// It serves after the detaching command returned.
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(httpsPort), 2*time.Second)
	if err != nil {
		t.Fatalf("router not listening after --detach: %v", err)
	}
	conn.Close()
	// A second stack on the same directory is refused.
	if out, err := ctl(time.Minute, "--detach", "--dir", state, "--bin", bin); err == nil || !strings.Contains(out, "already running") {
		t.Errorf("second --detach: %v\n%s", err, out)
	}

	out, err = ctl(90*time.Second, "stop", "--dir", state)
	if err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("dev stop: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
		t.Errorf("pid %d still running after dev stop: %s", pid, b)
	}
	if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(httpsPort)); err != nil {
		t.Errorf("HTTPS port still in use after stop: %v", err)
	} else {
		l.Close()
	}
	out, err = ctl(30*time.Second, "stop", "--dir", state)
	if err != nil || !strings.Contains(out, "no dev stack is running") {
		t.Errorf("second stop: %v\n%s", err, out)
	}
}
