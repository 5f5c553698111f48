// Package devstack is `stagesubctl dev`: the whole StageSub platform on one
// machine, for development and demos.
//
//	stagesubctl dev            run in the foreground; Ctrl-C stops everything
//	stagesubctl dev --detach   start in the background, return once ready
//	stagesubctl dev stop       stop a detached (or foreground) stack
//
// It starts, in order: a PostgreSQL cluster under <dir>/pg (initdb once; as
// root the server runs as the "postgres" account), Consul (a real `consul
// agent -dev` when consul is on PATH, else the stand-in stagesub-consul with
// its data in <dir>/consul), the demo tenants goteborg, malmo and stockholm
// created with `stagesubctl tenant create` and seeded with sample data (both
// idempotent: a re-run keeps existing data), one supervised app instance per
// tenant (deploy/local restarts it when it crashes), the admin, and the
// router with the internal CA on 127.0.0.1:8080 (HTTP) and 127.0.0.1:8443
// (HTTPS) for base domain localhost. It then prints the URLs, the CA file and
// the logins, and writes <dir>/env with the shell exports that make
// `bin/stagesubctl tenant list` work against the stack.
//
// All state lives under <dir> (default .stagesub): generated passwords in
// secrets.env, tenant env files in tenants/, logs in logs/. The stack's PID
// is in <dir>/dev.pid while it runs; a second stack on the same dir refuses
// to start.
package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tenant is one demo tenant of the dev stack.
type Tenant struct {
	Slug, Name string
}

// DemoTenants are created on every start (kept when they exist).
var DemoTenants = []Tenant{
	{"goteborg", "Göteborgs Symfoniker"},
	{"malmo", "Malmö SymfoniOrkester"},
	{"stockholm", "Kungliga Filharmonikerna"},
}

// Environment variables written to <dir>/env.
const (
	EnvCAFile        = "STAGESUB_CA_FILE"
	EnvAdminUser     = "STAGESUB_ADMIN_USER"
	EnvAdminPassword = "STAGESUB_ADMIN_PASSWORD"
	EnvPGAdminURL    = "STAGESUB_PG_ADMIN_URL"
	EnvSecretsDir    = "STAGESUB_SECRETS_DIR"
	EnvDevDir        = "STAGESUB_DEV_DIR" // default for --dir
)

// Options configure a dev stack; Run fills them from flags.
type Options struct {
	Dir        string // state directory, default ".stagesub" (absolute after parse)
	BinDir     string // where the five binaries are; default the directory of this executable
	HTTPAddr   string // router HTTP, default 127.0.0.1:8080
	HTTPSAddr  string // router HTTPS, default 127.0.0.1:8443
	ConsulPort int    // default 8500
	// RouterAdminAddr is the router's /healthz and /metrics listener,
	// default 127.0.0.1:9180.
	RouterAdminAddr string
	BaseDomain      string // default "localhost"
	Detach          bool
	Timeout         time.Duration // readiness timeout, default 3m
}

// Run is `stagesubctl dev [stop] [flags]`. environ is the caller's
// environment (only PATH, HOME and the like are passed on to children).
func Run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	o, err := parseFlags(sub, args, environ, stderr)
	if err != nil {
		return err
	}
	switch sub {
	case "":
		if o.Detach {
			return detach(ctx, o, args, stdout)
		}
		return runStack(ctx, o, environ, stdout, stderr)
	case "stop":
		return stop(ctx, o, stdout)
	case "env":
		b, err := os.ReadFile(filepath.Join(o.Dir, "env"))
		if err != nil {
			return fmt.Errorf("devstack: no environment yet (start the stack with scripts/dev): %w", err)
		}
		_, err = stdout.Write(b)
		return err
	default:
		return fmt.Errorf("devstack: unknown subcommand %q (want: dev, dev --detach, dev stop, dev env)", sub)
	}
}

func parseFlags(sub string, args, environ []string, stderr io.Writer) (Options, error) {
	env := envMap(environ)
	fs := flag.NewFlagSet("stagesubctl dev "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	defDir := env[EnvDevDir]
	if defDir == "" {
		defDir = ".stagesub"
	}
	fs.StringVar(&o.Dir, "dir", defDir, "state directory (Postgres data, Consul data, CA, env files, logs)")
	fs.StringVar(&o.BinDir, "bin", "", "directory holding the binaries (default: next to stagesubctl)")
	fs.StringVar(&o.HTTPAddr, "http", "127.0.0.1:8080", "router HTTP address")
	fs.StringVar(&o.HTTPSAddr, "https", "127.0.0.1:8443", "router HTTPS address")
	fs.IntVar(&o.ConsulPort, "consul-port", 8500, "Consul HTTP port on 127.0.0.1")
	fs.StringVar(&o.RouterAdminAddr, "router-admin", "127.0.0.1:9180", "router /healthz and /metrics address")
	fs.StringVar(&o.BaseDomain, "base-domain", "localhost", "base domain (tenants are <slug>.<base domain>)")
	fs.BoolVar(&o.Detach, "detach", false, "start in the background and return once everything is ready")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "how long to wait for the stack to become ready")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("devstack: unexpected arguments %q", fs.Args())
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("devstack: %w", err)
	}
	o.Dir = dir
	if o.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("devstack: %w", err)
		}
		o.BinDir = filepath.Dir(exe)
	}
	return o, nil
}

