package local_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/local"
	"stagesub.dev/deploy/secrets"
)

// The test binary doubles as a fake app when FAKE_APP is set: it prints its
// environment and then behaves as FAKE_APP says.
func TestMain(m *testing.M) {
	if mode := os.Getenv("FAKE_APP"); mode != "" {
		fakeApp(mode)
		return
	}
	os.Exit(m.Run())
}

func fakeApp(mode string) {
	fmt.Printf("fake app pid=%d tenant=%s db=%s extra=%s\n", os.Getpid(), os.Getenv("STAGESUB_TENANT"), os.Getenv("DATABASE_URL"), os.Getenv("EXTRA"))
	marker := os.Getenv("FAKE_MARKER")
	switch mode {
	case "crash-always":
		os.Exit(3)
	case "crash-once":
		if _, err := os.Stat(marker); err != nil {
			_ = os.WriteFile(marker, nil, 0o600)
			fmt.Println("crashing")
			os.Exit(3)
		}
		fmt.Println("second run")
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	select {
	case <-ch:
		fmt.Println("got SIGTERM")
		os.Exit(0)
	case <-time.After(2 * time.Minute):
		os.Exit(4)
	}
}

type fixture struct {
	dir  string
	spec deploy.AppSpec
}

func newFixture(t *testing.T, mode string) (*fixture, local.Config) {
	t.Helper()
	dir := t.TempDir()
	sec := secrets.Dir{Path: filepath.Join(dir, "secrets")}
	if err := sec.Write("goteborg", map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1:1/db", "STAGESUB_TENANT": "goteborg"}); err != nil {
		t.Fatal(err)
	}
	cfg := local.Config{
		Binary:      os.Args[0],
		LogDir:      filepath.Join(dir, "logs"),
		BaseEnv:     []string{"FAKE_APP=" + mode, "FAKE_MARKER=" + filepath.Join(dir, "marker")},
		MinBackoff:  10 * time.Millisecond,
		StopTimeout: 2 * time.Second,
	}
	return &fixture{dir: dir, spec: deploy.AppSpec{Tenant: "goteborg", EnvFile: sec.File("goteborg"), Env: []string{"EXTRA=42"}}}, cfg
}

// newTarget returns a local.Target for cfg that the test closes at its end.
func newTarget(t *testing.T, cfg local.Config) *local.Target {
	t.Helper()
	tg, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close(context.Background()) })
	return tg
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func logOf(t *testing.T, tg *local.Target) string {
	b, _ := os.ReadFile(tg.LogFile("goteborg"))
	return string(b)
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

func TestStartStop(t *testing.T) {
	f, cfg := newFixture(t, "serve")
	tg := newTarget(t, cfg)
	ctx := context.Background()
	if err := tg.Start(ctx, f.spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the app's first log line", func() bool { return strings.Contains(logOf(t, tg), "fake app") })
	if got, want := logOf(t, tg), "tenant=goteborg db=postgres://u:p@127.0.0.1:1/db extra=42"; !strings.Contains(got, want) {
		t.Errorf("log = %q, want env file and extra env: %q", got, want)
	}
	st, err := tg.Status(ctx, "goteborg")
	if err != nil || st.State != deploy.StateRunning || st.PID == 0 {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if err := tg.Start(ctx, f.spec); err != nil {
		t.Fatal(err)
	}
	if st2, _ := tg.Status(ctx, "goteborg"); st2.PID != st.PID {
		t.Errorf("second Start started another process: %d, was %d", st2.PID, st.PID)
	}
	if err := tg.Stop(ctx, "goteborg"); err != nil {
		t.Fatal(err)
	}
	if alive(st.PID) {
		t.Errorf("process %d alive after Stop", st.PID)
	}
	if st, _ := tg.Status(ctx, "goteborg"); st.State != deploy.StateStopped {
		t.Errorf("status after Stop = %+v", st)
	}
	if !strings.Contains(logOf(t, tg), "got SIGTERM") {
		t.Errorf("app was not stopped with SIGTERM: %s", logOf(t, tg))
	}
	if err := tg.Stop(ctx, "goteborg"); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestRestartsAfterCrash(t *testing.T) {
	f, cfg := newFixture(t, "crash-once")
	tg := newTarget(t, cfg)
	ctx := context.Background()
	if err := tg.Start(ctx, f.spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a restart after the crash", func() bool { return strings.Contains(logOf(t, tg), "second run") })
	st, _ := tg.Status(ctx, "goteborg")
	if st.State != deploy.StateRunning || st.Restarts != 1 || !alive(st.PID) {
		t.Errorf("status = %+v, want running after 1 restart", st)
	}
}

func TestGivesUpOnCrashLoop(t *testing.T) {
	f, cfg := newFixture(t, "crash-always")
	cfg.MaxRestarts = 3
	tg := newTarget(t, cfg)
	ctx := context.Background()
	if err := tg.Start(ctx, f.spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "state failed", func() bool {
		st, _ := tg.Status(ctx, "goteborg")
		return st.State == deploy.StateFailed
	})
	if got := strings.Count(logOf(t, tg), "fake app"); got != 4 {
		t.Errorf("ran %d times, want 4 (1 + 3 restarts)", got)
	}
}

// TestStopFromLaterRun stops, through the PID file, an instance that an
// earlier stagesubctl run started.
func TestStopFromLaterRun(t *testing.T) {
	f, cfg := newFixture(t, "serve")
	cfg.MinBackoff = time.Minute // the first supervisor must not restart it during the test
	first := newTarget(t, cfg)
	ctx := context.Background()
	if err := first.Start(ctx, f.spec); err != nil {
		t.Fatal(err)
	}
	st, _ := first.Status(ctx, "goteborg")
	later := newTarget(t, cfg)
	got, err := later.Status(ctx, "goteborg")
	if err != nil || got.State != deploy.StateRunning || got.PID != st.PID {
		t.Fatalf("later Status = %+v, %v; want running pid %d", got, err, st.PID)
	}
	if err := later.Start(ctx, f.spec); err != nil {
		t.Fatal(err)
	}
	if err := later.Stop(ctx, "goteborg"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the process to exit", func() bool { return !alive(st.PID) })
	if got, _ := later.Status(ctx, "goteborg"); got.State != deploy.StateStopped {
		t.Errorf("status after Stop = %+v", got)
	}
}

func TestStartMissingBinary(t *testing.T) {
	f, cfg := newFixture(t, "serve")
	cfg.Binary = filepath.Join(f.dir, "no-such-app")
	tg := newTarget(t, cfg)
	if err := tg.Start(context.Background(), f.spec); err == nil || !strings.Contains(err.Error(), "no-such-app") {
		t.Errorf("Start = %v, want an error naming the binary", err)
	}
}