func envMap(environ []string) map[string]string {
	m := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// childEnv is the environment children start from: only what a process
// needs to run, nothing of the caller's StageSub or Consul settings.
func childEnv(environ []string) []string {
	env := envMap(environ)
	var out []string
	for _, k := range []string{"PATH", "HOME", "LANG", "TMPDIR", "TZ"} {
		if v, ok := env[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

func (o Options) pidFile() string   { return filepath.Join(o.Dir, "dev.pid") }
func (o Options) readyFile() string { return filepath.Join(o.Dir, "ready") }
func (o Options) logDir() string    { return filepath.Join(o.Dir, "logs") }

// binary returns the path of a StageSub binary: in BinDir, else on PATH.
func (o Options) binary(name string) (string, error) {
	p := filepath.Join(o.BinDir, name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("devstack: %s not found in %s or on PATH; run scripts/build", name, o.BinDir)
}

// runningPID returns the PID in the pid file if that process is alive.
func (o Options) runningPID() int {
	b, err := os.ReadFile(o.pidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !alive(pid) {
		return 0
	}
	return pid
}

// alive reports whether process pid exists and is not a zombie (a detached
// stack is reparented to PID 1, which may be slow to reap it).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// "pid (comm) S ...": the state follows the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// stop signals the running stack and waits until it is gone.
func stop(ctx context.Context, o Options, stdout io.Writer) error {
	pid := o.runningPID()
	if pid == 0 {
		fmt.Fprintf(stdout, "no dev stack is running (%s)\n", o.pidFile())
		return nil
	}
	fmt.Fprintf(stdout, "stopping the dev stack (pid %d) ...\n", pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("devstack: signal %d: %w", pid, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("devstack: pid %d still running after 60s; see %s", pid, filepath.Join(o.logDir(), "dev.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}

// detach starts `stagesubctl dev` (without --detach) in a new session with
// its output in <dir>/logs/dev.log, waits for <dir>/ready and prints it.
func detach(ctx context.Context, o Options, args []string, stdout io.Writer) error {
	if pid := o.runningPID(); pid != 0 {
		return fmt.Errorf("devstack: a dev stack is already running (pid %d); stop it with: scripts/dev stop", pid)
	}
	ctl, err := o.binary("stagesubctl")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.logDir(), 0o755); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	_ = os.Remove(o.readyFile())
	logPath := filepath.Join(o.logDir(), "dev.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	defer logf.Close()
	var childArgs []string
	for _, a := range args {
		if a != "--detach" && a != "-detach" && a != "--detach=true" && a != "-detach=true" {
			childArgs = append(childArgs, a)
		}
	}
	childArgs = append([]string{"dev", "--dir", o.Dir, "--bin", o.BinDir}, childArgs...)
	cmd := exec.Command(ctl, childArgs...)
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devstack: start %s: %w", ctl, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(o.Timeout + 30*time.Second)
	for {
		if b, err := os.ReadFile(o.readyFile()); err == nil {
			_, err := stdout.Write(b)
			fmt.Fprintf(stdout, "\nThe stack runs in the background (pid %d, log %s).\nStop it with: scripts/dev stop\n", cmd.Process.Pid, logPath)
			return err
		}
		select {
		case err := <-exited:
			return fmt.Errorf("devstack: the dev stack exited while starting (%v); its log %s ends with:\n%s", err, logPath, tail(logPath, 3000))
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("devstack: not ready after %s; see %s", o.Timeout, logPath)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// devSecrets are generated once and kept in <dir>/secrets.env (0600), so
// logins stay the same across restarts.
type devSecrets struct {
	AdminPassword string // admin dashboard, user "admin"
	StaffPassword string // staff login of every demo tenant
	StatsPassword string // role stagesub_stats
	SessionKey    string // admin session cookie key (hex)
}

func loadSecrets(dir string) (devSecrets, error) {
	path := filepath.Join(dir, "secrets.env")
	var s devSecrets
	if b, err := os.ReadFile(path); err == nil {
		m := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
				m[k] = v
			}
		}
		s = devSecrets{m["ADMIN_PASSWORD"], m["STAFF_PASSWORD"], m["STATS_PASSWORD"], m["SESSION_KEY"]}
		if s.AdminPassword != "" && s.StaffPassword != "" && s.StatsPassword != "" && len(s.SessionKey) >= 64 {
			return s, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("devstack: %w", err)
	}
	s = devSecrets{AdminPassword: "admin-" + randHex(6), StaffPassword: "staff-" + randHex(6),
		StatsPassword: randHex(16), SessionKey: randHex(32)}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Generated by stagesubctl dev; delete to regenerate (then also delete the tenants).\n")
	fmt.Fprintf(&b, "ADMIN_PASSWORD=%s\nSTAFF_PASSWORD=%s\nSTATS_PASSWORD=%s\nSESSION_KEY=%s\n",
		s.AdminPassword, s.StaffPassword, s.StatsPassword, s.SessionKey)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return s, fmt.Errorf("devstack: %w", err)
	}
	return s, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newLogger logs the dev stack's own progress to stderr.
func newLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
